"""`airflow-cost import-storage` and `airflow-cost report storage`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import samples
from airflow_cost_provider.cli import imports as cli
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store

START = dt.date(2026, 4, 1)
CHARGES = samples.sample_charges(START, 3)


@pytest.fixture
def ledger(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_prints_one_line_with_what_was_imported_and_skipped(tmp_path, ledger, capsys):
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    code, out, err = run(
        capsys, "import-storage", "--format", "focus", "--path", str(path), "--ledger", ledger
    )
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    others = sum(1 for c in CHARGES if not c.is_storage)
    storage_rows = sum(1 + len(c.credits) for c in CHARGES if c.is_storage)
    assert f"imported {storage_rows:,} of {storage_rows + others:,} rows from 1 file (focus)" in out
    assert f"skipped {others:,} (not_storage {others:,})" in out
    assert "2026-04-01 .. 2026-04-03" in out and " EUR" in out and " USD" in out


def test_several_paths_and_formats(tmp_path, ledger, capsys):
    cur = samples.write_cur(CHARGES, tmp_path / "cur" / "part-1.parquet")
    code, out, _ = run(
        capsys, "import-storage", "--format", "aws-cur", "--path", str(cur.parent), "--ledger", ledger
    )
    assert code == 0 and "from 1 file (aws-cur)" in out
    gcp = samples.write_gcp_export(CHARGES, tmp_path / "gcp.jsonl")
    azure = samples.write_azure_focus(CHARGES, tmp_path / "azure.csv.gz", "csv.gz")
    assert (
        run(
            capsys, "import-storage", "--format", "gcp-billing-export", "--path", str(gcp), "--ledger", ledger
        )[0]
        == 0
    )
    assert (
        run(capsys, "import-storage", "--format", "azure-export", "--path", str(azure), "--ledger", ledger)[0]
        == 0
    )
    code, out, _ = run(
        capsys, "report", "storage", "--since", "2026-04-01", "--format", "json", "--ledger", ledger
    )
    providers = {r["provider"] for r in json.loads(out)["rows"]}
    assert providers == {"aws", "gcp", "azure"}


def test_report_rows_by_resource_service_usage_class_and_day(tmp_path, ledger, capsys):
    path = samples.write_focus(CHARGES, tmp_path / "focus.parquet", "parquet")
    assert run(capsys, "import-storage", "--format", "focus", "--path", str(path), "--ledger", ledger)[0] == 0
    since = ("--since", "2026-04-01", "--until", "2026-04-04", "--ledger", ledger)

    def rows(*by: str) -> list[dict]:
        code, out, err = run(capsys, "report", "storage", "--by", ",".join(by), "--format", "json", *since)
        assert code == 0, err
        return json.loads(out)["rows"]

    # each grouping rolls up by what its name says, and nothing else
    for by, keys in (
        ("resource", {"provider", "resource_id"}),
        ("service", {"provider", "service"}),
        ("usage-class", {"usage_class"}),
        ("day", {"day"}),
    ):
        found = rows(by)
        assert found and all(set(r) == keys | {"amount", "currency", "credits", "rows"} for r in found)
    by_class = {(r["usage_class"], r["currency"]): r for r in rows("usage-class")}
    expected = sum(
        c.billed() for c in CHARGES if c.is_storage and c.expected_class == "storage" and c.currency == "USD"
    )
    assert abs(Decimal(by_class[("storage", "USD")]["amount"]) - expected) < Decimal("1e-8")
    assert (
        Decimal(by_class[("storage", "USD")]["credits"]) < 0
        and Decimal(by_class[("tax", "USD")]["amount"]) > 0
    )
    assert len({(r["usage_class"], r["currency"]) for r in rows("usage-class")}) == len(by_class)
    raw = {
        r["usage_class"]: r for r in rows("resource", "usage-class") if r["resource_id"] == "acme-raw-events"
    }
    raw_storage = sum(
        c.billed() for c in CHARGES if c.resource_id == "acme-raw-events" and c.expected_class == "storage"
    )
    assert abs(Decimal(raw["storage"]["amount"]) - raw_storage) < Decimal("1e-8")
    by_day = rows("day")
    assert [r["day"] for r in by_day if r["currency"] == "USD"] == ["2026-04-01", "2026-04-02", "2026-04-03"]


def test_csv_keeps_exact_decimals_and_the_table_reads_well(tmp_path, ledger, capsys):
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    run(capsys, "import-storage", "--format", "focus", "--path", str(path), "--ledger", ledger)
    since = ("--since", "2026-04-01", "--ledger", ledger)
    code, out, _ = run(capsys, "report", "storage", "--format", "csv", *since)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows[0].keys() >= {"provider", "resource_id", "amount", "currency", "credits"}
    assert all(re.fullmatch(r"-?\d+\.\d{2,9}", r["amount"]) for r in rows)
    assert len({len(r["amount"].split(".")[1]) for r in rows}) == 1  # one precision down the column
    assert [r["provider"] for r in rows if r["provider"] == "total"] == ["total", "total"]  # EUR, USD
    code, out, _ = run(capsys, "report", "storage", *since)
    lines = out.splitlines()
    header = next(i for i, text in enumerate(lines) if text.startswith("provider"))
    assert lines[header].split() == ["provider", "resource_id", "amount", "currency", "credits", "rows"]
    assert any("acme-raw-events" in line and "USD" in line for line in lines)
    code, out, _ = run(
        capsys, "report", "storage", "--since", "2020-01-01", "--until", "2020-02-01", "--ledger", ledger
    )
    assert "(no storage costs imported for these billing days)" in out
    assert (
        "the ledger has them from 2026-04-01 to 2026-04-03: try --since 2026-04-01 --until 2026-04-04"
        in " ".join(out.split())
    )


def test_task_reports_refuse_storage_groupings(capsys, ledger):
    store.get_engine(ledger)
    code, _, err = run(capsys, "report", "--by", "usage-class", "--ledger", ledger)
    assert code == 2 and "unknown grouping 'usage-class'" in err
    code, _, err = run(capsys, "report", "storage", "--by", "task", "--ledger", ledger)
    assert code == 2 and "unknown grouping 'task'" in err


def test_a_progress_bar_while_a_large_file_is_read(tmp_path, ledger, capsys, monkeypatch):
    monkeypatch.setattr(cli, "LARGE_FILE_BYTES", 0)
    reported: list[tuple[str, float]] = []
    real = cli.RichProgress.scan_started

    def scan_started(self, label, size):
        advance = real(self, label, size)

        def spy(percent):
            reported.append((label, percent))
            advance(percent)

        return spy

    monkeypatch.setattr(cli.RichProgress, "scan_started", scan_started)
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    code, out, _ = run(
        capsys, "import-storage", "--format", "focus", "--path", str(path), "--progress", "--ledger", ledger
    )
    assert code == 0 and out.startswith("imported ")
    assert reported and reported[-1] == (str(path), 100.0)


def test_errors_exit_non_zero_with_a_message(tmp_path, ledger, capsys):
    code, _, err = run(
        capsys,
        "import-storage",
        "--format",
        "focus",
        "--path",
        str(tmp_path / "nope.csv"),
        "--ledger",
        ledger,
    )
    assert code == 2 and "no such file or directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        capsys, "import-storage", "--format", "focus", "--path", str(empty), "--ledger", ledger
    )
    assert code == 1 and "no focus files found" in err
    with pytest.raises(SystemExit):
        main(["import-storage", "--format", "cur3", "--path", "x"])


def test_import_from_an_s3_prefix_through_the_aws_connection(tmp_path, ledger, capsys, monkeypatch):
    from tests.support import fake_aws

    with fake_aws.moto_server() as endpoint:
        s3 = fake_aws.client("s3", endpoint)
        s3.create_bucket(Bucket="exports")
        first = samples.write_focus([c for c in CHARGES if c.day == START], tmp_path / "a.csv")
        rest = samples.write_focus([c for c in CHARGES if c.day != START], tmp_path / "b.parquet", "parquet")
        s3.put_object(Bucket="exports", Key="focus/2026-04/part-1.csv", Body=first.read_bytes())
        s3.put_object(Bucket="exports", Key="focus/2026-04/part-2.parquet", Body=rest.read_bytes())
        s3.put_object(Bucket="exports", Key="focus/2026-04/manifest.json", Body=b"{}")
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", fake_aws.aws_connection(endpoint))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        fetched_bytes: list[int] = []
        real = cli.RichProgress.file_started

        def file_started(self, label, size):
            advance = real(self, label, size)
            return lambda done: (fetched_bytes.append(done), advance(done))

        monkeypatch.setattr(cli.RichProgress, "file_started", file_started)
        code, out, err = run(
            capsys,
            "import-storage",
            "--format",
            "focus",
            "--path",
            "s3://exports/focus/2026-04/",
            "--progress",
            "--ledger",
            ledger,
        )
    assert code == 0, err
    assert "from 2 files (focus)" in out
    assert sum(fetched_bytes) == first.stat().st_size + rest.stat().st_size
    rows = json.loads(
        run(capsys, "report", "storage", "--since", "2026-04-01", "--format", "json", "--ledger", ledger)[1]
    )["rows"]
    assert {r["resource_id"] for r in rows} >= {"acme-raw-events", "projects/_/buckets/acme-lake-us"}
