"""AWS Glue end to end: the Amazon provider's GlueJobOperator (normal and deferrable) and GlueJobHook,
unchanged, under real `airflow dags test` against a moto server on 127.0.0.1.

Asserts on what the server holds (each run's arguments carry its task's identity, the user's own
arguments win), on the calls the cost provider made (one GetJobRun per run), and on the facet and the
ledger: DPU-seconds from what GetJobRun reports, priced from the price book's numbers; a look-up that
fails or hangs leaves the task successful and the run unpriced with the reason.

What moto 5.2 reports, and so what this test can assert: every run SUCCEEDED with ExecutionTime 123,
the run's WorkerType and NumberOfWorkers (or the job's MaxCapacity), GlueVersion "0.9" whatever the
job says, and never DPUSeconds or ExecutionClass. The DPUSeconds path and a run's own ExecutionClass
are covered by the unit tests; here the Flex price comes from the job definition (BatchGetJobs).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support import fake_aws
from tests.support.airflow_env import ledger_rows
from tests.support.moto_recorder import MotoRecorder, reset_moto
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
PRICE_BOOK = Path(__file__).resolve().parents[2] / "airflow_cost_provider" / "pricing" / "price_book.yaml"
ROLE = "arn:aws:iam::123456789012:role/glue-etl"
# task id -> the Glue job it runs
JOBS = {
    "orders_etl": "orders_etl",
    "sessions_flex": "sessions_flex",
    "deferred_orders": "deferred_orders",
    "shell_cleanup": "shell_cleanup",
    "unread_run": "flaky_job",
    "stalled_read": "slow_job",
}
PRICED = ("orders_etl", "sessions_flex", "deferred_orders", "shell_cleanup")


def book() -> dict:
    return yaml.safe_load(PRICE_BOOK.read_text())


def dpu_hour_price(execution_class: str) -> Decimal:
    (entry,) = [
        p
        for p in book()["prices"]
        if p["source"] == "glue"
        and p["metric"] == "dpu_time"
        and p["match"] == {"execution_class": execution_class}
    ]
    assert entry["unit"] == "DPU-hour"
    return Decimal(entry["amount"])


def dpus_per_worker(worker_type: str) -> Decimal:
    return Decimal(book()["factors"]["glue_dpu_per_worker"][worker_type])


@pytest.fixture(scope="module")
def glue():
    recorder = MotoRecorder()
    # the look-ups of the two runs the tasks do not wait for: only the cost provider reads them
    recorder.fail("GetJobRun", lambda call: call.body.get("JobName") == "flaky_job")
    recorder.stall("GetJobRun", lambda call: call.body.get("JobName") == "slow_job", seconds=8)
    with recorder.installed(), fake_aws.moto_server() as url:
        reset_moto(url)
        fake_aws.client("glue", url).create_job(
            Name="shell_cleanup",
            Description="remove old exports",
            Role=ROLE,
            Command={
                "Name": "pythonshell",
                "ScriptLocation": "s3://etl-scripts/shell_cleanup.py",
                "PythonVersion": "3.9",
            },
            MaxCapacity=0.0625,
            GlueVersion="3.0",
        )
        yield recorder, url


@pytest.fixture(scope="module")
def glue_run(airflow_env, glue):
    _, url = glue
    run = airflow_env.dags_test("cost_glue", env=fake_aws.airflow_env(url))
    assert run.process.returncode == 0, run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def runs(glue, glue_run) -> dict[str, dict]:
    """Each task's job run, as the server's own GetJobRuns describes it."""
    _, url = glue
    client = fake_aws.client("glue", url)
    described = {}
    for task_id, job_name in JOBS.items():
        (job_run,) = client.get_job_runs(JobName=job_name)["JobRuns"]
        described[task_id] = job_run
    return described


@pytest.fixture(scope="module")
def events(glue_run) -> dict[str, dict]:
    found = {}
    for event in glue_run.events():
        validate_event(event)
        if event["eventType"] in ("COMPLETE", "FAIL") and "." in event["job"]["name"]:
            found[event["job"]["name"].split(".", 1)[1]] = event
    return found


def glue_lines(event: dict) -> list[dict]:
    return [line for line in event["run"]["facets"][FACET]["lines"] if line["source"] == "glue"]


def glue_unpriced(event: dict) -> list[dict]:
    return [item for item in event["run"]["facets"][FACET]["unpriced"] if item["source"] == "glue"]


def expected_dpu_seconds(job_run: dict) -> Decimal:
    """Glue's billing from what GetJobRun reported: capacity x execution time, at least a minute."""
    seconds = max(Decimal(job_run["ExecutionTime"]), Decimal(60))
    if job_run.get("WorkerType") not in (None, "Standard") and job_run.get("NumberOfWorkers"):
        return job_run["NumberOfWorkers"] * dpus_per_worker(job_run["WorkerType"]) * seconds
    return Decimal(str(job_run["MaxCapacity"])) * seconds


