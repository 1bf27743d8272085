"""What an import says besides its errors: files without rows and negative Usage costs in its
summary; no password in any message; which extra to install for a cloud's URLs."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_cost_provider.billing import samples
from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError, redact
from airflow_cost_provider.billing.files import fetched
from airflow_cost_provider.billing.importer import read_files, save
from airflow_cost_provider.billing.registry import file_format
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from tests.support.airflow_env import ledger_rows

CHARGES = samples.sample_charges(dt.date(2026, 3, 1), 3)  # the third day has a correction
STORAGE = {"Amazon Simple Storage Service", "Cloud Storage", "Storage Accounts"}


@pytest.fixture
def ledger(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def focus_csv(tmp_path, name="focus.csv") -> tuple[list[str], list[dict[str, str]]]:
    path = samples.write_focus(CHARGES, tmp_path / name)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def write_csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def stored_costs(url) -> int:
    return ledger_rows(url, "SELECT count(*) AS n FROM cost_storage_costs")[0]["n"]


# ---------------------------------------------------------------- the summary


def test_files_without_rows_are_named_in_the_summary(tmp_path, ledger, capsys):
    header, rows = focus_csv(tmp_path)
    good = write_csv(tmp_path / "good.csv", header, rows)
    empty_csv = write_csv(tmp_path / "a.csv", header, [])
    empty_parquet = tmp_path / "b.parquet"
    pq.write_table(pa.table({name: pa.array([], pa.string()) for name in header}), empty_parquet)
    code, out, err = run(
        capsys,
        "import-storage",
        "--format",
        "focus",
        *("--path", str(good), "--path", str(empty_csv), "--path", str(empty_parquet)),
        "--ledger",
        ledger,
    )
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    assert out.strip().endswith(f"; 2 files with no rows: {empty_csv}, {empty_parquet}")
    assert f"of {len(rows):,} rows from 3 files (focus)" in out
    assert stored_costs(ledger) > 0  # reported, not refused


def test_an_import_of_only_a_header_says_so(tmp_path, ledger, capsys):
    header, _ = focus_csv(tmp_path)
    empty = write_csv(tmp_path / "a.csv", header, [])
    code, out, _ = run(
        capsys, "import-storage", "--format", "focus", "--path", str(empty), "--ledger", ledger
    )
    assert code == 0
    assert out.strip() == (
        "imported 0 of 0 rows from 1 file (focus) into 0 daily storage costs, no billing days, nothing; "
        f"skipped 0; 1 file with no rows: {empty}"
    )


def test_usage_rows_with_a_negative_cost_are_counted_in_the_summary(tmp_path, ledger, capsys):
    header, rows = focus_csv(tmp_path)
    usage = [
        r
        for r in rows
        if r["ServiceName"] in STORAGE and r["ChargeCategory"] == "Usage" and not r["ChargeClass"]
    ]
    for row in usage[:3]:
        row["BilledCost"] = "-" + row["BilledCost"]
    # not counted: a correction (it reverses a charge), another service's row (skipped)
    usage[3]["BilledCost"], usage[3]["ChargeClass"] = "-" + usage[3]["BilledCost"], "Correction"
    other = next(
        r
        for r in rows
        if r["ServiceName"] not in STORAGE
        and "storageaccounts" not in r["ResourceId"].lower()  # Azure's bandwidth of an account is storage
        and r["ChargeCategory"] == "Usage"
    )
    other["BilledCost"] = "-1.5"
    path = write_csv(tmp_path / "negative.csv", header, rows)
    code, out, err = run(
        capsys, "import-storage", "--format", "focus", "--path", str(path), "--ledger", ledger
    )
    assert code == 0, err
    assert out.strip().endswith("; 3 Usage rows with negative cost")
    assert stored_costs(ledger) > 0

    fmt = file_format("focus")
    with fetched([str(path)], fmt.accepts) as files:
        collected = read_files(fmt, files)
    summary = save(store.get_engine(ledger), collected)
    assert summary.as_dict()["negative_usage_rows"] == 3
    assert summary.as_dict()["empty_files"] == []


def test_credits_and_corrections_are_no_warning(tmp_path, ledger, capsys):
    corrections = [c for c in CHARGES if c.charge_class == "Correction"]
    assert any(c.credits for c in CHARGES) and corrections and all(c.billed() < 0 for c in corrections)
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    code, out, _ = run(capsys, "import-storage", "--format", "focus", "--path", str(path), "--ledger", ledger)
    assert code == 0
    assert "negative" not in out and "no rows" not in out


# ---------------------------------------------------------------- no passwords


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("cannot read postgresql://user:p@ss@host/db", "cannot read postgresql://***@host/db"),
        ("postgresql://user:pw@host:5432/db failed", "postgresql://user:***@host:5432/db failed"),
        (
            'endpoint "http://minio:s3cr3t@@minio:9000/bucket?x=1"',
            'endpoint "http://***@minio:9000/bucket?x=1"',
        ),
        ("redis://:p@ss@cache:6379/0", "redis://***@cache:6379/0"),
        # no password: kept as it is
        (
            "abfss://billing@acct.dfs.core.windows.net/x.csv",
            "abfss://billing@acct.dfs.core.windows.net/x.csv",
        ),
        ("s3://exports/focus/part@1.csv", "s3://exports/focus/part@1.csv"),
    ],
)
def test_passwords_in_urls_are_masked(text, shown):
    assert redact(text) == shown


def test_no_error_shows_a_password(tmp_path):
    error = BillingDataError("s3://AKIA:p@ss@exports/x.csv", "cannot open mysql://u:p@ss@db/x", row=3)
    source = BillingSourceError("connection postgresql://user:p@ss@host/db refused")
    for message in (str(error), error.file, error.problem, str(source)):
        assert "p@ss" not in message and "ss@" not in message and "***@" in message


def test_a_connection_endpoint_with_a_raw_at_in_its_password_is_masked(tmp_path, ledger, capsys, monkeypatch):
    """An endpoint_url with user:password, the password holding a raw @: the SDK's error names it."""
    endpoint = "http://minio:p@ss@127.0.0.1:1"  # nothing listens on port 1
    connection = {
        "conn_type": "aws",
        "login": "AKIAEXAMPLE",
        "password": "fake",
        "extra": {"endpoint_url": endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, out, err = run(
        capsys, "import-storage", "--format", "focus", "--path", "s3://exports/focus/", "--ledger", ledger
    )
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert "error: s3://exports/focus/: cannot be listed: EndpointConnectionError: " in message
    assert "http://***@127.0.0.1:1/" in message
    assert "p@ss" not in out + err and "ss@127" not in out + err and "minio:" not in out + err


# ---------------------------------------------------------------- the extras of each cloud

PROVIDERS = {
    "s3://exports/focus/": ("airflow.providers.amazon", "s3", "apache-airflow-providers-amazon", "amazon"),
    "gs://exports/focus/": ("airflow.providers.google", "gs", "apache-airflow-providers-google", "google"),
    "abfss://billing@acct.dfs.core.windows.net/focus/": (
        "airflow.providers.microsoft.azure",
        "abfss",
        "apache-airflow-providers-microsoft-azure",
        "microsoft-azure",
    ),
}


@pytest.mark.parametrize("url", PROVIDERS)
def test_a_cloud_url_without_its_provider_says_which_extra_to_install(ledger, capsys, monkeypatch, url):
    module, scheme, package, extra = PROVIDERS[url]
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    code, out, err = run(capsys, "import-storage", "--format", "focus", "--path", url, "--ledger", ledger)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].endswith(
        f"error: reading {scheme}:// URLs needs the Airflow provider {package}, which is not installed: "
        f"pip install 'airflow-cost-provider[{extra}]'"
    )
    assert "ModuleNotFoundError" not in err and "Traceback" not in err


def test_a_library_the_provider_needs_is_named(monkeypatch):
    from airflow_cost_provider.billing.files import store_for

    monkeypatch.setitem(sys.modules, "botocore.config", None)
    with pytest.raises(BillingSourceError) as caught:
        store_for("s3://exports/focus/")
    assert str(caught.value) == (
        "reading s3:// URLs needs the Airflow provider apache-airflow-providers-amazon, which is not "
        "installed (no module botocore.config): pip install 'airflow-cost-provider[amazon]'"
    )


def test_the_api_sources_say_which_extra_to_install(monkeypatch):
    from airflow_cost_provider.billing.aws_cost_explorer import CostExplorer
    from airflow_cost_provider.billing.azure_cost_management import CostManagementClient
    from airflow_cost_provider.billing.gcp_billing_export import query_export
    from airflow_cost_provider.billing.scan import DateWindow

    for module in PROVIDERS.values():
        monkeypatch.setitem(sys.modules, module[0], None)
    window = DateWindow(dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    calls = {
        "amazon": lambda: CostExplorer("aws_default").client,
        "google": lambda: query_export("p.d.gcp_billing_export_v1_X", window),
        "microsoft-azure": lambda: CostManagementClient("azure_default")._connect(),
    }
    for extra, call in calls.items():
        with pytest.raises(BillingSourceError) as caught:
            call()
        assert str(caught.value).endswith(
            f"which is not installed: pip install 'airflow-cost-provider[{extra}]'"
        )


def test_the_summary_shows_each_total_exactly_never_a_small_bill_as_zero():
    from decimal import Decimal

    from airflow_cost_provider.billing.importer import ImportSummary

    summary = ImportSummary(
        import_id=1,
        source="focus",
        files=["bill.csv"],
        rows_read=3,
        rows_imported=3,
        skipped={},
        costs_written=1,
        days=[dt.date(2026, 12, 5)],
        totals={"EUR": Decimal("1234.5")},
        billing_costs_written=2,
        billing_totals={"USD": Decimal("0.000454788")},
    )
    assert summary.one_line() == (
        "imported 3 of 3 rows from 1 file (focus) into 2 daily billing costs, 2026-12-05 .. 2026-12-05, "
        "0.000454788 USD (storage: 1 daily storage costs, 1,234.50 EUR); skipped 0"
    )
