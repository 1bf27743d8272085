"""What capturing AWS Glue and Amazon EMR jobs adds to a task, against a moto server on 127.0.0.1.

For each service, one task try at a time (a capture session open, the instrumentation active):

1. start: the job is started through the Amazon provider's own hook (GlueJobHook.initialize_job,
   EmrHook.add_job_flow_steps, EmrServerlessHook().conn.start_job_run, EmrContainerHook.submit_job),
   in alternating rounds with and without the instrumentation; the overhead is the difference of the
   medians (tagging the run and keeping its id);
2. finalize: the statistics look-up the task makes at its end for the jobs it started (the resolve
   function, under `suppress`, as the tracker calls it), timed per task with 1 job and with `--batch`
   jobs; reported per job, with the number of API calls the cost provider made per job (counted on the
   server by their `airflow-cost-provider/` user agent).

Moto finishes Glue runs at once (ExecutionTime 123); EMR steps, EMR Serverless runs and EMR on EKS runs
are given a finished outcome by `tests/support/fake_emr.py`, so no look-up waits for a run to end.
Moto never reports a Glue run's ExecutionClass, so Glue is measured twice: as moto answers (the class
is then read from the job definition, one BatchGetJobs per task) and with the class set on the run.

    uv run python benchmarks/job_capture_aws.py [--rounds 30] [--batch 10]

Prints a summary and writes benchmarks/results/job_capture_aws.json.
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "job_capture_aws.json"
ROLE = "arn:aws:iam::123456789012:role/bench"
STEP = {"Name": "bench_step", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="task tries per service and variant")
    parser.add_argument("--batch", type=int, default=10, help="jobs per task in the batched variant")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def _environment() -> None:
    home = tempfile.mkdtemp(prefix="cost-bench-jobs-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"] = f"sqlite:///{home}/ledger.db"
    sys.path.insert(0, str(REPO))


def _session():
    from airflow_cost_provider.capture import worker
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.capture.session import clear_sessions, open_session

    clear_sessions()
    task_try = TaskTry(
        "nightly_etl",
        "transform",
        f"scheduled__{time.time_ns()}",
        1,
        -1,
        "0193a1c2-1234-7abc-8def-0123456789ab",
    )
    return open_session(task_try, worker.sample())


def _quiet_logs() -> None:
    """The hooks log every job they start, and moto's server every request."""
    import logging

    import airflow.providers.amazon.aws.hooks.emr  # noqa: F401  (Airflow configures logging on import)
    import structlog

    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 3),
    }


class Services:
    """The moto state each service needs, and how a task starts one job there."""

    def __init__(self, url: str) -> None:
        from tests.support import fake_aws

        glue = fake_aws.client("glue", url)
        glue.create_job(
            Name="bench_job",
            Description="bench",
            Role=ROLE,
            Command={"Name": "glueetl", "ScriptLocation": "s3://bench/job.py"},
            GlueVersion="4.0",
            WorkerType="G.1X",
            NumberOfWorkers=10,
            ExecutionProperty={"MaxConcurrentRuns": 100000},
        )
        self.cluster_id = fake_aws.client("emr", url).run_job_flow(
            Name="bench",
            ReleaseLabel="emr-7.2.0",
            Instances={
                "InstanceGroups": [
                    {
                        "Name": "primary",
                        "InstanceRole": "MASTER",
                        "InstanceType": "m5.xlarge",
                        "InstanceCount": 1,
                    },
                    {"Name": "core", "InstanceRole": "CORE", "InstanceType": "r5.xlarge", "InstanceCount": 2},
                ],
                "KeepJobFlowAliveWhenNoSteps": True,
            },
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
        )["JobFlowId"]
        from tests.support.fake_emr import age_cluster

        age_cluster(self.cluster_id, 7200)
        self.application_id = fake_aws.client("emr-serverless", url).create_application(
            name="bench", releaseLabel="emr-7.2.0", type="SPARK"
        )["applicationId"]
        self.virtual_cluster_id = fake_aws.client("emr-containers", url).create_virtual_cluster(
            name="bench",
            containerProvider={"id": "eks", "type": "EKS", "info": {"eksInfo": {"namespace": "bench"}}},
        )["id"]

    def starters(self) -> dict[str, tuple[Callable[[], Any], Any]]:
        """service -> (start one job, the resolve function its pending items use)."""
        from airflow.providers.amazon.aws.hooks.emr import EmrContainerHook, EmrHook, EmrServerlessHook
        from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

        from airflow_cost_provider.instrumentation import emr, glue

        def glue_run(run_kwargs: dict | None = None) -> Callable[[], Any]:
            return lambda: GlueJobHook(job_name="bench_job", aws_conn_id="aws_default").initialize_job(
                {"--day": "2026-11-22"}, run_kwargs
            )

        return {
            "glue (class from the job definition)": (glue_run(), glue.resolve_glue_runs),
            "glue (class on the run)": (glue_run({"ExecutionClass": "STANDARD"}), glue.resolve_glue_runs),
            "emr steps": (
                lambda: EmrHook(aws_conn_id="aws_default").add_job_flow_steps(self.cluster_id, [STEP]),
                emr.resolve_emr_steps,
            ),
            "emr serverless": (
                lambda: EmrServerlessHook(aws_conn_id="aws_default").conn.start_job_run(
                    applicationId=self.application_id,
                    executionRoleArn=ROLE,
                    jobDriver={"sparkSubmit": {"entryPoint": "s3://bench/job.py"}},
                    name="bench_run",
                ),
                emr.resolve_serverless_runs,
            ),
            "emr on eks": (
                lambda: EmrContainerHook(
                    aws_conn_id="aws_default", virtual_cluster_id=self.virtual_cluster_id
                ).submit_job(
                    "bench_run",
                    ROLE,
                    "emr-7.2.0-latest",
                    {"sparkSubmitJobDriver": {"entryPoint": "s3://bench/job.py"}},
                ),
                emr.resolve_eks_runs,
            ),
        }