def test_every_task_succeeds_including_the_failed_and_hung_look_ups(events):
    assert set(events) == set(JOBS)
    assert {task: event["eventType"] for task, event in events.items()} == dict.fromkeys(JOBS, "COMPLETE")


def test_each_run_carries_its_tasks_identity_in_its_arguments(glue_run, runs, events):
    for task_id, job_run in runs.items():
        arguments = job_run["Arguments"]
        assert arguments["--openlineage_run_id"] == events[task_id]["run"]["runId"], task_id
        assert arguments["--airflow_task_id"] == task_id
        assert arguments["--airflow_try_number"] == "1" and arguments["--airflow_map_index"] == "-1"
        assert arguments["--airflow_run_id"].startswith("manual__")
    # the user's own arguments are kept, and win over the task's where they clash
    assert runs["orders_etl"]["Arguments"]["--airflow_dag_id"] == "set-by-the-user"
    assert runs["orders_etl"]["Arguments"]["--day"] == glue_run.logical_date
    assert runs["sessions_flex"]["Arguments"]["--airflow_dag_id"] == "cost_glue"
    assert runs["shell_cleanup"]["Arguments"]["--older_than_days"] == "30"


def test_dpu_time_is_priced_from_what_glue_reports(runs, events):
    execution_classes = {"sessions_flex": "flex"}
    for task_id in PRICED:
        job_run = runs[task_id]
        (line,) = glue_lines(events[task_id])
        dpu_seconds = expected_dpu_seconds(job_run)
        execution_class = execution_classes.get(task_id, "standard")
        assert line["externalId"] == job_run["Id"] and line["resource"] == JOBS[task_id]
        assert (line["metric"], line["unit"], line["method"]) == ("dpu_time", "DPU-second", "list_price")
        assert Decimal(str(line["quantity"])) == dpu_seconds, task_id
        assert Decimal(str(line["amount"])) == quantize_amount(
            dpu_seconds * dpu_hour_price(execution_class) / 3600
        )
        assert line["priceRef"].endswith(f":glue/dpu_time[execution_class={execution_class}]")
        assert not glue_unpriced(events[task_id])


def test_the_issue_example_and_each_capacity_rule(runs, events):
    def line(task_id: str) -> dict:
        return glue_lines(events[task_id])[0]

    # moto reports ExecutionTime 123 for every run
    assert {job_run["ExecutionTime"] for job_run in runs.values()} == {123}
    # a G.1X job with 10 workers and 123 s of execution time is 0.3417 DPU-hours
    assert (runs["orders_etl"]["WorkerType"], runs["orders_etl"]["NumberOfWorkers"]) == ("G.1X", 10)
    dpu_hours = Decimal(str(line("orders_etl")["quantity"])) / 3600
    assert round(dpu_hours, 4) == Decimal("0.3417")
    assert Decimal(str(line("orders_etl")["amount"])) == Decimal("0.150333333")  # x $0.44
    # the run's own worker type and count (5 x G.2X) win over the job's; Flex from the job definition
    assert (runs["sessions_flex"]["WorkerType"], runs["sessions_flex"]["NumberOfWorkers"]) == ("G.2X", 5)
    assert Decimal(str(line("sessions_flex")["quantity"])) == 1230
    assert Decimal(str(line("sessions_flex")["amount"])) == Decimal("0.099083333")  # x $0.29
    # a Python shell job is sized by MaxCapacity: 1/16 DPU
    assert Decimal(str(line("shell_cleanup")["quantity"])) == Decimal("7.6875")
    # the deferred run: 4 G.1X workers
    assert Decimal(str(line("deferred_orders")["quantity"])) == 492


