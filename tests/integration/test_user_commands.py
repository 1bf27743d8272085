"""What a user types: the README's demo command, and Airflow's own view of the installed provider."""

from __future__ import annotations

import json
import os
import re
import subprocess
from decimal import Decimal

import pytest

from tests.support.airflow_env import REPO, airflow_bin
from tests.support.openlineage import read_events, validate_event

pytestmark = pytest.mark.integration


README_REPO = "/home/me/airflow-cost-provider"


def _normalized(lines: list[str], demo_home: str) -> list[str]:
    """Lines as the README shows them: paths, digits and column widths aside, in any row order."""
    out = []
    for text in lines:
        text = text.replace(demo_home, "<repo>/.demo").replace(str(REPO), "<repo>")
        text = re.sub(r"/\S*/(\.demo|\.venv)", r"<repo>/\1", text)
        text = text.replace(README_REPO, "<repo>")  # the README's example clone
        text = " ".join(re.sub(r"\d+", "0", text).split())
        if text and not set(text) <= {"-", " "}:
            out.append(text)
    return sorted(out)


def test_demo_runs_the_local_dags_and_prints_what_the_readme_shows(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENLINEAGE"))}
    env["DEMO_HOME"] = str(tmp_path / "demo")
    result = subprocess.run(
        ["./scripts/demo.sh"], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = [line for line in result.stdout.splitlines() if not line.startswith("setup:")]
    task_rows = [line for line in printed if line.startswith("example_worker_compute")]
    assert {line.split()[1] for line in task_rows} == {
        "list_partitions",
        "transform_partition",
        "build_report",
    }
    assert all(Decimal(line.split()[2]) > 0 and "USD" in line for line in task_rows)
    sql_rows = [line for line in printed if line.startswith("example_local_sql")]
    assert sql_rows and all(Decimal(line.split()[2]) > 0 for line in sql_rows)
    assert not result.stderr.strip(), result.stderr  # no log noise

    readme = (REPO / "README.md").read_text()
    sample = readme.split("Sample output", 1)[1].split("```\n", 2)[1].rstrip("`\n").splitlines()
    assert _normalized(sample, "<repo>/.demo") == _normalized(printed, str(tmp_path / "demo"))

    # the commands it suggests work as printed, in a new shell with nothing of this one
    suggested = [line.strip() for line in printed if re.match(r"^  /\S+/airflow-cost (report|export)", line)]
    assert len(suggested) == 6  # four reports, --help and the FOCUS export
    for command in suggested:
        again = subprocess.run(
            command,
            shell=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0 and again.stderr == "", (command, again.stderr)
        if command.endswith("--help"):
            expected = "usage: airflow-cost report"
        elif " export " in command:
            expected = "FOCUS 1.2 rows"
        else:
            expected = "\ntotal "
        assert expected in again.stdout, again.stdout

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
