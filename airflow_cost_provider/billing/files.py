"""Billing files: local paths and s3://, gs://, abfss:// URLs, listed and fetched through the Airflow
providers' own hooks and filesystems, then read by DuckDB (Parquet) or pyarrow (CSV, JSON).

Remote files are copied to a temporary directory first: DuckDB then reads them at local-disk speed,
and nothing needs DuckDB's network extensions. Every network call has a timeout.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import glob
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
from airflow_cost_provider.billing.scan import ROW

CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 120
_COPY_CHUNK = 8 * 1024 * 1024

REMOTE_SCHEMES = ("s3", "gs", "abfss", "abfs")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")
DEFAULT_CONN_IDS = {"s3": "aws_default", "gs": "google_cloud_default", "abfss": "adls_default"}


@dataclass(frozen=True)
class BillingFile:
    """A file to import: where it came from (`label`, as the user named it) and where it is read."""

    label: str
    local_path: Path
    size: int


@dataclass(frozen=True)
class RemoteObject:
    url: str
    size: int
    modified: dt.datetime | None = None


BytesProgress = Callable[[int], None]


class ObjectStore(Protocol):
    def list(self, url: str) -> list[RemoteObject]: ...

    def download(self, obj: RemoteObject, destination: Path, progress: BytesProgress | None) -> None: ...


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or container@account, key) of an object URL."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc, parts.path.lstrip("/")


def _copy(source, destination: Path, progress: BytesProgress | None) -> None:
    with destination.open("wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            out.write(chunk)
            if progress:
                progress(len(chunk))


class S3Store:
    """S3 through the Amazon provider's AWS connection (its endpoint_url, region and credentials)."""

    def __init__(self, conn_id: str | None) -> None:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from botocore.config import Config

        hook = AwsBaseHook(aws_conn_id=conn_id or DEFAULT_CONN_IDS["s3"], client_type="s3")
        timeouts = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self.client = hook.get_client_type(config=hook.config.merge(timeouts))

    def list(self, url: str) -> list[RemoteObject]:
        _, bucket, key = split_url(url)
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    found.append(
                        RemoteObject(f"s3://{bucket}/{item['Key']}", item["Size"], item.get("LastModified"))
                    )
        return found

    def download(self, obj: RemoteObject, destination: Path, progress: BytesProgress | None) -> None:
        _, bucket, key = split_url(obj.url)
        with destination.open("wb") as out:
            self.client.download_fileobj(bucket, key, out, Callback=progress)


class GCSStore:
    """Cloud Storage through the Google provider's connection."""

    def __init__(self, conn_id: str | None) -> None:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        self.client = GCSHook(gcp_conn_id=conn_id or DEFAULT_CONN_IDS["gs"]).get_conn()

    def list(self, url: str) -> list[RemoteObject]:
        _, bucket, key = split_url(url)
        return [
            RemoteObject(f"gs://{bucket}/{blob.name}", blob.size or 0, blob.updated)
            for blob in self.client.list_blobs(bucket, prefix=key, timeout=READ_TIMEOUT_SECONDS)
            if not blob.name.endswith("/")
        ]

    def download(self, obj: RemoteObject, destination: Path, progress: BytesProgress | None) -> None:
        _, bucket, key = split_url(obj.url)
        blob = self.client.bucket(bucket).blob(key)
        with blob.open("rb", chunk_size=_COPY_CHUNK, timeout=READ_TIMEOUT_SECONDS) as source:
            _copy(source, destination, progress)