def test_the_deferred_task_resumed_and_kept_its_run(glue_run, events):
    output = glue_run.output
    assert "running trigger in line" in output and "Trigger completed" in output
    (line,) = glue_lines(events["deferred_orders"])
    stored = ledger_rows(
        glue_run.ledger_url,
        "SELECT r.task_id, r.try_number, u.external_id FROM cost_usage u JOIN cost_task_runs r "
        "ON u.task_run_id = r.id WHERE u.source = 'glue' AND r.task_id = 'deferred_orders'",
    )
    assert stored == [{"task_id": "deferred_orders", "try_number": 1, "external_id": line["externalId"]}]
    assert ledger_rows(glue_run.ledger_url, "SELECT * FROM cost_deferred_captures") == []


def test_one_statistics_call_per_run(glue, runs, glue_run):
    recorder, _ = glue
    reads = recorder.calls_of("GetJobRun", service="glue", by_cost_provider=True)
    assert sorted(call.body["RunId"] for call in reads) == sorted(job_run["Id"] for job_run in runs.values())
    # moto leaves ExecutionClass out of every run: the class comes from the job definition, once per job
    definitions = recorder.calls_of("BatchGetJobs", service="glue", by_cost_provider=True)
    assert sorted(name for call in definitions for name in call.body["JobNames"]) == sorted(
        JOBS[t] for t in PRICED
    )
    assert {call.action for call in recorder.cost_provider_calls()} == {"GetJobRun", "BatchGetJobs"}


def test_failed_and_hung_look_ups_keep_the_run_unpriced_with_the_reason(runs, events):
    (failed,) = glue_unpriced(events["unread_run"])
    assert failed["externalId"] == runs["unread_run"]["Id"]
    assert "GetJobRun failed" in failed["reason"] and "InternalServerException" in failed["reason"]
    (hung,) = glue_unpriced(events["stalled_read"])
    assert hung["externalId"] == runs["stalled_read"]["Id"]
    assert "GetJobRun failed" in hung["reason"] and "timeout" in hung["reason"].lower()
    for task_id in ("unread_run", "stalled_read"):
        assert not glue_lines(events[task_id])
        assert events[task_id]["run"]["facets"][FACET]["status"] == "partial"


def test_the_ledger_matches_the_facet(glue_run, runs, events):
    rows = ledger_rows(
        glue_run.ledger_url,
        "SELECT r.task_id, u.external_id, u.quantity, u.unit, u.resource, u.attributes, l.amount_nanos, "
        "l.method, l.price_ref, l.status, l.unpriced_reason FROM cost_usage u "
        "JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        "WHERE u.source = 'glue'",
    )
    by_task = {row["task_id"]: row for row in rows}
    assert set(by_task) == set(JOBS)
    for task_id in PRICED:
        row = by_task[task_id]
        (line,) = glue_lines(events[task_id])
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert row["external_id"] == runs[task_id]["Id"] and row["resource"] == JOBS[task_id]
        assert Decimal(row["quantity"]) == Decimal(str(line["quantity"])) and row["unit"] == "DPU-second"
        assert row["amount_nanos"] == int(Decimal(str(line["amount"])) * 10**9)
        assert (row["method"], row["status"]) == ("list_price", "estimated")
        assert row["price_ref"] == line["priceRef"]
        assert attributes["execution_time_s"] == 123 and attributes["billed_seconds"] == 123
        assert attributes["minimum_applied"] is False
    for task_id in ("unread_run", "stalled_read"):
        row = by_task[task_id]
        assert row["amount_nanos"] is None and row["status"] == "unpriced"
        assert row["external_id"] == runs[task_id]["Id"] and "GetJobRun failed" in row["unpriced_reason"]


