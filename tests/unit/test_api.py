"""The Costs JSON API (airflow_cost_provider.api) through FastAPI's TestClient on a real SQLite ledger:
the same documents as the CLI's `-o json`, only the DAGs a user may read, bad input as a 4xx with a
message, and every endpoint refused without an Airflow user. Authentication is replaced by a fixed
user where a test is about rows; the integration test (test_api_server.py) runs Airflow's own."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from airflow_cost_provider import conf
from airflow_cost_provider.api import URL_PREFIX, access
from airflow_cost_provider.api.app import MAX_PERIOD_DAYS, create_app
from airflow_cost_provider.billing.importer import CollectedCosts
from airflow_cost_provider.billing.scan import StorageCost
from airflow_cost_provider.budgets import settled
from airflow_cost_provider.cli import budgets as budgets_command
from airflow_cost_provider.ledger import store
from tests.support.airflow_env import REPO
from tests.unit.budgets.test_cli import BUDGETS
from tests.unit.test_report import T0, line, result, run

PERIOD = {"since": "2026-11-01", "until": "2026-12-01"}
NOW = dt.datetime(2026, 12, 20, 12, tzinfo=dt.timezone.utc)


def storage_cost(day: dt.date, resource: str, amount: str) -> StorageCost:
    nanos = int(Decimal(amount) * 10**9)
    return StorageCost(
        "aws", "123456789012", day, resource, "TimedStorage-ByteHrs", "standard", "USD",
        nanos, nanos, nanos, 0, 0, "1", "GB-Mo", None, "TimedStorage-ByteHrs", "AmazonS3", "us-east-1", 1, "focus",
    )  # fmt: skip


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """Task costs of three DAGs (one with unpriced usage), two tries of one task, storage costs of two
    buckets, and two budgets; the API and the CLI both read it from [cost_provider] ledger_conn."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(url)
    for item in [
        result("sales", "extract", "r1", [line("airflow_worker", "0.10"), line("athena", "1.25")]),
        result(
            "sales",
            "extract",
            "r2",
            [line("airflow_worker", "0.000001040")],
            unpriced=["postgres"],
            end=T0 + dt.timedelta(days=1),
        ),
        result("sales", "load", "r1", [line("snowflake", "3.00"), line("bigquery", "2.00", "EUR")]),
        result("sales", "load", "r1", [line("airflow_worker", "0.05")], try_number=2),
        result("ops", "vacuum", "r1", [line("airflow_worker", "0.30")], unpriced=["postgres"]),
        result("finance", "close", "r1", [line("snowflake", "7.5")]),
        result("old", "t", "r0", [line("athena", "100")], end=T0 - dt.timedelta(days=90)),
    ]:
        store.store(engine, item)
    costs = [
        storage_cost(dt.date(2026, 11, day), bucket, "2") for day in (3, 4) for bucket in ("raw", "marts")
    ]
    store.write_storage_import(engine, CollectedCosts("focus", costs, rows_read=4, rows_imported=4))
    budgets_file = tmp_path / "cost_budgets.yaml"
    budgets_file.write_text(BUDGETS)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(budgets_file))
    monkeypatch.setattr(budgets_command, "_now", lambda: NOW)
    conf.clear_cache()
    settled.clear()
    yield url
    settled.clear()


def client_for(readable: frozenset[str] | None = None, every_dag: bool = True) -> TestClient:
    """A client signed in as a viewer who may read `readable` DAGs (None: every DAG)."""
    app = create_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="ana", role="viewer")
    app.dependency_overrides[access.readable_dags] = lambda: readable

    def every_dag_check() -> None:
        if not every_dag:
            raise HTTPException(403, "Forbidden: budgets and storage costs need read access to every DAG")

    app.dependency_overrides[access.read_every_dag] = every_dag_check
    app.dependency_overrides[access.read_task_instances] = lambda: None
    return TestClient(app)


