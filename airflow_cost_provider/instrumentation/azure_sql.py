"""Azure SQL Database and Synapse serverless SQL statements run through MsSqlHook / OdbcHook.

- Azure SQL (provisioned vCores): the vCore rate x the statement's execution time x the database's
  vCores, from [cost_provider] connection_pricing {"<conn>": {"tier": "general_purpose", "vcores": "4"}}.
- Synapse serverless SQL (billed per TB processed, 10 MB minimum per query): each statement's comment
  also carries a statement id; at the task's end one query on sys.dm_exec_requests_history reads the
  data processed by all of them. A connection is taken as serverless when connection_pricing says
  {"service": "synapse_serverless"} or its host ends in -ondemand.sql.azuresynapse.net.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture.session import CaptureSession
from airflow_cost_provider.instrumentation.base import unresolved_usage
from airflow_cost_provider.instrumentation.sql import SqlEngine, Statement, runtime_usage
from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE, UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage
from airflow_cost_provider.tagging import add_sql_comment

SERVERLESS_SOURCE = "synapse_serverless_sql"
SERVERLESS_HOST_SUFFIX = "-ondemand.sql.azuresynapse.net"
STATEMENT_TAG = "airflow_statement_id"
MINIMUM_MB = Decimal(10)  # Synapse serverless bills at least 10 MB per query
# Statement ids are hex, so they can be matched with LIKE without escaping.
HISTORY_QUERY = (
    "SELECT distributed_statement_id, status, start_time, end_time, total_elapsed_time_ms, "
    "data_processed_mb, query_text FROM sys.dm_exec_requests_history WHERE {conditions}"
)


def is_serverless(hook: Any, conn_id: str | None) -> bool:
    if conf.pricing_for_connection(conn_id).get("service") == "synapse_serverless":
        return True
    connection = getattr(hook, "_connection", None)  # only when the hook already loaded it
    return str(getattr(connection, "host", "") or "").lower().endswith(SERVERLESS_HOST_SUFFIX)


@dataclass
class ServerlessStatement:
    statement_id: str
    conn_id: str | None
    hook: Any

    def unresolved(self, reason: str) -> Usage:
        return unresolved_usage(
            SERVERLESS_SOURCE, None, reason, statement_id=self.statement_id, conn_id=self.conn_id
        )


def data_processed_usage(item: ServerlessStatement, row: dict[str, Any]) -> Usage:
    processed = Decimal(str(row.get("data_processed_mb") or 0))
    failed = str(row.get("status", "")).lower() not in ("completed", "succeeded", "")
    # failed queries are not billed; the others at least 10 MB
    billed = Decimal(0) if failed else max(processed, MINIMUM_MB)
    return Usage(
        source=SERVERLESS_SOURCE,
        metric="data_processed",
        quantity=billed,
        unit="MB",
        resource=item.conn_id,
        external_id=str(row.get("distributed_statement_id") or item.statement_id),
        start_time=row.get("start_time"),
        end_time=row.get("end_time"),
        attributes={
            "conn_id": item.conn_id,
            "data_processed_mb": str(processed),
            "elapsed_ms": row.get("total_elapsed_time_ms"),
            "status": row.get("status"),
            METHOD_ATTRIBUTE: "list_price",
        },
    )


def resolve_serverless(items: list[ServerlessStatement], timeout: float) -> list[Usage]:
    """One history query per connection for all of the task's serverless statements."""
    usages: list[Usage] = []
    by_conn: dict[str | None, list[ServerlessStatement]] = {}
    for item in items:
        by_conn.setdefault(item.conn_id, []).append(item)
    for conn_items in by_conn.values():
        conditions = " OR ".join(
            f"query_text LIKE '%{STATEMENT_TAG}=''{item.statement_id}''%'" for item in conn_items
        )
        hook = conn_items[0].hook
        rows = hook.get_records(HISTORY_QUERY.format(conditions=conditions))
        columns = [c.strip() for c in HISTORY_QUERY.split("SELECT ", 1)[1].split(" FROM", 1)[0].split(",")]
        found: dict[str, dict[str, Any]] = {}
        for values in rows or []:
            row = dict(zip(columns, values, strict=False))
            for item in conn_items:
                if f"{STATEMENT_TAG}='{item.statement_id}'" in str(row.get("query_text", "")):
                    found[item.statement_id] = row
        for item in conn_items:
            row = found.get(item.statement_id)
            usages.append(
                data_processed_usage(item, row)
                if row is not None
                else item.unresolved("not in sys.dm_exec_requests_history yet")
            )
    return usages


class AzureSqlEngine(SqlEngine):
    source = "azure_sql"

    def tag(self, sql: str, session: CaptureSession, hook: Any) -> str:
        from airflow_cost_provider.instrumentation.sql import conn_id_of

        if is_serverless(hook, conn_id_of(hook)):
            statement_id = uuid.uuid4().hex[:16]
            hook._cost_provider_statement_id = statement_id
            return add_sql_comment(sql, {**session.tags, STATEMENT_TAG: statement_id})
        return super().tag(sql, session, hook)

    def measure(self, session: CaptureSession, statement: Statement) -> None:
        if is_serverless(statement.hook, statement.conn_id):
            statement_id = getattr(statement.hook, "_cost_provider_statement_id", None)
            if statement_id is None:  # tagging off: nothing to find it by
                session.record(
                    unresolved_usage(
                        SERVERLESS_SOURCE,
                        None,
                        "tagging is off for azure_sql: serverless statements are found by their tag",
                        conn_id=statement.conn_id,
                    )
                )
                return
            session.defer(
                resolve_serverless, ServerlessStatement(statement_id, statement.conn_id, statement.hook)
            )
            return
        pricing = conf.pricing_for_connection(statement.conn_id)
        usage = runtime_usage(self.source, statement)
        vcores = Decimal(pricing.get("vcores", "0") or "0")
        attributes = dict(usage.attributes)
        attributes[UNPRICED_HINT_ATTRIBUTE] = (
            f"connection {statement.conn_id!r} needs its tier and vCores in [cost_provider] "
            'connection_pricing, e.g. {"'
            + str(statement.conn_id)
            + '": {"tier": "general_purpose", "vcores": "4"}}'
        )
        session.record(
            Usage(
                source=self.source,
                metric="vcore_time",
                quantity=statement.elapsed * vcores,
                unit="vCore-second",
                resource=statement.conn_id,
                start_time=statement.start_time,
                end_time=statement.end_time,
                attributes={**attributes, "vcores": str(vcores), "elapsed_seconds": str(statement.elapsed)}
                if vcores
                else {k: v for k, v in attributes.items() if k != "tier"},
            )
        )


SQL_ENGINE = AzureSqlEngine()
