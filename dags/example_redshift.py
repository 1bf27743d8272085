"""Redshift Serverless: COPY the day's events from S3 into staging, then rebuild that day's sessions.

Cost: every statement sent through the Redshift Data API gets a sqlcommenter comment and a
StatementName (`dag.task.try`), and its id is kept. When the task ends DescribeStatement gives each
statement's duration and where it ran. On Redshift Serverless the statement's share is the
workgroup's base capacity x its duration, in RPU-seconds, priced per RPU-hour; on a provisioned
cluster it is the cluster's nodes x the duration, in node-seconds, priced per node-hour of its node
type. Both are a share of compute that is billed whatever runs on it: method `allocated`. Find the
statements with `SELECT * FROM SYS_QUERY_HISTORY WHERE query_text LIKE '%airflow_dag_id%'`.

Connection: `aws_default`. Set the workgroup, database and bucket to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.operators.redshift_data import RedshiftDataOperator
from airflow.sdk import dag

WORKGROUP = "analytics"
DATABASE = "dev"

COPY_EVENTS = """
COPY staging.events
FROM 's3://my-data-lake/events/{{ ds }}/'
IAM_ROLE default
FORMAT AS PARQUET
"""

REBUILD_SESSIONS = [
    "DELETE FROM analytics.daily_sessions WHERE session_date = '{{ ds }}'",
    """
    INSERT INTO analytics.daily_sessions
    SELECT user_id, session_id, MIN(event_time)::date AS session_date,
           MIN(event_time) AS started_at, MAX(event_time) AS ended_at, COUNT(*) AS events
    FROM staging.events
    WHERE event_time::date = '{{ ds }}'
    GROUP BY user_id, session_id
    """,
]


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "amazon", "redshift"],
)
def example_redshift():
    copy_events = RedshiftDataOperator(
        task_id="copy_events",
        workgroup_name=WORKGROUP,
        database=DATABASE,
        sql=COPY_EVENTS,
        wait_for_completion=True,
        aws_conn_id="aws_default",
    )

    rebuild_daily_sessions = RedshiftDataOperator(
        task_id="rebuild_daily_sessions",
        workgroup_name=WORKGROUP,
        database=DATABASE,
        sql=REBUILD_SESSIONS,
        wait_for_completion=True,
        aws_conn_id="aws_default",
    )

    copy_events >> rebuild_daily_sessions


example_redshift()
