"""A real `airflow api-server` on 127.0.0.1 with Airflow's simple auth manager (users admin and
viewer) and the cost provider's plugin reading a given ledger, for the Costs API and page tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.airflow_env import AirflowEnv, airflow_bin
from tests.support.http_recorder import closed_port

START_TIMEOUT = 180  # the api-server imports Airflow, its providers and plugins: 20 to 40 s here
HTTP_TIMEOUT = 30


class ApiServer:
    def __init__(self, base: str, passwords: dict[str, str], env: dict[str, str], log: Path) -> None:
        self.base = base
        self.passwords = passwords
        self.env = env
        self.log = log

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.base}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def get(self, path: str, token: str | None = None, **params) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.base}{path}", params=params, headers=headers, timeout=HTTP_TIMEOUT)


def _wait_until_up(process: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited: {log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"airflow api-server did not answer in {START_TIMEOUT} s: {log.read_text()[-4000:]}")


@contextmanager
def running_api_server(airflow_env: AirflowEnv, home: Path, ledger_url: str) -> Iterator[ApiServer]:
    passwords = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    passwords_file = home / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    port = closed_port()
    env = airflow_env.base_env()
    env.update(
        AIRFLOW__COST_PROVIDER__LEDGER_CONN=ledger_url,
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
    )
    log = home / "api-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [airflow_bin(), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn worker goes with it at teardown
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, base, log)
        yield ApiServer(base, passwords, env, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
