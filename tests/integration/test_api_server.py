"""The Costs API in a real `airflow api-server` on 127.0.0.1, with Airflow's simple auth manager and a
ledger filled by a real `airflow dags test` run: the plugin mounts it under /cost, a request without
a valid Airflow token is refused, and with one the report is the document `airflow-cost report -o
json` prints, row for row and amount for amount."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.support.airflow_env import airflow_bin
from tests.support.http_recorder import closed_port

pytestmark = pytest.mark.integration

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


@pytest.fixture(scope="module")
def server(airflow_env, tmp_path_factory):
    home = tmp_path_factory.mktemp("api-server")
    ledger_url = f"sqlite:///{home / 'cost_ledger.db'}"
    run = airflow_env.dags_test("cost_attribution", ledger_url=ledger_url)
    assert run.process.returncode == 0, run.output[-4000:]

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


def _period() -> tuple[str, str]:
    today = dt.datetime.now(dt.timezone.utc).date()
    return (today - dt.timedelta(days=2)).isoformat(), (today + dt.timedelta(days=2)).isoformat()


def _cli(env: dict[str, str], *args: str) -> dict:
    binary = Path(sys.executable).with_name("airflow-cost")
    done = subprocess.run(
        [str(binary), *args, "-o", "json"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_requests_without_a_valid_airflow_token_are_refused(server):
    since, until = _period()
    for path in ("/cost/", "/cost/api/report", "/cost/api/budgets", "/cost/api/report/storage"):
        response = server.get(path, by="dag") if path.endswith("report") else server.get(path)
        assert response.status_code == 401, (path, response.text)
    forged = server.get("/cost/api/report", token="not.a.jwt", by="dag", since=since, until=until)
    assert forged.status_code in (401, 403) and "rows" not in forged.text


@pytest.mark.parametrize("user", ["admin", "viewer"])
def test_the_report_is_the_document_the_cli_prints(server, user):
    since, until = _period()
    response = server.get("/cost/api/report", token=server.token(user), by="dag", since=since, until=until)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document == _cli(server.env, "report", "--by", "dag", "--since", since, "--until", until)
    (row,) = [row for row in document["rows"] if row["dag_id"] == "cost_attribution"]
    assert row["currency"] == "USD" and Decimal(row["amount"]) > 0 and row["lines"] >= 2

    by_team = server.get(
        "/cost/api/report", token=server.token(user), by="team,source", since=since, until=until
    ).json()
    assert by_team == _cli(server.env, "report", "--by", "team,source", "--since", since, "--until", until)
    assert {row["team"] for row in by_team["rows"]} == {"marketing", "finance"}


def test_a_try_its_page_docs_and_bad_input_through_the_server(server):
    token = server.token("viewer")
    since, until = _period()
    tries = server.get("/cost/api/report", token=token, by="try", since=since, until=until).json()["rows"]
    extract = next(row for row in tries if row["task_id"] == "extract")
    lines = server.get(
        "/cost/api/task-instance",
        token=token,
        dag_id="cost_attribution",
        task_id="extract",
        run_id=extract["run_id"],
    )
    assert lines.status_code == 200, lines.text
    assert {line["source"] for line in lines.json()["lines"]} == {"airflow_worker"}
    (total,) = lines.json()["total"]
    assert (Decimal(total["amount"]), total["currency"]) == (Decimal(extract["amount"]), extract["currency"])

    page = server.get("/cost/", token=token)
    assert page.status_code == 200 and "/cost/api/docs" in page.text
    spec = server.get("/cost/api/openapi.json")
    assert spec.status_code == 200 and "/api/report" in spec.json()["paths"]

    bad = server.get("/cost/api/report", token=token, by="colour")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("by: unknown grouping 'colour'")
    too_long = server.get("/cost/api/report", token=token, since="2020-01-01", until=until)
    assert too_long.status_code == 400 and "at most 400" in too_long.json()["detail"]
    no_budgets = server.get("/cost/api/budgets", token=token)
    assert no_budgets.status_code == 404 and "no budgets file" in no_budgets.json()["detail"]

    # the navigation entry, as Airflow's own plugin listing shows it
    plugins = server.get("/api/v2/plugins", token=server.token("admin")).json()["plugins"]
    (ours,) = [plugin for plugin in plugins if plugin["name"] == "cost_provider"]
    assert [(view["name"], view["href"]) for view in ours["external_views"]] == [("Costs", "/cost/")]
    assert [app["url_prefix"] for app in ours["fastapi_apps"]] == ["/cost"]
