"""Pure functions that put a task's identity into each platform's own carrier: SQL comments, job
labels, query tags. One identity (`TaskTry.tags()`), many carriers."""

from airflow_cost_provider.tagging.labels import bigquery_labels, snowflake_query_tag, statement_name
from airflow_cost_provider.tagging.sql_comment import add_sql_comment, append_comment, format_comment

__all__ = [
    "add_sql_comment",
    "append_comment",
    "bigquery_labels",
    "format_comment",
    "snowflake_query_tag",
    "statement_name",
]
