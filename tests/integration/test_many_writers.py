"""Many writers at once under a real scheduler: the api-server, dag-processor and scheduler with the
LocalExecutor (parallelism 8, each task try its own process), several runs of a DAG of mapped tasks
triggered together, written into the default SQLite ledger and into a PostgreSQL one. The ledger
holds exactly the tries the metadata database holds, retries included, each equal to its facet, and
no task log shows a locked database, a deadlock or a lost capture."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.airflow_env import ledger_rows
from tests.support.airflow_scheduler import SchedulerDeployment
from tests.support.openlineage import read_events
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer

pytestmark = pytest.mark.integration

DAG_ID = "cost_many_writers"
KILLED_DAG_ID = "cost_killed_task"
HEARTBEAT_TIMEOUT = 30
RUNS = 4
MAPPED = 9  # the DAG's default
RUN_TIMEOUT = 240
FACET = "costProvider_cost"
LEDGER_CONN = "AIRFLOW__COST_PROVIDER__LEDGER_CONN"
TROUBLE = ("database is locked", "deadlock", "(no impact on the task)")


@pytest.fixture(scope="module")
def server():
    """The metadata database and the PostgreSQL ledger (no statement log: the scheduler is busy)."""
    server = PostgresServer(log_statements=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployment(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("scheduler-home")
    deployment = SchedulerDeployment(
        home,
        server.create_database("airflow"),
        [f"{DAG_ID}.py", f"{KILLED_DAG_ID}.py"],
        # eight task processes starting at once on a shared 2-core machine take seconds to reach their
        # first write; what is tested here is concurrency, not the time budget (the outage tests are)
        env={"AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT": "30"},
    )
    try:
        deployment.start()
        deployment.wait_for_dag(DAG_ID)
        deployment.wait_for_dag(KILLED_DAG_ID)
        yield deployment
    finally:
        deployment.stop()


def expected_tries(run_ids: list[str]) -> set[tuple]:
    tries = {(run_id, "work", index, 1) for run_id in run_ids for index in range(MAPPED)}
    tries |= {(run_id, "fails_once", -1, number) for run_id in run_ids for number in (1, 2)}
    return tries


def ledger_state(tries: dict[tuple, dict], key: tuple) -> str:
    """The state the ledger gives a try: the listener sees a retried try as up_for_retry, which the
    metadata database's history keeps as failed."""
    run_id, task_id, map_index, try_number = key
    if (run_id, task_id, map_index, try_number + 1) in tries:
        assert tries[key]["state"] == "failed"
        return "up_for_retry"
    return tries[key]["state"]


def ledger_tries(url: str, run_ids: list[str]) -> list[dict]:
    rows = ledger_rows(url, f"SELECT * FROM cost_task_runs WHERE dag_id = '{DAG_ID}'")
    return [row for row in rows if row["run_id"] in run_ids]


def ledger_lines(url: str) -> dict[str, list[tuple]]:
    rows = ledger_rows(
        url,
        "SELECT r.ol_run_id, l.source, l.metric, l.amount_nanos, l.unpriced_reason "
        "FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id",
    )
    by_run: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        amount = None if row["amount_nanos"] is None else Decimal(row["amount_nanos"]).scaleb(-9)
        by_run[row["ol_run_id"]].append((row["source"], row["metric"], amount))
    return by_run


def facet_lines(facet: dict) -> list[tuple]:
    lines = [(x["source"], x["metric"], Decimal(str(x["amount"]))) for x in facet["lines"]]
    for unpriced in facet["unpriced"]:
        lines += [(unpriced["source"], unpriced["metric"], None)] * unpriced["count"]
    return lines


