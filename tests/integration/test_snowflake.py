"""Snowflake end to end: `SQLExecuteQueryOperator` and `SnowflakeHook` against fakesnow's server, and
`SnowflakeSqlApiOperator` against a fake of the SQL API, all unmodified, under `airflow dags test`.

Asserts what the servers received (the QUERY_TAG in the connector's login and in the SQL API request,
the comment in every statement), and the facet and ledger: warehouse credits per query, priced at the
edition's list price, from QUERY_HISTORY (SQL API) or, where fakesnow has no QUERY_HISTORY, from the
client's elapsed time and SHOW WAREHOUSES, and unpriced with the reason where an input is missing.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from importlib import resources
from urllib.parse import unquote

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import ledger_rows
from tests.support.fake_snowflake import FakesnowServer, self_signed_certificate
from tests.support.fake_snowflake_sql_api import fake_sql_api
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
DAG_ID = "cost_snowflake"
API_ACCOUNT = "fakeacct"
API_TOKEN = "pat-0123456789abcdef"
API_WAREHOUSE_SIZE = "Medium"
CONNECTOR_TASKS = ("connector_operator", "connector_hook", "connector_unknown_warehouse")
LOOKUP_TAG = {"airflow_cost_provider": "statistics"}
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")


def comment_tags(statement: str) -> list[dict[str, str]]:
    tags = []
    for body in _COMMENT.findall(statement):
        pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", body)
        tags.append({unquote(k): unquote(v.replace("\\'", "'")) for k, v in pairs})
    return tags


def api_execution_ms(statement: str) -> int:
    """The execution time the fake SQL API's history reports for a statement."""
    return 1500 + 37 * len(statement.split("/*")[0].strip())


def shipped_book() -> dict:
    text = resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    return yaml.safe_load(text)


def credit_price(edition: str) -> Decimal:
    entries = [
        p
        for p in shipped_book()["prices"]
        if p["source"] == "snowflake" and p["metric"] == "credits" and p.get("match") == {"edition": edition}
    ]
    assert len(entries) == 1
    return Decimal(entries[0]["amount"])


def credits_per_hour(size_key: str) -> Decimal:
    return Decimal(shipped_book()["factors"]["snowflake_warehouse_credits_per_hour"][size_key])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(
        tmp_path_factory.mktemp("tls"), [f"{API_ACCOUNT}.snowflakecomputing.com"], ["127.0.0.1"]
    )


@pytest.fixture(scope="module")
def fakesnow_server(certificate):
    server = FakesnowServer(certificate).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sql_api(certificate):
    with fake_sql_api(
        certificate=certificate,
        account=API_ACCOUNT,
        token=API_TOKEN,
        warehouses={"ANALYTICS_WH": API_WAREHOUSE_SIZE},
        execution_ms=api_execution_ms,
    ) as server:
        yield server


def connector_conn(server: FakesnowServer, warehouse: str, **extra) -> str:
    return json.dumps(
        {
            "conn_type": "snowflake",
            "login": "fake",
            "password": "snow",
            "schema": "public",
            "extra": server.connection_extra(database="shop", warehouse=warehouse, **extra),
        }
    )


