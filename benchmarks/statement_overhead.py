"""What tagging and capturing add to one SQL statement, and to PostgresHook.run against a real server.

1. Pure part: the statement wrapper around a `_run_command` that does nothing (the cursor's execute
   is a no-op), against the same call unwrapped, in alternating rounds of one run. The overhead per
   statement is the difference of the per-round medians: sqlcommenter tagging of a typical statement,
   the timed-cursor proxy, and building and recording the usage. Target: median <= 20 microseconds.
2. PostgreSQL: `--queries` trivial statements (`SELECT 1`) through `PostgresHook.run` against a local
   server this script starts (Debian's postgresql package), instrumented (a task's capture session
   open) and not, alternating in blocks within one run; and, as a control, the instrumented text
   (with its comment) sent uninstrumented. Target: ratio of the totals <= 1.02.
3. Statements that bypass `_run_command` (instrumentation/sql_paths.py), pure: a statement through the
   capturing cursor proxy (dataframes, insert_rows, a hook's own run) and through the SQLAlchemy
   events of a hook's engine (SQLite in memory), each against the same call uninstrumented; and what
   the engine events cost an engine that is not a hook's (e.g. the ledger's), which every engine in
   the process pays once they are listened to. Target: median <= 20 microseconds each.
4. PostgreSQL, the same paths: `--queries` `PostgresHook.get_df("SELECT 1")` calls (a new engine and
   connection each, as the hook does) and `SELECT 1` on one connection of `get_sqlalchemy_engine()`,
   instrumented and not, alternating in blocks. Target: ratio of the totals <= 1.02.

    uv run python benchmarks/statement_overhead.py [--rounds 200] [--queries 1000] [--skip-postgres]

Prints a summary and writes benchmarks/results/statement_overhead.json.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "statement_overhead.json"
TARGET_PURE_US = 20.0
TARGET_POSTGRES_RATIO = 1.02
STATEMENT = (
    "SELECT o.customer_id, sum(o.amount) AS revenue FROM orders o "
    "WHERE o.ordered_at >= '2026-11-01' GROUP BY o.customer_id;"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="alternating rounds for the pure part")
    parser.add_argument("--per-round", type=int, default=500, help="statements per round")
    parser.add_argument("--queries", type=int, default=1000, help="PostgresHook.run calls per variant")
    parser.add_argument("--block", type=int, default=50, help="queries per alternating block")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--only-paths", action="store_true", help="only parts 3 and 4 (sql_paths.py)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def _environment() -> None:
    home = tempfile.mkdtemp(prefix="cost-bench-stmt-")
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__COST_PROVIDER__CONNECTION_PRICING"] = (
        '{"bench_pg": {"instance_type": "db.r6g.large"}}'
    )
    sys.path.insert(0, str(REPO))


def _open_session():
    from airflow_cost_provider.capture import worker
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.capture.session import open_session

    task_try = TaskTry(
        "daily_revenue", "aggregate_orders", "scheduled__2026-11-22T00:00:00+00:00", 1, -1,
        "0193a1c2-1234-7abc-8def-0123456789ab",
    )  # fmt: skip
    return open_session(task_try, worker.sample())


def pure_overhead(rounds: int, per_round: int) -> dict:
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from airflow_cost_provider.capture.session import clear_sessions
    from airflow_cost_provider.instrumentation.sql import _run_command_wrapper

    class NoopCursor:
        rowcount = 1

        def execute(self, sql, parameters=None):
            return None

    class BenchHook(DbApiHook):
        conn_name_attr = "bench_conn_id"
        default_conn_name = "bench_pg"
        conn_type = "postgres"

    def run_command(cursor, sql, parameters):  # the statement itself costs nothing here
        cursor.execute(sql, parameters)

    hook, cursor = BenchHook(), NoopCursor()
    session = _open_session()
    bare, wrapped = [], []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(per_round):
            run_command(cursor, STATEMENT, None)
        bare.append((time.perf_counter_ns() - started) / per_round)
        started = time.perf_counter_ns()
        for _ in range(per_round):
            _run_command_wrapper(run_command, hook, (cursor, STATEMENT, None), {})
        wrapped.append((time.perf_counter_ns() - started) / per_round)
        session.usage.clear()
    clear_sessions()
    overheads = sorted(w - b for w, b in zip(wrapped, bare, strict=True))
    return {
        "rounds": rounds,
        "statements_per_round": per_round,
        "median_overhead_us": statistics.median(overheads) / 1000,
        "p95_overhead_us": overheads[int(len(overheads) * 0.95) - 1] / 1000,
        "median_bare_us": statistics.median(bare) / 1000,
        "median_wrapped_us": statistics.median(wrapped) / 1000,
        "target_us": TARGET_PURE_US,
    }


def _alternate(variants: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Per-round mean ns per call of each variant (name -> (set-up, call)), the variants' order
    rotating every round; each variant's set-up runs untimed before its calls."""
    names = list(variants)
    means: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            setup, call = variants[name]
            setup()
            started = time.perf_counter_ns()
            for _ in range(per_round):
                call()
            means[name].append((time.perf_counter_ns() - started) / per_round)
    return means


