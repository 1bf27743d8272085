"""The spine, end to end: real `airflow dags test` runs of a DAG with a CPU-heavy task, a mapped task,
a failing task and a retried one; the cost facet on every OpenLineage event and the same numbers in
the ledger."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from tests.support.airflow_env import ledger_rows
from tests.support.http_recorder import closed_port, recording_server
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
# One quick retry: enough to exercise the client's retry path without minutes of backoff per event.
QUICK_RETRY = {"total": 1, "backoff_factor": 0.1}


def http_transport(url: str, timeout: float = 5) -> dict:
    return {"type": "http", "url": url, "timeout": timeout, "retry": QUICK_RETRY}


# (task_id, map_index, try_number) -> state the ledger must hold
EXPECTED_TRIES = {
    ("cpu_heavy", -1, 1): "success",
    ("fan_out", -1, 1): "success",
    ("mapped", 0, 1): "success",
    ("mapped", 1, 1): "success",
    ("mapped", 2, 1): "success",
    ("always_fails", -1, 1): "failed",
    ("retries_once", -1, 1): "up_for_retry",
    ("retries_once", -1, 2): "success",
}
TASK_EVENT_COUNT = len(EXPECTED_TRIES)


def task_runs(url: str) -> dict[tuple, dict]:
    rows = ledger_rows(url, "SELECT * FROM cost_task_runs")
    keyed = {(r["task_id"], r["map_index"], r["try_number"]): r for r in rows}
    assert len(keyed) == len(rows), "one ledger row per task try"
    return keyed


def ledger_lines(url: str) -> dict[str, list[dict]]:
    """Cost lines with their usage, by the task try's OpenLineage run id."""
    rows = ledger_rows(
        url,
        "SELECT r.ol_run_id, l.source, l.metric, l.amount_nanos, l.currency, l.method, l.status, "
        "u.quantity, u.unit FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "JOIN cost_usage u ON l.usage_id = u.id",
    )
    by_run: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_run[row["ol_run_id"]].append(row)
    return by_run


def terminal_task_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["eventType"] in ("COMPLETE", "FAIL") and "." in e["job"]["name"]]


def assert_facets_match_ledger(events: list[dict], ledger_url: str) -> None:
    runs = task_runs(ledger_url)
    assert {k: r["state"] for k, r in runs.items()} == EXPECTED_TRIES
    by_run = ledger_lines(ledger_url)
    terminal = terminal_task_events(events)
    assert len(terminal) == TASK_EVENT_COUNT
    assert {e["run"]["runId"] for e in terminal} == {r["ol_run_id"] for r in runs.values()}
    for event in terminal:
        facet = event["run"]["facets"][FACET]
        rows = by_run[event["run"]["runId"]]
        assert len(rows) == len(facet["lines"]) + sum(u["count"] for u in facet["unpriced"])
        facet_lines = sorted((x["source"], x["metric"], Decimal(str(x["amount"]))) for x in facet["lines"])
        ledger = sorted(
            (r["source"], r["metric"], Decimal(r["amount_nanos"]).scaleb(-9))
            for r in rows
            if r["amount_nanos"] is not None
        )
        assert facet_lines == ledger, event["job"]["name"]
        for total in facet["totals"]:
            ledger_total = sum(
                (Decimal(r["amount_nanos"]).scaleb(-9) for r in rows if r["currency"] == total["currency"]),
                Decimal(0),
            )
            assert Decimal(str(total["amount"])).quantize(Decimal("0.01")) == ledger_total.quantize(
                Decimal("0.01")
            )
            assert abs(Decimal(str(total["amount"])) - ledger_total) < Decimal("1e-12")


@pytest.fixture(scope="module")
def file_run(airflow_env):
    run = airflow_env.dags_test("cost_spine")
    # the DAG holds a task that fails on purpose, so the run itself fails
    assert "this task fails on purpose" in run.output
    return run


def test_every_task_event_carries_a_valid_cost_facet(file_run):
    events = file_run.events()
    assert events, file_run.output[-3000:]
    for event in events:
        validate_event(event)
    terminal = terminal_task_events(events)
    assert len(terminal) == TASK_EVENT_COUNT
    for event in terminal:
        facet = event["run"]["facets"][FACET]
        assert facet["_schemaURL"].endswith("#/$defs/CostProviderCostRunFacet")
        assert facet["status"] == "estimated" and facet["unpriced"] == [], event["job"]["name"]
        assert {line["metric"] for line in facet["lines"]} == {"cpu_time", "memory_time"}
        assert all(line["method"] == "runtime_rate" for line in facet["lines"])
        assert facet["totals"][0]["currency"] == "USD" and facet["totals"][0]["amount"] > 0
    for event in events:
        if event["eventType"] == "START":
            assert FACET not in event["run"].get("facets", {})


def test_ledger_and_facets_agree_to_the_cent(file_run):
    assert_facets_match_ledger(file_run.events(), file_run.ledger_url)


def test_cpu_heavy_task_cpu_seconds_are_measured(file_run):
    rows = ledger_rows(
        file_run.ledger_url,
        "SELECT r.task_id, u.quantity FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "WHERE u.metric = 'cpu_time'",
    )
    cpu = {row["task_id"]: Decimal(row["quantity"]) for row in rows}
    assert cpu["cpu_heavy"] >= Decimal("1.5")  # the task burns 1.5 s of CPU
    assert cpu["cpu_heavy"] > 5 * cpu["fan_out"]


