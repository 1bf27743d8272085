"""Test DAG: statements that do not go through `DbApiHook._run_command` — dataframes, insert_rows,
SQLAlchemy engines from the hook, and hook classes written here with their own `_run_command` or
`run` — against the real PostgreSQL and MariaDB servers the tests start (connections pg_paths and
mysql_paths come from the environment)."""

from __future__ import annotations

from contextlib import closing

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import dag, task

PG_SETUP = [
    "DROP TABLE IF EXISTS path_orders",
    "CREATE TABLE path_orders (id INTEGER, amount NUMERIC(10, 2))",
]


class AuditedPostgresHook(PostgresHook):
    """A team's own hook: its _run_command replaces the provider's (no super() call)."""

    def _run_command(self, cur, sql_statement, parameters):
        self.log.info("audited statement: %s", sql_statement)
        cur.execute(sql_statement, parameters)


class DirectPostgresHook(PostgresHook):
    """A team's own hook: its run executes on the hook's connection without _run_command."""

    def run(self, sql, autocommit=False, parameters=None, handler=None, **kwargs):
        with closing(self.get_conn()) as conn:
            with closing(conn.cursor()) as cur:
                cur.execute(sql)
                result = handler(cur) if handler is not None else None
            conn.commit()
        return result


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_sql_paths():
    pg_setup = SQLExecuteQueryOperator(task_id="pg_setup", conn_id="pg_paths", sql=PG_SETUP)

    @task
    def pg_insert_rows() -> None:
        PostgresHook(postgres_conn_id="pg_paths").insert_rows(
            "path_orders", [(1, 1.5), (2, 3.0), (3, 4.5)], target_fields=["id", "amount"]
        )

    @task
    def pg_get_df() -> float:
        frame = PostgresHook(postgres_conn_id="pg_paths").get_df(
            "SELECT id, amount FROM path_orders WHERE amount > %(least)s ORDER BY id", parameters={"least": 2}
        )
        return float(frame["amount"].sum())

    @task
    def pg_get_df_by_chunks() -> list[int]:
        hook = PostgresHook(postgres_conn_id="pg_paths")
        chunks = hook.get_df_by_chunks("SELECT id FROM path_orders ORDER BY id", chunksize=2)
        return [len(chunk) for chunk in chunks]

    @task
    def pg_engine() -> float:
        import sqlalchemy as sa

        engine = PostgresHook(postgres_conn_id="pg_paths").get_sqlalchemy_engine()
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE path_orders SET amount = amount * 2 WHERE id = :id"), {"id": 1})
                return float(conn.execute(sa.text("SELECT sum(amount) FROM path_orders")).scalar())
        finally:
            engine.dispose()

    @task
    def pg_uri_engine() -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(PostgresHook(postgres_conn_id="pg_paths").get_uri())
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM path_orders")).scalar())
        finally:
            engine.dispose()

    @task
    def pg_own_hooks() -> int:
        AuditedPostgresHook(postgres_conn_id="pg_paths").run(
            ["SELECT 1 AS audited", "DELETE FROM path_orders WHERE id = 3"]
        )
        return DirectPostgresHook(postgres_conn_id="pg_paths").run(
            "SELECT count(*) FROM path_orders", handler=lambda cur: cur.fetchone()[0]
        )

    @task
    def mysql_paths() -> float:
        from airflow.providers.mysql.hooks.mysql import MySqlHook

        hook = MySqlHook(mysql_conn_id="mysql_paths")
        hook.run(
            [
                "DROP TABLE IF EXISTS path_orders",
                "CREATE TABLE path_orders (id INTEGER, amount DECIMAL(10, 2))",
            ]
        )
        hook.insert_rows("path_orders", [(1, 9.5), (2, 20.0)], target_fields=["id", "amount"])
        frame = hook.get_df("SELECT id, amount FROM path_orders WHERE id >= %s", parameters=(1,))
        return float(frame["amount"].sum())

    (
        pg_setup
        >> pg_insert_rows()
        >> pg_get_df()
        >> pg_get_df_by_chunks()
        >> pg_engine()
        >> pg_uri_engine()
        >> pg_own_hooks()
        >> mysql_paths()
    )


cost_sql_paths()
