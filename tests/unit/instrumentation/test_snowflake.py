"""Snowflake: QUERY_TAG and comments, statement capture through the real SnowflakeHook on fakesnow
(in process), the SQL API wrappers, the statistics look-ups against real row shapes, and failure
isolation."""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from importlib import resources
from types import SimpleNamespace

import pytest
import yaml

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation import snowflake as sf
from airflow_cost_provider.instrumentation.sql import SqlStatements, Statement

TAGS = {"airflow_dag_id": "sales", "airflow_task_id": "load", "airflow_try_number": "1"}
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
QUERY_A = "01bd1c2e-0000-4f1a-0000-0002b1c3d4e5"
QUERY_B = "01bd1c2e-0000-4f1a-0000-0002b1c3d4f6"


def shipped_factors() -> dict[str, Decimal]:
    text = resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    table = yaml.safe_load(text)["factors"]["snowflake_warehouse_credits_per_hour"]
    return {key: Decimal(value) for key, value in table.items()}


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING",
        json.dumps({"sf_priced": {"edition": "enterprise"}, "sf_sized": {"warehouse_size": "Large"}}),
    )
    conf.clear_cache()
    sf.clear_warehouse_cache()
    session = open_session(TaskTry("sales", "load", "manual__1", 1, -1), worker.sample())
    yield session
    clear_sessions()
    sf.clear_warehouse_cache()
    conf.clear_cache()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- tagging


def test_query_tag_joins_the_connections_own_tag_without_changing_the_input():
    params = {"account": "acme", "session_parameters": {"query_tag": "team=finance", "TIMEZONE": "UTC"}}
    tagged = sf.with_query_tag(params, TAGS)
    assert params["session_parameters"] == {"query_tag": "team=finance", "TIMEZONE": "UTC"}
    assert tagged["account"] == "acme"
    assert tagged["session_parameters"]["TIMEZONE"] == "UTC"
    assert "query_tag" not in tagged["session_parameters"]
    assert json.loads(tagged["session_parameters"]["QUERY_TAG"]) == {**TAGS, "query_tag": "team=finance"}
    assert (
        json.loads(sf.with_query_tag({"session_parameters": None}, TAGS)["session_parameters"]["QUERY_TAG"])
        == TAGS
    )


def test_each_statement_of_a_script_gets_the_comment_and_nothing_else_changes():
    script = (
        "CREATE TABLE t (a TEXT); -- the table\n"
        "INSERT INTO t VALUES ('a;b') -- one row\n"
        "; /* done; */ SELECT $$x;y$$ FROM t\n"
        ";\n-- trailing note"
    )
    tagged = sf.comment_each_statement(script, TAGS)
    comment = "/*airflow_dag_id='sales',airflow_task_id='load',airflow_try_number='1'*/"
    assert tagged == (
        f"CREATE TABLE t (a TEXT) {comment}; -- the table\n"
        f"INSERT INTO t VALUES ('a;b') -- one row\n{comment}"
        f"; /* done; */ SELECT $$x;y$$ FROM t {comment};\n-- trailing note"
    )
    assert sf.comment_each_statement("SELECT 1", TAGS) == f"SELECT 1 {comment}"
    assert sf.comment_each_statement("SELECT 1", {}) == "SELECT 1"


def test_every_size_snowflake_reports_has_a_factor_in_the_shipped_price_book():
    factors = shipped_factors()
    # as SHOW WAREHOUSES and QUERY_HISTORY write them, and as CREATE WAREHOUSE accepts them
    reported = [
        "X-Small",
        "Small",
        "Medium",
        "Large",
        "X-Large",
        "2X-Large",
        "3X-Large",
        "4X-Large",
        "5X-Large",
    ]
    keys = [sf.warehouse_credits_key(size) for size in [*reported, "6X-Large"]]
    assert all(key in factors for key in keys)
    assert [factors[key] for key in keys] == [Decimal(2**n) for n in range(10)]
    assert sf.warehouse_credits_key("XXLARGE") == sf.warehouse_credits_key("X2LARGE") == "XXLARGE"
    assert sf.warehouse_credits_key("Medium", "SNOWPARK-OPTIMIZED") == "SNOWPARK-OPTIMIZED/MEDIUM"
    assert sf.warehouse_credits_key(None) is None and sf.warehouse_credits_key("") is None


