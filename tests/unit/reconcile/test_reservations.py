"""BigQuery editions: a reservation's billed slot time split over the jobs that ran on it, each by its
slot-ms (from INFORMATION_SCHEMA per day, else the job's own statistics), the unused slots kept as the
reservation's idle amount; exact to the nano-unit, the same on a re-run."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider import conf
from airflow_cost_provider.billing.bigquery_reservations import JobSlots
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import reconciliations
from airflow_cost_provider.reconcile import store as reconcile_store
from airflow_cost_provider.reconcile.engine import Window, run
from tests.support.billing_rows import add_billed, nanos, priced_line, store_try
from tests.unit.reconcile.test_month import check_every_dollar
from tests.unit.reconcile.test_reconcile import cli, reconciled_lines

DAY = dt.date(2026, 11, 20)
EVE = DAY - dt.timedelta(days=1)
RESERVATION = "projects/acme-admin/locations/US/reservations/etl"
JOB_RESERVATION = "acme-admin:US.etl"
SLOT_HOUR_MS = 3_600_000
PERIOD = ("--since", str(EVE), "--until", str(DAY + dt.timedelta(days=1)))


def job_line(job_id: str, slot_hours: int, at: dt.datetime, reservation: str | None = JOB_RESERVATION):
    """An edition job's line: slot-ms at USD 0.06 a slot-hour, with the reservation jobs.get gave."""
    attributes = {"edition": "enterprise", "job_type": "QUERY"}
    if reservation:
        attributes["reservation_id"] = reservation
    amount = f"{slot_hours * 0.06:.2f}"
    return priced_line(
        "bigquery",
        str(slot_hours * SLOT_HOUR_MS),
        "slot-ms",
        amount,
        "acme-data:US",
        at,
        metric="slot_time",
        external_id=job_id,
        attributes=attributes,
    )


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", raising=False)
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", raising=False)
    conf.clear_cache()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    late = dt.datetime.combine(EVE, dt.time(22), dt.timezone.utc)
    morning = dt.datetime.combine(DAY, dt.time(6), dt.timezone.utc)
    # `merge` started the evening before and ran over midnight: 10 of its 40 slot-hours that evening
    store_try(engine, "sales", "merge", [job_line("job_merge", 40, late)], start=late, minutes=300)
    store_try(engine, "sales", "load", [job_line("job_load", 20, morning)], start=morning)
    # a job on the shared pool of load jobs: no reservation bills it
    store_try(engine, "sales", "copy", [job_line("job_copy", 1, morning, "default-pipeline")], start=morning)
    # the reservation's bill: 100 slot-hours that day, 50 the day before, billed per slot-second
    for day, slot_hours in ((DAY, 100), (EVE, 50)):
        add_billed(
            engine,
            day,
            RESERVATION,
            f"{slot_hours * 0.06:.2f}",
            provider="gcp",
            service="BigQuery",
            sku="BigQuery Enterprise Edition for US (multi-region)",
            quantity=str(slot_hours * 3600),
            unit="seconds",
            account="01A2B3-C4D5E6-F7A8B9",
        )
    yield url
    conf.clear_cache()


TIMELINE = [
    JobSlots("job_merge", "acme-data", JOB_RESERVATION, EVE, 10 * SLOT_HOUR_MS),
    JobSlots("job_merge", "acme-data", JOB_RESERVATION, DAY, 30 * SLOT_HOUR_MS),
    JobSlots("job_load", "acme-data", JOB_RESERVATION, DAY, 20 * SLOT_HOUR_MS),
]


def reconcile(url: str, job_slots=None, modes=None) -> None:
    engine = store.get_engine(url)
    result = run(engine, Window(EVE, DAY + dt.timedelta(days=1)), (), modes or {"*": "keep"}, job_slots)
    try:
        reconcile_store.write(engine, result)
    finally:
        result.close()


def pools(url: str) -> dict[dt.date, dict]:
    with store.get_engine(url).connect() as conn:
        rows = conn.execute(sa.select(reconciliations).where(reconciliations.c.pool == RESERVATION)).all()
    # what a pool says, without the row's id and time of writing
    return {row.day: dict(row._mapping) | {"id": None, "reconciled_at": None} for row in rows}


def test_information_schema_splits_each_days_slot_hours_by_slot_ms_and_names_the_idle_rest(ledger):
    reconcile(ledger, TIMELINE)
    check_every_dollar(ledger)
    by_day = pools(ledger)
    # that day: 30 + 20 of 100 slot-hours used, the evening before 10 of 50
    assert by_day[DAY]["basis"] == "quantity" and by_day[DAY]["pool_kind"] == "resource"
    assert by_day[DAY]["attributed_nanos"] == nanos("3.00") and by_day[DAY]["unattributed_nanos"] == nanos(
        "3.00"
    )
    assert by_day[EVE]["attributed_nanos"] == nanos("0.60") and by_day[EVE]["unattributed_nanos"] == nanos(
        "2.40"
    )
    assert by_day[DAY]["used_share"] == "0.5" and by_day[DAY]["source"] == "bigquery"
    lines = reconciled_lines(ledger)
    # merge: 30 slot-hours of the day's 6.00 (1.80) and its 10 of the evening (0.60)
    assert lines["merge"][0] == "reconciled" and lines["merge"][2] == nanos("2.40")
    assert lines["load"][2] == nanos("1.20")
    assert lines["copy"][0] == "estimated" and lines["copy"][2] is None


