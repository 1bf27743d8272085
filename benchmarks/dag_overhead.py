"""`airflow dags test` of a 20-task chain, cost provider enabled vs disabled: the wall-time ratio.

A temporary AIRFLOW_HOME gets its own dags folder with a generated DAG `bench_chain_20` (20 @task
tasks in a chain, each summing range(200_000)) and its metadata database (`airflow db migrate`,
once). Then N pairs of `airflow dags test bench_chain_20 <logical date>` run with
AIRFLOW__COST_PROVIDER__ENABLED=True and =False, alternating which mode goes first in each pair,
every run with its own logical date. OpenLineage is configured the same way in both modes: file
transport to a temporary file and the cost run facet function in custom_run_facets.

Every run is checked, because a benchmark that measures nothing is worthless: the DAG run succeeded
with 20 successful task instances; an enabled run wrote exactly 20 task rows to the ledger
(cost_ledger.db in AIRFLOW_HOME, table cost_task_runs) and 20 OpenLineage COMPLETE events carrying
the costProvider_cost facet; a disabled run wrote no ledger row and no cost facet.

`--openlineage-baseline` adds the same alternating comparison of OpenLineage enabled vs
AIRFLOW__OPENLINEAGE__DISABLED=True with the cost provider disabled in both, for scale.
`--facet-baseline` adds the provider disabled with vs without its facet function configured in
[openlineage] custom_run_facets: what the disabled baseline of the main comparison itself costs.
`--baseline-source DIR` adds the provider enabled with its code imported from DIR (another checkout)
vs disabled: a change measured before and after in the same run. With `--interleave` the three modes
run in rounds (the order rotating), so all three meet the same drift of a shared machine's load, and
enabled is compared with enabled from DIR too.

    uv run python benchmarks/dag_overhead.py [--pairs 5] [--openlineage-baseline] [--facet-baseline]
    uv run python benchmarks/dag_overhead.py --baseline-source /tmp/before   # e.g. git worktree add /tmp/before HEAD~1
    uv run python benchmarks/dag_overhead.py --baseline-source /tmp/before --interleave

Prints a summary and writes benchmarks/results/dag_overhead.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "dag_overhead.json"
DAG_ID = "bench_chain_20"
TASKS = 20
TARGET_RATIO = 1.03
FACETS_PATH = "airflow_cost_provider.openlineage.get_cost_run_facets"
COST_FACET_KEY = "costProvider_cost"
FIRST_LOGICAL_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

DAG_SOURCE = textwrap.dedent(
    f'''
    """Benchmark DAG: {TASKS} Python tasks in a chain, each doing a little CPU work."""

    import pendulum
    from airflow.sdk import chain, dag, task


    @dag(
        dag_id="{DAG_ID}",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        tags=["benchmark"],
    )
    def {DAG_ID}():
        @task
        def step(i: int) -> None:
            total = sum(range(200_000))
            assert total > i

        chain(*[step.override(task_id=f"step_{{i:02d}}")(i) for i in range({TASKS})])


    {DAG_ID}()
    '''
).lstrip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs per comparison (default 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs of each mode before the pairs (default 1; the first enabled run creates "
        "the ledger, the first run of all compiles and caches)",
    )
    parser.add_argument(
        "--openlineage-baseline",
        action="store_true",
        help="also compare OpenLineage enabled vs disabled, cost provider disabled in both",
    )
    parser.add_argument(
        "--facet-baseline",
        action="store_true",
        help="also compare the provider disabled with its facet function in custom_run_facets vs not "
        "configured at all: what the disabled mode itself costs",
    )
    parser.add_argument(
        "--baseline-source",
        type=Path,
        help="also compare the provider enabled, imported from this source folder (another checkout), "
        "vs disabled",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="with --baseline-source: run the three modes (enabled, enabled from DIR, disabled) in "
        "rotating rounds instead of two comparisons one after the other, and compare enabled with "
        "enabled from DIR too",
    )
    parser.add_argument(
        "--skip-cost",
        action="store_true",
        help="skip the cost provider comparison (run only the baselines asked for)",
    )
    parser.add_argument(
        "--airflow",
        default=None,
        help="the airflow command (default: the one next to this Python, else on PATH)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary AIRFLOW_HOME and logs")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per airflow command")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- setup


@dataclass
class Bench:
    root: Path
    home: Path
    dags: Path
    logs: Path
    ol_file: Path
    airflow: str
    timeout: float
    date_index: int = 0
    run_counter: int = 0

    @property
    def ledger(self) -> Path:
        return self.home / "cost_ledger.db"

    @property
    def metadata_db(self) -> Path:
        return self.home / "airflow.db"

    def next_logical_date(self) -> dt.datetime:
        date = FIRST_LOGICAL_DATE + dt.timedelta(days=self.date_index)
        self.date_index += 1
        return date


def find_airflow(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "airflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("airflow")
    if not found:
        raise SystemExit("no airflow command found: pass --airflow")
    return found


def setup(args: argparse.Namespace) -> Bench:
    root = Path(tempfile.mkdtemp(prefix="cost-dag-bench-"))
    home = root / "airflow_home"
    dags = home / "dags"
    logs = root / "logs"
    for folder in (home, dags, logs):
        folder.mkdir(parents=True, exist_ok=True)
    (dags / f"{DAG_ID}.py").write_text(DAG_SOURCE)
    return Bench(
        root, home, dags, logs, root / "openlineage_events.jsonl", find_airflow(args.airflow), args.timeout
    )


def base_env(bench: Bench) -> dict[str, str]:
    """The caller's environment without any Airflow or OpenLineage settings, plus this benchmark's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "OPENLINEAGE_"))
    }
    transport = {"type": "file", "log_file_path": str(bench.ol_file), "append": True}
    env.update(
        {
            "AIRFLOW_HOME": str(bench.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(bench.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": FACETS_PATH,
            "AIRFLOW__OPENLINEAGE__DISABLED": "False",
            "AIRFLOW__COST_PROVIDER__ENABLED": "False",
            # this checkout's provider, whatever the environment has installed
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    return env


# Each mode: the settings that differ from base_env, and what a run of it must leave behind.
MODES: dict[str, dict[str, Any]] = {
    "cost_enabled": {
        "env": {"AIRFLOW__COST_PROVIDER__ENABLED": "True"},
        "ledger_rows": TASKS,
        "openlineage": True,
        "cost_facets": TASKS,
    },
    "cost_disabled": {
        "env": {"AIRFLOW__COST_PROVIDER__ENABLED": "False"},
        "ledger_rows": 0,
        "openlineage": True,
        "cost_facets": 0,
    },
    # the cost provider disabled and its facet function not configured either: no trace of it at all
    "cost_disabled_no_facet": {
        "env": {"AIRFLOW__COST_PROVIDER__ENABLED": "False", "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": ""},
        "ledger_rows": 0,
        "openlineage": True,
        "cost_facets": 0,
    },
    "openlineage_enabled": {
        "env": {"AIRFLOW__COST_PROVIDER__ENABLED": "False", "AIRFLOW__OPENLINEAGE__DISABLED": "False"},
        "ledger_rows": 0,
        "openlineage": True,
        "cost_facets": 0,
    },
    "openlineage_disabled": {
        "env": {"AIRFLOW__COST_PROVIDER__ENABLED": "False", "AIRFLOW__OPENLINEAGE__DISABLED": "True"},
        "ledger_rows": 0,
        "openlineage": False,
        "cost_facets": 0,
    },
}


@dataclass
class Timed:
    seconds: float  # wall time, time.perf_counter
    cpu_seconds: float  # user + system of the command and the children it waited for
    load_before: float  # 1-minute load average when it started (other work on the machine)
    started_at: dt.datetime  # wall clock, to place the log's timestamps
    ended_at: dt.datetime
    log_path: Path


def run_command(bench: Bench, name: str, command: list[str], env: dict[str, str]) -> Timed:
    """Run one command with its output in a log file; its wall time in seconds."""
    bench.run_counter += 1
    log_path = bench.logs / f"{bench.run_counter:03d}_{name}.log"
    with log_path.open("wb") as log:
        load_before = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started_at = dt.datetime.now(dt.timezone.utc)
        start = time.perf_counter()
        completed = subprocess.run(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=bench.timeout, check=False
        )
        seconds = time.perf_counter() - start
        ended_at = dt.datetime.now(dt.timezone.utc)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(command)} exited with {completed.returncode}; log {log_path}:\n{tail}")
    return Timed(seconds, cpu_seconds, load_before, started_at, ended_at, log_path)


_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def _marker_time(lines: list[bytes], marker: bytes) -> dt.datetime | None:
    for line in lines:
        if marker in line and (match := _TIMESTAMP.match(line)):
            return dt.datetime.fromisoformat(match.group(1).decode()).replace(tzinfo=dt.timezone.utc)
    return None


def phases(timed: Timed) -> dict[str, float | None]:
    """Where a `dags test` run's wall time went, from the log's timestamps (None when not found):
    startup (process start to the first task), first_task (step_00, which also starts the in-process
    execution API and pays every one-time cost), steady_tasks (step_01 to the end of the last task)
    and shutdown (from there to the process's exit)."""
    lines = timed.log_path.read_bytes().splitlines()
    first = _marker_time(lines, b"[DAG TEST] starting task_id=step_00 ")
    second = _marker_time(lines, b"[DAG TEST] starting task_id=step_01 ")
    last = _marker_time(lines, f"[DAG TEST] end task task_id=step_{TASKS - 1:02d} ".encode())

    def between(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
        return None if a is None or b is None else (b - a).total_seconds()

    return {
        "startup": between(timed.started_at, first),
        "first_task": between(first, second),
        "steady_tasks": between(second, last),
        "shutdown": between(last, timed.ended_at),
    }


# --------------------------------------------------------------------------- what a run left behind


def _query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise


def ledger_max_id(bench: Bench) -> int:
    rows = _query(bench.ledger, "SELECT COALESCE(MAX(id), 0) FROM cost_task_runs")
    return rows[0][0] if rows else 0


def ledger_rows_after(bench: Bench, last_id: int) -> list[tuple]:
    return _query(
        bench.ledger,
        "SELECT dag_id, task_id, run_id, state, status FROM cost_task_runs WHERE id > ? ORDER BY id",
        (last_id,),
    )


def dag_run_outcome(bench: Bench, logical_date: dt.datetime) -> tuple[str | None, str | None, int]:
    """(run_id, dag run state, successful task instances) of the run with this logical date."""
    runs = _query(
        bench.metadata_db,
        "SELECT run_id, state, logical_date FROM dag_run WHERE dag_id = ? ORDER BY id",
        (DAG_ID,),
    )
    wanted = logical_date.replace(tzinfo=None)
    for run_id, state, stored in runs:
        if stored and dt.datetime.fromisoformat(str(stored)).replace(tzinfo=None) == wanted:
            successes = _query(
                bench.metadata_db,
                "SELECT COUNT(*) FROM task_instance WHERE dag_id = ? AND run_id = ? AND state = 'success'",
                (DAG_ID, run_id),
            )[0][0]
            return run_id, state, successes
    return None, None, 0


def ol_offset(bench: Bench) -> int:
    return bench.ol_file.stat().st_size if bench.ol_file.exists() else 0


def ol_events_since(bench: Bench, offset: int) -> dict[str, int]:
    """Events appended since the offset: all, task COMPLETE ones, and those carrying the cost facet."""
    counts = {"events": 0, "task_complete": 0, "cost_facets": 0, "unparsable": 0}
    if not bench.ol_file.exists():
        return counts
    with bench.ol_file.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            counts["unparsable"] += 1
            continue
        counts["events"] += 1
        job_name = (event.get("job") or {}).get("name", "")
        if event.get("eventType") == "COMPLETE" and job_name.startswith(f"{DAG_ID}."):
            counts["task_complete"] += 1
        if COST_FACET_KEY in ((event.get("run") or {}).get("facets") or {}):
            counts["cost_facets"] += 1
    return counts


# --------------------------------------------------------------------------- one run, verified


@dataclass
class Run:
    mode: str
    comparison: str
    pair: int | None  # None for warm-up runs
    position: int  # 0 when it ran first in its pair
    logical_date: str
    seconds: float
    cpu_seconds: float
    load_before: float
    run_id: str | None = None
    ledger_rows: int = 0
    openlineage: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float | None] = field(default_factory=dict)


def run_dag(bench: Bench, mode: str, comparison: str, pair: int | None, position: int) -> Run:
    spec = MODES[mode]
    env = base_env(bench) | spec["env"]
    if "source" in spec:
        env["PYTHONPATH"] = os.pathsep.join([str(spec["source"]), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    logical_date = bench.next_logical_date()
    ledger_before, ol_before = ledger_max_id(bench), ol_offset(bench)
    command = [bench.airflow, "dags", "test", DAG_ID, logical_date.isoformat()]
    timed = run_command(bench, f"{mode}_{logical_date:%Y%m%d}", command, env)
    seconds = timed.seconds

    run_id, state, successes = dag_run_outcome(bench, logical_date)
    new_rows = ledger_rows_after(bench, ledger_before)
    events = ol_events_since(bench, ol_before)
    run = Run(
        mode,
        comparison,
        pair,
        position,
        logical_date.isoformat(),
        seconds,
        timed.cpu_seconds,
        timed.load_before,
        run_id,
        len(new_rows),
        events,
        phases(timed),
    )

    problems = []
    if state != "success" or successes != TASKS:
        problems.append(f"dag run {run_id!r} state {state!r} with {successes}/{TASKS} successful tasks")
    if len(new_rows) != spec["ledger_rows"]:
        problems.append(f"{len(new_rows)} ledger rows, expected {spec['ledger_rows']}")
    if new_rows:
        if {r[2] for r in new_rows} != {run_id} or len({r[1] for r in new_rows}) != TASKS:
            problems.append(f"ledger rows are not one row per task of run {run_id!r}: {new_rows[:3]}...")
        if {r[3] for r in new_rows} != {"success"}:
            problems.append(f"ledger task states {sorted({r[3] for r in new_rows})}, expected only success")
    if spec["openlineage"] and events["task_complete"] != TASKS:
        problems.append(f"{events['task_complete']} OpenLineage task COMPLETE events, expected {TASKS}")
    if not spec["openlineage"] and events["events"]:
        problems.append(f"{events['events']} OpenLineage events with OpenLineage disabled")
    if events["cost_facets"] != spec["cost_facets"]:
        problems.append(
            f"{events['cost_facets']} events carry the cost facet, expected {spec['cost_facets']}"
        )
    if problems:
        raise AssertionError(f"{mode} run {logical_date.isoformat()}: " + "; ".join(problems))

    label = "warm-up" if pair is None else f"pair {pair}"
    shown = "  ".join(f"{k} {v:5.2f}" for k, v in run.phases.items() if v is not None)
    print(
        f"  {label:<8} {mode:<21} {seconds:6.2f} s (cpu {timed.cpu_seconds:5.2f} s, "
        f"load {timed.load_before:4.2f})  [{shown}]  ledger rows {len(new_rows):2d}  "
        f"OL events {events['events']:3d} (cost facets {events['cost_facets']})",
        flush=True,
    )
    return run


def compare(bench: Bench, name: str, with_mode: str, without_mode: str, pairs: int, warmup: int) -> dict:
    """Alternate the two modes in pairs; the ratio is with / without."""
    print(f"{name}: {with_mode} vs {without_mode}, {pairs} pairs", flush=True)
    runs: list[Run] = []
    for _ in range(warmup):
        runs.append(run_dag(bench, with_mode, name, None, 0))
        runs.append(run_dag(bench, without_mode, name, None, 1))
    for pair in range(pairs):
        order = (with_mode, without_mode) if pair % 2 == 0 else (without_mode, with_mode)
        for position, mode in enumerate(order):
            runs.append(run_dag(bench, mode, name, pair, position))
    return summarize(runs, with_mode, without_mode, pairs)


def compare_interleaved(bench: Bench, modes: tuple[str, ...], rounds: int, warmup: int) -> list[Run]:
    """Rounds of one run of each mode, the order rotating from round to round, so that every mode
    meets the same drift of the machine's load; each round counts as a pair for summarize."""
    print(f"interleaved: {', '.join(modes)}, {rounds} rounds", flush=True)
    runs: list[Run] = []
    for _ in range(warmup):
        runs += [run_dag(bench, mode, "interleaved", None, position) for position, mode in enumerate(modes)]
    for number in range(rounds):
        order = modes[number % len(modes) :] + modes[: number % len(modes)]
        runs += [run_dag(bench, mode, "interleaved", number, position) for position, mode in enumerate(order)]
    return runs


def summarize(runs: list[Run], with_mode: str, without_mode: str, pairs: int) -> dict:
    """The ratio with / without from the timed runs of the two modes (a pair: the same pair number)."""
    timed = [r for r in runs if r.pair is not None and r.mode in (with_mode, without_mode)]
    runs = [r for r in runs if r.mode in (with_mode, without_mode)]
    with_s = [r.seconds for r in timed if r.mode == with_mode]
    without_s = [r.seconds for r in timed if r.mode == without_mode]
    by_pair = {r.pair: {} for r in timed}
    for r in timed:
        by_pair[r.pair][r.mode] = r.seconds
    pair_ratios = [p[with_mode] / p[without_mode] for _, p in sorted(by_pair.items())]
    median_with, median_without = statistics.median(with_s), statistics.median(without_s)
    cpu_with = [r.cpu_seconds for r in timed if r.mode == with_mode]
    cpu_without = [r.cpu_seconds for r in timed if r.mode == without_mode]
    phase_medians: dict[str, dict[str, float | None]] = {}
    for mode in (with_mode, without_mode):
        phase_medians[mode] = {}
        for phase in ("startup", "first_task", "steady_tasks", "shutdown"):
            values = [r.phases.get(phase) for r in timed if r.mode == mode]
            known = [v for v in values if v is not None]
            phase_medians[mode][phase] = statistics.median(known) if len(known) == len(values) else None
    steady_with, steady_without = (
        phase_medians[with_mode]["steady_tasks"],
        phase_medians[without_mode]["steady_tasks"],
    )
    steady = None
    if steady_with is not None and steady_without:
        steady = {
            "ratio_of_medians": steady_with / steady_without,
            "difference_per_task_ms": (steady_with - steady_without) / (TASKS - 1) * 1000.0,
        }
    return {
        "with_mode": with_mode,
        "without_mode": without_mode,
        "pairs": pairs,
        "seconds": {with_mode: with_s, without_mode: without_s},
        "median_seconds": {with_mode: median_with, without_mode: median_without},
        "mean_seconds": {with_mode: statistics.fmean(with_s), without_mode: statistics.fmean(without_s)},
        "stdev_seconds": {
            with_mode: statistics.stdev(with_s) if len(with_s) > 1 else 0.0,
            without_mode: statistics.stdev(without_s) if len(without_s) > 1 else 0.0,
        },
        "ratio_of_medians": median_with / median_without,
        "pair_ratios": pair_ratios,
        "median_pair_ratio": statistics.median(pair_ratios),
        "median_difference_seconds": median_with - median_without,
        "difference_per_task_ms": (median_with - median_without) / TASKS * 1000.0,
        "cpu_seconds": {with_mode: cpu_with, without_mode: cpu_without},
        "median_cpu_seconds": {
            with_mode: statistics.median(cpu_with),
            without_mode: statistics.median(cpu_without),
        },
        "cpu_ratio_of_medians": statistics.median(cpu_with) / statistics.median(cpu_without),
        "load_average_1m": [r.load_before for r in timed],
        "phase_median_seconds": phase_medians,
        "steady_tasks": steady,
        "runs": [asdict(r) for r in runs],
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")
    if args.skip_cost and not (args.openlineage_baseline or args.facet_baseline or args.baseline_source):
        raise SystemExit(
            "--skip-cost leaves nothing to run without --openlineage-baseline or --facet-baseline"
        )
    if args.interleave and (args.skip_cost or not args.baseline_source):
        raise SystemExit("--interleave needs --baseline-source and the cost comparison (no --skip-cost)")
    if args.baseline_source:
        source = args.baseline_source.resolve()
        if not (source / "airflow_cost_provider" / "plugin.py").exists():
            raise SystemExit(f"--baseline-source {source}: no airflow_cost_provider/plugin.py there")
        MODES["cost_enabled_baseline"] = MODES["cost_enabled"] | {"source": source}
    bench = setup(args)
    started = time.perf_counter()
    print(f"AIRFLOW_HOME {bench.home}; airflow {bench.airflow}", flush=True)
    migrate_seconds = run_command(
        bench, "db_migrate", [bench.airflow, "db", "migrate"], base_env(bench)
    ).seconds
    print(f"airflow db migrate: {migrate_seconds:.1f} s", flush=True)

    comparisons: dict[str, Any] = {}
    if args.interleave:
        runs = compare_interleaved(
            bench, ("cost_enabled", "cost_enabled_baseline", "cost_disabled"), args.pairs, args.warmup
        )
        for name, with_mode, without_mode in (
            ("cost_provider", "cost_enabled", "cost_disabled"),
            ("baseline_source", "cost_enabled_baseline", "cost_disabled"),
            ("change", "cost_enabled", "cost_enabled_baseline"),
        ):
            comparisons[name] = summarize(runs, with_mode, without_mode, args.pairs)
    elif not args.skip_cost:
        comparisons["cost_provider"] = compare(
            bench, "cost_provider", "cost_enabled", "cost_disabled", args.pairs, args.warmup
        )
    if args.baseline_source and not args.interleave:
        comparisons["baseline_source"] = compare(
            bench, "baseline_source", "cost_enabled_baseline", "cost_disabled", args.pairs, args.warmup
        )
    if args.facet_baseline:
        comparisons["facet_baseline"] = compare(
            bench, "facet_baseline", "cost_disabled", "cost_disabled_no_facet", args.pairs, args.warmup
        )
    if args.openlineage_baseline:
        comparisons["openlineage_baseline"] = compare(
            bench,
            "openlineage_baseline",
            "openlineage_enabled",
            "openlineage_disabled",
            args.pairs,
            args.warmup,
        )

    results = {
        "benchmark": "dag_overhead",
        "description": f"`airflow dags test` of a {TASKS}-task chain, provider enabled vs disabled, "
        "alternating in one run: wall-time ratio",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            name: _version(name)
            for name in (
                "apache-airflow",
                "apache-airflow-providers-openlineage",
                "openlineage-python",
                "airflow-cost-provider",
            )
        },
        "config": {"pairs": args.pairs, "warmup": args.warmup, "tasks": TASKS, "dag_id": DAG_ID},
        "target_ratio": TARGET_RATIO,
        "db_migrate_seconds": migrate_seconds,
        "total_seconds": time.perf_counter() - started,
        "comparisons": comparisons,
    }
    if "cost_provider" in comparisons:
        results["meets_target"] = comparisons["cost_provider"]["ratio_of_medians"] <= TARGET_RATIO
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results, args.output)
    if args.keep_temp:
        print(f"kept {bench.root}")
    else:
        shutil.rmtree(bench.root, ignore_errors=True)
    return 0


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def print_summary(results: dict[str, Any], output: Path) -> None:
    print()
    print(
        f"dag overhead: `airflow dags test {DAG_ID}`, {results['config']['pairs']} alternating pairs "
        f"(+{results['config']['warmup']} untimed warm-up of each mode)"
    )
    for name, c in results["comparisons"].items():
        w, wo = c["with_mode"], c["without_mode"]
        print(f"  {name}")
        for mode in (w, wo):
            secs = ", ".join(f"{s:.2f}" for s in c["seconds"][mode])
            print(f"    {mode:<21} median {c['median_seconds'][mode]:7.2f} s  (runs: {secs})")
        print(f"    ratio of medians        {c['ratio_of_medians']:.4f}")
        print(
            f"    median of pair ratios   {c['median_pair_ratio']:.4f}  "
            f"(pairs: {', '.join(f'{r:.3f}' for r in c['pair_ratios'])})"
        )
        print(
            f"    difference              {c['median_difference_seconds'] * 1000:.0f} ms per DAG run, "
            f"{c['difference_per_task_ms']:.1f} ms per task"
        )
        print(
            f"    CPU time (user+sys)     {c['median_cpu_seconds'][w]:.2f} s vs {c['median_cpu_seconds'][wo]:.2f} s, "
            f"ratio of medians {c['cpu_ratio_of_medians']:.4f}"
        )
        print(
            f"    1-min load average at run start: {min(c['load_average_1m']):.2f}..{max(c['load_average_1m']):.2f} "
            f"(on {results['machine']['cpus']} CPUs; other work skews wall times)"
        )
        print("    phase medians (s, from log timestamps):")
        for mode in (w, wo):
            ph = c["phase_median_seconds"][mode]
            print(
                "      "
                + f"{mode:<21} "
                + "  ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in ph.items())
            )
        if c["steady_tasks"]:
            print(
                f"    steady tasks (step_01..step_{TASKS - 1:02d}) ratio {c['steady_tasks']['ratio_of_medians']:.4f}, "
                f"{c['steady_tasks']['difference_per_task_ms']:.1f} ms per task"
            )
    if "meets_target" in results:
        verdict = "meets" if results["meets_target"] else "MISSES"
        print(f"  cost provider {verdict} the target ratio <= {results['target_ratio']}")
    print(f"  total {results['total_seconds']:.0f} s; JSON: {output}")


if __name__ == "__main__":
    sys.exit(main())