# --------------------------------------------------------------------------- look-up SQL and rows


def test_history_sql_only_takes_query_ids():
    sql = sf.history_sql([QUERY_A, "x') OR 1=1 --", QUERY_B], NOW)
    assert f"QUERY_ID IN ('{QUERY_A}', '{QUERY_B}')" in sql
    assert "OR 1=1" not in sql
    assert f"END_TIME_RANGE_START => TO_TIMESTAMP_LTZ({int(NOW.timestamp() * 1000)}, 3)" in sql
    assert "RESULT_LIMIT => 10000" in sql
    assert sf.show_warehouses_sql("it's") == "SHOW WAREHOUSES LIKE 'it''s'"


def test_history_rows_from_the_connector_and_from_the_sql_api_parse_alike():
    connector_row = {  # the connector returns NUMBER columns as int
        "QUERY_ID": QUERY_A, "WAREHOUSE_NAME": "COMPUTE_WH", "WAREHOUSE_SIZE": "X-Small",
        "WAREHOUSE_TYPE": "STANDARD", "EXECUTION_STATUS": "SUCCESS", "EXECUTION_TIME": 1234,
        "START_EPOCH_MS": 1795325394583, "END_EPOCH_MS": 1795325395850,
    }  # fmt: skip
    api_row = {  # the SQL API returns every value as text, NULL as null
        "QUERY_ID": QUERY_B, "WAREHOUSE_NAME": None, "WAREHOUSE_SIZE": None, "WAREHOUSE_TYPE": None,
        "EXECUTION_STATUS": "FAIL", "EXECUTION_TIME": "7", "START_EPOCH_MS": "1795325394583",
        "END_EPOCH_MS": "1795325394590",
    }  # fmt: skip
    history = sf.parse_history([connector_row, {k.lower(): v for k, v in api_row.items()}])
    a, b = history[QUERY_A], history[QUERY_B]
    assert (a.warehouse_size, a.execution_ms, a.execution_status) == ("X-Small", Decimal(1234), "SUCCESS")
    assert a.start_time == dt.datetime(2026, 11, 22, 5, 29, 54, 583000, tzinfo=dt.timezone.utc)
    assert b.warehouse_size is None and b.execution_ms == Decimal(7) and b.execution_status == "FAIL"


def show_row(name: str, size: str, kind: str = "STANDARD") -> dict:
    """A SHOW WAREHOUSES row as the connector returns it (column names lowercase)."""
    return {
        "name": name, "state": "SUSPENDED", "type": kind, "size": size, "min_cluster_count": 1,
        "max_cluster_count": 1, "started_clusters": 0, "running": 0, "queued": 0, "is_default": "N",
        "is_current": "Y", "auto_suspend": 600, "auto_resume": "true", "available": "", "provisioning": "",
        "quiescing": "", "other": "", "created_on": NOW, "resumed_on": NOW, "updated_on": NOW,
        "owner": "SYSADMIN", "comment": "", "enable_query_acceleration": "false",
        "query_acceleration_max_scale_factor": 8, "resource_monitor": "null", "actives": 0, "pendings": 0,
        "failed": 0, "suspended": 1, "uuid": "4726380", "scaling_policy": "STANDARD", "budget": None,
        "owner_role_type": "ROLE", "resource_constraint": "STANDARD_GEN_1",
    }  # fmt: skip


def test_show_warehouses_picks_the_named_warehouse_not_a_like_match():
    rows = [show_row("COMPUTEXWH", "Large"), show_row("COMPUTE_WH", "X-Small")]
    assert sf.parse_show_warehouses(rows, "compute_wh") == sf.Warehouse("COMPUTE_WH", "X-Small", "STANDARD")
    assert sf.parse_show_warehouses(rows, "OTHER_WH") is None


# --------------------------------------------------------------------------- costing