def killed_run_is_one_ledger_row_per_try(deployment, url: str, run_id: str, kill) -> None:
    """Trigger the killed-task DAG, `kill(pid)` its first try mid-task, and check the ledger: every try
    Airflow ran is one row, the killed one written from Airflow's own record when its run ended (its
    run time, unpriced, with the reason) and the others as they reported themselves."""
    deployment.trigger(KILLED_DAG_ID, run_id)
    pid_file = deployment.home / f"killed-{run_id}.pid"
    deadline = time.monotonic() + RUN_TIMEOUT
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    kill(int(pid_file.read_text()))
    assert deployment.wait(KILLED_DAG_ID, [run_id], RUN_TIMEOUT) == {run_id: "success"}
    tries = deployment.task_tries(KILLED_DAG_ID, [run_id])
    assert set(tries) == {
        (run_id, "killed_once", -1, 1),
        (run_id, "killed_once", -1, 2),
        (run_id, "finishes", -1, 1),
    }

    # the check runs finalize_timeout + 5 s after the run ended, on the scheduler
    query = f"SELECT * FROM cost_task_runs WHERE dag_id = '{KILLED_DAG_ID}' AND run_id = '{run_id}'"
    deadline = time.monotonic() + 120
    while len(rows := ledger_rows(url, query)) < len(tries) and time.monotonic() < deadline:
        time.sleep(1)
    keyed = {(r["run_id"], r["task_id"], r["map_index"], r["try_number"]): r for r in rows}
    assert set(keyed) == set(tries) and len(rows) == len(tries)
    killed = keyed[(run_id, "killed_once", -1, 1)]
    assert (killed["state"], killed["status"]) == ("up_for_retry", "partial")
    airflow_try = tries[(run_id, "killed_once", -1, 1)]
    started = killed["start_time"]
    started = dt.datetime.fromisoformat(started) if isinstance(started, str) else started  # SQLite: text
    assert started.replace(tzinfo=None) == airflow_try["start_date"].astimezone(dt.timezone.utc).replace(
        tzinfo=None
    )
    lines = ledger_rows(
        url,
        "SELECT l.source, l.metric, l.amount_nanos, l.unpriced_reason, u.quantity, u.unit "
        f"FROM cost_lines l JOIN cost_usage u ON l.usage_id = u.id WHERE l.task_run_id = {killed['id']}",
    )
    assert len(lines) == 1
    (line,) = lines
    assert (line["source"], line["metric"], line["amount_nanos"], line["unit"]) == (
        "airflow_worker",
        "run_time",
        None,
        "second",
    )
    run_time = airflow_try["end_date"] - airflow_try["start_date"]
    assert Decimal(line["quantity"]) == Decimal(str(run_time.total_seconds()))
    assert "killed" in line["unpriced_reason"]
    # the tries that reported their own cost are as they wrote them
    for key in ((run_id, "killed_once", -1, 2), (run_id, "finishes", -1, 1)):
        assert keyed[key]["status"] == "estimated" and keyed[key]["state"] == "success"
    assert "ended without reporting its cost" in deployment.components["scheduler"].output()


