"""`airflow-cost export --format focus`: ledger rows as FOCUS 1.2 rows (costs, quantities and unit
prices exact, tags, estimated vs reconciled, unpriced left out and counted), storage costs as their
own rows, the totals of `airflow-cost report`, and bad input refused before anything is written."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_cost_provider.billing import samples
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.export.focus import focus_unit
from airflow_cost_provider.ledger import store
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.pricing.estimate import estimate
from airflow_cost_provider.pricing.price_book import PriceBook
from airflow_cost_provider.result import CostResult

UTC = dt.timezone.utc
END = dt.datetime(2026, 11, 20, 6, 0, 0, 250000, tzinfo=UTC)
PERIOD = ("--since", "2026-11-01", "--until", "2026-12-01")


def priced(source, metric, quantity, unit, price, price_unit, currency="USD", status="estimated"):
    """A cost line priced the way the tracker prices one: through estimate()."""
    price_entry = Price(
        source,
        metric,
        price_unit,
        Decimal(price),
        currency,
        "2026.11.0",
        source_url=f"https://{source}.example",
    )
    usage = Usage(
        source,
        metric,
        Decimal(quantity),
        unit,
        resource=f"{source}-resource",
        external_id=f"{source}-job-1",
        start_time=END - dt.timedelta(seconds=30, microseconds=400000),
        end_time=END,
    )
    line = estimate(usage, PriceBook("2026.11.0", (price_entry,), {}))
    assert isinstance(line, CostLine), line
    return CostLine(line.usage, line.amount, line.currency, line.method, line.price, status)


def try_result(task, lines, unpriced=(), end=END, team="marketing", labels=(("product", "crm"),)):
    task_try = TaskTry(
        "sales", task, "manual__1", 1, -1, None, owner="ana", team=team, dag_tags=("nightly",), labels=labels
    )
    missing = tuple(
        Unpriced(Usage("postgres", "instance_time", Decimal(5), "second"), "no price") for _ in unpriced
    )
    return CostResult(
        task_try, f"capture-{task}", "success", end - dt.timedelta(minutes=1), end, "w", tuple(lines), missing
    )


@pytest.fixture
def filled(ledger_url):
    engine = store.get_engine(ledger_url)
    store.store(
        engine,
        try_result(
            "extract",
            [
                priced("airflow_worker", "cpu_time", "1.234567", "vCPU-second", "0.04048", "vCPU-hour"),
                priced("bigquery", "bytes_billed", "123456789", "byte", "6.25", "TiB"),
                priced("bigquery", "slot_time", "5000", "slot-ms", "0.04", "slot-hour", currency="EUR"),
            ],
            unpriced=["postgres", "postgres"],
        ),
    )
    store.store(
        engine,
        try_result(
            "load",
            [priced("snowflake", "credits", "0.5", "credit", "3.00", "credit", status="reconciled")],
            team=None,
            labels=(),
        ),
    )
    # outside the period: not exported
    store.store(
        engine,
        try_result(
            "old", [priced("athena", "data_scanned", "1", "TB", "5", "TB")], end=END - dt.timedelta(days=60)
        ),
    )
    return ledger_url


@pytest.fixture
def sqlite_ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(url)
    store.store(
        engine,
        try_result(
            "extract", [priced("athena", "data_scanned", "0.25", "TB", "5.00", "TB")], unpriced=["postgres"]
        ),
    )
    return url


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def export(ledger: str, path: Path, *period: str) -> str:
    code, out, err = run(
        "export", "--format", "focus", *(period or PERIOD), "--output", str(path), "--ledger", ledger
    )
    assert code == 0, err
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_each_priced_line_is_one_row_with_exact_costs_units_and_prices(filled, tmp_path):
    out = export(filled, tmp_path / "costs.csv")
    rows = {(r["x_TaskId"], r["x_Metric"]): r for r in read_csv(tmp_path / "costs.csv")}
    assert set(rows) == {
        ("extract", "cpu_time"),
        ("extract", "bytes_billed"),
        ("extract", "slot_time"),
        ("load", "credits"),
    }
    cpu = rows["extract", "cpu_time"]
    # 1.234567 vCPU-seconds at 0.04048 USD per vCPU-hour, rounded once to the nano-unit
    expected = (Decimal("1.234567") / 3600 * Decimal("0.04048")).quantize(Decimal("1e-9"))
    assert {cpu[c] for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")} == {str(expected)}
    assert (cpu["ConsumedQuantity"], cpu["ConsumedUnit"]) == ("1.234567", "vCPU-Seconds")
    assert (cpu["PricingUnit"], cpu["ListUnitPrice"]) == ("vCPU-Hours", "0.04048")
    for row in rows.values():
        product = Decimal(row["PricingQuantity"]) * Decimal(row["ListUnitPrice"])
        assert abs(product - Decimal(row["ListCost"])) <= Decimal("0.5e-9"), row
    slot = rows["extract", "slot_time"]
    # milliseconds are not a FOCUS unit: the same usage in seconds
    # a whole quantity keeps a decimal point: CSV readers that infer types take it for a decimal
    assert (slot["ConsumedQuantity"], slot["ConsumedUnit"], slot["BillingCurrency"]) == (
        "5.0",
        "slot-Seconds",
        "EUR",
    )
    assert (
        cpu["ChargeCategory"] == "Usage"
        and cpu["ChargeFrequency"] == "Usage-Based"
        and cpu["ChargeClass"] == ""
    )
    assert (cpu["ServiceName"], cpu["ServiceCategory"], cpu["ProviderName"]) == (
        "Airflow worker",
        "Compute",
        "Airflow worker",
    )
    assert (
        rows["extract", "bytes_billed"]["ServiceName"],
        rows["extract", "bytes_billed"]["ProviderName"],
    ) == (
        "BigQuery",
        "Google Cloud",
    )
    assert (
        cpu["SkuId"] == "airflow_worker/cpu_time" and cpu["SkuPriceId"] == "2026.11.0:airflow_worker/cpu_time"
    )
    assert cpu["x_PriceSource"] == "https://airflow_worker.example" and cpu["x_CostMethod"] == "list_price"
    assert (cpu["ResourceId"], cpu["x_ExternalId"], cpu["x_CaptureId"]) == (
        "airflow_worker-resource",
        "airflow_worker-job-1",
        "capture-extract",
    )
    # whole seconds: the usage's start floored, its end raised; the billing period is the month
    assert (cpu["ChargePeriodStart"], cpu["ChargePeriodEnd"]) == (
        "2026-11-20T05:59:29Z",
        "2026-11-20T06:00:01Z",
    )
    assert (cpu["BillingPeriodStart"], cpu["BillingPeriodEnd"]) == (
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    # estimated and reconciled told apart
    assert {k[1]: r["x_CostStatus"] for k, r in rows.items()} == {
        "cpu_time": "estimated",
        "bytes_billed": "estimated",
        "slot_time": "estimated",
        "credits": "reconciled",
    }
    assert "(reconciled)" in rows["load", "credits"]["ChargeDescription"]
    assert "Left out: 2 unpriced lines" in out
    assert "Wrote 4 FOCUS 1.2 rows (4 task cost lines, 0 storage costs)" in out


def test_tags_carry_the_identity_team_owner_labels_and_dag_tags(filled, tmp_path):
    export(filled, tmp_path / "costs.csv")
    rows = {r["x_TaskId"]: r for r in read_csv(tmp_path / "costs.csv")}
    assert json.loads(rows["extract"]["Tags"]) == {
        "airflow/dag_id": "sales",
        "airflow/task_id": "extract",
        "airflow/owner": "ana",
        "airflow/team": "marketing",
        "airflow-dag-tag/nightly": True,
        "product": "crm",
    }
    assert "airflow/team" not in json.loads(rows["load"]["Tags"])  # no team: no tag, not "(none)"
    assert (rows["extract"]["x_Team"], rows["extract"]["x_Owner"], rows["load"]["x_Team"]) == (
        "marketing",
        "ana",
        "",
    )
    assert (rows["extract"]["x_DagId"], rows["extract"]["x_RunId"], rows["extract"]["x_TryNumber"]) == (
        "sales",
        "manual__1",
        "1",
    )


def test_totals_equal_the_report_and_the_parquet_file_holds_the_same_exact_numbers(filled, tmp_path):
    out = export(filled, tmp_path / "costs.parquet")
    code, report_out, err = run("report", "--ledger", filled, *PERIOD, "-o", "json")
    assert code == 0, err
    report_totals = {
        t["currency"]: Decimal(t["amount"]) for t in json.loads(report_out)["total"] if t["currency"]
    }
    table = pq.read_table(tmp_path / "costs.parquet")
    assert table.schema.field("BilledCost").type == pa.decimal128(38, 9)
    assert table.schema.field("PricingQuantity").type == pa.decimal128(38, 18)
    start_type = table.schema.field("ChargePeriodStart").type
    assert pa.types.is_timestamp(start_type) and start_type.tz == "UTC"  # Parquet keeps seconds as ms
    totals: dict[str, Decimal] = {}
    for currency, amount in zip(
        table.column("BillingCurrency").to_pylist(), table.column("BilledCost").to_pylist(), strict=True
    ):
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    assert totals == report_totals and len(report_totals) == 2
    # the command says the same totals
    for currency, amount in report_totals.items():
        assert any(
            line.split()[:1] == [currency] and line.split()[-1] == str(amount) for line in out.splitlines()
        ), out
    export(filled, tmp_path / "costs.csv")
    csv_rows = read_csv(tmp_path / "costs.csv")
    assert sorted(Decimal(r["BilledCost"]) for r in csv_rows) == sorted(
        table.column("BilledCost").to_pylist()
    )


def test_storage_costs_are_their_own_rows_with_their_billing_data(sqlite_ledger, tmp_path):
    charges = samples.sample_charges(dt.date(2026, 11, 28), 5)
    sample = samples.write_focus(charges, tmp_path / "billing" / "focus.csv")
    assert (
        run("import-storage", "--format", "focus", "--path", str(sample), "--ledger", sqlite_ledger)[0] == 0
    )
    export(sqlite_ledger, tmp_path / "costs.csv")
    rows = read_csv(tmp_path / "costs.csv")
    storage = [r for r in rows if r["x_RowKind"] == "storage"]
    code, report_out, _ = run(
        "report", "storage", "--ledger", sqlite_ledger, *PERIOD, "--by", "day", "-o", "json"
    )
    expected = {t["currency"]: Decimal(t["amount"]) for t in json.loads(report_out)["total"]}
    totals: dict[str, Decimal] = {}
    for row in storage:
        totals[row["BillingCurrency"]] = totals.get(row["BillingCurrency"], Decimal(0)) + Decimal(
            row["BilledCost"]
        )
    assert totals == expected and storage
    # billing days from 2026-11-28 to 2026-11-30: December's are outside the period
    assert {r["ChargePeriodStart"][:10] for r in storage} == {"2026-11-28", "2026-11-29", "2026-11-30"}
    assert {r["ServiceCategory"] for r in storage} == {"Storage"}
    assert {r["x_CostStatus"] for r in storage} == {"reconciled"}
    taxes = [r for r in storage if r["x_UsageClass"] == "tax"]
    assert taxes and all(r["ChargeCategory"] == "Tax" and r["PricingQuantity"] == "" for r in taxes)
    assert {r["x_Provider"] for r in storage} == {"aws", "gcp", "azure"}
    assert len([r for r in rows if r["x_RowKind"] == "task"]) == 1


@pytest.mark.parametrize(
    ("unit", "quantity", "expected"),
    [
        ("vCPU-second", "2", ("2", "vCPU-Seconds")),
        ("GiB-month", "1.5", ("1.5", "GiB-Months")),
        ("slot-ms", "1500", ("1.5", "slot-Seconds")),
        ("GB-Mo", "3", ("3", "GB-Months")),
        ("1 GB/Month", "3", ("3", "GB-Months")),
        ("byte-seconds", "7", ("7", "B-Seconds")),
        ("bytes", "7", ("7", "bytes")),
        ("activity_run", "1", ("1", "activity run")),
        ("10K", "4", ("4", "10000 Units")),
        ("TB", "1", ("1", "TB")),
        ("second", "9", ("9", "Seconds")),
    ],
)
def test_units_are_written_as_focus_units(unit, quantity, expected):
    converted, focus = focus_unit(Decimal(quantity), unit)
    assert (str(converted.normalize()), focus) == expected


def test_bad_input_is_one_line_and_writes_nothing(sqlite_ledger, tmp_path):
    target = tmp_path / "costs.csv"
    cases = [
        (
            ("--since", "2026-12-01", "--until", "2026-11-01", "--output", str(target)),
            "is not before --until",
        ),
        (("--output", str(tmp_path / "costs.json")), "must end in .csv or .parquet"),
        (("--output", str(tmp_path / "missing" / "costs.csv")), "does not exist"),
        (("--output", str(tmp_path)), "must end in .csv or .parquet"),
    ]
    (tmp_path / "file.txt").write_text("x")
    cases.append((("--output", str(tmp_path / "file.txt" / "costs.csv")), "does not exist"))
    for args, message in cases:
        code, out, err = run("export", "--format", "focus", "--ledger", sqlite_ledger, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == "", (args, err)
    code, _, err = run("export", "--format", "cur", "--output", str(target), "--ledger", sqlite_ledger)
    assert code == 2 and "invalid choice: 'cur'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(
        "export",
        "--format",
        "focus",
        "--output",
        str(target),
        "--ledger",
        f"sqlite:///{tmp_path / 'none.db'}",
    )
    assert code == 2 and err.startswith("airflow-cost export: error:")
    assert not [p.name for p in tmp_path.iterdir() if "costs" in p.name or p.name.startswith(".")]


def test_a_failed_write_leaves_the_previous_file_whole(sqlite_ledger, tmp_path, monkeypatch):
    from airflow_cost_provider.export import focus

    target = tmp_path / "costs.csv"
    export(sqlite_ledger, target)
    before = target.read_bytes()

    def broken(export, path):
        path.write_text("BilledCost\n0.1")  # half a file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(focus, "_write_csv", broken)
    code, out, err = run(
        "export", "--format", "focus", *PERIOD, "--output", str(target), "--ledger", sqlite_ledger
    )
    assert code == 2 and "cannot write it: No space left on device" in err
    assert target.read_bytes() == before
    # no temporary file left
    assert [p.name for p in tmp_path.iterdir() if "costs" in p.name or p.name.startswith(".")] == [
        "costs.csv"
    ]