def _overhead(means: dict[str, list[float]], measured: str, baseline: str) -> dict:
    overheads = sorted(m - b for m, b in zip(means[measured], means[baseline], strict=True))
    return {
        "median_overhead_us": statistics.median(overheads) / 1000,
        "p95_overhead_us": overheads[int(len(overheads) * 0.95) - 1] / 1000,
        f"median_{baseline}_us": statistics.median(means[baseline]) / 1000,
        f"median_{measured}_us": statistics.median(means[measured]) / 1000,
    }


def paths_pure_overhead(rounds: int, per_round: int) -> dict:
    """The cursor proxy and the SQLAlchemy events of sql_paths.py, per statement."""
    import sqlalchemy as sa
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from airflow_cost_provider.capture.session import clear_sessions
    from airflow_cost_provider.instrumentation import sql_paths

    class NoopCursor:
        rowcount = 1

        def execute(self, sql, parameters=None):
            return None

    class BenchHook(DbApiHook):
        conn_name_attr = "bench_conn_id"
        default_conn_name = "bench_pg"
        conn_type = "postgres"

    hook, cursor = BenchHook(), NoopCursor()
    proxied = sql_paths.CapturingCursor(cursor, hook)
    sqlite_statement = STATEMENT.replace("'2026-11-01'", "'2026-11-01' AND 1 = 1")

    def engine_connection(adopted: bool):
        engine = sa.create_engine("sqlite://")
        if adopted:
            setattr(engine, sql_paths.ENGINE_HOOK_ATTRIBUTE, hook)
        conn = engine.connect()
        conn.exec_driver_sql("CREATE TABLE orders (customer_id INT, amount REAL, ordered_at TEXT)")
        return conn

    session = _open_session()
    plain_conn, hook_conn, other_conn = (
        engine_connection(False),
        engine_connection(True),
        engine_connection(False),
    )
    captured: list[int] = []

    def round_setup(listen: bool):
        def setup() -> None:  # keep the session's list short, as max_lines_per_task does
            captured.append(len(session.usage))
            session.usage.clear()
            sql_paths.listen() if listen else sql_paths.stop_listening()

        return setup

    listening, silent = round_setup(True), round_setup(False)
    results: dict = {"rounds": rounds, "statements_per_round": per_round, "target_us": TARGET_PURE_US}
    try:
        means = _alternate(
            {
                "bare": (silent, lambda: cursor.execute(STATEMENT)),
                "proxied": (silent, lambda: proxied.execute(STATEMENT)),
                # no engine events at all, as before sql_paths.py
                "plain_engine": (silent, lambda: plain_conn.exec_driver_sql(sqlite_statement)),
                "hook_engine": (listening, lambda: hook_conn.exec_driver_sql(sqlite_statement)),
                "other_engine": (listening, lambda: other_conn.exec_driver_sql(sqlite_statement)),
            },
            rounds,
            per_round,
        )
        results["cursor_proxy"] = _overhead(means, "proxied", "bare")
        results["hook_engine"] = _overhead(means, "hook_engine", "plain_engine")
        results["other_engine"] = _overhead(means, "other_engine", "plain_engine")
        results["statements_captured"] = sum(captured) + len(session.usage)
    finally:
        sql_paths.stop_listening()
        for conn in (plain_conn, hook_conn, other_conn):
            conn.close()
        clear_sessions()
    return results


