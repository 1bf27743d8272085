"""Tries Airflow ran that never reported their cost (a killed process, a lost worker) are written into
the ledger when their DAG run ends: run time kept, unpriced with the reason, never replacing a capture."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.capture import lost_tries
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import daily_totals, lines, task_run_labels, task_runs, usage
from airflow_cost_provider.result import CostResult
from tests.support.billing_rows import priced_line

START = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)


def ledger(tmp_path) -> sa.Engine:
    return store.get_engine(f"sqlite:///{tmp_path / 'ledger.db'}")


def airflow_try(task_id: str, try_number: int, state: str, seconds: int, map_index: int = -1):
    return lost_tries.AirflowTry(
        task_id, map_index, try_number, state, START, START + dt.timedelta(seconds=seconds), "worker-1"
    )


def captured(engine, task_id: str, try_number: int, amount: str = "0.25", team: str = "data") -> CostResult:
    tt = TaskTry(
        "d",
        task_id,
        "r1",
        try_number,
        -1,
        None,
        owner="ana",
        team=team,
        dag_tags=("nightly",),
        labels=(("product", "crm"),),
    )
    result = CostResult(
        tt,
        f"capture-{task_id}-{try_number}".ljust(32, "0"),
        "success",
        START,
        START + dt.timedelta(seconds=60),
        "worker-1",
        (priced_line("airflow_worker", "60", "vCPU-second", amount, "worker-1", START, metric="cpu_time"),),
        (),
    )
    assert store.store(engine, result)
    return result


def rows(engine, query) -> list:
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def test_a_killed_try_is_written_with_its_run_time_unpriced_and_the_siblings_attribution(tmp_path):
    engine = ledger(tmp_path)
    captured(engine, "load", 2)
    tries = [
        airflow_try("load", 1, "failed", 754),  # killed; Airflow retried it
        airflow_try("load", 2, "success", 60),
    ]
    written = lost_tries.record_lost_tries(engine, "d", "r1", START, tries)
    assert [(r.task_try.task_id, r.task_try.try_number, r.state) for r in written] == [
        ("load", 1, "up_for_retry")
    ]

    by_try = {row["try_number"]: row for row in rows(engine, sa.select(task_runs))}
    assert set(by_try) == {1, 2}
    lost = by_try[1]
    assert (lost["state"], lost["status"], lost["owner"], lost["team"]) == (
        "up_for_retry",
        "partial",
        "ana",
        "data",
    )
    assert lost["end_time"] - lost["start_time"] == dt.timedelta(seconds=754)
    line = rows(
        engine,
        sa.select(lines, usage.c.quantity, usage.c.unit)
        .join(usage, lines.c.usage_id == usage.c.id)
        .where(lines.c.task_run_id == lost["id"]),
    )
    assert len(line) == 1
    assert (line[0]["source"], line[0]["metric"], line[0]["amount_nanos"]) == (
        "airflow_worker",
        "run_time",
        None,
    )
    assert Decimal(line[0]["quantity"]) == 754 and line[0]["unit"] == "second"
    assert "killed" in line[0]["unpriced_reason"]
    labels = rows(engine, sa.select(task_run_labels).where(task_run_labels.c.task_run_id == lost["id"]))
    assert {(r["kind"], r["key"], r["value"]) for r in labels} == {
        ("tag", "nightly", ""),
        ("label", "product", "crm"),
    }
    # the daily totals count it as one unpriced line, beside the captured try's priced one
    totals = rows(engine, sa.select(daily_totals))
    assert sum(t["lines"] for t in totals) == 2 and sum(t["unpriced"] for t in totals) == 1
    assert sum(t["amount_nanos"] for t in totals) == 250_000_000


def test_nothing_is_written_when_every_try_reported_and_a_second_check_writes_nothing(tmp_path):
    engine = ledger(tmp_path)
    captured(engine, "load", 1)
    assert (
        lost_tries.record_lost_tries(engine, "d", "r1", START, [airflow_try("load", 1, "success", 60)]) == []
    )
    tries = [airflow_try("extract", 1, "failed", 30)]
    assert len(lost_tries.record_lost_tries(engine, "d", "r1", START, tries)) == 1
    assert lost_tries.record_lost_tries(engine, "d", "r1", START, tries) == []
    lost = rows(engine, sa.select(task_runs).where(task_runs.c.task_id == "extract"))
    # no sibling to copy from: no owner or team is made up
    assert len(lost) == 1 and lost[0]["state"] == "failed" and lost[0]["owner"] is None


def test_a_capture_replayed_later_replaces_the_lost_row_and_a_lost_row_never_replaces_a_capture(tmp_path):
    engine = ledger(tmp_path)
    found = airflow_try("load", 1, "success", 60)
    assert len(lost_tries.record_lost_tries(engine, "d", "r1", START, [found])) == 1
    # the capture was spooled on its worker and replayed after the run ended
    real = captured(engine, "load", 1, amount="0.40")
    only = rows(engine, sa.select(task_runs))
    assert len(only) == 1 and only[0]["capture_id"] == real.capture_id and only[0]["status"] == "estimated"
    assert [r["amount_nanos"] for r in rows(engine, sa.select(lines))] == [400_000_000]
    assert sum(t["unpriced"] for t in rows(engine, sa.select(daily_totals))) == 0
    # a later check finds it there; writing the lost row directly is refused too
    assert lost_tries.record_lost_tries(engine, "d", "r1", START, [found]) == []
    lost = lost_tries.lost_result(real.task_try, found, "success")
    assert store.store(engine, lost, only_if_absent=True) is False
    assert rows(engine, sa.select(task_runs))[0]["capture_id"] == real.capture_id


def test_mapped_tries_are_told_apart_by_map_index(tmp_path):
    engine = ledger(tmp_path)
    tries = [airflow_try("work", 1, "success", 10, map_index=i) for i in range(3)]
    result = CostResult(
        TaskTry("d", "work", "r1", 1, 1, None), "c" * 32, "success", START, START, "w", (), ()
    )
    store.store(engine, result)
    written = lost_tries.record_lost_tries(engine, "d", "r1", START, tries)
    assert sorted(r.task_try.map_index for r in written) == [0, 2]


def test_the_sweeper_checks_a_run_once_its_delay_has_passed_and_survives_a_failing_check():
    checked: list[tuple] = []
    done = threading.Event()

    def check(dag_id, run_id, logical_date):
        checked.append((dag_id, run_id))
        if run_id == "bad":
            raise RuntimeError("ledger down")
        if run_id == "r2":
            done.set()

    sweeper = lost_tries.LostTrySweeper(check, delay=0.2)
    sweeper.submit("d", "bad", None)
    sweeper.submit("d", "r2", None)
    assert checked == []  # not before its delay
    assert done.wait(5)
    assert checked == [("d", "bad"), ("d", "r2")]
