"""How fast is a storage cost import, and how much memory does it take?

Writes a FOCUS 1.0 Parquet export of `--rows` rows (default 10,000,000: hourly S3 charges of
`--buckets` buckets, default 400, plus other services and credits) into a temporary directory, then,
in alternating order and each in its own process so that peak memory is its own:

- `import`: what `airflow-cost import-storage --format focus` does: read and validate every row
  with DuckDB, skip other services, sum per bucket, SKU, day and currency, classify into usage
  classes, and write the ledger (SQLite) in one transaction;
- `billing`: what `airflow-cost import-billing --format focus` does with the same file: every
  service kept, per service, resource, SKU, day, currency and tag set (tags parsed once per distinct
  tag text), the storage rows as `import` writes them, both tables in one transaction;
- `floor`: a bare DuckDB aggregate of the same file: the sum of BilledCost per billing account,
  resource, SKU, day and currency (the ledger's grain), the least any import of this file can do.

Reports rows per second, wall time and peak RSS (ru_maxrss of the child) of each, the median over
`--repeat` runs, and the ratios import / floor and billing / floor. Targets (import and billing):
>= 1,000,000 rows/s, peak RSS <= 1 GB, ratio <= 3. Writes benchmarks/results/storage_import.json.

    uv run python benchmarks/storage_import.py
    uv run python benchmarks/storage_import.py --rows 2000000 --repeat 5
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
RESULTS = REPO / "benchmarks" / "results" / "storage_import.json"

IMPORT = """
import sys, time
import duckdb  # loaded before the clock starts, as in the floor's process
from airflow_cost_provider.billing.files import BillingFile
from airflow_cost_provider.billing.formats import FocusFormat
from airflow_cost_provider.billing.importer import read_files, save
from airflow_cost_provider.ledger.store import get_engine
from pathlib import Path
path, ledger, all_services = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "billing"
engine = get_engine(ledger)  # schema created before the clock starts, as on a running system
started = time.perf_counter()
collected = read_files(
    FocusFormat(), [BillingFile(str(path), path, path.stat().st_size)], all_services=all_services
)
summary = save(engine, collected)
elapsed = time.perf_counter() - started
written = summary.costs_written + (summary.billing_costs_written or 0)
print(elapsed, summary.rows_read, summary.rows_imported, written, sum(summary.skipped.values()))
"""

GENERATE = """
import sys
from pathlib import Path
from airflow_cost_provider.billing.samples import large_focus_parquet
large_focus_parquet(Path(sys.argv[1]), int(sys.argv[2]), buckets=int(sys.argv[3]))
print("done")
"""

FLOOR = """
import sys, time, duckdb
path = sys.argv[1]
con = duckdb.connect(config={"preserve_insertion_order": False})
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")  # it would print to stdout past 2 s
started = time.perf_counter()
rows = con.execute(
    "SELECT BillingAccountId, ResourceId, SkuId, CAST(ChargePeriodStart AS DATE) AS day, BillingCurrency, "
    "sum(BilledCost), count(*) AS n FROM read_parquet(?) GROUP BY ALL",
    [path],
).fetchall()
elapsed = time.perf_counter() - started
print(elapsed, sum(r[-1] for r in rows), len(rows))
"""


def run_measured(code: str, *args: str) -> tuple[list[str], float, int]:
    """Run code in a fresh interpreter: its printed fields, wall time, and its own peak RSS in bytes
    (from wait4, so each child is measured on its own)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = child.stdout.read(), child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{stderr[-3000:]}")
    return stdout.strip().splitlines()[-1].split(), wall, usage.ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--buckets",
        type=int,
        default=400,
        help="S3 buckets in the export (ledger rows written = buckets x 8 usage types x days)",
    )
    parser.add_argument("--keep-temp", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="storage-import-bench-"))
    try:
        export = scratch / "focus-export.parquet"
        started = time.perf_counter()
        run_measured(
            GENERATE, str(export), str(args.rows), str(args.buckets)
        )  # its own process: this one stays small
        generated = time.perf_counter() - started
        size = export.stat().st_size
        print(
            f"wrote {args.rows:,} FOCUS rows of {args.buckets:,} buckets ({size / 1e6:.0f} MB Parquet) "
            f"in {generated:.1f} s"
        )

        runs: dict[str, list[dict]] = {"import": [], "billing": [], "floor": []}
        for index in range(args.repeat):
            order = ("import", "billing", "floor") if index % 2 == 0 else ("floor", "billing", "import")
            for kind in order:
                if kind in ("import", "billing"):
                    ledger = f"sqlite:///{scratch / f'ledger-{kind}-{index}.db'}"
                    fields, wall, peak = run_measured(IMPORT, str(export), ledger, kind)
                    elapsed, read, imported, written, skipped = fields
                    if int(read) != args.rows:
                        raise SystemExit(f"the import read {read} rows of {args.rows}")
                    record = {
                        "seconds": float(elapsed),
                        "process_seconds": wall,
                        "peak_rss_bytes": peak,
                        "rows_imported": int(imported),
                        "rows_skipped": int(skipped),
                        "costs_written": int(written),
                    }
                else:
                    fields, wall, peak = run_measured(FLOOR, str(export))
                    elapsed, read, groups = fields
                    if int(read) != args.rows:
                        raise SystemExit(f"the floor read {read} rows of {args.rows}")
                    record = {"seconds": float(elapsed), "process_seconds": wall, "peak_rss_bytes": peak}
                record["rows_per_second"] = args.rows / record["seconds"]
                runs[kind].append(record)
                print(
                    f"  run {index + 1} {kind:6s}: {record['seconds']:.2f} s"
                    + (f" ({record['costs_written']:,} ledger rows)" if kind != "floor" else "")
                    + ", "
                    f"{record['rows_per_second'] / 1e6:.2f} M rows/s, peak RSS {peak / 2**20:.0f} MiB"
                )

        def median(kind: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[kind])

        result = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_1m": os.getloadavg()[0],
            },
            "rows": args.rows,
            "buckets": args.buckets,
            "file_bytes": size,
            **{
                kind: {
                    "median_seconds": median(kind, "seconds"),
                    "median_rows_per_second": median(kind, "rows_per_second"),
                    "max_peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs[kind]),
                    "runs": runs[kind],
                }
                for kind in ("import", "billing", "floor")
            },
        }
        for kind in ("import", "billing"):
            result[f"ratio_{kind}_to_floor"] = (
                result[kind]["median_seconds"] / result["floor"]["median_seconds"]
            )
        result["targets"] = {
            f"{kind}_{name}": met
            for kind in ("import", "billing")
            for name, met in (
                ("rows_per_second_at_least_1m", result[kind]["median_rows_per_second"] >= 1_000_000),
                ("peak_rss_at_most_1gb", result[kind]["max_peak_rss_bytes"] <= 10**9),
                ("within_3x_of_floor", result[f"ratio_{kind}_to_floor"] <= 3),
            )
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
        imp, bil, flo = result["import"], result["billing"], result["floor"]
        print(
            f"import: median {imp['median_seconds']:.2f} s = {imp['median_rows_per_second'] / 1e6:.2f} M rows/s, "
            f"peak RSS {imp['max_peak_rss_bytes'] / 2**20:.0f} MiB\n"
            f"billing: median {bil['median_seconds']:.2f} s = {bil['median_rows_per_second'] / 1e6:.2f} M rows/s, "
            f"peak RSS {bil['max_peak_rss_bytes'] / 2**20:.0f} MiB\n"
            f"floor:  median {flo['median_seconds']:.2f} s = {flo['median_rows_per_second'] / 1e6:.2f} M rows/s, "
            f"peak RSS {flo['max_peak_rss_bytes'] / 2**20:.0f} MiB\n"
            f"ratio import / floor: {result['ratio_import_to_floor']:.2f}, "
            f"billing / floor: {result['ratio_billing_to_floor']:.2f}\n"
            f"targets met: {result['targets']}\n"
            f"written to {RESULTS.relative_to(REPO)}"
        )
        return 0 if all(result["targets"].values()) else 1
    finally:
        if args.keep_temp:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
