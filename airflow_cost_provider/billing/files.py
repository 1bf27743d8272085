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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError, provider_required
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
        with provider_required("amazon", "reading s3:// URLs"):
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
        with provider_required("google", "reading gs:// URLs"):
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
        with provider_required("microsoft-azure", "reading abfss:// URLs"):
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

        def listing(path: str) -> list[RemoteObject]:
            try:
                return store(path).list(path)
            except BillingSourceError:
                raise
            except Exception as error:  # an SDK's or a connection's error, credentials masked
                raise BillingSourceError(
                    f"{path}: cannot be listed: {type(error).__name__}: {error}"
                ) from error

        for path in paths:
            if is_remote(path):
                listed = [o for o in listing(path) if accepts(o.url.rsplit("/", 1)[-1])]
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

PARQUET_MARKER = b"PAR1"  # a Parquet file starts and ends with it
_SNIFF_BYTES = 64 * 1024
# pyarrow's null markers but the NaN spellings: a NaN cost is a wrong value, not a missing one
CSV_NULL_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "N/A", "NA", "NULL", "n/a", "null"]
# bytes text never holds (tab, line feed, carriage return and form feed excepted)
_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 32), 127])


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _is_gzip(path: Path) -> bool:
    return _head(path, 2) == b"\x1f\x8b"


def _is_parquet(path: Path) -> bool:
    return _head(path, 4) == PARQUET_MARKER


def is_parquet(file: BillingFile) -> bool:
    return _is_parquet(file.local_path)


def _named_parquet(file: BillingFile) -> bool:
    return file.label.lower().endswith(".parquet")


def _is_binary(sample: bytes) -> bool:
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return b"\x00" in sample or controls > 1 + len(sample) // 100  # a stray ^Z at the end is text


def _not_parquet(path: Path) -> str:
    head = _head(path, _SNIFF_BYTES)
    if not head:
        hint = "the file is empty"
    elif head.startswith(b"\x1f\x8b"):
        hint = "it is gzip data"
    elif _is_binary(head):
        hint = "it holds other binary data"
    else:
        hint = "it holds text: a CSV file?"
    return f"not a Parquet file: it does not start with the Parquet marker PAR1 ({hint})"


def _damaged_parquet(path: Path) -> str | None:
    """Why a file that starts like Parquet is not a whole one (None: it may be)."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < 12:  # marker, footer length, marker
            return "it is too short to be one (cut short?)"
        handle.seek(-4, 2)
        if handle.read(4) != PARQUET_MARKER:
            return "it does not end with the Parquet marker PAR1 (cut short?)"
    return None


def _reason(error: Exception, file: BillingFile) -> str:
    """The first line of a DuckDB or pyarrow error, the local copy's path replaced by the file's name."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = re.sub(r"^[A-Za-z ]+ Error: ", "", text).replace(str(file.local_path), file.label)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)  # a damaged file's bytes


def _gzip_error(error: Exception) -> str:
    text = str(error)
    if isinstance(error, EOFError) or "truncated" in text.lower():
        return "not a readable gzip file: it ends before its end-of-stream marker (cut short?)"
    return f"not a readable gzip file: {text or type(error).__name__}"


def _opener(gzip: bool):
    import gzip as gzip_module

    return gzip_module.open if gzip else open


def _sample(path: Path, label: str, gzip: bool) -> bytes:
    """The first bytes of the (uncompressed) file."""
    import zlib

    try:
        with _opener(gzip)(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as error:
        raise BillingDataError(label, _gzip_error(error)) from None


def _check_text(path: Path, label: str, gzip: bool) -> None:
    """A CSV file is UTF-8 text: say so of binary data, UTF-16 or another encoding, before pyarrow."""
    import codecs

    sample = _sample(path, label, gzip)
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BillingDataError(label, "not UTF-8 text: it is UTF-16 (export or save it as UTF-8 CSV)")
    if _is_binary(sample):
        compressed = "" if gzip or not label.lower().endswith(".gz") else " (and it is not gzip-compressed)"
        raise BillingDataError(label, f"not a CSV file: it holds binary data, not text{compressed}")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(sample) < _SNIFF_BYTES)
    except UnicodeDecodeError:
        raise _utf8_error(path, label, gzip) from None