class ADLSStore:
    """ADLS Gen2 / Blob Storage through the Azure provider's filesystem (adlfs) and its connection.

    URLs are abfss://container@account.dfs.core.windows.net/path (OpenLineage's naming for ADLS).
    """

    def __init__(self, conn_id: str | None) -> None:
        from airflow.providers.microsoft.azure.fs.adls import get_fs

        self.fs = get_fs(
            conn_id or DEFAULT_CONN_IDS["abfss"],
            storage_options={
                "connection_timeout": CONNECT_TIMEOUT_SECONDS,
                "read_timeout": READ_TIMEOUT_SECONDS,
            },
        )

    @staticmethod
    def _path(url: str) -> tuple[str, str]:
        _, netloc, key = split_url(url)
        container, _, host = netloc.partition("@")
        return container, f"{container}/{key}".rstrip("/"), host

    def list(self, url: str) -> list[RemoteObject]:
        container, path, host = self._path(url)
        found = self.fs.find(path, detail=True)
        return [
            RemoteObject(
                f"abfss://{container}@{host}/{name.split('/', 1)[1]}",
                info.get("size") or 0,
                info.get("last_modified"),
            )
            for name, info in sorted(found.items())
            if info.get("type") != "directory"
        ]

    def download(self, obj: RemoteObject, destination: Path, progress: BytesProgress | None) -> None:
        _, path, _ = self._path(obj.url)
        with self.fs.open(path, "rb") as source:
            _copy(source, destination, progress)


def store_for(url: str, conn_id: str | None = None) -> ObjectStore:
    scheme = split_url(url)[0]
    if scheme == "s3":
        return S3Store(conn_id)
    if scheme == "gs":
        return GCSStore(conn_id)
    if scheme in ("abfss", "abfs"):
        return ADLSStore(conn_id)
    raise BillingSourceError(f"{url}: unsupported URL scheme {scheme!r} (use s3://, gs:// or abfss://)")


def is_remote(path: str) -> bool:
    return split_url(path)[0] in REMOTE_SCHEMES


def list_local(path: str, accepts: Callable[[str], bool]) -> list[Path]:
    """A file, every accepted file under a directory, or the files a glob pattern matches."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return [candidate]
    if candidate.is_dir():
        return sorted(p for p in candidate.rglob("*") if p.is_file() and accepts(p.name))
    matches = sorted(Path(p) for p in glob.glob(str(candidate), recursive=True) if Path(p).is_file())
    if not matches:
        raise BillingSourceError(f"{path}: no such file or directory")
    return matches


class FetchProgress(Protocol):
    def file_started(self, label: str, size: int) -> BytesProgress | None: ...

    def file_finished(self, label: str) -> None: ...


@contextlib.contextmanager
def fetched(
    paths: list[str],
    accepts: Callable[[str], bool],
    conn_ids: dict[str, str | None] | None = None,
    progress: FetchProgress | None = None,
    remote_objects: list[RemoteObject] | None = None,
) -> Iterator[list[BillingFile]]:
    """Local copies of every billing file the paths name; temporary copies are removed afterwards.

    `remote_objects` are objects already listed (by a source that picked the latest delivery).
    """
    import tempfile

    conn_ids = conn_ids or {}
    with tempfile.TemporaryDirectory(prefix="billing-import-") as scratch:
        files: list[BillingFile] = []
        remote: list[RemoteObject] = list(remote_objects or [])
        stores: dict[str, ObjectStore] = {}

        def store(url: str) -> ObjectStore:
            scheme = split_url(url)[0]
            key = "abfss" if scheme == "abfs" else scheme
            if key not in stores:
                stores[key] = store_for(url, conn_ids.get(key))
            return stores[key]

        for path in paths:
            if is_remote(path):
                listed = [o for o in store(path).list(path) if accepts(o.url.rsplit("/", 1)[-1])]
                if not listed:
                    raise BillingSourceError(f"{path}: no billing files found")
                remote.extend(listed)
            else:
                files.extend(BillingFile(str(p), p, p.stat().st_size) for p in list_local(path, accepts))
        for index, obj in enumerate(remote):
            name = obj.url.rsplit("/", 1)[-1]
            destination = Path(scratch) / f"{index:05d}-{name}"
            advance = progress.file_started(obj.url, obj.size) if progress else None
            try:
                store(obj.url).download(obj, destination, advance)
            except Exception as error:
                raise BillingSourceError(
                    f"{obj.url}: cannot be fetched: {type(error).__name__}: {error}"
                ) from error
            if progress:
                progress.file_finished(obj.url)
            files.append(BillingFile(obj.url, destination, destination.stat().st_size))
        yield files


# ---------------------------------------------------------------- reading into DuckDB


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def is_parquet(file: BillingFile) -> bool:
    return _is_parquet(file.local_path)


def _csv_header(path: Path, gzip: bool) -> list[str]:
    import gzip as gzip_module

    opener = gzip_module.open if gzip else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # Azure's CSVs start with a BOM
        header = next(csv.reader(io.StringIO(handle.readline())), [])
    return [name.strip() for name in header]


class _InvalidRows:
    """Remembers the first row pyarrow could not split into the header's columns."""

    def __init__(self) -> None:
        self.first = None

    def __call__(self, row) -> str:
        if self.first is None:
            self.first = row
        return "error"


