"""How long does `airflow-cost report --by dag` take over years of history (10 M cost lines)?

Fills a ledger as budget_evaluation.py does (its generator and bulk writer: SQLite executemany,
PostgreSQL COPY, cost_daily_totals summed alike), `--lines` cost lines (default 10,000,000; 40 DAGs
of 8 tasks, 10 of them hourly, about 2.3 lines per try, so about 4.3 M task tries over five years up
to 2026-12-20), then times the report by DAG for the last 30 and the last 365 days up to the end of
that day: `cli.report.task_report_document()`, what `airflow-cost report` calls (the ledger's query
and building the table), on an engine from `open_existing` as the CLI opens it, median of `--rounds`
(default 5) after one untimed call; and `airflow-cost report --by dag --since ... --until ...` as a
subprocess once per period (interpreter start, imports, opening the ledger, the report, printing).
Every statement the report sends is recorded with its time, and the slowest one's plan is printed
(`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL). Target: under 1 s.
Writes benchmarks/results/report_scale.json.

    uv run python benchmarks/report_scale.py                         # SQLite, and a throwaway PostgreSQL
    uv run python benchmarks/report_scale.py --lines 1000000 --no-postgres
    uv run python benchmarks/report_scale.py --no-sqlite --ledger postgresql://cost:cost@localhost:5433/bench

PostgreSQL is ANALYZEd after the fill (its autovacuum would); SQLite is not (the provider never runs
ANALYZE), unless --analyze.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results" / "report_scale.json"
UTC = dt.timezone.utc


def periods(last_day: dt.date, until_hour: int = 24) -> dict[int, tuple[dt.datetime, dt.datetime]]:
    """The last 30 and 365 days up to `until_hour` o'clock of last_day (24: its end, whole UTC days;
    else the report's default shape, 'the last N days up to now', with a part of a day at each edge)."""
    until = dt.datetime.combine(last_day, dt.time(0), tzinfo=UTC) + dt.timedelta(hours=until_hour)
    return {days: (until - dt.timedelta(days=days), until) for days in (30, 365)}


class Recorder:
    """The statements an engine sends, with their parameters and time."""

    def __init__(self, engine) -> None:
        import sqlalchemy as sa

        self.calls: list[dict] = []
        self.active = False

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):
            conn.info["started"] = time.perf_counter()

        @sa.event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):
            if self.active:
                seconds = time.perf_counter() - conn.info.pop("started")
                self.calls.append({"statement": statement, "parameters": parameters, "seconds": seconds})


def plan_of(engine, statement: str, parameters) -> str:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            text = "\n".join(f"{row[0]:>3} {row[1]:>3} {row[3]}" for row in cursor.fetchall())
        else:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            text = "\n".join(row[0] for row in cursor.fetchall())
        cursor.close()
        raw.rollback()
        return text
    finally:
        raw.close()


def timed(engine, url: str, since: dt.datetime, until: dt.datetime, rounds: int, recorder, from_lines: bool):
    """The report's first call and `rounds` more, from the daily totals (as shipped) or, with
    `from_lines`, from lines alone (how reports read before the daily totals carried their columns)."""
    from airflow_cost_provider import report
    from airflow_cost_provider.cli.report import task_report_document
    from airflow_cost_provider.ledger.store import safe_url

    kept = report.TOTALS_KEYS
    if from_lines:
        report.TOTALS_KEYS = frozenset()
    try:
        started = time.perf_counter()
        doc, _ = task_report_document(engine, safe_url(url), "dag", since, until)
        first = time.perf_counter() - started
        times = []
        for _ in range(rounds):
            recorder.calls.clear()
            recorder.active = True
            started = time.perf_counter()
            doc, _ = task_report_document(engine, safe_url(url), "dag", since, until)
            times.append(time.perf_counter() - started)
            recorder.active = False
    finally:
        report.TOTALS_KEYS = kept
    return doc, first, times


