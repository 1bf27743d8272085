"""The Costs API in a real `airflow api-server` on 127.0.0.1, with Airflow's simple auth manager and a
ledger filled by a real `airflow dags test` run: the plugin mounts it under /cost, a request without
a valid Airflow token is refused, and with one the report is the document `airflow-cost report -o
json` prints, row for row and amount for amount."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def server(api_server):
    return api_server


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
    assert [(view["name"], view["destination"]) for view in ours["external_views"]] == [
        ("Costs", "nav"),
        ("Cost", "task_instance"),
        ("Cost", "dag_run"),
    ]
    assert ours["external_views"][0]["href"] == "/cost/"
    assert [app["url_prefix"] for app in ours["fastapi_apps"]] == ["/cost"]
