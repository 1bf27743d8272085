"""Reconciling per hour where the bill has hours: Snowflake's hourly metering (a warehouse idle at 03:00
and busy at 10:00), an hourly FOCUS export with a job that ran across two hours beside a job billed per
day, restated hours, and which charge periods an import keeps as an hour. Expected amounts are worked
out by hand in each docstring."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.billing import focus, importer, snowflake_metering
from airflow_cost_provider.billing.scan import DateWindow
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import billing_costs, lines, reconciliations, task_runs
from airflow_cost_provider.pricing.model import Price
from airflow_cost_provider.reconcile.coverage import coverage, idle_pools
from tests.support.billing_rows import nanos, priced_line, reconcile_window, store_try
from tests.support.bills import FOCUS_COLUMNS, charge, cli, run, write_focus

UTC = dt.timezone.utc
DAY = dt.date(2026, 11, 10)
NEXT = DAY + dt.timedelta(days=1)
CREDIT = Price("snowflake", "credits", "credit", Decimal("3"), "USD", "v")


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)


def pools_by_hour(engine) -> dict[tuple[str, int | None], dict]:
    with engine.connect() as conn:
        return {
            (row.pool, row.usage_hour): dict(row._mapping)
            for row in conn.execute(sa.select(reconciliations).where(reconciliations.c.day == DAY))
        }


def by_task(engine) -> dict[str, tuple[int, int | None]]:
    """task id -> (estimate, reconciled amount) of its line, in nano-units."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(task_runs.c.task_id, lines.c.amount_nanos, lines.c.reconciled_nanos).join(
                task_runs, task_runs.c.id == lines.c.task_run_id
            )
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


def snowflake_ledger(url: str):
    """WH_NIGHT metered 1 credit at 03:00 (no query ran) and 2 credits at 10:00, at $3 a credit, imported
    through the metering import's own rows; two queries at 10:05 and 10:20 estimated at 1.0 and 1.4
    credits ($3.00 and $4.20): together more than the hour's 2 credits."""
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    hours = [
        snowflake_metering.WarehouseHour(at(3), at(4), "WH_NIGHT", Decimal(1), Decimal(0)),
        snowflake_metering.WarehouseHour(at(10), at(11), "WH_NIGHT", Decimal(2), Decimal(0)),
    ]
    rows = snowflake_metering.metering_rows(hours, {}, lambda day: CREDIT, "acme")
    collected = importer.read_rows(
        rows, snowflake_metering.SOURCE, "metering", DateWindow(DAY, NEXT), all_services=True
    )
    importer.save(engine, collected, replace_days=True)
    for task, minute, credits in (("a", 5, "1.0"), ("b", 20, "1.4")):
        line = priced_line(
            "snowflake", credits, "credit", Decimal(credits) * 3, "WH_NIGHT", at(10, minute), "credits"
        )
        store_try(engine, "night", task, [line], start=at(10, minute), minutes=5)
    return engine


