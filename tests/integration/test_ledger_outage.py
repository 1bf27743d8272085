"""The ledger's database down under a real `airflow dags test`: stopped before the run, stopped and
started in the middle of it, and a spool on a full disk. Tasks always succeed; every try reaches the
ledger once the database is back, and the logs count what was spooled and what was written later."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from tests.support.airflow_env import REPO, ledger_rows
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

OUTAGE_TASKS = ["after", "before", "during", "start_ledger", "stop_ledger"]
SPOOLED = ", written later (no impact on the task)"


@pytest.fixture
def ledger_server():
    """A PostgreSQL server of its own: these tests stop it."""
    server = PostgresServer(log_statements=False).start()
    yield server
    server.stop()


def migrated_ledger(server: PostgresServer) -> str:
    from airflow_cost_provider.ledger import store

    url = server.create_database("cost_ledger")
    store.get_engine(url)
    store.dispose_engines()
    return url


def tries_in(url: str) -> dict[str, int]:
    rows = ledger_rows(url, "SELECT task_id, count(*) AS n FROM cost_task_runs GROUP BY task_id")
    return {row["task_id"]: row["n"] for row in rows}


def replay(spool, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airflow_cost_provider.cli", "replay", "--spool", str(spool), "--ledger", url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("order", ["first", "last"])
def test_a_ledger_stopped_before_the_run_loses_nothing(airflow_env, ledger_server, tmp_path, order):
    url = migrated_ledger(ledger_server)
    subprocess.run(ledger_server.stop_command(), check=True, capture_output=True, cwd="/")
    spool = tmp_path / "spool"
    run = airflow_env.dags_test(
        "cost_ledger_outage",
        ledger_url=url,
        env={
            "AIRFLOW__COST_PROVIDER__SPOOL_DIR": str(spool),
            "AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT": "3",
            "AIRFLOW__COST_PROVIDER__LISTENER_ORDER": order,
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    # one attempt per try: by the OpenLineage child when the cost listener runs last
    assert run.output.count(SPOOLED) == 5, run.output[-4000:]
    assert len(list(spool.glob("*.json"))) == 5
    subprocess.run(ledger_server.start_command(), check=True, capture_output=True, cwd="/")
    replayed = replay(spool, url)
    assert replayed.returncode == 0, replayed.stderr
    assert "wrote 5 capture(s), 0 remain" in replayed.stdout
    assert tries_in(url) == dict.fromkeys(OUTAGE_TASKS, 1)
    assert list(spool.glob("*.json")) == []


def test_a_ledger_stopped_and_started_mid_run_is_caught_up_by_the_next_tries(
    airflow_env, ledger_server, tmp_path
):
    url = migrated_ledger(ledger_server)
    run = airflow_env.dags_test(
        "cost_ledger_outage",
        ledger_url=url,
        env={
            "AIRFLOW__COST_PROVIDER__SPOOL_DIR": str(tmp_path / "spool"),
            "AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT": "3",
            "LEDGER_STOP_COMMAND": json.dumps(ledger_server.stop_command()),
            "LEDGER_START_COMMAND": json.dumps(ledger_server.start_command()),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    # stop_ledger and during end while the database is down; start_ledger's own write then catches up
    assert run.output.count(SPOOLED) == 2, run.output[-4000:]
    assert "wrote 2 spooled capture(s) to the ledger, 0 remain" in run.output
    assert tries_in(url) == dict.fromkeys(OUTAGE_TASKS, 1)
    assert list((tmp_path / "spool").glob("*.json")) == []


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a tiny filesystem filled to the last byte (needs the right to mount)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (mount_point / "spool").mkdir()
        with open(mount_point / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"x" * 512)
        yield mount_point / "spool"
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)


def test_a_spool_on_a_full_disk_leaves_the_tasks_unaffected(airflow_env, full_disk):
    from tests.support.http_recorder import closed_port

    run = airflow_env.dags_test(
        "cost_ledger_outage",
        ledger_url=f"postgresql+psycopg2://cost@127.0.0.1:{closed_port()}/ledger",
        env={"AIRFLOW__COST_PROVIDER__SPOOL_DIR": str(full_disk)},
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert run.output.count("the disk is full; it is not in the ledger (no impact on the task)") == 5
    assert "not spooled, lost (no impact on the task)" in run.output
    assert list(full_disk.iterdir()) == []