class FakeLookup:
    """Stands in for a session: answers the look-ups with the rows given, counting them."""

    def __init__(self, history_rows=None, show_rows=None, history_error=None) -> None:
        self.history_rows = history_rows or []
        self.show_rows = show_rows or []
        self.history_error = history_error
        self.statements: list[str] = []

    def rows(self, sql):
        self.statements.append(sql)
        if sql.startswith("SHOW WAREHOUSES"):
            return self.show_rows
        if self.history_error:
            raise self.history_error
        return self.history_rows

    def close(self):
        pass


def pending(query_id=QUERY_A, conn_id="sf_priced", warehouse="COMPUTE_WH", elapsed="2.5", **fields):
    return sf.PendingQuery(
        query_id=query_id,
        conn_id=conn_id,
        account="acme",
        warehouse=warehouse,
        start_time=NOW,
        elapsed=None if elapsed is None else Decimal(elapsed),
        **fields,
    )


def history_row(query_id=QUERY_A, size="Medium", ms=90_000, kind="STANDARD", warehouse="COMPUTE_WH"):
    return {
        "QUERY_ID": query_id, "WAREHOUSE_NAME": warehouse, "WAREHOUSE_SIZE": size, "WAREHOUSE_TYPE": kind,
        "EXECUTION_STATUS": "SUCCESS", "EXECUTION_TIME": ms, "START_EPOCH_MS": 1795325394583,
        "END_EPOCH_MS": 1795325394583 + ms,
    }  # fmt: skip


def test_credits_come_from_query_history(session):
    lookup = FakeLookup([history_row(ms=90_000)])
    (usage,) = sf._resolve([pending()], 10, lambda hook, deadline: lookup)
    # Medium = 4 credits/hour x 90 s
    assert (usage.metric, usage.unit, usage.quantity) == ("credits", "credit", Decimal("0.1"))
    assert usage.external_id == QUERY_A and usage.resource == "COMPUTE_WH"
    assert usage.attributes["edition"] == "enterprise" and usage.attributes["cost_method"] == "list_price"
    assert usage.attributes["execution_time_source"] == "query_history"
    assert usage.attributes["warehouse_size"] == "MEDIUM" and usage.attributes["execution_ms"] == 90_000
    assert "why_unpriced" not in usage.attributes
    assert usage.end_time - usage.start_time == dt.timedelta(seconds=90)
    assert not [s for s in lookup.statements if s.startswith("SHOW")]


def test_one_history_look_up_per_connection_and_no_warehouse_means_no_credits(session):
    lookup = FakeLookup([history_row(QUERY_A), history_row(QUERY_B, size=None, ms=40, warehouse=None)])
    usages = sf._resolve([pending(QUERY_A), pending(QUERY_B)], 10, lambda hook, deadline: lookup)
    assert len(lookup.statements) == 1 and QUERY_A in lookup.statements[0] and QUERY_B in lookup.statements[0]
    metadata_only = next(u for u in usages if u.external_id == QUERY_B)
    assert metadata_only.quantity == 0 and metadata_only.attributes["ran_on_warehouse"] is False


def test_without_history_client_time_and_show_warehouses_stand_in_once_per_warehouse(session):
    lookup = FakeLookup(
        show_rows=[show_row("COMPUTE_WH", "X-Small")], history_error=RuntimeError("no such function")
    )
    (first,) = sf._resolve([pending(elapsed="36")], 10, lambda hook, deadline: lookup)
    (second,) = sf._resolve([pending(QUERY_B, elapsed="72")], 10, lambda hook, deadline: lookup)
    assert first.quantity == Decimal("0.01") and second.quantity == Decimal("0.02")  # 1 credit/hour
    assert first.attributes["execution_time_source"] == "client"
    assert first.attributes["warehouse_size_source"] == "show_warehouses"
    assert "no such function" in first.attributes["query_history_unavailable"]
    assert sum(s.startswith("SHOW WAREHOUSES") for s in lookup.statements) == 1


