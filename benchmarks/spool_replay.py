"""How fast does a worker's spool fill while the ledger is down, and how fast does it drain once it is back?

Builds `--captures` task-try captures (default 10,000) like the provider's own: the task process's CPU
and memory lines, one priced platform line with its price, and one unpriced line; each try of its own
DAG run. Times spooling them all (one file each, written whole, as a task does when the ledger did not
take its capture), then `airflow-cost replay`'s path: every file read, written to the ledger with
ledger.store.store() in its own transaction, and removed. A second replay of the same files (the
captures are in the ledger already: each is read, found, and left) shows what a duplicate costs.
Reports seconds and captures per second for each step, and the spool's size. Writes
benchmarks/results/spool_replay.json.

    uv run python benchmarks/spool_replay.py                       # SQLite ledger in a temp dir
    uv run python benchmarks/spool_replay.py --postgres            # also a throwaway local PostgreSQL
    uv run python benchmarks/spool_replay.py --ledger postgresql://cost:cost@localhost:5433/bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_cost_provider.capture.identity import TaskTry  # noqa: E402
from airflow_cost_provider.capture.spool import Spool, writer_for  # noqa: E402
from airflow_cost_provider.ledger import store  # noqa: E402
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage  # noqa: E402
from airflow_cost_provider.result import CostResult  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "spool_replay.json"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
CPU = Price("airflow_worker", "cpu_time", "vCPU-hour", Decimal("0.04048"), "USD", "config")
MEMORY = Price("airflow_worker", "memory_time", "GiB-hour", Decimal("0.004445"), "USD", "config")
ATHENA = Price(
    "athena",
    "data_scanned",
    "TB",
    Decimal("5"),
    "USD",
    "2026.11.0",
    source_url="https://aws.amazon.com/athena/pricing/",
)


def capture(number: int) -> CostResult:
    end = T0 + dt.timedelta(seconds=number * 7)
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
        f"q-{number:08d}",
        start,
        end,
    )
    query = Usage("postgres", "instance_time", Decimal("1.5"), "second", attributes={"conn_id": "analytics"})
    return CostResult(
        TaskTry(
            f"dag_{number % 40}",
            f"task_{number % 8}",
            f"scheduled__{number:08d}",
            1,
            -1,
            None,
            "ana",
            "sales",
        ),
        f"{number:032x}",
        "success",
        start,
        end,
        "worker-1",
        (
            CostLine(cpu, Decimal("0.000140555"), "USD", "runtime_rate", CPU),
            CostLine(memory, Decimal("0.000006174"), "USD", "runtime_rate", MEMORY),
            CostLine(scan, Decimal("1.500000000"), "USD", "list_price", ATHENA),
        ),
        (Unpriced(query, "no price for postgres/instance_time: connection 'analytics' has no instance"),),
    )


def replay(spool: Spool, url: str) -> tuple[float, int]:
    engine = store.get_engine(url, timeout=30)

    write = writer_for(engine)

    started = time.perf_counter()
    outcome = spool.replay(write)
    seconds = time.perf_counter() - started
    if outcome.failed or outcome.remaining:
        raise SystemExit(f"replay left {outcome.remaining}, failed: {outcome.failed[:3]}")
    return seconds, outcome.written


def measure(kind: str, url: str, captures: list[CostResult], root: Path) -> dict:
    spool = Spool(root / f"spool-{kind}", 10**10)
    started = time.perf_counter()
    for result in captures:
        if spool.put(result) is None:
            raise SystemExit("a capture was not spooled")
    spooled = time.perf_counter() - started
    size = spool.size_bytes()
    kept = root / f"copy-{kind}"
    shutil.copytree(spool.directory, kept)
    first, written = replay(spool, url)
    shutil.rmtree(spool.directory)
    shutil.copytree(kept, spool.directory)  # the same files again: every capture is in the ledger now
    again, _ = replay(spool, url)
    store.dispose_engines()
    count = len(captures)
    return {
        "ledger": kind,
        "captures": count,
        "spool_seconds": round(spooled, 3),
        "spool_per_second": round(count / spooled),
        "spool_bytes": size,
        "bytes_per_capture": round(size / count),
        "replay_seconds": round(first, 3),
        "replay_per_second": round(written / first),
        "duplicate_replay_seconds": round(again, 3),
        "duplicate_replay_per_second": round(count / again),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", type=int, default=10_000)
    parser.add_argument("--ledger", help="an empty PostgreSQL database URL, measured besides SQLite")
    parser.add_argument("--postgres", action="store_true", help="start a throwaway local PostgreSQL too")
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cost-spool-bench-"))
    server = None
    try:
        captures = [capture(number) for number in range(args.captures)]
        ledgers = [("sqlite", f"sqlite:///{root / 'ledger.db'}")]
        if args.ledger:
            ledgers.append(("postgresql", args.ledger))
        elif args.postgres:
            from tests.support.postgres import PostgresServer

            server = PostgresServer(log_statements=False).start()
            ledgers.append(("postgresql", server.create_database("spool_bench")))
        results = [measure(kind, url, captures, root) for kind, url in ledgers]
    finally:
        if server is not None:
            server.stop()
        if not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)
    for result in results:
        print(
            f"{result['ledger']}: spooled {result['captures']} captures in {result['spool_seconds']} s "
            f"({result['spool_per_second']}/s, {result['bytes_per_capture']} bytes each); replayed in "
            f"{result['replay_seconds']} s ({result['replay_per_second']}/s); replayed again (already in "
            f"the ledger) in {result['duplicate_replay_seconds']} s ({result['duplicate_replay_per_second']}/s)"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "results": results,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