@pytest.fixture(scope="module")
def snowflake_run(airflow_env, fakesnow_server, sql_api, certificate):
    api_conn = {
        "conn_type": "snowflake",
        "login": "airflow",
        "password": API_TOKEN,
        "schema": "PUBLIC",
        "extra": {
            "account": API_ACCOUNT,
            "database": "SHOP",
            "warehouse": "ANALYTICS_WH",
            "role": "TRANSFORMER",
            "authenticator": "programmatic_access_token",
        },
    }
    run = airflow_env.dags_test(
        DAG_ID,
        env={
            "AIRFLOW_CONN_SNOWFLAKE_PRICED": connector_conn(
                fakesnow_server, "FAKESNOW_WAREHOUSE", session_parameters={"QUERY_TAG": "team=finance"}
            ),
            "AIRFLOW_CONN_SNOWFLAKE_UNPRICED": connector_conn(fakesnow_server, "FAKESNOW_WAREHOUSE"),
            "AIRFLOW_CONN_SNOWFLAKE_REPORTING": connector_conn(fakesnow_server, "REPORTING_WH"),
            "AIRFLOW_CONN_SNOWFLAKE_API": json.dumps(api_conn),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {
                    "snowflake_priced": {"edition": "enterprise"},
                    "snowflake_reporting": {"edition": "enterprise"},
                    "snowflake_api": {"edition": "business_critical"},
                }
            ),
            # a loaded machine must not cut the statistics look-ups short
            "AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT": "30",
            # the SQL API's host is always https://<account>.snowflakecomputing.com: reach it through
            # the fake, which is also the proxy; the connector reaches fakesnow directly
            "HTTPS_PROXY": sql_api.proxy_url,
            "NO_PROXY": "127.0.0.1,localhost",
            "REQUESTS_CA_BUNDLE": str(certificate.cert_file),
            "SNOWFLAKE_DISABLE_PLATFORM_DETECTION": "true",
        },
    )
    assert run.process.returncode == 0, run.output[-6000:]
    return run


def complete_events(run) -> dict[str, dict]:
    events = run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith(f"{DAG_ID}.")
    }


def snowflake_usage(run, task_id: str) -> list[dict]:
    rows = ledger_rows(
        run.ledger_url,
        "SELECT u.metric, u.quantity, u.unit, u.resource, u.external_id, u.attributes, l.amount_nanos, "
        "l.currency, l.method, l.price_ref, l.unpriced_reason FROM cost_usage u "
        "JOIN cost_task_runs r ON u.task_run_id = r.id LEFT JOIN cost_lines l ON l.usage_id = u.id "
        f"WHERE u.source = 'snowflake' AND r.task_id = '{task_id}'",
    )
    for row in rows:
        if isinstance(row["attributes"], str):
            row["attributes"] = json.loads(row["attributes"])
    return rows


# --------------------------------------------------------------------------- the connector


def task_statements(server: FakesnowServer, task_id: str) -> list[str]:
    return [s for s in server.statements() if any(t["airflow_task_id"] == task_id for t in comment_tags(s))]


def test_connector_sessions_carry_the_query_tag_with_the_users_own(snowflake_run, fakesnow_server):
    events = complete_events(snowflake_run)
    tags = [p.get("QUERY_TAG") for p in fakesnow_server.login_session_parameters()]
    task_tags = [json.loads(t) for t in tags if t and "airflow_task_id" in t]
    by_task = {t["airflow_task_id"]: t for t in task_tags}
    assert set(by_task) == set(CONNECTOR_TASKS)
    for task_id, tag in by_task.items():
        assert tag["airflow_dag_id"] == DAG_ID
        assert tag["airflow_try_number"] == "1" and tag["airflow_map_index"] == "-1"
        assert tag["openlineage_run_id"] == events[task_id]["run"]["runId"]
    # the connection's own QUERY_TAG is kept inside the JSON
    assert by_task["connector_operator"]["query_tag"] == "team=finance"
    assert "query_tag" not in by_task["connector_hook"]
    # the provider's own look-ups have a session of their own, tagged as such
    assert LOOKUP_TAG in [json.loads(t) for t in tags if t and t.startswith("{")]


def test_connector_statements_carry_the_comment(snowflake_run, fakesnow_server):
    events = complete_events(snowflake_run)
    assert len(task_statements(fakesnow_server, "connector_operator")) == 3
    assert len(task_statements(fakesnow_server, "connector_hook")) == 1
    assert len(task_statements(fakesnow_server, "connector_unknown_warehouse")) == 1
    for task_id in CONNECTOR_TASKS:
        for statement in task_statements(fakesnow_server, task_id):
            (tags,) = comment_tags(statement)
            assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
    # the look-ups the provider ran are not tagged as the task's work
    lookups = [
        s for s in fakesnow_server.statements() if "QUERY_HISTORY" in s or s.startswith("SHOW WAREHOUSES")
    ]
    assert lookups and not any(comment_tags(s) for s in lookups)


