"""What capturing Dataproc, Databricks jobs, Azure Data Factory and Synapse work adds to a task, against
the REST servers of the test suite on 127.0.0.1 (tests/support/fake_*.py).

For each service, one task try at a time (a capture session open, the instrumentation active):

1. start: the run is started through the provider's own hook (DataprocHook.submit_job and
   create_batch, DatabricksHook.submit_run, AzureDataFactoryHook.run_pipeline,
   AzureSynapsePipelineHook.run_pipeline, AzureSynapseHook.run_spark_job), in alternating rounds with
   and without the instrumentation; the overhead is the difference of the medians (tagging the run and
   keeping its id);
2. finalize: the statistics look-up made at the task's end (the resolve function, under `suppress`, as
   the tracker calls it), timed per job in two cases: the task did not wait for the run (the look-up
   reads it), and the task waited for it through the hook (the terminal run it read is reused). The
   number of API calls the look-up made per job is counted on the server.

Every fake answers with the run already finished, so no look-up waits. Azure is reached through the
fake's HTTPS proxy with a test CA, as in the tests; its token is fetched once per hook and reused.

    uv run python benchmarks/job_capture_rest.py [--rounds 30]

Prints a summary and writes benchmarks/results/job_capture_rest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "job_capture_rest.json"
TIMEOUT = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="task tries per service and variant")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def _environment(home: str) -> None:
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"] = f"sqlite:///{home}/ledger.db"
    sys.path.insert(0, str(REPO))


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


class Service:
    """How to start one run of a service, and how many requests its server has seen."""

    def __init__(
        self,
        name: str,
        start: Callable[[Any], Any],
        new_hook: Callable[[], Any],
        requests: Callable[[], int],
        wait: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.name, self.start, self.new_hook, self.requests, self.wait = name, start, new_hook, requests, wait


def measure(service: Service, rounds: int) -> dict[str, Any]:
    from airflow_cost_provider.capture import worker
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.capture.safety import suppress
    from airflow_cost_provider.capture.session import clear_sessions, open_session

    plain, tagged, finalize_read, finalize_reused = [], [], [], []
    calls_read, calls_reused = [], []
    for number in range(rounds):
        for instrumented in (False, True):
            hook = service.new_hook()
            session = open_session(TaskTry("bench", service.name, f"run{number}", 1, -1), worker.sample())
            began = time.perf_counter()
            if instrumented:
                result = service.start(hook)
            else:
                with suppress():
                    result = service.start(hook)
            (tagged if instrumented else plain).append(time.perf_counter() - began)
            if instrumented:
                before = service.requests()
                began = time.perf_counter()
                with suppress():
                    for resolve, items in session.pending.items():
                        resolve(items, TIMEOUT)
                finalize_read.append(time.perf_counter() - began)
                calls_read.append(service.requests() - before)
            clear_sessions()
            del result
        if service.wait is not None:
            hook = service.new_hook()
            session = open_session(TaskTry("bench", service.name, f"wait{number}", 1, -1), worker.sample())
            service.wait(hook, service.start(hook))
            before = service.requests()
            began = time.perf_counter()
            with suppress():
                for resolve, items in session.pending.items():
                    resolve(items, TIMEOUT)
            finalize_reused.append(time.perf_counter() - began)
            calls_reused.append(service.requests() - before)
            clear_sessions()
    report: dict[str, Any] = {
        "start_overhead_ms": round(_ms(tagged) - _ms(plain), 3),
        "start_median_ms": {"plain": _ms(plain), "instrumented": _ms(tagged)},
        "finalize_per_job_ms": _ms(finalize_read),
        "api_calls_per_job": statistics.median(calls_read),
    }
    if finalize_reused:
        report["finalize_per_job_after_waiting_ms"] = _ms(finalize_reused)
        report["api_calls_per_job_after_waiting"] = statistics.median(calls_reused)
    return report


def services(stack: ExitStack, workdir: Path) -> list[Service]:
    from airflow.providers.databricks.hooks.databricks import DatabricksHook
    from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
    from airflow.providers.microsoft.azure.hooks.data_factory import AzureDataFactoryHook
    from airflow.providers.microsoft.azure.hooks.synapse import AzureSynapseHook, AzureSynapsePipelineHook
    from azure.synapse.spark.models import SparkBatchJobOptions

    from tests.support.fake_azure_data_factory import Activity, PipelinePlan, client_env, fake_azure
    from tests.support.fake_databricks_jobs import RunPlan, fake_databricks_jobs
    from tests.support.fake_dataproc import fake_dataproc, route_dataproc_hook_to
    from tests.support.fake_synapse import SynapseWorkspace

    cluster = {"spark_version": "15.4.x-scala2.12", "node_type_id": "m5.xlarge", "num_workers": 2}
    databricks = stack.enter_context(fake_databricks_jobs("bench-token"))
    databricks.plan("bench", RunPlan(running_reads=0))
    os.environ["AIRFLOW_CONN_DATABRICKS_DEFAULT"] = json.dumps(databricks.connection())

    dataproc_clusters = {
        "etl": {
            "clusterUuid": "u-1",
            "config": {
                "masterConfig": {"numInstances": 1, "machineTypeUri": "n2-standard-4"},
                "workerConfig": {"numInstances": 2, "machineTypeUri": "n2-standard-8"},
            },
        }
    }
    dataproc = stack.enter_context(fake_dataproc(dataproc_clusters))
    route_dataproc_hook_to(dataproc.url)
    os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(
        {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "bench"}}
    )

    azure = stack.enter_context(fake_azure(workdir))
    activities = (
        Activity("copy", "Copy", 60_000, (("DataMovement", "AzureIR", 0.0667, "DIUHours"),)),
        Activity("lookup", "Lookup", 10_000, (("PipelineActivity", "AzureIR", 0.0166, "Hours"),)),
    )
    azure.plan("bench", PipelinePlan(running_reads=0, activities=activities))
    workspace = SynapseWorkspace(azure, "benchws")
    os.environ.update(client_env(azure))
    credentials = {"login": "client", "password": "secret"}
    os.environ["AIRFLOW_CONN_AZURE_DATA_FACTORY_DEFAULT"] = json.dumps(
        {
            "conn_type": "azure_data_factory",
            **credentials,
            "extra": {
                "tenantId": "t",
                "subscriptionId": "s",
                "resource_group_name": "rg",
                "factory_name": "f",
            },
        }
    )
    os.environ["AIRFLOW_CONN_AZURE_SYNAPSE_DEFAULT"] = json.dumps(
        {
            "conn_type": "azure_synapse",
            "host": workspace.endpoint,
            **credentials,
            "extra": {"tenantId": "t", "subscriptionId": "s"},
        }
    )

    # one hook per service for the whole run, as a worker process reuses its token; a task's own hook
    # is what the look-up reuses too
    adf_hook, synapse_hook = (
        AzureDataFactoryHook(),
        AzureSynapsePipelineHook(
            azure_synapse_conn_id="azure_synapse_default",
            azure_synapse_workspace_dev_endpoint=workspace.endpoint,
        ),
    )
    spark_hook = AzureSynapseHook("azure_synapse_default", spark_pool="pool")

    def spark_options() -> SparkBatchJobOptions:
        return SparkBatchJobOptions(
            name="bench", file="abfss://a/b.py", driver_cores=4, executor_cores=4, executor_count=2
        )

    return [
        Service(
            "databricks_submit_run",
            lambda hook: hook.submit_run(
                {
                    "run_name": "bench",
                    "tasks": [{"task_key": "t", "new_cluster": cluster, "notebook_task": {}}],
                }
            ),
            DatabricksHook,
            lambda: len(databricks.requests),
            wait=lambda hook, run_id: hook.get_run(run_id),
        ),
        Service(
            "dataproc_submit_job",
            lambda hook: hook.submit_job(
                job={
                    "placement": {"cluster_name": "etl"},
                    "pyspark_job": {"main_python_file_uri": "gs://b/x.py"},
                },
                project_id="bench",
                region="us-central1",
            ),
            DataprocHook,
            lambda: len(dataproc.requests),
            wait=lambda hook, job: hook.get_job(
                job_id=job.reference.job_id, project_id="bench", region="us-central1"
            ),
        ),
        Service(
            "dataproc_create_batch",
            lambda hook: hook.create_batch(
                batch={"pyspark_batch": {"main_python_file_uri": "gs://b/y.py"}},
                project_id="bench",
                region="us-central1",
            ),
            DataprocHook,
            lambda: len(dataproc.requests),
        ),
        Service(
            "azure_data_factory_run_pipeline",
            lambda hook: hook.run_pipeline("bench", resource_group_name=None, factory_name=None),
            lambda: adf_hook,
            lambda: len(azure.on_host("management.azure.com")),
            wait=lambda hook, response: hook.get_pipeline_run(response.run_id, None, None),
        ),
        Service(
            "synapse_run_pipeline",
            lambda hook: hook.run_pipeline("bench"),
            lambda: synapse_hook,
            lambda: len(workspace.requests()),
            wait=lambda hook, response: hook.get_pipeline_run(response.run_id),
        ),
        Service(
            "synapse_spark_batch",
            lambda hook: hook.run_spark_job(spark_options()),
            lambda: spark_hook,
            lambda: len(workspace.requests()),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cost-bench-rest-") as home:
        _environment(home)
        from airflow_cost_provider.instrumentation.databricks_jobs import DatabricksJobs
        from airflow_cost_provider.instrumentation.dataproc import DataprocJobs
        from airflow_cost_provider.instrumentation.registry import get

        for name in ("dataproc", "databricks_jobs", "azure_data_factory", "synapse"):
            get(name).instrument()
        assert isinstance(get("dataproc"), DataprocJobs) and isinstance(
            get("databricks_jobs"), DatabricksJobs
        )
        results: dict[str, Any] = {}
        with ExitStack() as stack:
            for service in services(stack, Path(home)):
                service.start(service.new_hook())  # warm up: imports, clients, tokens
                results[service.name] = measure(service, args.rounds)
                print(f"{service.name:34} {json.dumps(results[service.name])}")
    document = {
        "rounds": args.rounds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "services": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