def measure(kind: str, url: str, rounds: int, last_day: dt.date, home: Path, until_hour: int) -> dict:
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.store import dispose_engines, open_existing

    dispose_engines()
    engine = open_existing(url)
    recorder = Recorder(engine)
    result: dict = {"ledger": kind}
    for days, (since, until) in periods(last_day, until_hour).items():
        # the lines alone first (the baseline), then the daily totals, alternating by round
        baseline, shipped, first, lines_doc = [], [], 0.0, None
        for half in range(2):
            try:
                lines_doc, _, lines_times = timed(
                    engine, url, since, until, max(1, rounds // 2), recorder, True
                )
                baseline += lines_times
            except sa.exc.OperationalError as error:  # PostgreSQL's statement_timeout, as the CLI runs it
                print(f"  {kind}, {days} days, from lines alone: {' '.join(str(error.orig).split())[:120]}")
                baseline.append(float("inf"))
            doc, call, times = timed(engine, url, since, until, max(1, rounds // 2), recorder, False)
            shipped += times
            first = call if half == 0 else first
        if lines_doc is not None and (lines_doc.rows != doc.rows or lines_doc.total != doc.total):
            raise SystemExit(f"{kind}, {days} days: the report from the daily totals differs from the lines'")
        times = shipped
        statements = sorted(recorder.calls, key=lambda call: -call["seconds"])
        slowest = statements[0]
        plan = plan_of(engine, slowest["statement"], slowest["parameters"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "OPENLINEAGE"))}
        env["AIRFLOW_HOME"] = str(home)
        env["PYTHONPATH"] = str(REPO)  # this checkout's package, whichever the environment installed
        command = [
            str(Path(sys.executable).with_name("airflow-cost")),
            "report",
            "--by",
            "dag",
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
            "--ledger",
            url,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        cli_seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"airflow-cost report failed: {done.stderr[-2000:]}")
        rows = len(doc.rows)
        result[f"{days}_days"] = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "median_s": round(statistics.median(times), 3),
            "from_lines_median_s": round(statistics.median(baseline), 3)
            if min(baseline) < float("inf")
            else None,
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "first_call_s": round(first, 3),
            "cli_subprocess_s": round(cli_seconds, 3),
            "rows": rows,
            "cli_output_tail": done.stdout.strip().splitlines()[-3:],
            "statements": [
                {"seconds": round(call["seconds"], 3), "statement": " ".join(call["statement"].split())[:300]}
                for call in statements
            ],
            "slowest_plan": plan,
        }
    dispose_engines()
    return result


def tries_in(engine, since: dt.datetime, until: dt.datetime) -> tuple[int, int]:
    import sqlalchemy as sa

    from airflow_cost_provider.ledger.schema import lines, task_runs

    with engine.connect() as conn:
        tries = conn.execute(
            sa.select(sa.func.count()).where(task_runs.c.end_time >= since, task_runs.c.end_time < until)
        ).scalar()
        line_count = conn.execute(
            sa.select(sa.func.count())
            .select_from(lines.join(task_runs, lines.c.task_run_id == task_runs.c.id))
            .where(task_runs.c.end_time >= since, task_runs.c.end_time < until)
        ).scalar()
    return int(tries), int(line_count)


def filled_ledger(kind: str, url: str, lines: int, seed: int, analyze: bool, record: Path | None) -> dict:
    """Fill the ledger, or with `record` (a fill kept in a cache) reuse the one it describes."""
    import budget_evaluation as estate

    from airflow_cost_provider.ledger.store import dispose_engines, get_engine, safe_url

    if record is not None and record.exists():
        kept = json.loads(record.read_text())
        if kept.get("lines") == lines and kept.get("seed") == seed and kept.get("url") == safe_url(url):
            print(f"{kind}: reusing {safe_url(url)}, filled with {lines:,} lines", flush=True)
            return kept["filled"]
    # the fill's statements (COPY of 1.5 M daily totals) outlast the ledger's 5 s statement timeout
    engine = get_engine(url, timeout=3600)
    print(f"{kind}: filling {safe_url(url)} with {lines:,} lines ...", flush=True)
    filled = estate.fill(engine, lines, seed, analyze=analyze)
    print(f"  {filled}", flush=True)
    counts = {}
    for days, (since, until) in periods(estate.LAST_DAY).items():
        counts[f"{days}_days"] = dict(zip(("tries", "lines"), tries_in(engine, since, until), strict=True))
    dispose_engines()
    estate.Estate.totals, estate.Estate.causes, estate.Estate.arriving = {}, {}, []
    filled = {**filled, "in_period": counts}
    if record is not None:
        record.write_text(json.dumps({"lines": lines, "seed": seed, "url": safe_url(url), "filled": filled}))
    return filled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also a throwaway local PostgreSQL (default: yes)",
    )
    parser.add_argument("--ledger", help="an empty PostgreSQL database URL, instead of a throwaway server")
    parser.add_argument("--analyze", action="store_true", help="ANALYZE SQLite too after the fill")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument(
        "--cache",
        type=Path,
        help="a directory that keeps the SQLite ledger (and a record of each fill, --ledger's too) "
        "between runs: a ledger of the same --lines and --seed is reused, not filled again",
    )
    parser.add_argument(
        "--until-hour",
        type=int,
        default=24,
        help="the periods end at this hour of the last day (default 24: whole UTC days; e.g. 14: the "
        "shape of 'the last N days up to now', a part of a day at each edge)",
    )
    args = parser.parse_args()
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix="cost-report-bench-"))
    os.environ["AIRFLOW_HOME"] = str(tmp)
    for key in [k for k in os.environ if k.startswith("AIRFLOW__COST_PROVIDER__")]:
        del os.environ[key]
    import budget_evaluation as estate

    server = None
    results = []
    try:
        ledgers = []
        if args.sqlite:
            folder = args.cache or tmp
            ledgers.append(
                ("sqlite", f"sqlite:///{folder / f'report_scale-{args.lines}-{args.seed}.db'}", args.analyze)
            )
        if args.ledger:
            ledgers.append(("postgresql", args.ledger, True))
        elif args.postgres:
            from tests.support.postgres import PostgresServer

            server = PostgresServer(log_statements=False).start()
            ledgers.append(("postgresql", server.create_database("report_bench"), True))
        for kind, url, analyze in ledgers:
            record = None
            if args.cache and (kind == "sqlite" or args.ledger):
                record = args.cache / f"report_scale-{kind}-{args.lines}-{args.seed}.json"
            filled = filled_ledger(kind, url, args.lines, args.seed, analyze, record)
            result = measure(kind, url, args.rounds, estate.LAST_DAY, tmp, args.until_hour)
            result["fill"] = filled
            result["analyzed"] = analyze
            results.append(result)
            for days in (30, 365):
                found = result[f"{days}_days"]
                period = filled["in_period"][f"{days}_days"]
                print(
                    f"  report --by dag, last {days} days ({period['tries']:,} tries, {period['lines']:,} lines "
                    f"in the whole days): median {found['median_s']} s (min {found['min_s']}, max {found['max_s']}; "
                    f"first {found['first_call_s']} s; from lines alone {found['from_lines_median_s']} s); "
                    f"the CLI as a subprocess {found['cli_subprocess_s']} s (target: under 1 s)",
                    flush=True,
                )
                for call in found["statements"][:3]:
                    print(f"    {call['seconds']} s  {call['statement'][:150]}")
                print("    plan of the slowest:\n      " + found["slowest_plan"].replace("\n", "\n      "))
            if kind == "sqlite" and not args.keep_temp and not args.cache:
                Path(url.removeprefix("sqlite:///")).unlink()
                for suffix in ("-wal", "-shm"):
                    Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    finally:
        if server is not None:
            server.stop()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "results": results,
                "lines": args.lines,
                "rounds": args.rounds,
                "until_hour": args.until_hour,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            },
            indent=2,
        )
    )
    print(f"written to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
