"""What a user types: the README's demo command, and Airflow's own view of the installed provider."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.airflow_env import REPO, airflow_bin
from tests.support.openlineage import read_events, validate_event

pytestmark = pytest.mark.integration


def test_demo_runs_the_local_dags_and_reports_non_zero_costs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENLINEAGE"))}
    env["DEMO_HOME"] = str(tmp_path / "demo")
    result = subprocess.run(
        ["./scripts/demo.sh"], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Cost per task" in result.stdout and "Cost per source" in result.stdout
    task_rows = [line for line in result.stdout.splitlines() if line.startswith("example_worker_compute")]
    assert {line.split()[1] for line in task_rows} == {
        "list_partitions",
        "transform_partition",
        "build_report",
    }
    assert all(float(line.split()[2]) > 0 and "USD" in line for line in task_rows)
    sql_rows = [line for line in result.stdout.splitlines() if line.startswith("example_local_sql")]
    assert sql_rows and all(float(line.split()[2]) > 0 for line in sql_rows)
    events = read_events(tmp_path / "demo" / "openlineage-events.jsonl")
    # task runs only: the OpenLineage provider also reports each SQL statement as a `query` child job
    completes = [
        e
        for e in events
        if e["eventType"] == "COMPLETE"
        and e["job"].get("facets", {}).get("jobType", {}).get("jobType") == "TASK"
    ]
    assert all("costProvider_cost" in e["run"]["facets"] for e in completes)
    worker_dag = [e for e in completes if e["job"]["name"].startswith("example_worker_compute.")]
    assert len(worker_dag) == 5
    for event in events:
        validate_event(event)


def test_airflow_lists_the_provider_and_its_documented_options(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "OPENLINEAGE"))}
    env["AIRFLOW_HOME"] = str(tmp_path)
    providers = subprocess.run(
        [airflow_bin(), "providers", "list", "--output", "json"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    listed = {p["package_name"]: p for p in json.loads(providers.stdout[providers.stdout.index("[") :])}
    assert listed["airflow-cost-provider"]["version"] == "0.1.0"
    config = subprocess.run(  # noqa: PLW1510 - the output is what is checked
        [
            airflow_bin(),
            "config",
            "list",
            "--section",
            "cost_provider",
            "--show-values",
            "--include-descriptions",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for line in (
        "enabled = True",
        "ledger_conn = ",
        "finalize_timeout = 5.0",
        "worker_vcpu_hour_rate = 0.04048",
        "worker_memory_gib_hour_rate = 0.004445",
        "disabled_sources = ",
        "tagging_enabled = True",
        "price_book_path = ",
    ):
        assert line in config.splitlines(), line
    assert "AWS Fargate" in config