def test_no_session_for_the_look_up_uses_the_configured_size_or_explains(session):
    def refuse(hook, deadline):
        raise ConnectionError("login refused")

    sized, unknown = sf._resolve(
        [pending(conn_id="sf_sized", elapsed="9"), pending(QUERY_B, conn_id="sf_other", elapsed="9")],
        10,
        refuse,
    )
    assert (
        sized.quantity == Decimal("0.02")
        and sized.attributes["warehouse_size_source"] == "connection_pricing"
    )
    assert "edition" in sized.attributes["why_unpriced"] and "sf_sized" in sized.attributes["why_unpriced"]
    assert unknown.metric == "queries" and unknown.external_id == QUERY_B
    reason = unknown.attributes["why_unpriced"]
    assert "login refused" in reason and "warehouse_size" in reason and "sf_other" in reason


def test_a_warehouse_type_without_a_factor_is_unpriced_with_the_key_to_add(session):
    lookup = FakeLookup([history_row(kind="SNOWPARK-OPTIMIZED")])
    (usage,) = sf._resolve([pending()], 10, lambda hook, deadline: lookup)
    assert usage.metric == "queries" and usage.external_id == QUERY_A
    assert "SNOWPARK-OPTIMIZED/MEDIUM" in usage.attributes["why_unpriced"]


def test_a_query_still_running_at_the_end_is_kept_unpriced_with_its_id(session):
    lookup = FakeLookup([{**history_row(), "EXECUTION_STATUS": "RUNNING", "END_EPOCH_MS": None}])
    (usage,) = sf._resolve([pending(elapsed=None)], 10, lambda hook, deadline: lookup)
    assert (usage.metric, usage.external_id) == ("queries", QUERY_A)
    assert "still RUNNING" in usage.attributes["why_unpriced"]


def test_a_multi_statement_request_is_costed_by_its_statements(session):
    item = pending("01bd0000-0000-0001-0000-000000000001", elapsed="5", children=[QUERY_A, QUERY_B])
    lookup = FakeLookup([history_row(QUERY_A, ms=36_000), history_row(QUERY_B, ms=72_000)])
    parent, a, b = sf._resolve([item], 10, lambda hook, deadline: lookup)
    assert parent.external_id == item.query_id and parent.quantity == 0
    assert (a.external_id, a.quantity, b.quantity) == (QUERY_A, Decimal("0.04"), Decimal("0.08"))
    assert a.attributes["statement_of"] == item.query_id


# --------------------------------------------------------------------------- the connector, in process


@pytest.fixture
def instrumented():
    statements, queries = SqlStatements(), sf.SnowflakeQueries()
    statements.instrument()
    queries.instrument()
    yield queries
    queries.uninstrument()
    statements.uninstrument()


@pytest.fixture
def fake_snowflake(monkeypatch):
    import fakesnow

    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_PRICED",
        json.dumps(
            {
                "conn_type": "snowflake",
                "login": "fake",
                "password": "snow",
                "schema": "public",
                "extra": {
                    "account": "acme",
                    "database": "shop",
                    "warehouse": "FAKESNOW_WAREHOUSE",
                    "session_parameters": {"QUERY_TAG": "team=finance"},
                },
            }
        ),
    )
    with fakesnow.patch():
        import snowflake.connector

        yield snowflake.connector.connect  # the mock that records each connect call


def test_hook_sessions_and_statements_are_tagged_and_kept_for_the_look_up(
    instrumented, session, fake_snowflake
):
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

    hook = SnowflakeHook(snowflake_conn_id="sf_priced")
    hook.run(["CREATE TABLE orders (id INT)", "INSERT INTO orders VALUES (1)"])
    (connect_call,) = fake_snowflake.call_args_list
    tag = json.loads(connect_call.kwargs["session_parameters"]["QUERY_TAG"])
    assert tag == {**session.tags, "query_tag": "team=finance"}
    items = session.pending[sf.resolve_connector_queries]
    assert [item.query_id for item in items] == hook.query_ids
    assert all(i.warehouse == "FAKESNOW_WAREHOUSE" and i.conn_id == "sf_priced" for i in items)
    assert all(Decimal(0) < i.elapsed < Decimal(30) for i in items)

    # fakesnow has no QUERY_HISTORY: client time, and its SHOW WAREHOUSES says X-Small
    usages = sf.resolve_connector_queries(items, 20)
    assert [u.external_id for u in usages] == hook.query_ids
    assert all(u.attributes["execution_time_source"] == "client" for u in usages)
    per_hour = shipped_factors()["XSMALL"]
    for usage, item in zip(usages, items, strict=True):
        assert usage.attributes["execution_ms"] == item.elapsed * 1000
        assert abs(usage.quantity - per_hour * item.elapsed / 3600) <= Decimal("1e-12")
    lookup_call = fake_snowflake.call_args_list[-1]
    assert json.loads(lookup_call.kwargs["session_parameters"]["QUERY_TAG"]) == {
        "airflow_cost_provider": "statistics"
    }
    assert lookup_call.kwargs["login_timeout"] >= 1 and lookup_call.kwargs["network_timeout"] >= 1


