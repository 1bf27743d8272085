"""Test DAG: the Snowflake provider's own operators and hook, unchanged, against fakesnow's server
(the connector) and a fake of the SQL API, both on 127.0.0.1 (connections come from the environment).

- snowflake_priced: edition set, warehouse FAKESNOW_WAREHOUSE (which fakesnow's SHOW WAREHOUSES lists),
  and a QUERY_TAG of its own in session_parameters.
- snowflake_unpriced: the same warehouse, no edition.
- snowflake_reporting: edition set, warehouse REPORTING_WH, whose size nothing reports.
- snowflake_api: the SQL API, edition set.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.snowflake.operators.snowflake import SnowflakeSqlApiOperator
from airflow.sdk import dag, task

CONNECTOR_STATEMENTS = [
    "CREATE OR REPLACE TABLE orders (id INTEGER, amount NUMBER(10, 2))",
    "INSERT INTO orders VALUES (1, 9.50), (2, 20.00)",
    "SELECT COUNT(*) FROM orders",
]
API_SCRIPT = "CREATE TABLE daily_totals (day DATE, total NUMBER(12, 2));\nINSERT INTO daily_totals SELECT CURRENT_DATE, 29.50;"
API_QUERY = "SELECT COUNT(*) FROM daily_totals"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_snowflake():
    connector_operator = SQLExecuteQueryOperator(
        task_id="connector_operator", conn_id="snowflake_priced", sql=CONNECTOR_STATEMENTS
    )

    @task
    def connector_hook() -> str:
        from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

        return str(
            SnowflakeHook(snowflake_conn_id="snowflake_unpriced").get_first("SELECT SUM(amount) FROM orders")[
                0
            ]
        )

    unknown_warehouse = SQLExecuteQueryOperator(
        task_id="connector_unknown_warehouse", conn_id="snowflake_reporting", sql="SELECT MAX(id) FROM orders"
    )
    sql_api_script = SnowflakeSqlApiOperator(
        task_id="sql_api_script",
        snowflake_conn_id="snowflake_api",
        sql=API_SCRIPT,
        statement_count=2,
        poll_interval=1,
    )
    sql_api_query = SnowflakeSqlApiOperator(
        task_id="sql_api_query",
        snowflake_conn_id="snowflake_api",
        sql=API_QUERY,
        statement_count=1,
        poll_interval=1,
    )

    connector_operator >> connector_hook() >> unknown_warehouse >> sql_api_script >> sql_api_query


cost_snowflake()
