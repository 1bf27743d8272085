"""Run real `airflow dags test` in a subprocess with its own AIRFLOW_HOME, and read what it left."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.support.openlineage import read_events

REPO = Path(__file__).resolve().parents[2]
TEST_DAGS = REPO / "tests" / "integration" / "dags"
FACETS_FUNCTION = "airflow_cost_provider.openlineage.get_cost_run_facets"
_dates = itertools.count(1)


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


@dataclass
class DagRun:
    process: subprocess.CompletedProcess
    events_path: Path | None
    ledger_url: str
    logical_date: str

    @property
    def output(self) -> str:
        return self.process.stdout + self.process.stderr

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path) if self.events_path and self.events_path.exists() else []


class AirflowEnv:
    """One AIRFLOW_HOME with a migrated metadata DB, shared by the tests of a session."""

    def __init__(self, home: Path, dags_folder: Path = TEST_DAGS) -> None:
        self.home = home
        self.dags_folder = dags_folder
        home.mkdir(parents=True, exist_ok=True)

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "OPENLINEAGE"))}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            AIRFLOW_CONN_LOCAL_SQLITE="sqlite:///:memory:",
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        return env

    def migrate(self) -> None:
        subprocess.run(
            [airflow_bin(), "db", "migrate"],
            env=self.base_env(),
            check=True,
            capture_output=True,
            timeout=300,
        )

    def dags_test(
        self,
        dag_id: str,
        *,
        transport: dict[str, Any] | None = None,
        ledger_url: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        logical_date: str | None = None,
    ) -> DagRun:
        """Run the DAG once at a fresh logical date (or the one given, for data made for that date).
        Events go to a file unless a transport is given."""
        run_number = next(_dates)
        logical_date = logical_date or (dt.date(2026, 1, 1) + dt.timedelta(days=run_number)).isoformat()
        events_path = None
        if transport is None:
            events_path = self.home / f"events-{dag_id}-{run_number}.jsonl"
            transport = {"type": "file", "log_file_path": str(events_path), "append": True}
        ledger_url = ledger_url or f"sqlite:///{self.home / f'ledger-{run_number}.db'}"
        run_env = self.base_env()
        run_env.update(
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
            AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=FACETS_FUNCTION,
            AIRFLOW__COST_PROVIDER__LEDGER_CONN=ledger_url,
        )
        run_env.update(env or {})
        process = subprocess.run(
            [airflow_bin(), "dags", "test", dag_id, logical_date],
            check=False,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return DagRun(process, events_path, ledger_url, logical_date)


def ledger_rows(url: str, query: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
