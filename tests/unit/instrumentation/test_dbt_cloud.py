"""dbt Cloud runs: which steps are read, how a run's artifacts become usages (the same reading as a local
dbt run's files), what dbt Cloud bills (successful models built), and the pending item across a
deferral. The artifacts are the fake's own, served here without HTTP."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_cost_provider.capture import deferral
from airflow_cost_provider.instrumentation import dbt_cloud
from airflow_cost_provider.instrumentation.dbt_cloud import DbtCloudRun, node_steps, resolve_runs, run_usages
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tracker import price_book
from tests.support.fake_dbt_cloud import SETUP_STEPS, JobPlan, Node, Step, _Run

GIB = 2**30


def step(index: int, name: str, status: int = 10) -> dict:
    return {"index": index, "name": name, "status": status}


def test_only_the_steps_that_ran_dbt_nodes_are_read():
    run = {
        "run_steps": [
            step(1, "Clone git repository"),
            step(3, "Invoke dbt with `dbt deps`"),
            step(6, "Invoke dbt with `dbt build --select tag:daily`"),
            step(4, "Invoke dbt with `dbt seed`"),
            step(5, "Invoke dbt with `dbt source freshness`"),
            step(7, "Invoke dbt with `dbt docs generate`"),
            step(8, "Invoke dbt with `dbt --log-level debug test`"),
            step(9, "Invoke dbt with `dbt run`", status=1),  # never started: no artifacts
        ]
    }
    assert node_steps(run) == [
        (4, "dbt seed"),
        (6, "dbt build --select tag:daily"),
        (8, "dbt --log-level debug test"),
    ]
    # no steps listed: the API's default, the last step
    assert node_steps({"run_steps": []}) == [(None, "the last step")]


class FakeRun:
    """A run as the fake dbt Cloud describes it, and its artifacts, without a server."""

    def __init__(self, plan: JobPlan, status_reads: int = 5) -> None:
        from tests.support.fake_dbt_cloud import STARTED_AT, FakeDbtCloud

        self.server = FakeDbtCloud.__new__(FakeDbtCloud)  # its pure parts only: no socket
        self.run = _Run(70_001, 42, 301, plan, "cause", STARTED_AT, reads=status_reads)
        self.fetched: list[tuple[str, int | None]] = []

    def describe(self) -> dict:
        return self.server.describe(self.run, {"run_steps"})

    def fetch(self, path: str, step_index: int | None) -> bytes:
        self.fetched.append((path, step_index))
        content = self.server.artifact(self.run, path, step_index)
        if content is None:
            raise RuntimeError("404:Not Found")
        return content


ITEM = DbtCloudRun(run_id=70_001, conn_id="dbt_cloud_default", account_id=None, started_by="trigger_job_run")
PLAN = JobPlan(
    "nightly",
    (
        Step("dbt seed", (Node("seed.shop.raw", bytes_billed=0, materialized="seed"),)),
        Step(
            "dbt build",
            (
                Node("model.shop.stg", bytes_billed=GIB, materialized="view"),
                Node("model.shop.daily", bytes_billed=300 * GIB),
                Node("snapshot.shop.daily_history", bytes_billed=GIB),
                Node("model.shop.broken", status="error"),
                Node("model.shop.later", status="skipped"),
                Node("test.shop.not_null_daily.1", status="pass", bytes_billed=10 * 2**20),
            ),
        ),
    ),
)


def test_a_run_is_one_usage_per_node_and_one_models_built_line():
    fake = FakeRun(PLAN)
    usages = run_usages(ITEM, fake.describe(), fake.fetch)
    lines, unpriced = estimate_all(usages, price_book())
    by_node = {u.resource: u for u in usages if u.source != "dbt_cloud"}
    assert sorted(by_node) == sorted(n.unique_id for s in PLAN.steps for n in s.nodes)
    daily = by_node["model.shop.daily"]
    assert daily.source == "bigquery" and daily.metric == "bytes_billed" and daily.quantity == 300 * GIB
    assert daily.attributes["dbt_cloud_step"] == 5 and daily.attributes["dbt_cloud_command"] == "dbt build"
    assert daily.attributes["dbt_cloud_job_id"] == "301" and daily.attributes["dbt_cloud_account_id"] == "42"
    assert (
        daily.attributes["dbt_cloud_project_id"] == "5001"
        and daily.attributes["dbt_materialization"] == "table"
    )
    (built,) = [line for line in lines if line.usage.source == "dbt_cloud"]
    # two models succeeded: not the seed, the snapshot, the test, the error or the skipped one
    assert built.usage.metric == "models_built" and built.usage.quantity == 2
    assert built.amount == quantize_amount(Decimal(2) * Decimal("0.01")) and built.method == "list_price"
    assert built.price.source_url == "https://www.getdbt.com/pricing"
    assert built.usage.resource == "accounts/42/projects/5001/jobs/301" and built.usage.external_id == "70001"
    assert built.usage.attributes["models_built_complete"] is True
    # the errored model's line is kept, with its status; the skipped one is quantity 0
    assert by_node["model.shop.broken"].attributes["status"] == "error"
    assert by_node["model.shop.later"].quantity == 0
    assert {u.usage.resource for u in unpriced} == {"model.shop.broken", "model.shop.later"}
    assert sorted({s for _, s in fake.fetched}) == [len(SETUP_STEPS) + 1, len(SETUP_STEPS) + 2]


@pytest.mark.parametrize(
    ("fault", "words"),
    [("missing", "404:Not Found"), ("truncated", "not readable JSON (truncated?)")],
)
def test_an_unreadable_step_is_unpriced_with_the_reason_and_the_others_still_count(fault, words):
    plan = JobPlan(
        "broken",
        (
            Step("dbt seed", (Node("seed.shop.raw", bytes_billed=0),), run_results=fault),
            Step("dbt run", (Node("model.shop.daily", bytes_billed=GIB),)),
        ),
    )
    fake = FakeRun(plan)
    usages = run_usages(ITEM, fake.describe(), fake.fetch)
    lines, unpriced = estimate_all(usages, price_book())
    (bad,) = [u for u in unpriced if u.usage.source == "dbt_cloud"]
    assert "dbt Cloud run 70001 step 4 run_results.json" in bad.reason and words in bad.reason
    assert bad.usage.external_id == "70001" and bad.usage.attributes["dbt_cloud_step"] == 4
    (built,) = [line for line in lines if line.usage.source == "dbt_cloud"]
    assert built.usage.quantity == 1 and built.usage.attributes["models_built_complete"] is False
    assert [line.usage.resource for line in lines if line.usage.source == "bigquery"] == ["model.shop.daily"]


def test_a_run_of_another_artifact_schema_is_unpriced_naming_it():
    fake = FakeRun(JobPlan("old", (Step("dbt run", (Node("model.shop.daily", bytes_billed=GIB),)),)))

    def old_schema(path, index):
        document = json.loads(fake.fetch(path, index))
        document["metadata"]["dbt_schema_version"] = "https://schemas.getdbt.com/dbt/run-results/v3.json"
        return json.dumps(document).encode()

    usages = run_usages(ITEM, fake.describe(), old_schema)
    (bad,) = [u for u in usages if u.metric == "queries"]
    assert (
        "run-results/v3.json" in bad.attributes["why_unpriced"]
        and "v4, v5, v6" in bad.attributes["why_unpriced"]
    )


def test_a_run_still_going_is_kept_unpriced_and_its_artifacts_are_not_read():
    fake = FakeRun(PLAN, status_reads=0)
    (usage,) = run_usages(ITEM, fake.describe(), fake.fetch)
    assert usage.source == "dbt_cloud" and usage.external_id == "70001"
    assert "still queued" in usage.attributes["why_unpriced"] and fake.fetched == []
    assert usage.attributes["dbt_cloud_job_id"] == "301"


def test_a_run_that_cannot_be_read_keeps_its_id_and_the_reason(monkeypatch):
    class Failing:
        def get_job_run(self, **kwargs):
            raise TimeoutError("read timed out")

    monkeypatch.setattr(dbt_cloud, "_hook", lambda conn_id, timeout: Failing())
    (usage,) = resolve_runs([ITEM, ITEM], 5.0)  # the same run twice: read once
    assert (
        usage.external_id == "70001"
        and "runs/70001/ failed: TimeoutError" in usage.attributes["why_unpriced"]
    )


def test_the_pending_run_survives_a_deferral():
    document = json.loads(json.dumps(deferral.snapshot([], {resolve_runs: [ITEM]})))
    ([], [(resolve, item)]) = deferral.restore(document)
    assert resolve is resolve_runs and item == ITEM


@pytest.fixture
def instrumented():
    from airflow_cost_provider.capture.session import clear_sessions

    instrumentation = dbt_cloud.DbtCloudJobs()
    instrumentation.instrument()
    yield
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    from airflow_cost_provider.capture import worker
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.capture.session import open_session

    return open_session(TaskTry("dag", "wait", "run", 1, -1), worker.sample())


def sensor(**kwargs):
    from airflow.providers.dbt.cloud.sensors.dbt import DbtCloudJobRunSensor

    return DbtCloudJobRunSensor(task_id="wait", run_id=70_001, account_id=42, **kwargs)


def test_a_deferred_sensor_records_the_run_its_trigger_saw_finish(instrumented, session):
    waiting = sensor(deferrable=True)
    assert (
        waiting.execute_complete({}, event={"status": "success", "run_id": 70_001, "message": "done"})
        == 70_001
    )
    ((resolve, (item,)),) = session.pending.items()
    assert resolve is resolve_runs and (item.run_id, item.account_id, item.started_by) == (
        70_001,
        42,
        "sensor",
    )
    # a failed run is recorded too, and the sensor still raises as it would
    with pytest.raises(Exception, match="failed"):
        sensor().execute_complete(
            {}, event={"status": "error", "run_id": 70_002, "message": "Job run 70002 has failed."}
        )
    assert [i.run_id for i in session.pending[resolve_runs]] == [70_001, 70_002]


def test_a_poking_sensor_records_the_run_once_it_finished(instrumented, session, monkeypatch):
    from airflow.providers.dbt.cloud.hooks.dbt import DbtCloudHook

    statuses = iter([3, 10])
    monkeypatch.setattr(
        DbtCloudHook, "get_job_run_status", lambda self, run_id, account_id=None: next(statuses)
    )
    waiting = sensor()
    assert waiting.poke({}) is False and session.pending == {}
    assert waiting.poke({}) is True
    assert [i.run_id for i in session.pending[resolve_runs]] == [70_001]


def test_the_run_line_links_to_the_run_in_dbt_cloud():
    from airflow_cost_provider.console_links import console_url

    fake = FakeRun(PLAN)
    (built,) = [u for u in run_usages(ITEM, fake.describe(), fake.fetch) if u.metric == "models_built"]
    attributes = {**built.attributes, "host": "ab123.us1.dbt.com"}
    assert console_url("dbt_cloud", built.external_id, built.resource, attributes) == (
        "https://ab123.us1.dbt.com/deploy/42/projects/5001/runs/70001/"
    )
    # no host (a tenant with a port, as in the tests), no link
    assert console_url("dbt_cloud", built.external_id, built.resource, built.attributes) is None