def test_without_information_schema_a_job_counts_on_the_day_it_started(ledger):
    reconcile(ledger)
    check_every_dollar(ledger)
    by_day = pools(ledger)
    # merge's 40 slot-hours all on the evening: 40 of 50; load's 20 of 100 that day
    assert by_day[EVE]["attributed_nanos"] == nanos("2.40") and by_day[EVE]["unattributed_nanos"] == nanos(
        "0.60"
    )
    assert by_day[DAY]["attributed_nanos"] == nanos("1.20") and by_day[DAY]["unattributed_nanos"] == nanos(
        "4.80"
    )
    lines = reconciled_lines(ledger)
    assert lines["merge"][2] == nanos("2.40") and lines["load"][2] == nanos("1.20")


def test_spread_gives_the_reservations_whole_bill_to_its_jobs(ledger):
    reconcile(ledger, TIMELINE, {"bigquery": "spread", "*": "keep"})
    check_every_dollar(ledger)
    by_day = pools(ledger)
    assert all(pool["unattributed_nanos"] == 0 for pool in by_day.values())
    lines = reconciled_lines(ledger)
    # the day's 6.00 by 30:20, and the evening's 3.00 all merge's
    assert lines["merge"][2] == nanos("3.60") + nanos("3.00") and lines["load"][2] == nanos("2.40")


def test_a_rerun_changes_nothing_and_the_cli_agrees(ledger):
    reconcile(ledger, TIMELINE)
    first = (pools(ledger), reconciled_lines(ledger))
    reconcile(ledger, TIMELINE)
    assert (pools(ledger), reconciled_lines(ledger)) == first
    # the CLI without INFORMATION_SCHEMA: the jobs' own statistics
    code, out, err = cli("reconcile", "--ledger", ledger, *PERIOD, "-o", "json")
    assert code == 0, err
    (gcp,) = [row for row in json.loads(out)["rows"] if row["provider"] == "gcp"]
    assert Decimal(gcp["billed"]) == 9 and Decimal(gcp["attributed"]) == Decimal("3.60")


# ---------------------------------------------------------------- INFORMATION_SCHEMA through the hook


def timeline_rows() -> list[dict]:
    """JOBS_TIMELINE_BY_PROJECT: one row per job and second, 1,000 slots (1,000,000 slot-ms) a second."""
    rows = []

    def job(job_id: str, start: dt.datetime, seconds: int, reservation: str | None) -> None:
        for n in range(seconds):
            rows.append(
                {
                    "period_start": (start + dt.timedelta(seconds=n)).isoformat(),
                    "period_slot_ms": 1_000_000,
                    "project_id": "acme-data",
                    "project_number": 1234,
                    "user_email": "etl@acme-data.iam.gserviceaccount.com",
                    "job_id": job_id,
                    "job_type": "QUERY",
                    "statement_type": "SELECT",
                    "job_creation_time": start.isoformat(),
                    "reservation_id": reservation,
                    "edition": "ENTERPRISE" if reservation else None,
                    "state": "RUNNING",
                }
            )

    midnight = dt.datetime.combine(DAY, dt.time(), dt.timezone.utc)
    # merge: 36 s before midnight (10 slot-hours), 108 s after (30)
    job("job_merge", midnight - dt.timedelta(seconds=36), 144, JOB_RESERVATION)
    job("job_load", midnight + dt.timedelta(hours=6), 72, JOB_RESERVATION)
    job("job_adhoc", midnight + dt.timedelta(hours=7), 5, None)  # on demand: no reservation
    job("job_old", midnight - dt.timedelta(days=3), 5, JOB_RESERVATION)  # before the period
    return rows


@pytest.fixture
def information_schema(monkeypatch):
    from tests.support.fake_bigquery_billing import fake_bigquery_billing

    with fake_bigquery_billing(page_size=2) as server:
        server.load_jobs_timeline("US", timeline_rows())
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", server.url)
        monkeypatch.setenv(
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
            json.dumps(
                {
                    "conn_type": "google_cloud_platform",
                    "extra": {"is_anonymous": True, "project": "acme-data"},
                }
            ),
        )
        yield server