def measure(
    start: Callable[[], Any], resolve: Any, rounds: int, batch: int, recorder: Any, instrumentations: list
) -> dict:
    from airflow_cost_provider.capture.safety import failures, suppress

    # one untimed task first: imports, service models and connections loaded once per process
    for instrumentation in instrumentations:
        instrumentation.instrument()
    warm_up = _session()
    start()
    with suppress():
        resolve(warm_up.pending.get(resolve, []), 5.0)
    plain, instrumented = [], []
    for _ in range(rounds):
        for variant in ("plain", "instrumented"):
            for instrumentation in instrumentations:
                (instrumentation.instrument if variant == "instrumented" else instrumentation.uninstrument)()
            _session()
            began = time.perf_counter()
            start()
            (instrumented if variant == "instrumented" else plain).append(time.perf_counter() - began)
    finalize: dict[int, list[float]] = {1: [], batch: []}
    calls: dict[int, list[int]] = {1: [], batch: []}
    for jobs in (1, batch):
        for _ in range(rounds):
            session = _session()
            for _ in range(jobs):
                start()
            items = session.pending.get(resolve, [])
            assert len(items) == jobs, (len(items), jobs)
            recorder.clear()
            began = time.perf_counter()
            with suppress():
                usages = resolve(items, 5.0)
            finalize[jobs].append((time.perf_counter() - began) / jobs)
            calls[jobs].append(len(recorder.cost_provider_calls()))
            unresolved = [u for u in usages if u.metric == "queries"]
            assert not unresolved, unresolved[0].attributes
    assert not failures, dict(failures)
    return {
        "start_overhead_ms": round((statistics.median(instrumented) - statistics.median(plain)) * 1000, 3),
        "start_plain": _ms(plain),
        "start_instrumented": _ms(instrumented),
        "finalize_per_job_1": _ms(finalize[1]),
        f"finalize_per_job_{batch}": _ms(finalize[batch]),
        "api_calls_per_job_1": statistics.median(calls[1]),
        f"api_calls_per_job_{batch}": statistics.median(calls[batch]) / batch,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _environment()
    _quiet_logs()
    from airflow_cost_provider.instrumentation.emr import EmrJobs
    from airflow_cost_provider.instrumentation.glue import GlueJobs
    from tests.support import fake_aws
    from tests.support.fake_emr import EksPlan, FakeEmr, ServerlessPlan, StepPlan
    from tests.support.moto_recorder import MotoRecorder

    plans = FakeEmr(
        steps={"bench_step": StepPlan(seconds=600)},
        serverless={
            "bench_run": ServerlessPlan(
                vcpu_hours=1.0, memory_gb_hours=4.0, storage_gb_hours=0.0, seconds=600
            )
        },
        eks={"bench_run": EksPlan(seconds=600)},
    )
    recorder = MotoRecorder()
    instrumentations = [GlueJobs(), EmrJobs()]
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "batch": args.batch,
        "services": {},
    }
    with recorder.installed(), plans.installed(), fake_aws.moto_server() as url:
        for key, value in fake_aws.airflow_env(url).items():
            os.environ[key] = value
        services = Services(url)
        for name, (start, resolve) in services.starters().items():
            numbers = measure(start, resolve, args.rounds, args.batch, recorder, instrumentations)
            result["services"][name] = numbers
            print(
                f"{name:38s} finalize per job: {numbers['finalize_per_job_1']['median_ms']:7.2f} ms alone, "
                f"{numbers[f'finalize_per_job_{args.batch}']['median_ms']:6.2f} ms in a batch of {args.batch}; "
                f"API calls per job {numbers['api_calls_per_job_1']:g} alone, "
                f"{numbers[f'api_calls_per_job_{args.batch}']:g} batched; "
                f"start +{numbers['start_overhead_ms']:.2f} ms"
            )
    for instrumentation in instrumentations:
        instrumentation.uninstrument()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
