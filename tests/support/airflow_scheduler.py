"""A real Airflow deployment in its own AIRFLOW_HOME: the api-server (whose execution API the task
processes talk to), the dag-processor and the scheduler with the LocalExecutor, all on 127.0.0.1.
DAG runs are triggered through the REST API and read back from the metadata database."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.support.airflow_env import FACETS_FUNCTION, TEST_DAGS, AirflowEnv, airflow_bin
from tests.support.http_recorder import closed_port

START_TIMEOUT = 240  # each component imports Airflow, its providers and plugins: 20 to 60 s here
HTTP_TIMEOUT = 30
FINISHED = ("success", "failed")


@dataclass
class Component:
    name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class SchedulerDeployment:
    """Start with `start()`, run DAGs with `trigger()` and `wait()`, and always `stop()`.

    `restart_executor(env)` runs the scheduler (and the task processes it starts, or its Celery
    workers) again with other settings, keeping the api-server, the dag-processor and the metadata
    database."""

    def __init__(
        self,
        home: Path,
        metadata_url: str,
        dag_files: list[str | Path],
        parallelism: int = 8,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.metadata_url = metadata_url
        self.dags_folder = home / "dags"
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        for name in dag_files:  # only these DAGs: parsing is fast and nothing else is scheduled
            source = TEST_DAGS / name  # a file of the test DAGs, or a path of its own
            shutil.copy(source, self.dags_folder / source.name)
        self.port = closed_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.events_path = home / "openlineage-events.jsonl"
        self.env = AirflowEnv(home, self.dags_folder).base_env()
        self.env.update(
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM=str(parallelism),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base}/execution/",
            AIRFLOW__API__BASE_URL=self.base,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__CORE__AUTH_MANAGER=(
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
                {"type": "file", "log_file_path": str(self.events_path), "append": True}
            ),
            AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=FACETS_FUNCTION,
        )
        self.env.update(env or {})
        self.components: dict[str, Component] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SchedulerDeployment:
        subprocess.run(
            [airflow_bin(), "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300
        )
        self._launch("api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        self._launch("dag-processor")
        self._launch("scheduler", "--skip-serve-logs")
        self._wait_until_up()
        return self

    def restart_executor(self, env: dict[str, str], celery_workers: int = 0, concurrency: int = 4) -> None:
        """Run the scheduler (and so the task processes) again with these settings; with
        `celery_workers`, that many `airflow celery worker` processes too (the env then names the
        CeleryExecutor and its broker)."""
        for name in [name for name in self.components if name == "scheduler" or name.startswith("celery")]:
            self._terminate(self.components.pop(name))
        self.env.update(env)
        self._launch("scheduler", "--skip-serve-logs")
        for number in range(1, celery_workers + 1):
            name = f"celery-worker-{number}"
            self._launch(
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@127.0.0.1",
                "--concurrency",
                str(concurrency),
                "--pid",
                str(self.home / f"{name}.pid"),
                "--skip-serve-logs",
                "--without-gossip",
                "--without-mingle",
                component=name,
            )

    def celery_env(self, broker_url: str) -> dict[str, str]:
        """The settings of the CeleryExecutor on this deployment's metadata database."""
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.metadata_url}",
        }

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            self._terminate(component)
        self.components.clear()

    def _launch(self, command: str, *args: str, component: str | None = None) -> None:
        name = component or command
        log = self.home / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [airflow_bin(), command, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers and task processes go with it
            )
        self.components[name] = Component(name, process, log)

    @staticmethod
    def _terminate(component: Component) -> None:
        process = component.process
        if process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def _check_alive(self) -> None:
        for component in self.components.values():
            if component.process.poll() is not None:
                raise RuntimeError(f"airflow {component.name} exited: {component.output()[-4000:]}")

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server did not answer in {START_TIMEOUT} s")

    # -- DAG runs --------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}/api/v2{path}", timeout=HTTP_TIMEOUT, **kwargs)

    def wait_for_dag(self, dag_id: str, timeout: float = START_TIMEOUT) -> None:
        """Until the dag-processor has parsed the DAG and it is unpaused."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            response = self.api("GET", f"/dags/{dag_id}")
            if response.status_code == 200 and not response.json()["is_paused"]:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"DAG {dag_id} not parsed in {timeout} s: {self.components['dag-processor'].output()[-4000:]}"
        )

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None) -> None:
        response = self.api(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}},
        )
        response.raise_for_status()

    def wait(self, dag_id: str, run_ids: list[str], timeout: float) -> dict[str, str]:
        """Poll until every run finished; their states by run id."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            states = {
                run_id: self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
                for run_id in run_ids
            }
            if all(state in FINISHED for state in states.values()):
                return states
            time.sleep(1)
        raise TimeoutError(f"DAG runs not finished in {timeout} s: {states}")

    def task_tries(self, dag_id: str, run_ids: list[str]) -> dict[tuple, dict[str, Any]]:
        """Every try of the runs' task instances, from the metadata database: the current try from
        task_instance and the earlier ones from task_instance_history, keyed (run, task, map, try)."""
        columns = "run_id, task_id, map_index, try_number, state, start_date, end_date, hostname"
        query = sa.text(
            f"SELECT {columns} FROM task_instance WHERE dag_id = :dag_id AND run_id IN :run_ids "
            f"UNION ALL SELECT {columns} FROM task_instance_history "
            "WHERE dag_id = :dag_id AND run_id IN :run_ids"
        ).bindparams(sa.bindparam("run_ids", expanding=True))
        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                rows = [
                    dict(row._mapping) for row in conn.execute(query, {"dag_id": dag_id, "run_ids": run_ids})
                ]
        finally:
            engine.dispose()
        return {(r["run_id"], r["task_id"], r["map_index"], r["try_number"]): r for r in rows}

    def task_logs(self, dag_id: str, run_ids: list[str]) -> dict[Path, str]:
        """The task logs the workers wrote for these runs, by file."""
        logs: dict[Path, str] = {}
        for run_id in run_ids:
            folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            for path in sorted(folder.rglob("*.log")):
                logs[path] = path.read_text(errors="replace")
        return logs
