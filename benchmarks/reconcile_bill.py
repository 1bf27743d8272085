"""How long does `airflow-cost reconcile` take on a large ledger and a large bill, and how much memory?

Fills a ledger with `--lines` cost lines (default 1,000,000) the way budget_evaluation.py does (40
DAGs of 8 tasks over about five months; worker, BigQuery, Snowflake, Athena, Databricks and Redshift
lines), gives the lines resources (40 warehouses, workgroups, clusters each) and the BigQuery tries
OpenLineage run ids, then writes `--billed` billing rows (default 1,000,000) over the same days:
each warehouse, workgroup and cluster per day, 20 worker instances matched by a `billing_resources`
tag rule, one row per BigQuery try labelled with its run id, and S3 rows no task touches filling
up to the count. With `--hourly` the warehouses and clusters are billed per hour (24 rows a day
each, as Snowflake's metering and Databricks' usage are), so they are reconciled per hour and their
lines split over the hours they ran. Then runs the reconciliation of the whole period in a new
process (so its peak memory is its own): the DuckDB matching and split, then the ledger write.
Target: under 60 s and 1 GB. Writes benchmarks/results/reconcile_bill.json.

    uv run python benchmarks/reconcile_bill.py                          # SQLite in a temp dir
    uv run python benchmarks/reconcile_bill.py --lines 200000 --billed 200000
    uv run python benchmarks/reconcile_bill.py --hourly
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "reconcile_bill.json"
RULES = [{"name": "workers", "source": "airflow_worker", "match": {"tags": {"airflow-component": "worker"}}}]
POOLS = 40
WORKERS = 20

RESOURCES_SQL = """
UPDATE cost_usage SET resource = CASE source
  WHEN 'snowflake' THEN 'WH_' || (task_run_id % 40)
  WHEN 'athena' THEN 'wg_' || (task_run_id % 40)
  WHEN 'databricks' THEN 'cluster-' || (task_run_id % 40)
  WHEN 'redshift' THEN 'rs-' || (task_run_id % 40)