def paths_postgres_ratio(queries: int, block: int) -> dict:
    """PostgresHook.get_df and a statement on a get_sqlalchemy_engine() connection, instrumented and
    not; for the engine, also the tagged text sent uninstrumented (what the longer text alone costs)."""
    import sqlalchemy as sa

    from tests.support.postgres import PostgresServer

    server = PostgresServer(log_statements=False).start()
    try:
        os.environ["AIRFLOW_CONN_BENCH_PG"] = server.conn_uri()
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from airflow_cost_provider.capture.session import clear_sessions
        from airflow_cost_provider.instrumentation.sql import SqlStatements
        from airflow_cost_provider.tagging import append_comment

        instrumentation = SqlStatements()
        instrumentation.instrument()
        hook = PostgresHook(postgres_conn_id="bench_pg")
        session = _open_session()
        tagged_by_hand = append_comment("SELECT 1", session.sql_comment).replace("%", "%%")
        engine = hook.get_sqlalchemy_engine()  # adopted while a task runs, as in a task
        conn = engine.connect()
        clear_sessions()
        select, select_tagged = sa.text("SELECT 1"), sa.text(tagged_by_hand)
        cases = {
            "get_df": (lambda: hook.get_df("SELECT 1"), None),
            "engine": (lambda: conn.execute(select).scalar(), lambda: conn.execute(select_tagged).scalar()),
        }
        result: dict = {"queries_per_variant": queries, "block": block, "target_ratio": TARGET_POSTGRES_RATIO}
        for name, (call, by_hand) in cases.items():
            for _ in range(20):
                call()  # warm-up
            variants = {"plain": call, "instrumented": call}
            if by_hand is not None:
                variants["tagged_by_hand"] = by_hand
            names = list(variants)
            totals = dict.fromkeys(names, 0)
            recorded = 0
            for number in range(0, queries, block):
                shift = (number // block) % len(names)
                for variant in names[shift:] + names[:shift]:
                    session = _open_session() if variant == "instrumented" else None
                    started = time.perf_counter_ns()
                    for _ in range(block):
                        variants[variant]()
                    totals[variant] += time.perf_counter_ns() - started
                    if session is not None:
                        recorded += sum(1 for u in session.usage if u.metric == "instance_time")
                    clear_sessions()
            assert recorded >= queries, f"{name}: captured {recorded} statements of {queries} calls"
            result[name] = {
                "plain_ms_per_query": totals["plain"] / queries / 1e6,
                "instrumented_ms_per_query": totals["instrumented"] / queries / 1e6,
                "ratio_of_totals": totals["instrumented"] / totals["plain"],
                "added_ms_per_query": (totals["instrumented"] - totals["plain"]) / queries / 1e6,
                "statements_captured": recorded,
            }
            if by_hand is not None:
                result[name]["text_only_ratio"] = totals["tagged_by_hand"] / totals["plain"]
        conn.close()
        engine.dispose()
        instrumentation.uninstrument()
        return result
    finally:
        server.stop()


def postgres_ratio(queries: int, block: int) -> dict:
    from tests.support.postgres import PostgresServer

    server = PostgresServer(log_statements=False).start()  # as in production: no statement log
    try:
        os.environ["AIRFLOW_CONN_BENCH_PG"] = server.conn_uri()
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from airflow_cost_provider.capture.session import clear_sessions
        from airflow_cost_provider.instrumentation.sql import SqlStatements
        from airflow_cost_provider.tagging import append_comment

        instrumentation = SqlStatements()
        instrumentation.instrument()
        hook = PostgresHook(postgres_conn_id="bench_pg")
        hook.log_sql = False  # the provider's per-statement log line would dominate both variants
        for _ in range(20):
            hook.run("SELECT 1")  # warm-up: connection set-up paths, imports
        # the same text the wrapper sends, sent by hand: separates the statement's longer text from
        # the wrapper's own work
        session = _open_session()
        tagged_by_hand = append_comment("SELECT 1", session.sql_comment)
        clear_sessions()
        variants = ("plain", "tagged_by_hand", "instrumented")
        totals = dict.fromkeys(variants, 0)
        blocks: dict[str, list[float]] = {v: [] for v in variants}
        recorded = 0
        for number in range(0, queries, block):
            shift = (number // block) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                session = _open_session() if variant == "instrumented" else None
                if session is None:
                    clear_sessions()
                sql = tagged_by_hand if variant == "tagged_by_hand" else "SELECT 1"
                started = time.perf_counter_ns()
                for _ in range(block):
                    hook.run(sql)
                elapsed = time.perf_counter_ns() - started
                totals[variant] += elapsed
                blocks[variant].append(elapsed / block)
                if session is not None:
                    recorded += len(session.usage)
                    clear_sessions()
        instrumentation.uninstrument()
        assert recorded == queries, f"captured {recorded} of {queries} statements"
        return {
            "queries_per_variant": queries,
            "block": block,
            "plain_ms_per_query": totals["plain"] / queries / 1e6,
            "tagged_by_hand_ms_per_query": totals["tagged_by_hand"] / queries / 1e6,
            "instrumented_ms_per_query": totals["instrumented"] / queries / 1e6,
            "ratio_of_totals": totals["instrumented"] / totals["plain"],
            "ratio_of_block_medians": statistics.median(blocks["instrumented"])
            / statistics.median(blocks["plain"]),
            "text_only_ratio": totals["tagged_by_hand"] / totals["plain"],
            "statements_captured": recorded,
            "target_ratio": TARGET_POSTGRES_RATIO,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _environment()
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pure": pure_overhead(args.rounds, args.per_round),
    }
    pure = result["pure"]
    print(
        f"pure tagging + capture per statement: median {pure['median_overhead_us']:.2f} us "
        f"(p95 {pure['p95_overhead_us']:.2f}; target <= {TARGET_PURE_US:.0f})"
    )
    result["paths_pure"] = paths = paths_pure_overhead(args.rounds, args.per_round)
    for case in ("cursor_proxy", "hook_engine", "other_engine"):
        print(
            f"{case} per statement: median {paths[case]['median_overhead_us']:.2f} us "
            f"(p95 {paths[case]['p95_overhead_us']:.2f}; target <= {TARGET_PURE_US:.0f})"
        )
    if not args.skip_postgres:
        result["paths_postgres"] = paths_pg = paths_postgres_ratio(args.queries, args.block)
        for case in ("get_df", "engine"):
            print(
                f"PostgreSQL {case} x{args.queries}: {paths_pg[case]['plain_ms_per_query']:.3f} ms/query plain, "
                f"{paths_pg[case]['instrumented_ms_per_query']:.3f} instrumented; "
                f"ratio {paths_pg[case]['ratio_of_totals']:.4f} (target <= {TARGET_POSTGRES_RATIO})"
                + (
                    f"; the tagged text sent by hand: ratio {paths_pg[case]['text_only_ratio']:.4f}"
                    if "text_only_ratio" in paths_pg[case]
                    else ""
                )
            )
    if not args.skip_postgres and not args.only_paths:
        result["postgres"] = pg = postgres_ratio(args.queries, args.block)
        print(
            f"PostgresHook.run x{args.queries}: {pg['plain_ms_per_query']:.3f} ms/query plain, "
            f"{pg['instrumented_ms_per_query']:.3f} instrumented; ratio {pg['ratio_of_totals']:.4f} "
            f"(block medians {pg['ratio_of_block_medians']:.4f}; target <= {TARGET_POSTGRES_RATIO}); "
            f"the tagged text sent by hand: ratio {pg['text_only_ratio']:.4f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