def test_warehouse_size_is_looked_up_once_per_warehouse(snowflake_run, fakesnow_server):
    shows = [s for s in fakesnow_server.statements() if s.startswith("SHOW WAREHOUSES")]
    assert sorted(shows) == [
        "SHOW WAREHOUSES LIKE 'FAKESNOW_WAREHOUSE'",
        "SHOW WAREHOUSES LIKE 'REPORTING_WH'",
    ]


def test_connector_queries_are_priced_from_client_time_when_fakesnow_has_no_history(
    snowflake_run, fakesnow_server
):
    facet = complete_events(snowflake_run)["connector_operator"]["run"]["facets"][FACET]
    lines = [line for line in facet["lines"] if line["source"] == "snowflake"]
    statements = task_statements(fakesnow_server, "connector_operator")
    expected_ids = {qid for s in statements for qid in fakesnow_server.query_ids(s)}
    assert {line["externalId"] for line in lines} == expected_ids and len(expected_ids) == 3
    assert not [u for u in facet["unpriced"] if u["source"] == "snowflake"]

    rows = snowflake_usage(snowflake_run, "connector_operator")
    assert {r["external_id"] for r in rows} == expected_ids
    per_hour, price = credits_per_hour("XSMALL"), credit_price("enterprise")
    for row in rows:
        attributes = row["attributes"]
        # fakesnow has no QUERY_HISTORY: the client's time and SHOW WAREHOUSES stand in, and say so
        assert attributes["execution_time_source"] == "client"
        assert "QUERY_HISTORY" in attributes["query_history_unavailable"]
        assert (
            attributes["warehouse_size"] == "XSMALL"
            and attributes["warehouse_size_source"] == "show_warehouses"
        )
        assert (
            row["resource"] == "FAKESNOW_WAREHOUSE" and row["unit"] == "credit" and row["metric"] == "credits"
        )
        execution_ms = Decimal(str(attributes["execution_ms"]))
        assert Decimal(0) < execution_ms < Decimal(60_000)
        quantity = Decimal(row["quantity"])
        assert abs(quantity - per_hour * execution_ms / 3_600_000) <= Decimal("1e-12")
        assert row["amount_nanos"] == int(quantize_amount(quantity * price).scaleb(9))
        assert row["method"] == "list_price" and row["currency"] == "USD"
        assert row["price_ref"].endswith("snowflake/credits[edition=enterprise]")
    for line in lines:
        assert line["method"] == "list_price" and line["priceRef"].endswith(
            "snowflake/credits[edition=enterprise]"
        )


def test_connector_without_an_edition_is_unpriced_with_the_reason(snowflake_run, fakesnow_server):
    facet = complete_events(snowflake_run)["connector_hook"]["run"]["facets"][FACET]
    unpriced = [u for u in facet["unpriced"] if u["source"] == "snowflake"]
    (statement,) = task_statements(fakesnow_server, "connector_hook")
    assert len(unpriced) == 1
    assert (
        unpriced[0]["metric"] == "credits" and unpriced[0]["unit"] == "credit" and unpriced[0]["quantity"] > 0
    )
    assert "edition" in unpriced[0]["reason"] and "snowflake_unpriced" in unpriced[0]["reason"]
    assert unpriced[0]["externalId"] == fakesnow_server.query_ids(statement)[0]
    assert not [line for line in facet["lines"] if line["source"] == "snowflake"]
    (row,) = snowflake_usage(snowflake_run, "connector_hook")
    assert row["amount_nanos"] is None and "edition" in row["unpriced_reason"]


def test_connector_with_an_unknown_warehouse_size_is_unpriced_with_the_reason(snowflake_run):
    facet = complete_events(snowflake_run)["connector_unknown_warehouse"]["run"]["facets"][FACET]
    (unpriced,) = [u for u in facet["unpriced"] if u["source"] == "snowflake"]
    assert unpriced["metric"] == "queries"
    assert "REPORTING_WH" in unpriced["reason"] and "warehouse_size" in unpriced["reason"]
    assert "QUERY_HISTORY" in unpriced["reason"]


