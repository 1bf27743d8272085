"""What the provider adds to a new task process, measured in CPU time as well as wall time.

A "pool" process imports what a Celery worker's pool process holds before it starts a task (the
Task SDK's task runner, the standard operators, jinja2), as `celery_executor_utils` preloads them,
but no plugin. It then forks one child per task try, the way the supervisor starts a task process
from it, alternating the provider enabled and `enabled = False`. Each child loads Airflow's
listener plugins (the cost provider's and OpenLineage's: file transport, the cost facet function in
custom_run_facets), then calls the cost listener's running and success hooks for a task try, and
the facet function, as the OpenLineage listener does. Reported per mode: the median wall and CPU
time (`time.process_time`: every thread of the child, so the ledger writer's too) of each phase,
and the difference enabled - disabled. CPU time moves little with other load on the machine, where
the wall times of whole scheduler runs (`scheduler_overhead.py`) scatter.

`--baseline-source DIR` measures another checkout (e.g. `git worktree add /tmp/before HEAD~1`) the
same way, its pools alternating with this checkout's: a change before and after in one run.

Every enabled child must have written its try to the ledger (a SQLite file in a temporary
AIRFLOW_HOME), every disabled one nothing.

    uv run python benchmarks/task_process_overhead.py [--rounds 20] [--baseline-source /tmp/before]

Prints a summary and writes benchmarks/results/task_process_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PHASES = ("plugins", "running", "success", "facet", "total")


def child(mode: str, write_fd: int) -> None:
    """One task try in a fresh process (forked from the pool). Never returns."""
    os.environ["AIRFLOW__COST_PROVIDER__ENABLED"] = str(mode == "enabled")
    from tests.support.fake_ti import FakeTaskInstance

    wall0, cpu0 = time.perf_counter(), time.process_time()
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    wall1 = time.perf_counter()
    ours = [p for p in manager.pm.get_plugins() if type(p).__name__.endswith("CostListener")]
    ti = FakeTaskInstance(dag_id="bench_task_process", run_id=f"{mode}-{os.getpid()}-{time.time_ns()}")
    for listener in ours:
        listener.on_task_instance_running(previous_state=None, task_instance=ti)
    wall2 = time.perf_counter()
    ti.state = "success"
    for listener in ours:
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
    wall3 = time.perf_counter()
    facets = {}
    if ours:
        from airflow_cost_provider.openlineage import get_cost_run_facets

        facets = get_cost_run_facets(ti, "success")
    wall4, cpu4 = time.perf_counter(), time.process_time()
    result = {
        "mode": mode,
        "run_id": ti.run_id,
        "listeners": len(ours),
        "facet": bool(facets),
        "wall": {
            "plugins": wall1 - wall0,
            "running": wall2 - wall1,
            "success": wall3 - wall2,
            "facet": wall4 - wall3,
            "total": wall4 - wall0,
        },
        "cpu_total": cpu4 - cpu0,
    }
    os.write(write_fd, json.dumps(result).encode())
    os._exit(0)


def pool(rounds: int, first: int) -> None:
    """The pool process: preload as Celery does, then fork the tries; one JSON result per line."""
    import jinja2.ext  # noqa: F401
    from airflow.providers.standard.operators import bash, python  # noqa: F401
    from airflow.sdk.execution_time import task_runner  # noqa: F401

    from tests.support import fake_ti  # noqa: F401  (the benchmark's own, not timed)

    for number in range(rounds):
        for mode in ("enabled", "disabled") if (number + first) % 2 == 0 else ("disabled", "enabled"):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                child(mode, write_fd)
            os.close(write_fd)
            data = b""
            while chunk := os.read(read_fd, 65536):
                data += chunk
            os.close(read_fd)
            os.waitpid(pid, 0)
            print(data.decode(), flush=True)


def run_pool(source: Path, env: dict[str, str], rounds: int, first: int) -> list[dict]:
    pool_env = env | {"PYTHONPATH": os.pathsep.join([str(source), str(HERE.parent)])}
    done = subprocess.run(
        [sys.executable, __file__, "--pool", str(rounds), "--first", str(first)],
        env=pool_env,
        cwd=str(source),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,  # its output says what failed
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(rows) != 2 * rounds:
        raise SystemExit(f"pool of {source} failed ({done.returncode}): {done.stderr[-3000:]}")
    return rows


def ledger_run_ids(home: Path) -> set[str]:
    path = home / "cost_ledger.db"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT run_id FROM cost_task_runs")}


def summary(rows: list[dict]) -> dict:
    out = {}
    for mode in ("enabled", "disabled"):
        mine = [r for r in rows if r["mode"] == mode]
        out[mode] = {
            "wall_ms": {p: statistics.median(r["wall"][p] for r in mine) * 1000 for p in PHASES},
            "cpu_ms": statistics.median(r["cpu_total"] for r in mine) * 1000,
        }
    out["overhead_wall_ms"] = out["enabled"]["wall_ms"]["total"] - out["disabled"]["wall_ms"]["total"]
    out["overhead_cpu_ms"] = out["enabled"]["cpu_ms"] - out["disabled"]["cpu_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="tries per mode and source (default 20)")
    parser.add_argument("--baseline-source", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--output", type=Path, default=RESULTS / "task_process_overhead.json")
    parser.add_argument("--pool", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool is not None:
        pool(args.pool, args.first)
        return

    sources = {"current": HERE.parent}
    if args.baseline_source:
        baseline = args.baseline_source.resolve()
        if not (baseline / "airflow_cost_provider" / "plugin.py").exists():
            raise SystemExit(f"--baseline-source {baseline}: no airflow_cost_provider/plugin.py there")
        sources["baseline"] = baseline
    home = Path(tempfile.mkdtemp(prefix="cost-bench-task-process-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "OPENLINEAGE"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as in production: task processes read cached bytecode
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__OPENLINEAGE__NAMESPACE="bench",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(home / "events.jsonl"), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS="airflow_cost_provider.openlineage.get_cost_run_facets",
    )
    rows: dict[str, list[dict]] = {name: [] for name in sources}
    try:
        for source in sources.values():  # untimed: the ledger's creation, bytecode of each source
            run_pool(source, env, 1, 0)
        half = max(1, args.rounds // 2)
        for block in range(2):  # the sources' pools alternate: A B, then B A
            for name in list(sources)[:: 1 if block == 0 else -1]:
                rows[name] += run_pool(sources[name], env, half, block)
        written = ledger_run_ids(home)
        for name, measured in rows.items():
            for row in measured:
                enabled = row["mode"] == "enabled"
                if (row["run_id"] in written) != enabled or (row["listeners"] == 1) != enabled:
                    raise SystemExit(f"{name} {row['mode']} try {row['run_id']}: ledger or listener wrong")
                if row["facet"] != enabled:
                    raise SystemExit(f"{name} {row['mode']} try {row['run_id']}: cost facet wrong")
    finally:
        shutil.rmtree(home, ignore_errors=True)

    results = {
        "tries_per_mode": {name: len(measured) // 2 for name, measured in rows.items()},
        "sources": {name: str(source) for name, source in sources.items()},
        "summary": {name: summary(measured) for name, measured in rows.items()},
        "load_average_1m": os.getloadavg()[0],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    for name, s in results["summary"].items():
        print(f"{name} ({sources[name]}):")
        for mode in ("enabled", "disabled"):
            walls = "  ".join(f"{p} {s[mode]['wall_ms'][p]:7.1f}" for p in PHASES)
            print(f"  {mode:8s} wall ms: {walls}   cpu {s[mode]['cpu_ms']:7.1f} ms")
        print(f"  overhead: wall {s['overhead_wall_ms']:+.1f} ms, cpu {s['overhead_cpu_ms']:+.1f} ms")
    print(f"load average {results['load_average_1m']:.1f}; JSON: {args.output}")


if __name__ == "__main__":
    main()