def test_an_hourly_warehouse_is_idle_at_three_and_its_queries_take_ten_oclock(ledger_url):
    """keep, per hour: 03:00 has no line: its $3.00 is WH_NIGHT's idle line at 03:00. 10:00 ($6.00 for 2
    credits): the queries claim 2.4 credits, all of the hour, so they get all $6.00, split 1.0 : 1.4
    ($2.50 and $3.50). Per day the queries would have claimed 2.4 of 3 credits, $7.20, and folded
    $1.20 of the night's idle hour into them."""
    engine = snowflake_ledger(ledger_url)
    with engine.connect() as conn:
        billed = conn.execute(
            sa.select(billing_costs.c.usage_hour, billing_costs.c.amount_nanos).order_by(
                billing_costs.c.usage_hour
            )
        ).all()
    assert [tuple(row) for row in billed] == [(3, nanos("3")), (10, nanos("6"))]

    reconcile_window(engine, DAY, NEXT, "keep")
    found = pools_by_hour(engine)
    assert sorted(found) == [("WH_NIGHT", 3), ("WH_NIGHT", 10)]
    night, busy = found["WH_NIGHT", 3], found["WH_NIGHT", 10]
    assert (night["basis"], night["lines"], night["billed_nanos"], night["unattributed_nanos"]) == (
        "none",
        0,
        nanos("3"),
        nanos("3"),
    )
    assert (busy["basis"], busy["used_share"], busy["lines"]) == ("quantity", "1", 2)
    assert (busy["attributed_nanos"], busy["unattributed_nanos"]) == (nanos("6"), 0)
    assert by_task(engine) == {"a": (nanos("3"), nanos("2.5")), "b": (nanos("4.2"), nanos("3.5"))}

    (row,) = coverage(engine, DAY, NEXT, "resource")
    assert (row.key, row.billed, row.attributed, row.unattributed) == ("WH_NIGHT", 9, 6, 3)
    assert idle_pools(engine, DAY, NEXT) == [("WH_NIGHT", "USD", Decimal(3), Decimal(9))]

    # a re-run writes the same pools and shares
    before = {key: {**pool, "id": 0, "reconciled_at": 0} for key, pool in found.items()}
    reconcile_window(engine, DAY, NEXT, "keep")
    assert {
        key: {**pool, "id": 0, "reconciled_at": 0} for key, pool in pools_by_hour(engine).items()
    } == before
    assert by_task(engine)["a"] == (nanos("3"), nanos("2.5"))


def test_spread_shares_each_hour_over_its_own_queries(tmp_path):
    """spread, per hour: 10:00's $6.00 goes to its queries as before; 03:00 had none to share it with
    and stays idle (per day, spread gave the queries all $9.00)."""
    engine = snowflake_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    reconcile_window(engine, DAY, NEXT, "spread")
    found = pools_by_hour(engine)
    assert found["WH_NIGHT", 3]["unattributed_nanos"] == nanos("3")
    assert (found["WH_NIGHT", 10]["mode"], found["WH_NIGHT", 10]["unattributed_nanos"]) == ("spread", 0)
    assert {task: amounts[1] for task, amounts in by_task(engine).items()} == {
        "a": nanos("2.5"),
        "b": nanos("3.5"),
    }


NIGHTLY = "arn:aws:glue:us-east-1:123456789012:job/nightly_etl"
DAILY = "arn:aws:glue:us-east-1:123456789012:job/daily_job"
HOUR = dt.timedelta(hours=1)


def glue_bill(path, ten_oclock: str = "0.88", eleven: bool = True):
    """nightly_etl billed per hour (09:00 1 DPU-hour $0.44, 10:00 2 for $0.88, 11:00 1 for $0.44) and
    daily_job per day (2 DPU-hours, $0.88), in one FOCUS file."""
    hourly = [("09", "1", "0.44"), ("10", "2", ten_oclock)] + ([("11", "1", "0.44")] if eleven else [])
    rows = [
        charge(
            f"2026-11-10T{hour}:00:00",
            "AWS",
            "AWS Glue",
            NIGHTLY,
            Decimal(cost),
            quantity=Decimal(dpu),
            unit="DPU-Hour",
            period=HOUR,
        )
        for hour, dpu, cost in hourly
    ]
    rows.append(
        charge("2026-11-10", "AWS", "AWS Glue", DAILY, Decimal("0.88"), quantity=Decimal(2), unit="DPU-Hour")
    )
    return write_focus(path, rows)