def test_the_bill_of_the_jobs_and_the_worker_pool_reconciles_to_the_runs(glue_run, tmp_path, monkeypatch):
    """The run's own ledger lines, billed at list price in a FOCUS export (80 % of each job's DPU-hours
    and 17 % of the worker instances used), imported and reconciled: each Glue line gets its estimate,
    the rest of each bill is named idle, and an RDS database no task touched stays apart."""
    from collections import defaultdict

    from tests.support import bills

    ledger = bills.copy_ledger(glue_run.ledger_url, tmp_path)
    used = bills.ledger_lines(ledger)
    rows = []
    glue_lines: dict[tuple[str, str], list[dict]] = defaultdict(list)
    worker_lines: dict[str, list[dict]] = defaultdict(list)
    for line in used:
        if line["source"] == "glue":
            glue_lines[(line["day"], line["resource"])].append(line)
        elif line["source"] == "airflow_worker":
            worker_lines[line["day"]].append(line)
    assert glue_lines and worker_lines
    for (day, job), lines in glue_lines.items():
        hours = sum(Decimal(line["quantity"]) for line in lines) / 3600
        rows.append(
            bills.charge(
                day,
                "AWS",
                "AWS Glue",
                f"arn:aws:glue:us-east-1:123456789012:job/{job}",
                bills.estimate(lines) / Decimal("0.8"),
                quantity=hours / Decimal("0.8"),
                unit="DPU-Hour",
            )
        )
    for day, lines in worker_lines.items():
        for instance in ("i-0aa", "i-0bb"):
            rows.append(
                bills.charge(
                    day,
                    "AWS",
                    "Amazon Elastic Compute Cloud",
                    f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}",
                    bills.estimate(lines) / Decimal("0.17") / 2,
                    quantity=Decimal(24),
                    unit="Hrs",
                    tags={"airflow-component": "worker"},
                )
            )
        rows.append(
            bills.charge(
                day, "AWS", "Amazon RDS", "arn:aws:rds:us-east-1:123456789012:db:analytics", Decimal(3)
            )
        )
    bill = bills.write_focus(tmp_path / "focus.csv", rows)
    days = sorted({line["day"] for line in used})
    until = (dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)).isoformat()
    workers = [
        {"name": "workers", "source": "airflow_worker", "match": {"tags": {"airflow-component": "worker"}}}
    ]
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", json.dumps(workers))
    from airflow_cost_provider import conf

    conf.clear_cache()
    try:
        document = bills.import_and_reconcile(ledger, bill, days[0], until)
        again = bills.cli("reconcile", "--ledger", ledger, "--since", days[0], "--until", until, "-o", "json")
    finally:
        conf.clear_cache()
    assert again["rows"] == document["rows"]  # a re-run changes nothing
    found = bills.reconciled(ledger)
    for lines in glue_lines.values():
        for line in lines:
            estimate, amount, status = found[line["id"]]
            assert status == "reconciled" and abs(amount - estimate) <= estimate * Decimal("0.005")
    (aws,) = [row for row in document["rows"] if row["provider"] == "aws"]
    billed, attributed, unattributed = (Decimal(aws[key]) for key in ("billed", "attributed", "unattributed"))
    assert attributed + unattributed == billed
    assert Decimal(aws["untouched"]) == 3 * len(worker_lines)
    (workers,) = bills.pools(ledger, "rule:workers")
    assert workers["basis"] == "list_cost"
    assert abs(Decimal(workers["unattributed_nanos"]) / workers["billed_nanos"] - Decimal("0.83")) < Decimal(
        "0.001"
    )
