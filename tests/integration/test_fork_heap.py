"""The heap frozen around the OpenLineage listener's forks, under a real `airflow dags test`: each event's
forked child sees the task process's heap frozen (its collections walk only what it made), the task's
own code runs with the heap unfrozen, and the cost facets and the ledger are as without it. With
[cost_provider] freeze_heap_for_openlineage = False the children see the heap as it is."""

from __future__ import annotations

import json

import pytest

from tests.support.airflow_env import FACETS_FUNCTION, ledger_rows
from tests.support.fork_probe import PROBE_FILE
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
# the heap of a `dags test` process holds hundreds of thousands of objects; a child makes a few thousand
WHOLE_HEAP = 100_000
TASKS = {"succeeds": "COMPLETE", "fails": "FAIL"}


def run_with_probe(airflow_env, tmp_path, **env: str):
    probe = tmp_path / "probe.jsonl"
    run = airflow_env.dags_test(
        "cost_fork_heap",
        env={
            PROBE_FILE: str(probe),
            "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": f"{FACETS_FUNCTION};tests.support.fork_probe.heap_facets",
            **env,
        },
    )
    assert "this task fails on purpose" in run.output, run.output[-3000:]
    notes = [json.loads(line) for line in probe.read_text().splitlines()] if probe.exists() else []
    return run, notes


def split(notes: list[dict]) -> tuple[list[dict], list[dict]]:
    tasks = [n for n in notes if n["where"] == "task"]
    children = [n for n in notes if n["where"] == "openlineage"]
    assert sorted(n["task_id"] for n in tasks) == sorted(TASKS), notes
    # START and the terminal event of each task, each from a child forked by the task's process
    assert len(children) == 2 * len(TASKS), notes
    task_pids = {n["pid"] for n in tasks}
    assert all(n["ppid"] in task_pids and n["pid"] not in task_pids for n in children), notes
    return tasks, children


def test_children_see_the_heap_frozen_and_tasks_do_not(airflow_env, tmp_path):
    run, notes = run_with_probe(airflow_env, tmp_path)
    tasks, children = split(notes)

    assert all(n["frozen"] == 0 for n in tasks), tasks
    assert all(n["frozen"] > WHOLE_HEAP and n["tracked"] < n["frozen"] // 10 for n in children), children

    events = run.events()
    for event in events:
        validate_event(event)
    terminal = {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] in ("COMPLETE", "FAIL") and "." in e["job"]["name"]  # not the DAG run's
    }
    assert {task: e["eventType"] for task, e in terminal.items()} == TASKS
    ledger = {r["task_id"]: r for r in ledger_rows(run.ledger_url, "SELECT * FROM cost_task_runs")}
    assert {task: ledger[task]["state"] for task in TASKS} == {"succeeds": "success", "fails": "failed"}
    for task in TASKS:
        facet = terminal[task]["run"]["facets"][FACET]
        assert {line["metric"] for line in facet["lines"]} == {"cpu_time", "memory_time"}
        assert terminal[task]["run"]["runId"] == ledger[task]["ol_run_id"]


def test_switched_off_the_children_see_the_heap_as_it_is(airflow_env, tmp_path):
    run, notes = run_with_probe(
        airflow_env, tmp_path, AIRFLOW__COST_PROVIDER__FREEZE_HEAP_FOR_OPENLINEAGE="False"
    )
    _, children = split(notes)
    assert all(n["frozen"] == 0 and n["tracked"] > WHOLE_HEAP for n in children), children
    terminal = [e for e in run.events() if e["eventType"] in ("COMPLETE", "FAIL") and "." in e["job"]["name"]]
    assert len(terminal) == len(TASKS) and all(FACET in e["run"]["facets"] for e in terminal)
