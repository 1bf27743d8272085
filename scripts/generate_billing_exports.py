"""Write realistic sample billing exports, in every format `airflow-cost import-storage` reads.

Three clouds' buckets (S3, Cloud Storage, Azure storage accounts) with daily storage in two classes,
requests, retrieval and data transfer out, across regions and to other services, priced from public
list prices; promotional credits, a correction of an earlier day, tax, and services that are not
storage. `--version 2` writes the restated delivery (revised egress, one withdrawn charge).

    uv run python scripts/generate_billing_exports.py --out /tmp/exports --start 2026-01-01 --days 10
    uv run python scripts/generate_billing_exports.py --out /tmp/exports --format focus --file-format parquet
    uv run python scripts/generate_billing_exports.py --out /tmp/big --large-focus-rows 10000000

Then, for example: airflow-cost import-storage --format focus --path /tmp/exports/focus/
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from airflow_cost_provider.billing import samples

FORMATS = {
    "focus": (samples.write_focus, ("csv", "csv.gz", "parquet")),
    "aws-cur": (samples.write_cur, ("parquet", "csv.gz")),
    "gcp-billing-export": (samples.write_gcp_export, ("jsonl", "parquet")),
    "azure-export": (samples.write_azure_focus, ("csv", "csv.gz", "parquet")),
}
FOLDERS = {"focus": "focus", "aws-cur": "aws-cur", "gcp-billing-export": "gcp", "azure-export": "azure"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--version", type=int, choices=(1, 2), default=1, help="2: the restated delivery")
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="all")
    parser.add_argument("--file-format", help="csv, csv.gz, parquet or jsonl (default: each format's usual)")
    parser.add_argument(
        "--large-focus-rows",
        type=int,
        help="instead: one FOCUS Parquet file of this many rows (the import benchmark's input)",
    )
    parser.add_argument("--buckets", type=int, default=400, help="buckets of the large file")
    args = parser.parse_args(argv)

    if args.large_focus_rows:
        path = samples.large_focus_parquet(
            args.out / f"focus-{args.large_focus_rows}-rows.parquet",
            args.large_focus_rows,
            start=args.start,
            buckets=args.buckets,
        )
        print(f"wrote {args.large_focus_rows:,} rows to {path}")
        return 0

    charges = samples.sample_charges(args.start, args.days, args.version)
    stamp = f"{args.start:%Y%m%d}-{args.days}d-v{args.version}"
    for name in FORMATS if args.format == "all" else [args.format]:
        writer, file_formats = FORMATS[name]
        file_format = args.file_format or file_formats[0]
        if file_format not in file_formats:
            parser.error(f"--file-format for {name} must be one of {', '.join(file_formats)}")
        path = writer(charges, args.out / FOLDERS[name] / f"{name}-{stamp}.{file_format}", file_format)
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