def glue_ledger(url: str):
    """A: nightly_etl from 09:30 to 10:30, 2 DPU-hours ($0.88): half in each hour. B: nightly_etl from
    10:10 to 10:40, 0.5 DPU-hour ($0.22). C: daily_job at 10:15, 1 DPU-hour ($0.44)."""
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    for task, resource, seconds, cost, start, end in (
        ("A", "nightly_etl", "7200", "0.88", at(9, 30), at(10, 30)),
        ("B", "nightly_etl", "1800", "0.22", at(10, 10), at(10, 40)),
        ("C", "daily_job", "3600", "0.44", at(10, 15), None),
    ):
        line = priced_line("glue", seconds, "DPU-second", cost, resource, start, until=end, external_id=task)
        store_try(engine, "glue", task, [line], start=start, minutes=60)
    return engine


def test_an_hourly_export_splits_a_job_over_the_hours_it_ran_beside_a_daily_row(tmp_path):
    """Hourly rows per hour, the daily row per day (a mixed day), a line split by the time it spent in
    each hour. nightly_etl 09:00: A's half (1 DPU-hour of 1): all $0.44 to A. 10:00: A's half and B,
    1.5 of 2 DPU-hours: $0.66 split 1 : 0.5 ($0.44, $0.22), $0.22 idle. 11:00: no line, $0.44 idle.
    daily_job's day: C used 1 of 2 DPU-hours: $0.44, $0.44 idle. A is reconciled at $0.88 from two
    hours. Coverage: $2.64 billed, $1.54 attributed, $1.10 idle, exactly."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = glue_ledger(url)
    bill = glue_bill(tmp_path / "focus.csv")
    document = import_and_reconcile(url, bill)
    found = pools_by_hour(engine)
    assert sorted(found, key=str) == sorted(
        [(NIGHTLY, 9), (NIGHTLY, 10), (NIGHTLY, 11), (DAILY, None)], key=str
    )
    expected = {
        (NIGHTLY, 9): ("quantity", 1, "0.44", "0"),
        (NIGHTLY, 10): ("quantity", 2, "0.66", "0.22"),
        (NIGHTLY, 11): ("none", 0, "0", "0.44"),
        (DAILY, None): ("quantity", 1, "0.44", "0.44"),
    }
    for key, (basis, count, attributed, idle) in expected.items():
        pool = found[key]
        assert (pool["basis"], pool["lines"], pool["attributed_nanos"], pool["unattributed_nanos"]) == (
            basis,
            count,
            nanos(attributed),
            nanos(idle),
        ), key
    assert {task: amounts[1] for task, amounts in by_task(engine).items()} == {
        "A": nanos("0.88"),
        "B": nanos("0.22"),
        "C": nanos("0.44"),
    }
    (row,) = document["rows"]
    assert (Decimal(row["billed"]), Decimal(row["attributed"]), Decimal(row["unattributed"])) == (
        Decimal("2.64"),
        Decimal("1.54"),
        Decimal("1.10"),
    )
    # A's two hourly shares are its reconciled amount
    with engine.connect() as conn:
        shares = conn.execute(
            sa.text(
                "SELECT r.usage_hour, s.amount_nanos FROM cost_line_reconciliations s "
                "JOIN cost_reconciliations r ON r.id = s.reconciliation_id "
                "JOIN cost_usage u ON u.id = (SELECT usage_id FROM cost_lines WHERE id = s.line_id) "
                "WHERE u.external_id = 'A' ORDER BY r.usage_hour"
            )
        ).all()
    assert [tuple(share) for share in shares] == [(9, nanos("0.44")), (10, nanos("0.44"))]


def test_a_resource_whose_day_is_not_all_hourly_is_reconciled_per_day(tmp_path):
    """A daily credit of -0.16 on nightly_etl beside its hourly usage: its day is one pool of 1.60 for
    4 DPU-hours (the credit has no quantity). A and B used 2.5: 1.00 attributed, 0.80 and 0.20 by
    their DPU-hours, 0.60 idle."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = glue_ledger(url)
    bill = glue_bill(tmp_path / "focus.csv")
    with bill.open("a", newline="") as handle:
        credit = charge("2026-11-10", "AWS", "AWS Glue", NIGHTLY, Decimal("-0.16"), category="Credit")
        csv.DictWriter(handle, fieldnames=FOCUS_COLUMNS).writerow(credit)
    import_and_reconcile(url, bill)
    pool = pools_by_hour(engine)[NIGHTLY, None]
    assert (pool["billed_nanos"], pool["attributed_nanos"], pool["unattributed_nanos"]) == (
        nanos("1.60"),
        nanos("1.00"),
        nanos("0.60"),
    )
    assert not [key for key in pools_by_hour(engine) if key[1] is not None]
    found = by_task(engine)
    assert (found["A"][1], found["B"][1]) == (nanos("0.80"), nanos("0.20"))


