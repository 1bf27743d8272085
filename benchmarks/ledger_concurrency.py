"""How many task tries per second does one ledger take from many worker processes writing at once?

Starts `--writers` processes (default 16, multiprocessing with spawn: each its own interpreter and its
own engine, as task processes on Celery or LocalExecutor workers are), and, in the same run, one
process alone as the baseline. Each writes task-try captures with ledger.store.store(get_engine(url),
result), the call a task's finalize makes, for `--seconds` (default 20) or `--tries` per writer. A
capture is what a task leaves: the worker's CPU and memory lines, a priced Athena line, and every
other try a Snowflake line too; every try of its own DAG run, ending now (so the writers add to the
same cost_daily_totals rows of the day, as real tasks do). The engine's timeout is the default
`finalize_timeout` (5 s), the SQLite busy timeout a task's write waits for the database at most.

Reports tries per second overall (all writers, from the start signal to the last write), the
p50/p95/p99/max latency of one store() call, the ratio to the single writer, and the errors by kind
(`database is locked`, deadlocks, others: a failed write is a capture a task would have spooled).
Afterwards it checks the ledger: exactly one row per try a writer reported written (none missing,
none doubled), the lines the captures held, and cost_daily_totals equal to the lines' sums. Writes
benchmarks/results/ledger_concurrency.json.

    uv run python benchmarks/ledger_concurrency.py                      # SQLite and a throwaway PostgreSQL
    uv run python benchmarks/ledger_concurrency.py --no-postgres --seconds 5
    uv run python benchmarks/ledger_concurrency.py --tries 500 --writers 8
    uv run python benchmarks/ledger_concurrency.py --ledger postgresql://cost:cost@localhost:5433/bench

Each configuration gets a new ledger (a new SQLite file; a new PostgreSQL database), created and
migrated before the writers start, as on a running system. `--ledger` names a server on which the
script may create databases (`ledger_bench_1`, `ledger_bench_16`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "ledger_concurrency.json"  # --distinct-dags: _distinct.json
FINALIZE_TIMEOUT = 5.0  # conf.finalize_timeout()'s default: the engine timeout a task's write uses


# ---------------------------------------------------------------- one writer process


def capture(writer: int, number: int, distinct: bool = False):
    """One task try's capture, ending now: worker CPU and memory, Athena, every other try Snowflake.
    The writers share 40 DAGs of 8 tasks (as mapped tasks of one DAG do), unless `distinct`."""
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.pricing import CostLine, Price, Usage
    from airflow_cost_provider.result import CostResult

    cpu_price = Price("airflow_worker", "cpu_time", "vCPU-hour", Decimal("0.04048"), "USD", "config")
    memory_price = Price("airflow_worker", "memory_time", "GiB-hour", Decimal("0.004445"), "USD", "config")
    athena_price = Price("athena", "data_scanned", "TB", Decimal("5"), "USD", "2026.11.0")
    snowflake_price = Price("snowflake", "credits", "credit", Decimal("3"), "USD", "2026.11.0")
    end = dt.datetime.now(dt.timezone.utc)
    start = end - dt.timedelta(seconds=40)
    cpu = Usage("airflow_worker", "cpu_time", Decimal("12.5"), "second", start_time=start, end_time=end)
    memory = Usage(
        "airflow_worker", "memory_time", Decimal("5000.25"), "GiB-second", start_time=start, end_time=end
    )
    scan = Usage(
        "athena",
        "data_scanned",
        Decimal(3 * 10**11 + number),
        "byte",
        "primary",
        f"q-{writer}-{number}",
        start,
        end,
    )
    lines = [
        CostLine(cpu, Decimal("0.000140555"), "USD", "runtime_rate", cpu_price),
        CostLine(memory, Decimal("0.000006174"), "USD", "runtime_rate", memory_price),
        CostLine(scan, Decimal("1.500000000"), "USD", "list_price", athena_price),
    ]
    if number % 2:
        credits = Usage(
            "snowflake", "credits", Decimal("0.25"), "credit", "WH_ETL", f"s-{writer}-{number}", start, end
        )
        lines.append(CostLine(credits, Decimal("0.75"), "USD", "list_price", snowflake_price))
    return CostResult(
        TaskTry(
            f"dag_w{writer:02d}_{number % 40}" if distinct else f"dag_{number % 40}",
            f"task_{number % 8}",
            f"manual__w{writer:02d}_{number:08d}",
            1,
            -1,
            None,
            "ana",
            "sales",
        ),
        f"{writer:08x}{number:024x}",
        "success",
        start,
        end,
        f"worker-{writer}",
        tuple(lines),
        (),
    )


def error_kind(error: BaseException) -> str:
    text = str(error).lower()
    if "database is locked" in text:
        return "database is locked"
    if "deadlock" in text:
        return "deadlock"
    if "could not serialize" in text:
        return "serialization failure"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


def writer_main(
    writer: int, url: str, home: str, seconds: float, tries: int, distinct: bool, ready, go, results
) -> None:
    """A task process's writes: the engine made first (untimed), then store() per try until the end."""
    os.environ["AIRFLOW_HOME"] = home
    try:
        from airflow_cost_provider.ledger.store import dispose_engines, get_engine, store

        engine = get_engine(url, timeout=FINALIZE_TIMEOUT)
        captures = [capture(writer, 0)]  # imports paid before the start
        del captures
    except BaseException:
        ready.put((writer, traceback.format_exc()))
        return
    ready.put((writer, None))
    go.wait()
    latencies: list[float] = []
    written: list[int] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    number = 0
    started = time.perf_counter()
    while (number < tries) if tries else (time.monotonic() < deadline):
        result = capture(writer, number, distinct)
        before = time.perf_counter()
        try:
            if store(engine, result):
                written.append(number)
        except Exception as error:  # a write a task would have spooled
            kind = error_kind(error)
            errors[kind] = errors.get(kind, 0) + 1
        latencies.append(time.perf_counter() - before)
        number += 1
    finished = time.perf_counter()
    dispose_engines()
    results.put(
        {
            "writer": writer,
            "attempted": number,
            "written": written,
            "latencies": latencies,
            "errors": errors,
            "started": started,
            "finished": finished,
        }
    )


