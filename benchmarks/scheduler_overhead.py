"""Per-task overhead under a real scheduler: the LocalExecutor (or the CeleryExecutor), each task try
its own process.

A temporary AIRFLOW_HOME gets a PostgreSQL metadata database (a throwaway server on 127.0.0.1), a
dags folder with one generated DAG `bench_noop_chain` (tasks that do nothing, in a chain, so one
runs at a time), and the api-server, dag-processor and scheduler (parallelism 8). Then the DAG runs
with the provider enabled and with `[cost_provider] enabled = False`, alternating which mode goes
first in each pair; switching modes restarts the scheduler, whose workers start the task processes.
OpenLineage is configured the same way in both modes (file transport, the cost facet function in
custom_run_facets).

A try's wall time is its task instance's end_date - start_date in the metadata database: from the
supervisor starting the task process to the task reporting its final state, so the process start,
the DAG parse, the listeners and the task itself. Every run is checked: all tries succeeded, an
enabled run wrote one ledger row per try (the default SQLite ledger), a disabled run none.

    uv run python benchmarks/scheduler_overhead.py [--pairs 3] [--tasks 8] [--no-bytecode-cache]
    uv run python benchmarks/scheduler_overhead.py --executor celery   # one worker, a Redis broker
    uv run python benchmarks/scheduler_overhead.py --executor celery --baseline-source /tmp/before

With `--executor celery` a throwaway `redis-server` on 127.0.0.1 is the broker and one
`airflow celery worker` (4 slots) runs the tasks; switching modes restarts the scheduler and the
worker.

`--baseline-source DIR` adds a third mode, `baseline`: the provider enabled, its code imported from
DIR (another checkout, e.g. `git worktree add /tmp/before HEAD~1`) instead of this one, rotating with
the other two, so a change is measured before and after in the same run.

Prints a summary and writes benchmarks/results/scheduler_overhead.json (scheduler_overhead_celery.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import textwrap
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.airflow_scheduler import SchedulerDeployment  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

RESULTS = HERE / "results"
DAG_ID = "bench_noop_chain"
RUN_TIMEOUT = 600
ENABLED = "AIRFLOW__COST_PROVIDER__ENABLED"


def dag_source(tasks: int) -> str:
    return textwrap.dedent(
        f'''
        """Benchmark DAG: {tasks} tasks that do nothing, in a chain."""

        import pendulum
        from airflow.sdk import chain, dag, task


        @dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
        def {DAG_ID}():
            @task
            def noop() -> None:
                return None

            chain(*[noop.override(task_id=f"noop_{{n:02d}}")() for n in range({tasks})])


        {DAG_ID}()
        '''
    )


def ledger_tries(home: Path, run_id: str) -> int:
    path = home / "cost_ledger.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM cost_task_runs WHERE run_id = ?", (run_id,)).fetchone()[0]


def run_once(
    deployment: SchedulerDeployment,
    mode: str,
    run_id: str,
    tasks: int,
    broker_url: str | None = None,
    baseline_source: Path | None = None,
) -> list[float]:
    settings = {ENABLED: str(mode != "disabled")}
    # the scheduler and its task processes (or the Celery worker and its) import the provider from here
    source = baseline_source if mode == "baseline" else HERE.parent
    settings["PYTHONPATH"] = os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    if broker_url is None:
        deployment.restart_executor(settings)
    else:
        deployment.restart_executor(settings | deployment.celery_env(broker_url), celery_workers=1)
    deployment.trigger(DAG_ID, run_id)
    state = deployment.wait(DAG_ID, [run_id], RUN_TIMEOUT)[run_id]
    tries = deployment.task_tries(DAG_ID, [run_id]).values()
    if state != "success" or len(tries) != tasks or any(t["state"] != "success" for t in tries):
        raise SystemExit(f"{run_id}: the run did not succeed with {tasks} tries: {state}, {list(tries)}")
    rows = ledger_tries(deployment.home, run_id)
    if rows != (0 if mode == "disabled" else tasks):
        raise SystemExit(f"{run_id} ({mode}): {rows} ledger rows for {tasks} tries")
    return [(t["end_date"] - t["start_date"]).total_seconds() for t in tries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--output", type=Path, help="default: results/scheduler_overhead[_celery].json")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument(
        "--baseline-source",
        type=Path,
        help="a third mode: the provider enabled, imported from this source folder (another checkout)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE of the calling shell: every task process compiles its imports",
    )
    args = parser.parse_args()
    suffix = "" if args.executor == "local" else f"_{args.executor}"
    args.output = args.output or RESULTS / f"scheduler_overhead{suffix}.json"

    home = Path(tempfile.mkdtemp(prefix="cost-bench-scheduler-"))
    dag_file = home / "src" / f"{DAG_ID}.py"
    dag_file.parent.mkdir()
    dag_file.write_text(dag_source(args.tasks))
    server = PostgresServer(log_statements=False).start()
    redis = RedisServer().start() if args.executor == "celery" else None
    broker_url = redis.url() if redis is not None else None
    deployment = SchedulerDeployment(home / "airflow", server.create_database("airflow"), [dag_file])
    if not args.no_bytecode_cache:
        # as in production, task processes read cached bytecode (the warm-up run writes it) rather
        # than compiling every module they import
        deployment.env.pop("PYTHONDONTWRITEBYTECODE", None)
    modes = ["enabled", "disabled"] + (["baseline"] if args.baseline_source else [])
    baseline = args.baseline_source.resolve() if args.baseline_source else None
    if baseline is not None and not (baseline / "airflow_cost_provider" / "plugin.py").exists():
        raise SystemExit(f"--baseline-source {baseline}: no airflow_cost_provider/plugin.py there")
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    pairs = []
    try:
        deployment.start()
        deployment.wait_for_dag(DAG_ID)
        for mode in modes[::2]:  # first parse, ledger creation, bytecode of each source
            run_once(deployment, mode, f"warmup-{mode}", args.tasks, broker_url, baseline)
        for pair in range(args.pairs):
            # each mode goes first, second (and third) in turn
            order = modes[pair % len(modes) :] + modes[: pair % len(modes)]
            if len(modes) == 2 and pair % 2:
                order = order[::-1]
            medians = {}
            for mode in order:
                seconds = run_once(deployment, mode, f"{mode}-{pair}", args.tasks, broker_url, baseline)
                walls[mode] += seconds
                medians[mode] = statistics.median(seconds)
                print(f"pair {pair} {mode:8s} median try {medians[mode] * 1000:7.0f} ms", flush=True)
            pairs.append(medians)
    finally:
        deployment.stop()
        server.stop()
        if redis is not None:
            redis.stop()
        if not args.keep_temp:
            shutil.rmtree(home, ignore_errors=True)

    enabled, disabled = statistics.median(walls["enabled"]), statistics.median(walls["disabled"])
    pair_ratios = [p["enabled"] / p["disabled"] for p in pairs]
    before = statistics.median(walls["baseline"]) if baseline else None
    summary = {
        "executor": args.executor,
        "tries_per_mode": len(walls["enabled"]),
        "median_try_ms": {"enabled": enabled * 1000, "disabled": disabled * 1000},
        "overhead_ms": (enabled - disabled) * 1000,
        "ratio": enabled / disabled,
        "median_pair_ratio": statistics.median(pair_ratios),
        "pair_ratios": pair_ratios,
        "target": "under 3 % of a no-op task or 50 ms, whichever is larger",
        "target_ms": max(0.03 * disabled * 1000, 50.0),
        "bytecode_cache": not args.no_bytecode_cache,
        "baseline": None
        if before is None
        else {
            "median_try_ms": before * 1000,
            "overhead_ms": (before - disabled) * 1000,
            "ratio": before / disabled,
            "median_pair_ratio": statistics.median(p["baseline"] / p["disabled"] for p in pairs),
        },
        "walls_s": walls,
        "baseline_source": str(baseline) if baseline else None,
        "machine": {"python": platform.python_version(), "airflow": metadata.version("apache-airflow")},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    print(
        f"median try: enabled {enabled * 1000:.0f} ms, disabled {disabled * 1000:.0f} ms; "
        f"overhead {summary['overhead_ms']:.0f} ms, ratio {summary['ratio']:.3f} "
        f"(median of pair ratios {summary['median_pair_ratio']:.3f}); target under "
        f"{summary['target_ms']:.0f} ms"
    )
    if before is not None:
        print(
            f"baseline ({baseline}): median try {before * 1000:.0f} ms, overhead "
            f"{summary['baseline']['overhead_ms']:.0f} ms, ratio {summary['baseline']['ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