# --------------------------------------------------------------------------- the SQL API


def task_requests(sql_api, task_id: str) -> list[dict]:
    return [
        body
        for body in sql_api.posted()
        if "airflow_task_id" in (body.get("parameters") or {}).get("query_tag", "")
        and json.loads(body["parameters"]["query_tag"])["airflow_task_id"] == task_id
    ]


def test_sql_api_requests_carry_the_query_tag_and_a_comment_per_statement(snowflake_run, sql_api):
    events = complete_events(snowflake_run)
    for task_id, statements in (("sql_api_script", 2), ("sql_api_query", 1)):
        (request,) = task_requests(sql_api, task_id)
        tag = json.loads(request["parameters"]["query_tag"])
        assert tag["openlineage_run_id"] == events[task_id]["run"]["runId"]
        assert tag["airflow_dag_id"] == DAG_ID
        tags = comment_tags(request["statement"])
        assert len(tags) == statements
        assert all(t["openlineage_run_id"] == events[task_id]["run"]["runId"] for t in tags)
        assert request["warehouse"] == "ANALYTICS_WH"
    script = task_requests(sql_api, "sql_api_script")[0]["statement"]
    assert script.count(";") == 2 and ";\nINSERT INTO daily_totals" in script
    # the statistics look-up went through the SQL API too, as the provider's own work
    lookups = [b for b in sql_api.posted() if "QUERY_HISTORY(END_TIME_RANGE_START" in b["statement"]]
    assert lookups and all(json.loads(b["parameters"]["query_tag"]) == LOOKUP_TAG for b in lookups)
    assert not any(comment_tags(b["statement"]) for b in lookups)
    # nothing but the account's API host was reached through the proxy
    assert set(sql_api.connects) == {f"{API_ACCOUNT}.snowflakecomputing.com:443"}


def test_sql_api_statements_are_priced_from_query_history(snowflake_run, sql_api):
    events = complete_events(snowflake_run)
    per_hour, price = credits_per_hour("MEDIUM"), credit_price("business_critical")
    for task_id in ("sql_api_script", "sql_api_query"):
        facet = events[task_id]["run"]["facets"][FACET]
        assert not [u for u in facet["unpriced"] if u["source"] == "snowflake"]
        lines = {line["externalId"]: line for line in facet["lines"] if line["source"] == "snowflake"}
        rows = {row["external_id"]: row for row in snowflake_usage(snowflake_run, task_id)}
        assert set(rows) == set(lines)
        statements = [
            q for q in sql_api.queries.values() if q.handle in rows and q.query_type != "MULTI_STATEMENT"
        ]
        assert len(statements) == (2 if task_id == "sql_api_script" else 1)
        for query in statements:
            row, line = rows[query.handle], lines[query.handle]
            assert row["attributes"]["execution_time_source"] == "query_history"
            assert row["attributes"]["warehouse_size"] == "MEDIUM" and row["resource"] == "ANALYTICS_WH"
            execution_ms = api_execution_ms(query.text)
            assert Decimal(str(row["attributes"]["execution_ms"])) == execution_ms
            quantity = Decimal(row["quantity"])
            assert quantity == (per_hour * execution_ms / 3_600_000).quantize(Decimal("1e-12"))
            assert row["amount_nanos"] == int(quantize_amount(quantity * price).scaleb(9))
            assert line["method"] == "list_price" and line["priceRef"].endswith(
                "snowflake/credits[edition=business_critical]"
            )
    # the script's own handle carries no warehouse time: its two statements do
    script_rows = snowflake_usage(snowflake_run, "sql_api_script")
    (parent,) = [r for r in script_rows if sql_api.queries[r["external_id"]].query_type == "MULTI_STATEMENT"]
    assert Decimal(parent["quantity"]) == 0 and parent["amount_nanos"] == 0
    assert parent["attributes"]["statement_handles"] == ",".join(
        sql_api.queries[parent["external_id"]].children
    )