def _utf8_error(path: Path, label: str, gzip: bool) -> BillingDataError:
    """The row and column of the first byte that is not UTF-8 (the slow path of an error)."""
    with _opener(gzip)(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        header: list[str] = []
        for number, record in enumerate(csv.reader(text)):
            for index, value in enumerate(record):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    byte = ord(value[error.start]) - 0xDC00
                    shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                    return BillingDataError(
                        label,
                        f"byte 0x{byte:02x} is not UTF-8 text (in '{shown[:80]}'): export the file as UTF-8",
                        row=number or None,
                        column=header[index] if number and index < len(header) else None,
                    )
            if not number:
                header = [name.strip() for name in record]
    return BillingDataError(label, "not UTF-8 text: export the file as UTF-8")


def _csv_header(path: Path, gzip: bool) -> list[str]:
    with _opener(gzip)(
        path, "rt", encoding="utf-8-sig", newline=""
    ) as handle:  # Azure's CSVs start with a BOM
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


def _csv_reader(path: Path, label: str, failures: list[BillingDataError]):
    """A stream of record batches, every column as text, plus each row's number.

    An error raised while DuckDB reads the stream reaches the caller as DuckDB's own error: it is
    also appended to `failures`, for `read_error`.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    gzip = _is_gzip(path)
    _check_text(path, label, gzip)
    header = _csv_header(path, gzip)
    if not header or not any(header):
        raise BillingDataError(label, "the file has no header row")
    duplicates = {name for name in header if header.count(name) > 1}
    if duplicates:
        raise BillingDataError(label, "duplicate columns in the header", column=", ".join(sorted(duplicates)))
    invalid = _InvalidRows()

    def failure(error: Exception) -> BillingDataError:
        if isinstance(error, pa.ArrowInvalid) and "invalid utf8" in str(error).lower():
            return _utf8_error(path, label, gzip)
        if isinstance(error, pa.ArrowInvalid):
            return _csv_error(path, label, invalid, error)
        if gzip:
            return BillingDataError(label, _gzip_error(error))
        return BillingDataError(label, f"cannot be read: {error}")

    source = pa.input_stream(str(path), compression="gzip" if gzip else None)
    try:
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(block_size=16 * 1024 * 1024),
            parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid, newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                null_values=CSV_NULL_VALUES,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise failure(error) from error
    schema = reader.schema.append(pa.field(ROW, pa.int64()))

    def batches():
        offset = 0
        try:
            for batch in reader:
                rows = pa.array(range(offset, offset + batch.num_rows), pa.int64())
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, rows], schema=schema)
        except (pa.ArrowInvalid, OSError) as error:
            failures.append(failure(error))
            raise failures[-1] from error

    return pa.RecordBatchReader.from_batches(schema, batches())


def _line_of(path: Path, text: str) -> int | None:
    """The data row (1-based, header excluded) whose line is `text` (the slow path of an error)."""
    with _opener(_is_gzip(path))(path, "rt", encoding="utf-8-sig", newline="") as handle:
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
    except (pa.ArrowInvalid, OSError) as error:
        raise BillingDataError(label, f"not a readable JSON-lines file: {error}") from error
    return table.append_column(ROW, pa.array(range(table.num_rows), pa.int64()))


def register_input(con, file: BillingFile, failures: list[BillingDataError] | None = None) -> dict[str, str]:
    """Make `billing_input` read the file (with ROW numbers); return its columns and DuckDB types.

    A file named .parquet must be Parquet; any other is read as Parquet when it is one (by its first
    bytes), else as JSON lines or CSV by its name. `failures` collects what stopped a CSV stream.
    """
    path = file.local_path
    con.execute("DROP VIEW IF EXISTS billing_input")
    with contextlib.suppress(Exception):
        con.unregister("billing_input_stream")
    if _is_parquet(path):
        if damaged := _damaged_parquet(path):
            raise BillingDataError(file.label, f"not a readable Parquet file: {damaged}")
        literal = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(
                "CREATE TEMP VIEW billing_input AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS {ROW} FROM read_parquet({literal}, file_row_number = true)"
            )
            described = con.execute("DESCRIBE billing_input").fetchall()
        except Exception as error:
            raise BillingDataError(
                file.label, f"not a readable Parquet file: {_reason(error, file)}"
            ) from error
    elif _named_parquet(file):
        raise BillingDataError(file.label, _not_parquet(path))
    else:
        name = path.name.lower()
        if name.endswith(JSON_SUFFIXES):
            stream: Any = _json_table(path, file.label)
        else:
            stream = _csv_reader(path, file.label, [] if failures is None else failures)
        con.register("billing_input_stream", stream)
        con.execute("CREATE TEMP VIEW billing_input AS SELECT * FROM billing_input_stream")
        described = con.execute("DESCRIBE billing_input").fetchall()
    return {row[0]: row[1] for row in described}


def read_error(
    file: BillingFile, error: Exception, failures: list[BillingDataError]
) -> BillingDataError | None:
    """What a DuckDB error raised while the file was scanned says about the file; None when it is
    not the file's (out of memory, interrupted, a bug in our SQL)."""
    import duckdb

    if failures:
        return failures[0]
    not_the_file = (
        duckdb.OutOfMemoryException,
        duckdb.InterruptException,
        duckdb.BinderException,
        duckdb.CatalogException,
        duckdb.ParserException,
        duckdb.InternalException,
    )
    if _is_parquet(file.local_path) and not isinstance(error, not_the_file):
        return BillingDataError(
            file.label, f"not a readable Parquet file: it is damaged ({_reason(error, file)})"
        )
    return None
