"""What reading dbt's artifacts costs at a task's end: a 1,000-model run.

Writes a synthetic `run_results.json` (1,000 model results with timings and adapter responses) and a
`manifest.json` whose 1,000 nodes carry what dbt's do (SQL, compiled SQL, 12 documented columns,
dependencies, config), then times, in alternating repetitions:

1. reading: `capture.dbt.usages_of_run` (both files parsed, one usage per node);
2. pricing: those usages priced with the shipped price book (PostgreSQL at an instance rate);
3. the two together, against the `finalize_timeout` default (5 s).

    uv run python benchmarks/dbt_artifacts.py [--models 1000] [--repetitions 20]

Prints a summary and writes benchmarks/results/dbt_artifacts.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
DEFAULT_OUTPUT = HERE / "results" / "dbt_artifacts.json"
FINALIZE_TIMEOUT = 5.0
SQL = (
    "select\n"
    + ",\n".join(f"    orders.column_{i} as column_{i}" for i in range(40))
    + "\nfrom {{ ref('stg_orders') }}\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def write_artifacts(target: Path, models: int) -> tuple[int, int]:
    """The two files of a `dbt build` of `models` postgres models; returns their sizes in bytes."""
    target.mkdir(parents=True, exist_ok=True)
    invocation = "00000000-0000-4000-8000-000000000000"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    metadata = {"invocation_id": invocation, "generated_at": now, "dbt_version": "1.11.16", "env": {}}
    results, nodes = [], {}
    for index in range(models):
        unique_id = f"model.bench.model_{index:04d}"
        results.append(
            {
                "status": "success",
                "timing": [
                    {"name": "compile", "started_at": now, "completed_at": now},
                    {"name": "execute", "started_at": now, "completed_at": now},
                ],
                "thread_id": "Thread-1",
                "execution_time": 0.5 + index / 1000,
                "adapter_response": {"_message": "SELECT 100", "code": "SELECT", "rows_affected": 100},
                "message": "SELECT 100",
                "failures": None,
                "unique_id": unique_id,
                "compiled": True,
                "compiled_code": SQL,
                "relation_name": f'"analytics"."marts"."model_{index:04d}"',
                "batch_results": None,
            }
        )
        nodes[unique_id] = {
            "database": "analytics",
            "schema": "marts",
            "name": f"model_{index:04d}",
            "resource_type": "model",
            "package_name": "bench",
            "path": f"marts/model_{index:04d}.sql",
            "original_file_path": f"models/marts/model_{index:04d}.sql",
            "unique_id": unique_id,
            "fqn": ["bench", "marts", f"model_{index:04d}"],
            "alias": f"model_{index:04d}",
            "checksum": {"name": "sha256", "checksum": "0" * 64},
            "config": {
                "enabled": True,
                "materialized": "table",
                "tags": [],
                "meta": {},
                "on_schema_change": "ignore",
            },
            "tags": [],
            "description": "A model of the benchmark, documented as teams document theirs.",
            "columns": {
                f"column_{c}": {
                    "name": f"column_{c}",
                    "description": "What the column holds.",
                    "data_type": "text",
                    "meta": {},
                    "tags": [],
                }
                for c in range(12)
            },
            "depends_on": {"macros": [], "nodes": [f"model.bench.model_{max(0, index - 1):04d}"]},
            "refs": [{"name": f"model_{max(0, index - 1):04d}", "package": None, "version": None}],
            "raw_code": SQL,
            "compiled_code": SQL,
            "relation_name": f'"analytics"."marts"."model_{index:04d}"',
        }
    (target / "run_results.json").write_text(
        json.dumps(
            {
                "metadata": {
                    **metadata,
                    "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
                },
                "results": results,
                "elapsed_time": 600.0,
                "args": {"which": "build", "select": []},
            }
        )
    )
    (target / "manifest.json").write_text(
        json.dumps(
            {
                "metadata": {
                    **metadata,
                    "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
                    "adapter_type": "postgres",
                    "project_name": "bench",
                },
                "nodes": nodes,
                "sources": {},
                "macros": {},
            }
        )
    )
    return (target / "run_results.json").stat().st_size, (target / "manifest.json").stat().st_size


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cost-bench-dbt-"))
    os.environ["AIRFLOW_HOME"] = str(work)
    os.environ["AIRFLOW__COST_PROVIDER__CONNECTION_PRICING"] = (
        '{"dbt:bench": {"instance_type": "db.r6g.large"}}'
    )
    sys.path.insert(0, str(REPO))
    from airflow_cost_provider.capture.dbt import usages_of_run
    from airflow_cost_provider.pricing import estimate_all
    from airflow_cost_provider.tracker import price_book

    target = work / "target"
    results_size, manifest_size = write_artifacts(target, args.models)
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    book = price_book()
    read_times, price_times, totals = [], [], []
    for _ in range(args.repetitions):
        begin = time.perf_counter()
        usages = usages_of_run(work, target, started, time.monotonic() + FINALIZE_TIMEOUT)
        read = time.perf_counter()
        lines, unpriced = estimate_all(usages, book)
        done = time.perf_counter()
        assert len(lines) == args.models and not unpriced, (len(lines), unpriced[:1])
        read_times.append(read - begin)
        price_times.append(done - read)
        totals.append(done - begin)
    summary = {
        "models": args.models,
        "run_results_bytes": results_size,
        "manifest_bytes": manifest_size,
        "read_median_s": statistics.median(read_times),
        "price_median_s": statistics.median(price_times),
        "total_median_s": statistics.median(totals),
        "total_max_s": max(totals),
        "share_of_finalize_timeout": statistics.median(totals) / FINALIZE_TIMEOUT,
        "repetitions": args.repetitions,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    print(
        f"{args.models} models: run_results.json {results_size / 1e6:.1f} MB, manifest.json "
        f"{manifest_size / 1e6:.1f} MB; read {summary['read_median_s'] * 1000:.0f} ms, priced "
        f"{summary['price_median_s'] * 1000:.0f} ms, together median {summary['total_median_s'] * 1000:.0f} ms "
        f"(max {summary['total_max_s'] * 1000:.0f} ms) = {summary['share_of_finalize_timeout']:.1%} of "
        f"finalize_timeout {FINALIZE_TIMEOUT:g} s"
    )
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
