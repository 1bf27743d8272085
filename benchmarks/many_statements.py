"""A task try that runs 100,000 small statements: its memory and per-statement cost, with
`max_lines_per_task` (default 1,000) and without a practical limit (1,000,000).

Each variant is one task try through the real listener (`make_listener("first")`, a fake task
instance), whose task runs `--statements` `SELECT ?` statements through `DbApiHook.run` on an
in-memory SQLite database, instrumented by the shipped SQL wrapper; the statements are priced (a
price book entry for `sqlite/instance_time`), as on a PostgreSQL connection with an instance type.
The ledger is a SQLite file; `finalize_timeout` is raised to 120 s so the write is measured, not
spooled.

- time: the statements' wall time per statement, against the same statements with no task captured
  (alternating variants, best of `--repeat`); the finalize (pricing + ledger write) time; ledger rows.
- memory: a separate pass under tracemalloc (which slows Python down, so it is not timed): the peak
  of Python allocations from the task's start to its end (finalize included), and what the capture
  still holds after the statements, before finalize.

    uv run python benchmarks/many_statements.py [--statements 100000] [--repeat 3]

Prints a summary and writes benchmarks/results/many_statements.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "many_statements.json"
CAPPED, UNCAPPED = 1_000, 1_000_000
PRICE_BOOK = """version: "bench"
prices:
  - source: sqlite
    metric: instance_time
    unit: instance-hour
    amount: "0.017"
    currency: USD
    effective_date: 2020-01-01
    match: {instance_type: db.t3.micro}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each variant (best kept)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def _environment(home: Path) -> None:
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__COST_PROVIDER__CONNECTION_PRICING"] = (
        '{"bench_sqlite": {"instance_type": "db.t3.micro"}}'
    )
    (home / "prices.yaml").write_text(PRICE_BOOK)
    os.environ["AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH"] = str(home / "prices.yaml")
    os.environ["AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT"] = "60"
    os.environ["AIRFLOW__COST_PROVIDER__SPOOL_DIR"] = str(home / "spool")
    sys.path.insert(0, str(REPO))
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _hook():
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    class SqliteHook(DbApiHook):
        conn_name_attr = "sqlite_conn_id"
        conn_type = "sqlite"

        def get_conn(self):
            return sqlite3.connect(":memory:")

        def get_conn_id(self) -> str:
            return "bench_sqlite"

    hook = SqliteHook()
    hook.log_sql = False  # the provider's per-statement log line would dominate every variant
    return hook


def _set_limit(max_lines: int, ledger: Path) -> None:
    from airflow_cost_provider import conf, tracker

    os.environ["AIRFLOW__COST_PROVIDER__MAX_LINES_PER_TASK"] = str(max_lines)
    os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"] = f"sqlite:///{ledger}"
    conf.clear_cache()
    tracker.price_book.cache_clear()


def _task(hook, statements: list[str], measure_memory: bool) -> dict:
    """One task try: running, the statements, success. Times (or memory) of each part."""
    from airflow_cost_provider.capture.session import clear_sessions, current_session
    from airflow_cost_provider.listener import make_listener
    from tests.support.fake_ti import FakeTaskInstance

    listener, ti = make_listener("first"), FakeTaskInstance(dag_id="bench", task_id="loop")
    if measure_memory:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    started = time.perf_counter()
    hook.run(statements)
    ran = time.perf_counter() - started
    session = current_session()
    held = tracemalloc.get_traced_memory()[0] - base if measure_memory else None
    started = time.perf_counter()
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    finalized = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] - base if measure_memory else None
    if measure_memory:
        tracemalloc.stop()
    result = session.result
    lines = len(result.lines) + len(result.unpriced)
    aggregated = [line for line in result.lines if "aggregated_usages" in line.usage.attributes]
    counted = sum(line.usage.attributes.get("aggregated_usages", 1) for line in result.lines)
    clear_sessions()
    return {
        "statements_s": ran,
        "finalize_s": finalized,
        "held_after_statements_bytes": held,
        "peak_bytes": peak,
        "lines": lines,
        "aggregated_lines": len(aggregated),
        "usages_counted": counted,
        "total": str(sum((line.amount for line in result.lines), start=0)),
        "stored": session.ledger_write_attempted,
    }


def _bare(hook, statements: list[str]) -> float:
    from airflow_cost_provider.capture.session import clear_sessions

    clear_sessions()
    started = time.perf_counter()
    hook.run(statements)
    return time.perf_counter() - started


def _ledger_rows(ledger: Path) -> int:
    """The cost lines of the latest task try written."""
    with sqlite3.connect(ledger) as conn:
        return conn.execute(
            "SELECT count(*) FROM cost_lines WHERE task_run_id = (SELECT max(id) FROM cost_task_runs)"
        ).fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="cost-bench-many-"))
    try:
        _environment(home)
        from airflow_cost_provider.instrumentation.sql import SqlStatements

        SqlStatements().instrument()
        hook = _hook()
        statements = [f"SELECT {n}" for n in range(args.statements)]
        hook.run(statements[:1000])  # warm-up: imports, the first connection
        variants = {"capped": CAPPED, "uncapped": UNCAPPED}
        for name, limit in variants.items():  # each ledger created and migrated before it is timed
            _set_limit(limit, home / f"{name}.db")
            _task(hook, statements[:10], measure_memory=False)
        timed: dict[str, list[dict]] = {name: [] for name in variants}
        bare: list[float] = []
        for _ in range(args.repeat):
            for name, limit in variants.items():
                ledger = home / f"{name}.db"
                _set_limit(limit, ledger)
                run = _task(hook, statements, measure_memory=False)
                run["ledger_lines"] = _ledger_rows(ledger)
                timed[name].append(run)
            bare.append(_bare(hook, statements))
        result: dict = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "statements": args.statements,
            "bare_s": min(bare),
            "variants": {},
        }
        for name, limit in variants.items():
            _set_limit(limit, home / f"{name}.db")
            memory = _task(hook, statements, measure_memory=True)
            best = min(timed[name], key=lambda run: run["statements_s"])
            result["variants"][name] = {
                "max_lines_per_task": limit,
                **best,
                "overhead_per_statement_us": (best["statements_s"] - min(bare)) / args.statements * 1e6,
                "finalize_s_runs": [run["finalize_s"] for run in timed[name]],
                "peak_mib": memory["peak_bytes"] / 2**20,
                "held_after_statements_mib": memory["held_after_statements_bytes"] / 2**20,
            }
        print(
            f"{args.statements} statements, no capture: {min(bare):.2f} s ({min(bare) / args.statements * 1e6:.1f} us each)"
        )
        for name, row in result["variants"].items():
            print(
                f"{name} (max_lines_per_task={row['max_lines_per_task']}): +{row['overhead_per_statement_us']:.1f} us"
                f"/statement, finalize {min(row['finalize_s_runs']):.2f}-{max(row['finalize_s_runs']):.2f} s, "
                f"{row['lines']} lines ({row['aggregated_lines']} aggregated, {row['usages_counted']} usages), "
                f"ledger {row['ledger_lines']} lines, peak {row['peak_mib']:.1f} MiB "
                f"(held after the statements {row['held_after_statements_mib']:.1f} MiB), total {row['total']}"
            )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