def _csv_reader(path: Path, label: str):
    """A stream of record batches, every column as text, plus each row's number."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    gzip = _is_gzip(path)
    header = _csv_header(path, gzip)
    if not header or not any(header):
        raise BillingDataError(label, "the file has no header row")
    duplicates = {name for name in header if header.count(name) > 1}
    if duplicates:
        raise BillingDataError(label, "duplicate columns in the header", column=", ".join(sorted(duplicates)))
    invalid = _InvalidRows()
    source = pa.input_stream(str(path), compression="gzip" if gzip else None)
    try:
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(block_size=16 * 1024 * 1024),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _csv_error(path, label, invalid, error) from error
    schema = reader.schema.append(pa.field(ROW, pa.int64()))

    def batches():
        offset = 0
        try:
            for batch in reader:
                rows = pa.array(range(offset, offset + batch.num_rows), pa.int64())
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, rows], schema=schema)
        except pa.ArrowInvalid as error:
            raise _csv_error(path, label, invalid, error) from error

    return pa.RecordBatchReader.from_batches(schema, batches())


def _line_of(path: Path, text: str) -> int | None:
    """The data row (1-based, header excluded) whose line is `text` (the slow path of an error)."""
    import gzip as gzip_module

    opener = gzip_module.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        for number, line in enumerate(handle):
            if line.rstrip("\r\n") == text:
                return number
    return None


def _csv_error(path: Path, label: str, invalid: _InvalidRows, error: Exception) -> BillingDataError:
    row = invalid.first
    if row is not None:
        # pyarrow numbers rows only when it parses serially; find the line otherwise
        number = row.number - 1 if row.number else _line_of(path, row.text)
        return BillingDataError(
            label, f"expected {row.expected_columns} columns, found {row.actual_columns}", row=number
        )
    return BillingDataError(label, f"not a readable CSV file: {error}")


def _json_table(path: Path, label: str):
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        table = pa_json.read_json(str(path))
    except pa.ArrowInvalid as error:
        raise BillingDataError(label, f"not a readable JSON-lines file: {error}") from error
    return table.append_column(ROW, pa.array(range(table.num_rows), pa.int64()))


def register_input(con, file: BillingFile) -> dict[str, str]:
    """Make `billing_input` read the file (with ROW numbers); return its columns and DuckDB types."""
    path = file.local_path
    con.execute("DROP VIEW IF EXISTS billing_input")
    with contextlib.suppress(Exception):
        con.unregister("billing_input_stream")
    if _is_parquet(path):
        literal = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(
                "CREATE TEMP VIEW billing_input AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS {ROW} FROM read_parquet({literal}, file_row_number = true)"
            )
            described = con.execute("DESCRIBE billing_input").fetchall()
        except Exception as error:
            raise BillingDataError(file.label, f"not a readable Parquet file: {error}") from error
    else:
        name = path.name.lower()
        if name.endswith(JSON_SUFFIXES):
            stream: Any = _json_table(path, file.label)
        else:
            stream = _csv_reader(path, file.label)
        con.register("billing_input_stream", stream)
        con.execute("CREATE TEMP VIEW billing_input AS SELECT * FROM billing_input_stream")
        described = con.execute("DESCRIBE billing_input").fetchall()
    return {row[0]: row[1] for row in described}