END
"""
RUN_IDS_SQL = """
UPDATE cost_task_runs SET ol_run_id = printf('%08x-0000-7000-8000-000000000000', id)
WHERE id IN (SELECT task_run_id FROM cost_lines WHERE source = 'bigquery' AND currency = 'USD')
"""
BILLED_COLUMNS = (
    "row_key, provider, billing_account, day, usage_hour, service, resource_id, sku, usage_class, currency, amount_nanos, "
    "list_nanos, credit_nanos, correction_nanos, tags, tagged_run_id, source_rows, source, updated_at"
)


def billed_rows(conn, target: int, seed: int, hourly: bool = False):
    """The bill: (provider, service, resource id, tags, run id, hour) per day, amounts at random;
    `hourly`: the warehouses and clusters per hour."""
    rng = random.Random(seed)
    days = [
        dt.date.fromisoformat(day)
        for (day,) in conn.execute("SELECT DISTINCT date(end_time) FROM cost_task_runs ORDER BY 1").fetchall()
    ]
    tagged: dict[str, list[str]] = {}
    for day, run_id in conn.execute(
        "SELECT date(end_time), ol_run_id FROM cost_task_runs WHERE ol_run_id IS NOT NULL"
    ).fetchall():
        tagged.setdefault(day, []).append(run_id)
    per_day: list[list[tuple]] = []
    for day in days:
        rows = []
        hours = range(24) if hourly else (None,)
        for k in range(POOLS):
            rows.extend(("snowflake", "Snowflake", f"WH_{k}", None, None, hour) for hour in hours)
            rows.append(
                ("aws", "Amazon Athena", f"arn:aws:athena:us-east-1:1:workgroup/wg_{k}", None, None, None)
            )
            rows.extend(("databricks", "Databricks", f"cluster-{k}", None, None, hour) for hour in hours)
            rows.append(
                ("aws", "Amazon Redshift", f"arn:aws:redshift:us-east-1:1:cluster/rs-{k}", None, None, None)
            )
        for k in range(WORKERS):
            tags = json.dumps({"airflow-component": "worker"})
            rows.append(
                ("aws", "Amazon EC2", f"arn:aws:ec2:us-east-1:1:instance/i-{k:04x}", tags, None, None)
            )
        for run_id in tagged.get(day.isoformat(), []):
            rows.append(("gcp", "BigQuery", "proj", json.dumps({"openlineage_run_id": run_id}), run_id, None))
        per_day.append(rows)
    fixed = sum(len(rows) for rows in per_day)
    filler = max(0, target - fixed) // max(1, len(days))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    count = 0
    for day, rows in zip(days, per_day, strict=True):
        rows.extend(
            ("aws", "Amazon S3", f"arn:aws:s3:::bucket-{k % 500}", None, None, None) for k in range(filler)
        )
        batch = []
        for index, (provider, service, resource_id, tags, run_id, hour) in enumerate(rows):
            count += 1
            amount = rng.randint(1_000_000, 5_000_000_000)
            batch.append(
                (
                    f"{count:064x}",
                    provider,
                    "acct",
                    day.isoformat(),
                    hour,
                    service,
                    resource_id,
                    f"sku-{index}",
                    "compute",
                    "USD",
                    amount,
                    amount + rng.randint(0, amount // 5),
                    0,
                    0,
                    tags,
                    run_id,
                    1,
                    "benchmark",
                    now,
                )
            )
        yield batch


def measure(url: str, since: str, until: str) -> dict:
    """Runs in its own process: the reconciliation of the period, timed, with its peak memory."""
    from airflow_cost_provider.ledger.store import get_engine
    from airflow_cost_provider.reconcile import store
    from airflow_cost_provider.reconcile.engine import Window, run
    from airflow_cost_provider.reconcile.rules import parse_modes, parse_rules

    engine = get_engine(url)
    window = Window(dt.date.fromisoformat(since), dt.date.fromisoformat(until))
    started = time.perf_counter()
    result = run(engine, window, parse_rules(RULES), parse_modes("keep"))
    matched = time.perf_counter()
    matched_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.write(engine, result)
    written = time.perf_counter()
    result.close()
    return {
        "billed_rows": result.billed_rows,
        "pools": result.pools,
        "lines_reconciled": result.lines,
        "match_and_split_s": round(matched - started, 1),
        "write_s": round(written - matched, 1),
        "total_s": round(written - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_after_match_mib": round(matched_rss / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--billed", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--hourly", action="store_true", help="bill the warehouses and clusters per hour")
    parser.add_argument("--measure", nargs=3, metavar=("URL", "SINCE", "UNTIL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="cost-reconcile-bench-"))
    os.environ["AIRFLOW_HOME"] = str(tmp)
    import sqlite3

    from airflow_cost_provider.ledger.store import dispose_engines, get_engine
    from benchmarks.budget_evaluation import fill

    url = f"sqlite:///{tmp / 'ledger.db'}"
    try:
        print(
            f"filling a ledger with {args.lines:,} lines and a bill of {args.billed:,} rows ...", flush=True
        )
        filled = fill(get_engine(url), args.lines, args.seed, analyze=False)
        dispose_engines()
        conn = sqlite3.connect(tmp / "ledger.db")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(RESOURCES_SQL)
        conn.execute(RUN_IDS_SQL)
        billed = 0
        for batch in billed_rows(conn, args.billed, args.seed, args.hourly):
            marks = ", ".join("?" * len(BILLED_COLUMNS.split(",")))
            conn.executemany(f"INSERT INTO cost_billing_costs ({BILLED_COLUMNS}) VALUES ({marks})", batch)
            billed += len(batch)
        since, last = conn.execute("SELECT min(day), max(day) FROM cost_billing_costs").fetchone()
        conn.commit()
        conn.close()
        until = (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat()
        print(f"  {filled['lines']:,} lines, {billed:,} billing rows, {since} to {last}", flush=True)
        runs = []
        for attempt in ("first", "again (replaces the first)"):
            done = subprocess.run(
                [sys.executable, __file__, "--measure", url, since, until],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            numbers = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"run": attempt, **numbers})
            print(
                f"  {attempt}: {numbers['total_s']} s (match and split {numbers['match_and_split_s']} s, write "
                f"{numbers['write_s']} s), peak {numbers['peak_rss_mib']} MiB; {numbers['pools']:,} pools, "
                f"{numbers['lines_reconciled']:,} lines reconciled (target: under 60 s and 1 GB)",
                flush=True,
            )
        result = {
            "ledger": "sqlite",
            "hourly": args.hourly,
            "lines": filled["lines"],
            "billed_rows": billed,
            "runs": runs,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
        print(f"  written to {RESULTS.relative_to(REPO)}")
    finally:
        dispose_engines()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