def test_outside_a_task_or_suppressed_or_untagged_the_session_is_untouched(
    instrumented, session, fake_snowflake, monkeypatch
):
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

    with suppress():
        assert SnowflakeHook(snowflake_conn_id="sf_priced")._get_conn_params()["session_parameters"] == {
            "QUERY_TAG": "team=finance"
        }
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "snowflake")
    conf.clear_cache()
    params = SnowflakeHook(snowflake_conn_id="sf_priced")._get_conn_params()
    assert params["session_parameters"] == {"QUERY_TAG": "team=finance"}
    clear_sessions()
    SnowflakeHook(snowflake_conn_id="sf_priced").run("SELECT 1")
    assert fake_snowflake.call_args_list[-1].kwargs["session_parameters"] == {"QUERY_TAG": "team=finance"}


def test_engine_keeps_the_query_id_and_skips_a_statement_that_never_ran(session):
    hook = SimpleNamespace(_get_static_conn_params={"account": "acme", "warehouse": "COMPUTE_WH"})
    ran = Statement(hook, SimpleNamespace(sfqid=QUERY_A), "sf_priced", NOW, Decimal("1.5"), failed=True)
    never = Statement(hook, SimpleNamespace(sfqid=None), "sf_priced", NOW, Decimal("0.1"), failed=True)
    sf.SQL_ENGINE.measure(session, ran)
    sf.SQL_ENGINE.measure(session, never)
    (item,) = session.pending[sf.resolve_connector_queries]
    assert (item.query_id, item.warehouse, item.account, item.failed) == (QUERY_A, "COMPUTE_WH", "acme", True)


# --------------------------------------------------------------------------- the SQL API wrappers


class ApiHook:
    """What the wrappers read from a SnowflakeSqlApiHook."""

    snowflake_conn_id = "sf_priced"
    account = None
    warehouse = None
    _get_static_conn_params = {"account": "acme", "warehouse": "ANALYTICS_WH"}

    def get_conn_id(self):
        return self.snowflake_conn_id


class ExecuteQuery:
    """`execute_query`'s signature, counting calls."""

    def __init__(self, handles=None) -> None:
        self.calls: list[tuple] = []
        self.handles = handles or [QUERY_A]

    def __call__(self, sql, statement_count, query_tag="", bindings=None, timeout=None):
        self.calls.append((sql, statement_count, query_tag))
        return self.handles


def test_sql_api_request_is_tagged_and_its_handles_kept(session):
    execute = ExecuteQuery([QUERY_A, QUERY_B])
    result = sf._execute_query_wrapper(
        execute, ApiHook(), ("SELECT 1; SELECT 2;", 2), {"query_tag": "nightly"}
    )
    assert result == [QUERY_A, QUERY_B]
    ((sql, count, query_tag),) = execute.calls
    assert sql.count("/*airflow_dag_id='sales'") == 2 and count == 2
    assert json.loads(query_tag) == {**session.tags, "query_tag": "nightly"}
    items = session.pending[sf.resolve_sql_api_statements]
    assert [(i.query_id, i.warehouse, i.conn_id) for i in items] == [
        (QUERY_A, "ANALYTICS_WH", "sf_priced"),
        (QUERY_B, "ANALYTICS_WH", "sf_priced"),
    ]