def test_the_timeline_is_read_through_the_hook_per_job_and_day(information_schema):
    from airflow_cost_provider.billing.bigquery_reservations import read_job_slots
    from airflow_cost_provider.billing.scan import DateWindow

    found = read_job_slots(DateWindow(EVE, DAY + dt.timedelta(days=1)), [("acme-data", "US")])
    assert sorted(found, key=lambda j: (j.job_id, j.day)) == sorted(TIMELINE, key=lambda j: (j.job_id, j.day))
    (body,) = information_schema.inserted()
    query = body["configuration"]["query"]
    assert "`region-us`.INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT" in query["query"]
    assert query["useLegacySql"] is False and body["jobReference"]["projectId"] == "acme-data"
    parameters = {p["name"]: p["parameterValue"]["value"] for p in query["queryParameters"]}
    assert parameters == {
        "creation_start": "2026-11-18 00:00:00+00:00",
        "window_start": "2026-11-19 00:00:00+00:00",
        "window_end": "2026-11-21 00:00:00+00:00",
    }


def script_rows() -> list[dict]:
    """A script (two statements, each a child job of 10 s at 1,000 slots) and the script's own rows,
    which repeat its children's slot time, as JOBS_TIMELINE_BY_PROJECT has them."""
    start = dt.datetime.combine(DAY, dt.time(8), dt.timezone.utc)
    base = {"project_id": "acme-data", "job_type": "QUERY", "reservation_id": JOB_RESERVATION}
    rows = []
    for n in range(20):
        at = (start + dt.timedelta(seconds=n)).isoformat()
        child = f"script_job_0f1e_{n // 10}"
        rows.append(
            base
            | {"period_start": at, "period_slot_ms": 1_000_000, "job_id": "job_script"}
            | {"statement_type": "SCRIPT", "job_creation_time": start.isoformat()}
        )
        rows.append(
            base
            | {
                "period_start": at,
                "period_slot_ms": 1_000_000,
                "job_id": child,
                "parent_job_id": "job_script",
            }
            | {
                "statement_type": "SELECT",
                "job_creation_time": (start + dt.timedelta(seconds=n // 10 * 10)).isoformat(),
            }
        )
    return rows


def test_a_scripts_slot_time_is_its_childrens_counted_once_as_the_scripts(information_schema):
    from airflow_cost_provider.billing.bigquery_reservations import read_job_slots
    from airflow_cost_provider.billing.scan import DateWindow

    information_schema.load_jobs_timeline("US", timeline_rows() + script_rows())
    found = read_job_slots(DateWindow(EVE, DAY + dt.timedelta(days=1)), [("acme-data", "US")])
    script = JobSlots("job_script", "acme-data", JOB_RESERVATION, DAY, 20 * 1_000_000)
    assert sorted(found, key=lambda j: (j.job_id, j.day)) == sorted(
        [*TIMELINE, script], key=lambda j: (j.job_id, j.day)
    )


def test_airflow_cost_reconcile_reads_the_timeline_when_asked(information_schema, ledger):
    code, out, err = cli(
        "reconcile", "--ledger", ledger, *PERIOD, "--bigquery-jobs", "acme-data:US", "-o", "json"
    )
    assert code == 0, err
    check_every_dollar(ledger)
    by_day = pools(ledger)
    assert by_day[DAY]["attributed_nanos"] == nanos("3.00") and by_day[EVE]["attributed_nanos"] == nanos(
        "0.60"
    )
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD, "--bigquery-jobs", "acme-data")
    assert code != 0 and "PROJECT:LOCATION" in err and "nothing was changed" in err
    assert pools(ledger) == by_day


def test_a_try_with_an_on_demand_job_keeps_its_reservation_job_in_the_reservations_pool(ledger):
    from airflow_cost_provider.ledger.schema import lines, usage

    engine = store.get_engine(ledger)
    run_id = "0193a1b2-0000-7000-8000-0000000000bb"
    at = dt.datetime.combine(DAY, dt.time(9), dt.timezone.utc)
    on_demand = priced_line(
        "bigquery",
        str(2**40),
        "byte",
        "6.25",
        "acme-data:US",
        at,
        metric="bytes_billed",
        external_id="job_od",
    )
    store_try(
        engine, "sales", "report", [job_line("job_report", 10, at), on_demand], ol_run_id=run_id, start=at
    )
    add_billed(
        engine,
        DAY,
        "projects/acme-data",
        "5",
        provider="gcp",
        service="BigQuery",
        sku="Analysis",
        tags={"openlineage_run_id": run_id},
        account="01A2B3-C4D5E6-F7A8B9",
    )
    slots = [*TIMELINE, JobSlots("job_report", "acme-data", JOB_RESERVATION, DAY, 10 * SLOT_HOUR_MS)]
    reconcile(ledger, slots)
    check_every_dollar(ledger)
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                sa.select(usage.c.external_id, lines.c.reconciled_nanos).join(
                    usage, usage.c.id == lines.c.usage_id
                )
            ).all()
        )
    # the labelled bill is the on-demand job's; the reservation's 60 of 100 slot-hours: 0.60 for report
    assert got["job_od"] == nanos("5") and got["job_report"] == nanos("0.60")
    assert got["job_load"] == nanos("1.20") and pools(ledger)[DAY]["attributed_nanos"] == nanos("3.60")