def test_a_task_process_killed_mid_task_is_still_one_ledger_row(deployment):
    """SIGKILL of the task's own process: its supervisor tells Airflow, no listener runs in it."""
    assert deployment.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # the deployment as started
    url = f"sqlite:///{deployment.home / 'cost_ledger.db'}"
    killed_run_is_one_ledger_row_per_try(
        deployment, url, "killed-local", lambda pid: os.kill(pid, signal.SIGKILL)
    )


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("executor", "ledger"),
    [("local", "sqlite"), ("local", "postgresql"), ("celery", "postgresql")],
    ids=["local-sqlite", "local-postgresql", "celery-postgresql"],
)
def test_every_try_of_concurrent_runs_is_one_ledger_row_equal_to_its_facet(
    deployment, server, executor, ledger, request
):
    if ledger == "sqlite":
        url = f"sqlite:///{deployment.home / 'cost_ledger.db'}"  # the default: nothing configured
        settings = {LEDGER_CONN: ""}
    else:
        url = server.create_database(f"cost_ledger_{executor}")
        settings = {LEDGER_CONN: url}
    if executor == "celery":
        # two workers of 4 slots each, fed through a real Redis broker
        settings |= deployment.celery_env(request.getfixturevalue("redis_server").url())
        # a worker lost mid-task (the test after this one) is found by its tries' missing heartbeats
        settings["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(HEARTBEAT_TIMEOUT)
        deployment.restart_executor(settings, celery_workers=2, concurrency=4)
    else:
        settings["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
        if any(deployment.env.get(name, "") != value for name, value in settings.items()):
            deployment.restart_executor(settings)

    run_ids = [f"{executor}-{ledger}-{n}" for n in range(RUNS)]
    for run_id in run_ids:
        deployment.trigger(DAG_ID, run_id)
    states = deployment.wait(DAG_ID, run_ids, RUN_TIMEOUT)
    assert states == dict.fromkeys(run_ids, "success")

    # the metadata database: every try Airflow ran, the first try of fails_once included
    tries = deployment.task_tries(DAG_ID, run_ids)
    assert set(tries) == expected_tries(run_ids)

    # the ledger: exactly those tries, once each, in the state Airflow gave them
    rows = ledger_tries(url, run_ids)
    keyed = {(r["run_id"], r["task_id"], r["map_index"], r["try_number"]): r for r in rows}
    assert len(keyed) == len(rows) == len(tries)
    assert set(keyed) == set(tries)
    assert {key: row["state"] for key, row in keyed.items()} == {
        key: ledger_state(tries, key) for key in tries
    }
    assert len({row["capture_id"] for row in rows}) == len(rows)

    # every try's own log: no lock, no deadlock, no capture lost or spooled
    logs = deployment.task_logs(DAG_ID, run_ids)
    assert len(logs) == len(tries)
    for path, text in logs.items():
        found = [line for line in text.splitlines() if any(trouble in line.lower() for trouble in TROUBLE)]
        assert not found, (path, found)
    spool = deployment.home / "cost_spool"
    assert not spool.exists() or list(spool.iterdir()) == []

    # the OpenLineage facet of each try equals its ledger row, line for line
    ol_run_ids = {row["ol_run_id"] for row in rows}
    terminal = [
        event
        for event in read_events(deployment.events_path)
        if event["eventType"] in ("COMPLETE", "FAIL") and event["run"]["runId"] in ol_run_ids
    ]
    assert len(terminal) == len(rows)
    by_run = ledger_lines(url)
    for event in terminal:
        lines, name = facet_lines(event["run"]["facets"][FACET]), event["job"]["name"]
        assert {source for source, _, _ in lines} >= {"airflow_worker"}, name
        assert sorted(lines, key=repr) == sorted(by_run[event["run"]["runId"]], key=repr), name
    work_sources = {
        source
        for event in terminal
        if event["job"]["name"].endswith(".work")
        for source, _, _ in facet_lines(event["run"]["facets"][FACET])
    }
    assert work_sources == {"airflow_worker", "sqlite"}
    if executor == "celery":  # both workers took tries
        for number in (1, 2):
            worker_log = deployment.components[f"celery-worker-{number}"].output()
            assert "execute_workload" in worker_log and "received" in worker_log, worker_log[-3000:]


def test_a_celery_worker_killed_mid_task_leaves_one_ledger_row_per_try(deployment):
    """The whole worker killed (its pool, the task's supervisor and the task): the scheduler fails the
    try once its heartbeats stop, the other worker runs the retry, and the ledger still holds both."""
    assert deployment.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # left by the test above
    url = deployment.env[LEDGER_CONN]  # the PostgreSQL ledger of the Celery setup

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def kill_its_worker(pid: int) -> None:
        """Everything from the task up to its worker dies at once, as when the worker's machine does:
        the task and its supervisor (each may lead a process group of its own) and the worker's group."""
        workers = {component.process.pid: name for name, component in deployment.components.items()}
        chain = [pid]
        while chain[-1] not in workers and chain[-1] > 1:
            chain.append(parent(chain[-1]))
        name = workers[chain[-1]]
        assert name.startswith("celery-worker-"), chain
        for group in {os.getpgid(member) for member in chain}:
            os.killpg(group, signal.SIGKILL)
        deployment.components.pop(name).process.wait(timeout=30)

    killed_run_is_one_ledger_row_per_try(deployment, url, "killed-celery", kill_its_worker)