# ---------------------------------------------------------------- one configuration


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(kind: str, url: str, writers: int, seconds: float, tries: int, home: Path, distinct: bool) -> dict:
    from airflow_cost_provider.ledger.store import dispose_engines, get_engine

    get_engine(url)  # the schema exists before the writers start, as on a running system
    dispose_engines()
    context = mp.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=writer_main,
            args=(n, url, str(home), seconds, tries, distinct, ready, go, results),
            daemon=True,
        )
        for n in range(writers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            writer, failure = ready.get(timeout=300)
            if failure:
                raise SystemExit(f"writer {writer} did not start:\n{failure}")
        go.set()
        reports = [results.get(timeout=seconds + 600 if not tries else 3600) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    latencies = [value * 1000 for report in reports for value in report["latencies"]]
    written = sum(len(report["written"]) for report in reports)
    attempted = sum(report["attempted"] for report in reports)
    errors: dict[str, int] = {}
    for report in reports:
        for name, count in report["errors"].items():
            errors[name] = errors.get(name, 0) + count
    # wall time: the first writer's start to the last writer's end (perf_counter is system-wide)
    wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    check = verify(url, reports)
    return {
        "ledger": kind,
        "writers": writers,
        "distinct_dags": distinct,
        "seconds": round(wall, 3),
        "attempted": attempted,
        "written": written,
        "tries_per_second": round(written / wall, 1),
        "per_writer_tries_per_second": round(written / wall / writers, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "max": round(max(latencies), 3),
        },
        "errors": errors,
        "database_is_locked": errors.get("database is locked", 0),
        # a write this slow would have been cut by finalize_timeout in a task (and spooled)
        "over_finalize_timeout": sum(value > FINALIZE_TIMEOUT * 1000 for value in latencies),
        "ledger_check": check,
    }


def verify(url: str, reports: list[dict]) -> dict:
    """The ledger against what the writers said they wrote: one row per try, its lines, the totals."""
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.store import dispose_engines, get_engine

    expected_runs = {f"manual__w{r['writer']:02d}_{n:08d}" for r in reports for n in r["written"]}
    expected_lines = sum(4 if n % 2 else 3 for r in reports for n in r["written"])
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT run_id FROM cost_task_runs")).scalars().all()
        line_count = conn.execute(sa.text("SELECT count(*) FROM cost_lines")).scalar()
        line_nanos = conn.execute(sa.text("SELECT coalesce(sum(amount_nanos), 0) FROM cost_lines")).scalar()
        daily_lines, daily_nanos = conn.execute(
            sa.text("SELECT coalesce(sum(lines), 0), coalesce(sum(amount_nanos), 0) FROM cost_daily_totals")
        ).one()
    dispose_engines()
    found = set(rows)
    check = {
        "rows": len(rows),
        "distinct_tries": len(found),
        "missing": len(expected_runs - found),
        "doubled": len(rows) - len(found),
        "unexpected": len(found - expected_runs),
        "lines": int(line_count),
        "expected_lines": expected_lines,
        "daily_totals_equal_lines": int(daily_lines) == int(line_count)
        and int(daily_nanos) == int(line_nanos),
    }
    check["ok"] = (
        check["rows"] == len(expected_runs)
        and not check["missing"]
        and not check["doubled"]
        and not check["unexpected"]
        and check["lines"] == expected_lines
        and check["daily_totals_equal_lines"]
    )
    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="how long each writer writes (default 20)"
    )
    parser.add_argument(
        "--tries", type=int, default=0, help="instead of --seconds: this many tries per writer"
    )
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a throwaway local PostgreSQL (default: yes)",
    )
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--distinct-dags",
        action="store_true",
        help="each writer its own 40 DAGs (no two writers add to the same daily-total row at once)",
    )
    parser.add_argument("--ledger", help="a PostgreSQL server URL on which databases may be created, instead")
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cost-concurrency-bench-"))
    os.environ["AIRFLOW_HOME"] = str(tmp)
    for key in [k for k in os.environ if k.startswith("AIRFLOW__COST_PROVIDER__")]:
        del os.environ[key]
    server = None
    results = []
    try:
        configurations = []
        for writers in (1, args.writers) if args.sqlite else ():
            # the default ledger: cost_ledger.db in AIRFLOW_HOME (one file per configuration here)
            configurations.append(("sqlite", writers, f"sqlite:///{tmp / f'cost_ledger_{writers}.db'}"))
        if args.ledger or args.postgres:
            import sqlalchemy as sa

            if args.ledger:
                base = args.ledger
            else:
                from tests.support.postgres import PostgresServer

                server = PostgresServer(log_statements=False).start()
                base = server.url()
            admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                version = conn.execute(sa.text("SHOW server_version")).scalar().split()[0]
                for writers in (1, args.writers):
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS ledger_bench_{writers}"))
                    conn.execute(sa.text(f"CREATE DATABASE ledger_bench_{writers}"))
            admin.dispose()
            target = sa.make_url(base)
            for writers in (1, args.writers):
                url = target.set(database=f"ledger_bench_{writers}").render_as_string(hide_password=False)
                configurations.append((f"postgresql {version}", writers, url))
        for kind, writers, url in configurations:
            what = f"{args.tries} tries each" if args.tries else f"{args.seconds:g} s"
            print(f"{kind}: {writers} writer(s), {what} ...", flush=True)
            result = run(kind, url, writers, args.seconds, args.tries, tmp, args.distinct_dags)
            results.append(result)
            lat = result["latency_ms"]
            print(
                f"  {result['written']:,} tries in {result['seconds']} s: {result['tries_per_second']}/s "
                f"({result['per_writer_tries_per_second']}/s per writer); store() p50 {lat['p50']} ms, "
                f"p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; errors {result['errors'] or 0}; over finalize_timeout {result['over_finalize_timeout']}",
                flush=True,
            )
            check = result["ledger_check"]
            print(
                f"  ledger: {check['rows']:,} rows for {check['distinct_tries']:,} tries, missing {check['missing']}, "
                f"doubled {check['doubled']}, lines {check['lines']:,} of {check['expected_lines']:,}, daily totals "
                f"{'equal' if check['daily_totals_equal_lines'] else 'NOT equal'} to the lines: "
                f"{'ok' if check['ok'] else 'FAILED'}",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    ratios = {}
    for kind in dict.fromkeys(r["ledger"] for r in results):
        one, many = (r for r in results if r["ledger"] == kind)
        ratios[kind] = {
            "throughput_ratio": round(many["tries_per_second"] / one["tries_per_second"], 2),
            "p50_ratio": round(many["latency_ms"]["p50"] / one["latency_ms"]["p50"], 2),
        }
        print(
            f"{kind}: {many['writers']} writers take {ratios[kind]['throughput_ratio']}x the tries per second of one "
            f"writer; a write's p50 is {ratios[kind]['p50_ratio']}x"
        )
    written = RESULTS.with_name("ledger_concurrency_distinct.json") if args.distinct_dags else RESULTS
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(
        json.dumps(
            {
                "results": results,
                "ratios": ratios,
                "distinct_dags": args.distinct_dags,
                "seconds_per_writer": None if args.tries else args.seconds,
                "tries_per_writer": args.tries or None,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            },
            indent=2,
        )
    )
    print(f"written to {written.relative_to(REPO)}")
    return 0 if all(r["ledger_check"]["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