def cli_json(*args: str) -> dict:
    code, out, err = run(*args, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def get(client: TestClient, path: str, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "by, filters",
    [
        ("dag", {}),
        ("task", {}),
        ("try", {}),
        ("dag,source", {}),
        ("source,day", {"dag_id": "sales"}),
        ("task", {"dag_id": ["sales", "ops"], "source": "airflow_worker", "top": "2"}),
    ],
)
def test_report_is_the_document_the_cli_prints(ledger, by, filters):
    cli_args = ["report", "--by", by, "--since", PERIOD["since"], "--until", PERIOD["until"]]
    for name, option in (
        ("dag_id", "--dag"),
        ("task_id", "--task"),
        ("source", "--source"),
        ("top", "--top"),
    ):
        values = filters.get(name, [])
        for value in [values] if isinstance(values, str) else values:
            cli_args += [option, value]
    document = get(client_for(), "/api/report", by=by, **PERIOD, **filters)
    assert document == cli_json(*cli_args)
    assert document["rows"]


@pytest.mark.parametrize(
    "readable, filters",
    [
        (None, {}),
        (None, {"stack": "team", "top": "1"}),
        (None, {"source": ["airflow_worker", "snowflake"]}),
        (frozenset({"sales"}), {"dag_id": "sales"}),
        (frozenset({"ops", "finance"}), {}),
    ],
)
def test_the_overview_is_the_reports_of_its_groupings(ledger, readable, filters):
    """The page's reports, read in one pass, are the documents /api/report gives one by one (and the
    CLI prints), rows, totals and unpriced causes alike; `previous` is the period before."""
    client = client_for(readable)
    overview = get(client, "/api/overview", **PERIOD, **filters)
    stack = filters.get("stack", "source")
    top = filters.get("top", "10")
    wanted = {
        "source": None,
        f"day,{stack}": None,
        "dag": top,
        "dag,day": None,
        "task": top,
        "task,day": None,
        "team": None,
        "owner": None,
    }
    assert list(overview["reports"]) == list(wanted)
    narrowing = {key: value for key, value in filters.items() if key in ("dag_id", "source")}
    for by, top_of in wanted.items():
        one = get(client, "/api/report", by=by, **PERIOD, **narrowing, **({"top": top_of} if top_of else {}))
        if by == "task,day":  # the daily rows of the tasks listed only (their sparklines)
            listed = {(row["dag_id"], row["task_id"]) for row in overview["reports"]["task"]["rows"]}
            kept = [row for row in one["rows"] if (row["dag_id"], row["task_id"]) in listed]
            one = {**one, "rows": kept, "omitted_rows": len(one["rows"]) - len(kept)}
            assert kept
        assert overview["reports"][by] == one, by
    assert (
        overview["reports"]["dag"]["rows"]
        and overview["reports"]["day,source" if stack == "source" else "day,team"]["rows"]
    )
    before = get(client, "/api/report", by="source", since="2026-10-02", until="2026-11-01", **narrowing)
    previous = overview["previous"]
    assert (previous["since"], previous["until"]) == (
        "2026-10-02T00:00:00+00:00",
        "2026-11-01T00:00:00+00:00",
    )
    assert [(t["currency"], Decimal(t["amount"]) if t["amount"] else None, t["lines"], t["unpriced"]) for t in previous["total"]] == [
        (t["currency"], Decimal(t["amount"]) if t["amount"] else None, t["lines"], t["unpriced"]) for t in before["total"]
    ]  # fmt: skip
    current = get(client, "/api/overview", since="2026-11-21", until="2026-12-01", **filters)["previous"]
    half = get(client, "/api/report", by="dag", since="2026-11-11", until="2026-11-21", **narrowing)["total"]
    assert [Decimal(t["amount"]) for t in current["total"] if t["currency"]] == [
        Decimal(t["amount"]) for t in half if t["currency"]
    ]
    assert any(t["currency"] for t in half)
    if readable is None and not filters:
        assert overview["reports"]["dag"] == cli_json("report", "--by", "dag", "--since", PERIOD["since"], "--until", PERIOD["until"], "--top", "10")  # fmt: skip


def test_the_overview_refuses_bad_input(ledger):
    client = client_for()
    inverted = client.get("/api/overview", params={"since": "2026-12-01", "until": "2026-11-01"})
    assert inverted.status_code == 400 and "since 2026-12-01 is not before until 2026-11-01" in inverted.text
    huge = client.get("/api/overview", params={"since": "2020-01-01", "until": "2026-12-01"})
    assert huge.status_code == 400 and f"at most {MAX_PERIOD_DAYS} per request" in huge.text
    assert client.get("/api/overview", params={"stack": "colour"}).status_code == 422


def test_report_amounts_are_exact_and_unpriced_usage_is_counted_apart(ledger):
    document = get(client_for(), "/api/report", by="dag", **PERIOD)
    rows = {(row["dag_id"], row["currency"]): row for row in document["rows"]}
    assert (
        rows["sales", "USD"]["amount"] == "4.40000104"
    )  # 0.10 + 1.25 + 0.000001040 + 3.00 + 0.05, at the precision the column needs
    assert rows["sales", "USD"]["status"] == "partial" and rows["sales", "USD"]["unpriced"] == 1
    assert rows["sales", "EUR"]["amount"] == "2.00000000"
    assert [cause["count"] for cause in document["unpriced"]] == [2]
    assert "old" not in {row["dag_id"] for row in document["rows"]}  # outside the period


def test_only_the_dags_a_user_may_read(ledger):
    everything = get(client_for(), "/api/report", by="dag", **PERIOD)
    assert {row["dag_id"] for row in everything["rows"]} == {"sales", "ops", "finance"}

    ops_only = get(client_for(frozenset({"ops", "deleted_dag"})), "/api/report", by="task", **PERIOD)
    assert {row["dag_id"] for row in ops_only["rows"]} == {"ops"}
    # the totals and the unpriced causes are the readable DAGs' too
    assert [(t["amount"], t["currency"], t["lines"], t["unpriced"]) for t in ops_only["total"]] == [
        ("0.30", "USD", 1, 0),
        (None, None, 1, 1),
    ]
    assert ops_only == cli_json("report", "--by", "task", "--dag", "ops", "--since", "2026-11-01", "--until", "2026-12-01") | {"filters": {}}  # fmt: skip

    # asking for a DAG the user may not read shows nothing of it
    hidden = get(client_for(frozenset({"ops"})), "/api/report", by="dag", dag_id="sales", **PERIOD)
    assert hidden["rows"] == [] and hidden["total"] == [] and hidden["unpriced"] == []
    assert hidden["data_range"] is None  # nor where its data is
    nothing = get(client_for(frozenset()), "/api/report", by="dag", **PERIOD)
    assert nothing["rows"] == [] and nothing["total"] == []


def test_an_empty_period_says_where_the_readable_data_is(ledger):
    document = get(client_for(), "/api/report", by="dag", since="2027-01-01", until="2027-02-01")
    assert document["rows"] == [] and document["data_range"] == {"first": "2026-08-22", "last": "2026-11-21"}
    restricted = get(
        client_for(frozenset({"ops"})), "/api/report", by="dag", since="2027-01-01", until="2027-02-01"
    )
    assert restricted["data_range"] == {"first": "2026-11-20", "last": "2026-11-20"}


def test_storage_report_and_budgets_are_the_documents_the_cli_prints(ledger):
    client = client_for()
    storage = get(client, "/api/report/storage", by="resource,day", **PERIOD)
    assert storage == cli_json("report", "storage", "--by", "resource,day", "--since", "2026-11-01", "--until", "2026-12-01")  # fmt: skip
    assert [row["amount"] for row in storage["total"]] == ["8.00"]

    budgets = get(client, "/api/budgets")
    assert budgets == cli_json("budgets")
    assert [row["budget"] for row in budgets["rows"]] == ["marketing-dags", "ops-weekly"]
    settled.clear()
    one = get(client, "/api/budgets", budget="ops-weekly", period="previous")
    settled.clear()
    assert one == cli_json("budgets", "status", "--budget", "ops-weekly", "--period", "previous")


def test_storage_per_dataset_is_the_document_the_cli_prints(ledger):
    """The shares of the buckets' costs import-storage allocated to datasets, summed per dataset."""
    allocations = [
        {
            "provider": "aws", "billing_account": "123456789012", "day": dt.date(2026, 11, day),
            "resource_id": "raw", "usage_class": "standard", "currency": "USD",
            "dataset_namespace": "s3://raw", "dataset_name": name, "bytes": size,
            "share": Decimal(share), "amount": Decimal(amount), "method": "allocated",
        }
        for day in (3, 4)
        for name, size, share, amount in (("orders", 750, "0.75", "1.50"), ("events", 250, "0.25", "0.50"))
    ]  # fmt: skip
    scope = {("aws", "123456789012", dt.date(2026, 11, day), "raw") for day in (3, 4)}
    store.replace_storage_allocations(store.get_engine(ledger), allocations, scope)
    client = client_for()
    by_dataset = get(client, "/api/report/storage", by="dataset", **PERIOD)
    assert by_dataset == cli_json("report", "storage", "--by", "dataset", "--since", "2026-11-01", "--until", "2026-12-01")  # fmt: skip
    # by hand: orders 1.50 x 2 days, events 0.50 x 2 days
    assert [
        (r["dataset_namespace"], r["dataset_name"], r["amount"], r["rows"]) for r in by_dataset["rows"]
    ] == [
        ("s3://raw", "orders", "3.00", 2),
        ("s3://raw", "events", "1.00", 2),
    ]
    assert [(r["amount"], r["credits"]) for r in by_dataset["total"]] == [("4.00", None)]
    per_day = get(client, "/api/report/storage", by="dataset,day", **PERIOD)
    assert [r["amount"] for r in per_day["rows"]] == ["1.50", "0.50", "1.50", "0.50"]
    refused = client.get("/api/report/storage", params={"by": "dataset,service"})
    assert refused.status_code == 400 and "not with service" in refused.json()["detail"]
    code, _, err = run("report", "storage", "--by", "service,dataset")
    assert code != 0 and "not with service" in err


def test_budgets_and_storage_need_read_access_to_every_dag(ledger):
    client = client_for(frozenset({"ops"}), every_dag=False)
    for path in ("/api/budgets", "/api/report/storage"):
        response = client.get(path)
        assert response.status_code == 403 and "every DAG" in response.json()["detail"]


def test_one_task_try_lines(ledger):
    client = client_for()
    extract = get(client, "/api/task-instance", dag_id="sales", task_id="extract", run_id="r2")
    assert (extract["try_number"], extract["map_index"], extract["status"]) == (1, -1, "partial")
    priced, unpriced = sorted(extract["lines"], key=lambda line: line["status"])
    assert priced["source"] == "airflow_worker" and priced["amount"] == "0.00000104"
    assert (priced["quantity"], priced["unit"], priced["method"]) == ("1", "query", "list_price")
    assert (priced["price_amount"], priced["price_unit"], priced["price_ref"]) == (
        "0.000001040",
        "query",
        "v:airflow_worker/m",
    )
    assert unpriced["amount"] is None and unpriced["unpriced_reason"].startswith("no price for postgres")
    assert extract["total"] == [{"currency": "USD", "amount": "0.00000104", "lines": 1}]

    latest = get(client, "/api/task-instance", dag_id="sales", task_id="load", run_id="r1")
    assert latest["try_number"] == 2 and [line["amount"] for line in latest["lines"]] == ["0.05"]
    first = get(client, "/api/task-instance", dag_id="sales", task_id="load", run_id="r1", try_number=1)
    assert sorted((line["amount"], line["currency"]) for line in first["lines"]) == [("2.00", "EUR"), ("3.00", "USD")]  # fmt: skip

    missing = client.get("/api/task-instance", params={"dag_id": "sales", "task_id": "load", "run_id": "r9"})
    assert missing.status_code == 404
    assert (
        missing.json()["detail"]
        == "the ledger has no cost for any try of sales.load (run 'r9', map_index -1)"
    )


def test_a_dag_runs_tries_lines_and_total_are_the_clis_report_of_the_run(ledger):
    client = client_for()
    found = get(client, "/api/dag-run", dag_id="sales", run_id="r1")
    assert (found["dag_id"], found["run_id"]) == ("sales", "r1")
    # every recorded try, load's two included, each with its lines
    assert [(t["task_id"], t["try_number"]) for t in found["tries"]] == [
        ("extract", 1),
        ("load", 1),
        ("load", 2),
    ]
    assert [line["amount"] for line in found["tries"][0]["lines"]] == ["0.10", "1.25"]
    assert sorted(line["amount"] for line in found["tries"][1]["lines"]) == ["2.00", "3.00"]
    # per task and in total: what `airflow-cost report --by task --dag sales --run r1` prints for the run's period
    cli = cli_json("report", "--by", "task", "--dag", "sales", "--run", "r1", "--since", found["since"], "--until", found["until"])  # fmt: skip
    assert found["by_task"] == cli
    assert found["total"] == cli["total"]
    # by hand: extract 0.10 + 1.25, load 3.00 + 0.05 (try 2) in USD; load's 2.00 EUR apart
    assert [(row["amount"], row["currency"]) for row in found["total"]] == [("2.00", "EUR"), ("4.40", "USD")]
    assert cli["filters"] == {"dag": ["sales"], "run": ["r1"]}
    # r2 of the same DAG is another run, outside this one's total even over a wide period
    wide = get(client, "/api/report", by="task", dag_id="sales", run_id="r1", **PERIOD)
    assert wide["total"] == found["total"]

    missing = client.get("/api/dag-run", params={"dag_id": "sales", "run_id": "r9"})
    assert (
        missing.status_code == 404
        and missing.json()["detail"] == "the ledger has no cost for run 'r9' of sales"
    )
    assert client.get("/api/dag-run", params={"dag_id": "sales"}).status_code == 422


def test_each_lines_external_id_links_to_its_platforms_console(ledger):
    """From the usage the ledger keeps: a BigQuery job (project and location in its resource) and an
    Athena query (its region in the attributes) get their console page; a line whose usage lacks a
    part of the address gets none."""
    import dataclasses

    from airflow_cost_provider.pricing.model import CostLine, Usage

    def with_usage(source: str, **usage) -> CostLine:
        base = line(source, "1.00")
        return dataclasses.replace(base, usage=Usage(source, "m", Decimal(1), "query", **usage))

    store.store(
        store.get_engine(ledger),
        result(
            "linked",
            "query",
            "r1",
            [
                with_usage("bigquery", resource="my-project:US", external_id="job_1"),
                with_usage(
                    "athena", resource="primary", external_id="q-1", attributes={"region": "eu-west-1"}
                ),
                with_usage("athena", resource="primary", external_id="q-2"),
            ],
        ),
    )
    client = client_for()
    lines = get(client, "/api/task-instance", dag_id="linked", task_id="query", run_id="r1")["lines"]
    assert [(line["external_id"], line["console_url"]) for line in lines] == [
        ("job_1", "https://console.cloud.google.com/bigquery?project=my-project&j=bq%3AUS%3Ajob_1&page=queryresults"),
        ("q-1", "https://console.aws.amazon.com/athena/home?region=eu-west-1#/query-editor/history/q-1"),
        ("q-2", None),
    ]  # fmt: skip
    run_lines = get(client, "/api/dag-run", dag_id="linked", run_id="r1")["tries"][0]["lines"]
    assert run_lines == lines


def test_a_dag_run_and_a_try_are_refused_to_a_user_who_may_not_read_the_dag(ledger, monkeypatch):
    """Airflow's own check (requires_access_dag on the DAG's task instances), here with an auth
    manager that lets the user read `ops` only."""
    from airflow.api_fastapi.core_api import security

    asked = []

    class OnlyOps:
        def is_authorized_dag(self, *, method, access_entity=None, details=None, user=None):
            asked.append((method, access_entity.name, details.id))
            return details is not None and details.id == "ops"

    monkeypatch.setattr(security, "get_auth_manager", lambda: OnlyOps())
    monkeypatch.setattr(security.DagModel, "get_team_name", staticmethod(lambda dag_id: None))
    app = create_app()
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="ana", role="viewer")
    client = TestClient(app)
    for path, params in [
        ("/api/dag-run", {"dag_id": "sales", "run_id": "r1"}),
        ("/api/task-instance", {"dag_id": "sales", "task_id": "load", "run_id": "r1"}),
    ]:
        refused = client.get(path, params=params)
        assert refused.status_code == 403 and "rows" not in refused.text and "tries" not in refused.text
    allowed = client.get("/api/dag-run", params={"dag_id": "ops", "run_id": "r1"})
    assert allowed.status_code == 200, allowed.text
    assert [t["task_id"] for t in allowed.json()["tries"]] == ["vacuum"]
    assert asked[0] == ("GET", "TASK_INSTANCE", "sales")


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("/api/report", {"by": "dag,colour"}, "by: unknown grouping 'colour': choose from dag, task, run"),
        ("/api/report", {"by": "label:"}, "by: grouping 'label:' names no label"),
        ("/api/report", {"since": "2026-12-01", "until": "2026-11-01"}, "since 2026-12-01 is not before until 2026-11-01"),
        ("/api/report", {"since": "2026-13-45"}, "since '2026-13-45' is not a date (YYYY-MM-DD)"),
        ("/api/report", {"since": "2025-01-01", "until": "2026-12-01"}, f"is 699 days long: at most {MAX_PERIOD_DAYS} per request"),
        ("/api/report/storage", {"by": "dag"}, "by: unknown grouping 'dag': choose from resource, service"),
        ("/api/report/storage", {"since": "2026-11-31"}, "since '2026-11-31' is not a date (YYYY-MM-DD)"),
        ("/api/report/storage", {"since": "2020-01-01", "until": "2026-01-01"}, "days long: at most 400"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_with_a_message(ledger, path, params, message):
    response = client_for().get(path, params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_malformed_parameters_and_unknown_budgets(ledger, monkeypatch):
    client = client_for()
    assert client.get("/api/report", params={"top": "0"}).status_code == 422
    assert client.get("/api/task-instance", params={"dag_id": "sales", "task_id": "t"}).status_code == 422
    unknown = client.get("/api/budgets", params={"budget": "nope"})
    assert unknown.status_code == 404
    assert (
        unknown.json()["detail"]
        == "budget 'nope' is not in the budgets file: it has marketing-dags, ops-weekly"
    )
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH")
    conf.clear_cache()
    assert client.get("/api/budgets").json()["detail"] == "no budgets file: set [cost_provider] budgets_path"


def test_a_missing_ledger_is_a_503_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", f"sqlite:///{tmp_path / 'none.db'}")
    conf.clear_cache()
    response = client_for().get("/api/report")
    assert response.status_code == 503
    assert response.json()["detail"] == f"ledger: ledger sqlite:///{tmp_path / 'none.db'} does not exist: no file {tmp_path / 'none.db'}"  # fmt: skip


def test_every_endpoint_refuses_a_request_without_an_airflow_user(ledger):
    client = TestClient(create_app())  # Airflow's own authentication: no token, no cookie
    for path in ("/", "/task-instance", "/dag-run", "/static/costs.js", "/static/lines.js", "/static/vendor/plotly.min.js", "/api/report", "/api/report/storage", "/api/budgets", "/api/task-instance?dag_id=sales&task_id=load&run_id=r1", "/api/dag-run?dag_id=sales&run_id=r1"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "Not authenticated"}


def test_mounted_under_cost_with_its_openapi_page(ledger):
    """As the api-server mounts it (the plugin's lazy app under /cost): the page, the API and the
    OpenAPI document listing every endpoint and parameter."""
    from airflow_cost_provider.api import lazy_app

    server = FastAPI()
    server.mount(URL_PREFIX, lazy_app)
    inner = lazy_app.get()
    inner.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="ana", role="admin")
    inner.dependency_overrides[access.readable_dags] = lambda: None
    try:
        client = TestClient(server)
        page = client.get("/cost/")
        assert page.status_code == 200 and 'data-base="/cost"' in page.text
        assert 'href="/cost/api/docs"' in page.text
        # its scripts come from this app (plotly.js from the plotly package), never from another site
        scripts = re.findall(r'<script[^>]* src="([^"]+)"', page.text)
        assert [src.split("?")[0] for src in scripts] == [
            "/cost/static/vendor/plotly.min.js",
            "/cost/static/costs.js",
        ]
        for src in scripts:
            served = client.get(src)
            assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
        assert "plotly.js" in client.get(scripts[0]).text[:400]
        assert client.get("/cost/static/costs.css").headers["content-type"].startswith("text/css")
        assert client.get("/cost/static/page.py").status_code == 404
        tab = client.get("/cost/task-instance", params={"dag_id": "sales", "task_id": "load", "run_id": "r1"})
        assert tab.status_code == 200 and "/cost/static/task_instance.js" in tab.text
        run_tab = client.get("/cost/dag-run", params={"dag_id": "sales", "run_id": "r1"})
        assert run_tab.status_code == 200 and "/cost/static/dag_run.js" in run_tab.text
        shared = client.get("/cost/static/lines.js")
        assert shared.status_code == 200 and "export function lineCells" in shared.text
        report = client.get("/cost/api/report", params={"by": "dag", **PERIOD})
        assert report.status_code == 200 and report.json()["by"] == ["dag_id"]
        docs = client.get("/cost/api/docs")
        assert docs.status_code == 200 and "/cost/api/openapi.json" in docs.text
        spec = client.get("/cost/api/openapi.json").json()
    finally:
        inner.dependency_overrides.clear()
    assert set(spec["paths"]) == {
        "/api/report",
        "/api/overview",
        "/api/report/storage",
        "/api/coverage",
        "/api/budgets",
        "/api/task-instance",
        "/api/dag-run",
    }
    parameters = {p["name"] for p in spec["paths"]["/api/report"]["get"]["parameters"]}
    assert {"by", "since", "until", "dag_id", "task_id", "source", "top"} <= parameters
    fields = spec["components"]["schemas"]["CostReport"]["properties"]
    assert {"rows", "total", "unpriced", "data_range", "omitted_rows"} <= set(fields)
    assert {"401", "403", "400"} <= set(spec["paths"]["/api/report"]["get"]["responses"])


def test_the_plugin_mounts_the_api_under_cost_and_links_the_page_without_importing_it():
    code = (
        "from airflow_cost_provider.plugin import CostProviderPlugin as P;"
        "print([(a['url_prefix'], a['name']) for a in P.fastapi_apps]);"
        "print([(v['name'], v['href'], v['destination']) for v in P.external_views]);"
        "import sys; print(sorted(m for m in ('fastapi', 'airflow_cost_provider.api.app') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__COST")}
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.splitlines()
    assert loaded[-3:] == [
        "[('/cost', 'Costs API')]",
        "[('Costs', '/cost/', 'nav'), ('Cost', '/cost/task-instance?dag_id={DAG_ID}&run_id={RUN_ID}"
        "&task_id={TASK_ID}&map_index={MAP_INDEX}', 'task_instance'), "
        "('Cost', '/cost/dag-run?dag_id={DAG_ID}&run_id={RUN_ID}', 'dag_run')]",
        "[]",
    ]
    # FastAPI and the app are imported by the api-server's first request, never by a worker's plugin load