def test_the_polls_end_the_client_time_and_list_a_scripts_statements(session):
    parent = "01bd0000-0000-0001-0000-000000000001"
    sf._execute_query_wrapper(ExecuteQuery([parent]), ApiHook(), ("SELECT 1; SELECT 2;", 2), {})
    running = {"status": "running", "message": "Query statements are still running"}
    done = {"status": "success", "message": "ok", "statement_handles": [QUERY_A, QUERY_B]}
    assert sf._query_status_wrapper(lambda query_id: running, ApiHook(), (parent,), {}) is running
    (item,) = session.pending[sf.resolve_sql_api_statements]
    assert item.elapsed is None
    assert sf._query_status_wrapper(lambda query_id: done, ApiHook(), (), {"query_id": parent}) is done
    assert item.children == [QUERY_A, QUERY_B] and item.elapsed is not None and not item.failed


def test_wrapper_failures_run_the_call_once_and_warn_once(session, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(sf, "comment_each_statement", broken)
    monkeypatch.setattr(sf, "_defer_statements", broken)
    monkeypatch.setattr(sf, "with_query_tag", broken)
    execute = ExecuteQuery()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert sf._execute_query_wrapper(execute, ApiHook(), ("SELECT 1", 1), {}) == [QUERY_A]
        assert sf._execute_query_wrapper(execute, ApiHook(), ("SELECT 1", 1), {}) == [QUERY_A]
    assert execute.calls == [("SELECT 1", 1, ""), ("SELECT 1", 1, "")]
    assert len([w for w in warnings_of(caplog) if "tagging a snowflake SQL API request" in w]) == 1
    assert len([w for w in warnings_of(caplog) if "capturing snowflake SQL API statements" in w]) == 1
    assert all(w.endswith("(no impact on the task)") for w in warnings_of(caplog))

    calls = []
    params = {"account": "acme", "session_parameters": {"QUERY_TAG": "team"}}

    def get_conn_params():
        calls.append(1)
        return params

    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        assert sf._conn_params_wrapper(get_conn_params, None, (), {}) is params
    assert calls == [1]
    assert len([w for w in warnings_of(caplog) if "tagging a snowflake session" in w]) == 1


def test_errors_of_the_call_itself_propagate_unchanged(session):
    def failing(sql, statement_count, query_tag="", bindings=None, timeout=None):
        raise PermissionError("denied")

    with pytest.raises(PermissionError, match="denied"):
        sf._execute_query_wrapper(failing, ApiHook(), ("SELECT 1", 1), {})
    assert sf.resolve_sql_api_statements not in session.pending


def test_suppressed_or_outside_a_task_the_request_is_untouched(session):
    execute = ExecuteQuery()
    with suppress():
        sf._execute_query_wrapper(execute, ApiHook(), ("SELECT 1", 1), {})
    clear_sessions()
    sf._execute_query_wrapper(execute, ApiHook(), ("SELECT 2", 1), {})
    assert execute.calls == [("SELECT 1", 1, ""), ("SELECT 2", 1, "")]
    assert session.pending == {}


# --------------------------------------------------------------------------- patching


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook
    from airflow.providers.snowflake.hooks.snowflake_sql_api import SnowflakeSqlApiHook

    originals = (
        SnowflakeHook.__dict__["_get_conn_params"],
        SnowflakeSqlApiHook.__dict__["execute_query"],
        SnowflakeSqlApiHook.__dict__["get_sql_api_query_status"],
    )
    instrumentation = sf.SnowflakeQueries()
    instrumentation.instrument()
    instrumentation.instrument()
    wrapped = (
        SnowflakeHook.__dict__["_get_conn_params"],
        SnowflakeSqlApiHook.__dict__["execute_query"],
        SnowflakeSqlApiHook.__dict__["get_sql_api_query_status"],
    )
    assert all(w.__wrapped__ is o for w, o in zip(wrapped, originals, strict=True))
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert (
        SnowflakeHook.__dict__["_get_conn_params"],
        SnowflakeSqlApiHook.__dict__["execute_query"],
        SnowflakeSqlApiHook.__dict__["get_sql_api_query_status"],
    ) == originals
    instrumentation.instrument()
    assert SnowflakeHook.__dict__["_get_conn_params"] is not originals[0]
    instrumentation.uninstrument()
