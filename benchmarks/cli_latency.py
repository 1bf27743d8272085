"""How long `airflow-cost report` takes to answer on a small ledger, as a user runs it.

Each command runs as its own process (what a user waits for), alternating with controls measured in
the same run, so the machine's noise hits all of them alike:

- `report`: the ledger taken from [cost_provider] ledger_conn in $AIRFLOW_HOME/airflow.cfg;
- `report (env)`: the same from AIRFLOW__COST_PROVIDER__LEDGER_CONN;
- `report --ledger URL`: the ledger given on the command line;
- `report storage`, `report --by dag,day -o json`;
- controls: a bare `python -c pass`, `import sqlalchemy` (the floor a ledger reader pays), and
  `from airflow.configuration import conf` (what reading the configuration cost when it went through
  Airflow: the CLI's latency before it read [cost_provider] itself).

    uv run python benchmarks/cli_latency.py                 # 15 rounds
    uv run python benchmarks/cli_latency.py --rounds 30 --tries 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET_SECONDS = 1.0


def fill_ledger(url: str, tries: int) -> None:
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.ledger import store
    from airflow_cost_provider.pricing import CostLine, Price, Usage
    from airflow_cost_provider.result import CostResult

    engine = store.get_engine(url)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    for index in range(tries):
        usage = Usage("athena", "data_scanned", Decimal(10**9 + index), "byte")
        price = Price("athena", "data_scanned", "TB", Decimal("5"), "USD", "bench")
        line = CostLine(usage, Decimal(index % 97) / 1000, "USD", "list_price", price)
        task_try = TaskTry(f"dag_{index % 7}", f"task_{index % 13}", f"run_{index // 91}", 1, -1, None)
        capture = hashlib.md5(str(index).encode()).hexdigest()
        when = end - dt.timedelta(hours=index % 240)
        store.store(
            engine,
            CostResult(task_try, capture, "success", when - dt.timedelta(minutes=2), when, "w", (line,), ()),
        )


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tries", type=int, default=100, help="task tries in the ledger")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cli-latency-") as temp:
        home = Path(temp) / "airflow"
        home.mkdir()
        url = f"sqlite:///{Path(temp) / 'cost_ledger.db'}"
        fill_ledger(url, args.tries)
        (home / "airflow.cfg").write_text(
            f"[core]\nload_examples = False\n\n[cost_provider]\nledger_conn = {url}\n"
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        cfg_env = {**base, "AIRFLOW_HOME": str(home)}
        env_env = {**base, "AIRFLOW_HOME": temp, "AIRFLOW__COST_PROVIDER__LEDGER_CONN": url}
        cli = [sys.executable, "-m", "airflow_cost_provider.cli"]
        cases = {
            "report": (cli + ["report"], cfg_env),
            "report (env)": (cli + ["report"], env_env),
            "report --ledger URL": (cli + ["report", "--ledger", url], base),
            "report storage": (cli + ["report", "storage"], cfg_env),
            "report --by dag,day -o json": (cli + ["report", "--by", "dag,day", "-o", "json"], cfg_env),
            "control: python -c pass": ([sys.executable, "-c", "pass"], base),
            "control: import sqlalchemy": ([sys.executable, "-c", "import sqlalchemy"], base),
            "control: Airflow's configuration": (
                [sys.executable, "-c", "from airflow.configuration import conf"],
                cfg_env,
            ),
        }
        for command, env in cases.values():  # warm the file cache and compile the bytecode once
            timed(command, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (command, env) in cases.items():
                samples[name].append(timed(command, env))

    summary = {
        name: {
            "median_s": round(statistics.median(values), 3),
            "p90_s": round(sorted(values)[int(0.9 * (len(values) - 1))], 3),
            "min_s": round(min(values), 3),
        }
        for name, values in samples.items()
    }
    floor = summary["control: import sqlalchemy"]["median_s"]
    print(
        f"{args.rounds} rounds, {args.tries} task tries in the ledger; target: report under {TARGET_SECONDS} s"
    )
    for name, figures in summary.items():
        print(
            f"  {name:36} median {figures['median_s']:.3f} s  p90 {figures['p90_s']:.3f} s  min {figures['min_s']:.3f} s"
        )
    report = summary["report"]["median_s"]
    print(f"report - import sqlalchemy: {report - floor:+.3f} s; target met: {report < TARGET_SECONDS}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"cli_latency-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"rounds": args.rounds, "tries": args.tries, "summary": summary}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