def test_marquez_http_transport_carries_the_facet(airflow_env):
    with recording_server(status=201) as server:
        run = airflow_env.dags_test("cost_spine", transport=http_transport(server.url))
        events = server.events()
    assert events, run.output[-3000:]
    for event in events:
        validate_event(event)
    assert_facets_match_ledger(events, run.ledger_url)


@pytest.mark.parametrize("failure", ["http_500", "nothing_listening"])
def test_tasks_and_ledger_unaffected_when_marquez_is_down(airflow_env, failure):
    if failure == "http_500":
        with recording_server(status=500) as server:
            run = airflow_env.dags_test("cost_spine", transport=http_transport(server.url, 2))
            assert server.events(), "the events were sent and refused"
    else:
        url = f"http://127.0.0.1:{closed_port()}"
        run = airflow_env.dags_test("cost_spine", transport=http_transport(url, 2))
    runs = task_runs(run.ledger_url)
    assert {k: r["state"] for k, r in runs.items()} == EXPECTED_TRIES
    amounts = ledger_rows(
        run.ledger_url, "SELECT amount_nanos FROM cost_lines WHERE amount_nanos IS NOT NULL"
    )
    assert len(amounts) == 2 * TASK_EVENT_COUNT and all(r["amount_nanos"] > 0 for r in amounts)


def test_listener_runs_last_on_postgres_ledger(airflow_env, postgres_url):
    """The other order: the OpenLineage child finalizes first; still one row per try, same numbers."""
    run = airflow_env.dags_test(
        "cost_spine", ledger_url=postgres_url, env={"AIRFLOW__COST_PROVIDER__LISTENER_ORDER": "last"}
    )
    events = run.events()
    for event in events:
        validate_event(event)
    assert_facets_match_ledger(events, postgres_url)


def test_faults_in_capture_pricing_and_ledger_leave_tasks_alone(airflow_env):
    run = airflow_env.dags_test("cost_faults", env={"COST_FAULTS": "1"})
    assert run.process.returncode == 0, run.output[-3000:]
    for step in ("measuring the worker process", "pricing", "writing the cost ledger"):
        warnings = [line for line in run.output.splitlines() if f"cost provider: {step} failed" in line]
        assert len(warnings) == 1, (step, warnings)
        assert "no impact on the task" in warnings[0]
    events = {e["job"]["name"].split(".")[-1]: e for e in terminal_task_events(run.events())}
    assert set(events) == {"capture_fault", "pricing_fault", "ledger_fault", "healthy"}
    assert all(e["eventType"] == "COMPLETE" for e in events.values())
    facets = {task: e["run"]["facets"][FACET] for task, e in events.items()}
    assert facets["capture_fault"]["lines"] == []
    assert facets["pricing_fault"]["status"] == "partial"
    assert all("pricing failed" in u["reason"] for u in facets["pricing_fault"]["unpriced"])
    assert facets["ledger_fault"]["lines"] and facets["healthy"]["lines"]
    stored = {r["task_id"] for r in ledger_rows(run.ledger_url, "SELECT task_id FROM cost_task_runs")}
    assert stored == {"capture_fault", "pricing_fault", "healthy"}


def test_disabled_provider_records_nothing_and_openlineage_still_emits(airflow_env):
    run = airflow_env.dags_test("cost_faults", env={"AIRFLOW__COST_PROVIDER__ENABLED": "False"})
    assert run.process.returncode == 0, run.output[-3000:]
    terminal = terminal_task_events(run.events())
    assert len(terminal) == 4
    assert all(FACET not in e["run"]["facets"] for e in terminal)
    assert "cost_ledger" not in run.output
    import sqlalchemy as sa

    assert not sa.inspect(sa.create_engine(run.ledger_url)).has_table("cost_task_runs")


def test_queries_reported_by_hooks_are_kept_unpriced_on_their_own_task(airflow_env):
    """Under `dags test` all tasks share one hook-lineage collector: each task must see only its own."""
    run = airflow_env.dags_test("cost_hook_lineage")
    assert run.process.returncode == 0, run.output[-3000:]
    events = {e["job"]["name"].split(".")[-1]: e for e in terminal_task_events(run.events())}
    for event in events.values():
        validate_event(event)
    sql_facet = events["run_sql"]["run"]["facets"][FACET]
    assert sql_facet["status"] == "partial"
    # the three statements have one cause: one entry that counts them
    assert [(u["source"], u["metric"], u["quantity"], u["count"]) for u in sql_facet["unpriced"]] == [
        ("sqlite", "queries", 3, 3)
    ]
    assert all("no usage statistics" in u["reason"] for u in sql_facet["unpriced"])
    assert events["after_sql"]["run"]["facets"][FACET]["unpriced"] == []
    rows = ledger_rows(
        run.ledger_url,
        "SELECT r.task_id, l.status FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "WHERE l.amount_nanos IS NULL",
    )
    assert [(r["task_id"], r["status"]) for r in rows] == [("run_sql", "unpriced")] * 3