def import_and_reconcile(url: str, bill, *flags: str) -> dict:
    run("import-billing", "--ledger", url, "--format", "focus", "--path", str(bill), *flags)
    return cli("reconcile", "--ledger", url, "--since", "2026-11-10", "--until", "2026-11-11", "-o", "json")


def test_a_restated_day_replaces_all_its_hours(tmp_path):
    """The export restated: 10:00 billed $1.00 and 11:00 gone. Imported with --replace-days the day's
    hours are the new ones; reconciled again, 10:00's $1.00 x 1.5 / 2 = $0.75 goes to A and B 1 : 0.5,
    and no pool of 11:00 is left."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = glue_ledger(url)
    import_and_reconcile(url, glue_bill(tmp_path / "focus.csv"), "--replace-days")
    import_and_reconcile(url, glue_bill(tmp_path / "restated.csv", "1.00", eleven=False), "--replace-days")
    with engine.connect() as conn:
        hours = conn.execute(
            sa.select(billing_costs.c.usage_hour)
            .where(billing_costs.c.resource_id == NIGHTLY)
            .order_by(billing_costs.c.usage_hour)
        ).scalars()
        assert list(hours) == [9, 10]
    found = pools_by_hour(engine)
    assert (NIGHTLY, 11) not in found
    assert (found[NIGHTLY, 10]["attributed_nanos"], found[NIGHTLY, 10]["unattributed_nanos"]) == (
        nanos("0.75"),
        nanos("0.25"),
    )
    assert {task: amounts[1] for task, amounts in by_task(engine).items()} == {
        "A": nanos("0.44") + nanos("0.5"),
        "B": nanos("0.25"),
        "C": nanos("0.44"),
    }


def test_which_charge_periods_are_kept_as_an_hour():
    """An hour, or part of one, keeps its hour; a period over two hours, a day, a month or an
    instant is the day's, and so is storage's hour (storage is billed and reported per day)."""
    start = dt.datetime(2026, 11, 10, 10, tzinfo=UTC)
    periods = {
        "hour": (start, start + HOUR, 10),
        "part of an hour": (start + dt.timedelta(minutes=15), start + dt.timedelta(minutes=45), 10),
        "the last hour": (start.replace(hour=23), start.replace(hour=23) + HOUR, 23),
        "across two hours": (start + dt.timedelta(minutes=30), start + dt.timedelta(minutes=90), None),
        "day": (start.replace(hour=0), start.replace(hour=0) + dt.timedelta(days=1), None),
        "instant": (start, start, None),
    }
    rows = [
        focus.FocusRow(
            BillingAccountId="123456789012",
            BilledCost=Decimal("1"),
            BillingCurrency="USD",
            ChargePeriodStart=begin,
            ChargePeriodEnd=end,
            ChargeCategory=focus.USAGE,
            ServiceName="AWS Glue",
            ResourceId=name,
            SkuId="sku",
            x_Provider="aws",
        )
        for name, (begin, end, _) in periods.items()
    ]
    rows.append(dataclasses.replace(rows[0], ServiceName="Amazon S3", ResourceId="bucket"))
    periods["bucket"] = (start, start + HOUR, None)
    collected = importer.read_rows(rows, "focus", "rows", all_services=True)
    assert {cost.resource_id: cost.usage_hour for cost in collected.billing_costs} == {
        name: hour for name, (_, _, hour) in periods.items()
    }
    # an hourly row's key carries its hour; a day's is the key it always had
    keys = {cost.resource_id: cost.row_key for cost in collected.billing_costs}
    assert len(set(keys.values())) == len(keys)


def test_a_filled_0009_ledger_upgrades_with_whole_days_and_downgrades_its_hours_into_days(ledger_url):
    """Upgrading keeps every earlier row as a whole day (NULL hour) and reconciles it as before;
    downgrading sums a day's hourly rows into one row of the day under the key it had before hours
    (so the older package's imports replace it), and keeps the reconciled pools as rows of their day."""
    from airflow_cost_provider.billing.scan import row_key
    from tests.support.billing_rows import add_billed
    from tests.unit.test_ledger import migrate_to

    migrate_to(ledger_url, "0009")
    engine = sa.create_engine(ledger_url)
    add_billed(engine, DAY, "WH_OLD", "9", provider="snowflake", quantity="3", unit="Credits")
    engine.dispose()
    engine = store.get_engine(ledger_url)  # migrates to head
    assert store.schema_revision(engine) == "0011"
    line = priced_line("snowflake", "1", "credit", "3", "WH_OLD", at(10), "credits")
    store_try(engine, "old", "q", [line], start=at(10))
    reconcile_window(engine, DAY, NEXT)
    assert pools_by_hour(engine)["WH_OLD", None]["attributed_nanos"] == nanos("3")

    # hourly metering beside it, reconciled per hour
    engine = snowflake_ledger(ledger_url)
    reconcile_window(engine, DAY, NEXT)
    assert {key for key in pools_by_hour(engine)} == {("WH_OLD", None), ("WH_NIGHT", 3), ("WH_NIGHT", 10)}
    shares_query = sa.text("SELECT line_id, reconciliation_id, amount_nanos FROM cost_line_reconciliations")
    with engine.connect() as conn:
        shares = sorted(conn.execute(shares_query).all())
    assert len(shares) == 3
    store.dispose_engines()

    migrate_to(ledger_url, "0009", down=True)
    engine = sa.create_engine(ledger_url)
    try:
        for table in ("cost_billing_costs", "cost_reconciliations"):
            assert "usage_hour" not in {c["name"] for c in sa.inspect(engine).get_columns(table)}
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT resource_id, row_key, amount_nanos, list_nanos, quantity, source_rows, day, provider, "
                    "billing_account, service, sku, usage_class, currency FROM cost_billing_costs ORDER BY resource_id"
                )
            ).all()
            pools = conn.execute(sa.text("SELECT sum(billed_nanos) FROM cost_reconciliations")).scalar()
            assert sorted(conn.execute(shares_query).all()) == shares  # the lines keep their shares
    finally:
        engine.dispose()
    night = rows[0]
    assert (str(night.day), night.provider, night.billing_account, night.sku) == (
        str(DAY),
        "snowflake",
        "acme",
        "compute",
    )
    night_key = row_key(
        DAY, "snowflake", "acme", night.service, "WH_NIGHT", "compute", night.usage_class, "USD", None
    )
    assert [(*row[:4], Decimal(row[4]), row[5]) for row in rows] == [
        ("WH_NIGHT", night_key, nanos("9"), nanos("9"), 3, 2),
        ("WH_OLD", rows[1][1], nanos("9"), None, 3, 1),
    ]
    assert int(pools) == nanos("18")

    # and up again: the rolled-up day is a day, reconciled per day
    engine = store.get_engine(ledger_url)
    reconcile_window(engine, DAY, NEXT)
    assert {key for key in pools_by_hour(engine)} == {("WH_OLD", None), ("WH_NIGHT", None)}
    assert pools_by_hour(engine)["WH_NIGHT", None]["attributed_nanos"] == nanos("7.2")  # 2.4 of 3 credits
