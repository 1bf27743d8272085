"""How long does the Costs API take to answer on a large ledger?

Fills a ledger with `--lines` cost lines (default 1,000,000) the way budget_evaluation.py does (40
DAGs of 8 tasks, 10 of them hourly, about five months up to 2026-12-20, owners, teams, tags, labels,
some EUR and unpriced lines), then times the API's requests in-process through FastAPI's TestClient
(the app as the api-server mounts it, with the user's authentication replaced by a fixed one: the
time measured is the parsing, the ledger's queries and the JSON), each request `--rounds` times:

- the page's data: `/api/report?by=dag` for the last 30 days, and `by=dag,day`, `by=team,source`,
  `by=try&top=100`, `by=tag`;
- the same `by=dag` for a user who may read 10 of the 40 DAGs (the report filtered to them);
- `/api/report?by=dag` over 90 days, and one try's lines (`/api/task-instance`);
- the Costs page (/cost/): every request its script (api/static/costs.js) makes for one view of the
  last 30 days (`/api/overview`, storage per bucket and per dataset, a DAG's runs), each timed, and the view's data load: the
  requests one after another (the browser sends them together; the sum is what one api-server
  worker does for a view); apart, `/api/budgets` with the 50 budgets of budget_evaluation.py (the
  page shows the rest without waiting for it; its first evaluation, with nothing kept, reported too),
  the overview's reports asked one by one, and a DAG run's Cost tab (`/api/dag-run`).

Reports the median and p95 per request (target: under 1 s). Writes benchmarks/results/api_latency.json.

    uv run python benchmarks/api_latency.py                     # SQLite in a temp dir
    uv run python benchmarks/api_latency.py --lines 200000 --rounds 10
    uv run python benchmarks/api_latency.py --page-only --rounds 15   # by=dag and the page's requests
    uv run python benchmarks/api_latency.py --ledger postgresql://cost:cost@localhost:5433/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "api_latency.json"
TARGET_MS = 1000
LAST_30_DAYS = {"since": "2026-11-21", "until": "2026-12-21"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(client, path: str, params: dict, rounds: int) -> dict:
    started = time.perf_counter()
    client.get(path, params=params)  # the first request builds the app's routes and warms the cache
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(path, params=params)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    body = response.json()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "first_ms": round(first_ms, 1),
        "rows": len(body.get("rows", body.get("lines", body.get("reports", body.get("tries", []))))),
    }


def page_requests(top_dag: str) -> list[tuple[str, str, dict]]:
    """What costs.js asks for one view of the last 30 days, stacked by source, with a DAG's runs
    (the budgets apart: the page shows the rest without waiting for them)."""
    return [
        ("overview (8 reports and the previous 30 days' total)", "/api/overview", {**LAST_30_DAYS}),
        (
            "report/storage?by=resource&top=10",
            "/api/report/storage",
            {"by": "resource", "top": 10, **LAST_30_DAYS},
        ),
        (
            "report/storage?by=dataset&top=10",
            "/api/report/storage",
            {"by": "dataset", "top": 10, **LAST_30_DAYS},
        ),
        (
            "report?by=run,day&dag_id=<top DAG>",
            "/api/report",
            {"by": "run,day", "dag_id": top_dag, **LAST_30_DAYS},
        ),
    ]


def separate_reports() -> list[tuple[str, str, dict]]:
    """The overview's reports asked one by one, as the page would without /api/overview."""
    previous = {"since": "2026-10-22", "until": "2026-11-21"}
    return [
        ("report?by=source", "/api/report", {"by": "source", **LAST_30_DAYS}),
        ("report?by=source, previous 30 days", "/api/report", {"by": "source", **previous}),
        ("report?by=day,source", "/api/report", {"by": "day,source", **LAST_30_DAYS}),
        ("report?by=dag&top=10", "/api/report", {"by": "dag", "top": 10, **LAST_30_DAYS}),
        ("report?by=dag,day", "/api/report", {"by": "dag,day", **LAST_30_DAYS}),
        ("report?by=task&top=10", "/api/report", {"by": "task", "top": 10, **LAST_30_DAYS}),
        ("report?by=task,day", "/api/report", {"by": "task,day", **LAST_30_DAYS}),
        ("report?by=team", "/api/report", {"by": "team", **LAST_30_DAYS}),
        ("report?by=owner", "/api/report", {"by": "owner", **LAST_30_DAYS}),
    ]


def timed_page(client, requests: list[tuple[str, str, dict]], rounds: int) -> dict:
    """Each request of one view of the page, and the view's load: all of them one after another."""
    each = {name: timed(client, path, params, rounds) for name, path, params in requests}
    loads = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _name, path, params in requests:
            assert client.get(path, params=params).status_code == 200
        loads.append((time.perf_counter() - started) * 1000)
    return {
        "requests": each,
        "load_median_ms": round(statistics.median(loads), 1),
        "load_p95_ms": round(percentile(loads, 0.95), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", help="an empty PostgreSQL database URL (default: SQLite in a temp dir)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument(
        "--page-only", action="store_true", help="time by=dag and the Costs page's requests only"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cost-api-bench-"))
    os.environ["AIRFLOW_HOME"] = str(tmp)
    for key in [k for k in os.environ if k.startswith("AIRFLOW__COST_PROVIDER__")]:
        del os.environ[key]
    from airflow_cost_provider.ledger.store import dispose_engines, get_engine, normalize_url, safe_url

    url = normalize_url(args.ledger) if args.ledger else f"sqlite:///{tmp / 'ledger.db'}"
    os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"] = url
    try:
        from benchmarks.budget_evaluation import DAGS, dag_id, fill

        engine = get_engine(url)
        print(f"filling {safe_url(url)} with {args.lines:,} lines ...", flush=True)
        filled = fill(engine, args.lines, args.seed, analyze=engine.dialect.name != "sqlite")
        print(f"  {filled}", flush=True)

        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.security import get_user
        from fastapi.testclient import TestClient

        from airflow_cost_provider.api import access
        from airflow_cost_provider.api.app import create_app

        app = create_app()
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="bench", role="viewer")
        app.dependency_overrides[access.read_task_instances] = lambda: None
        client = TestClient(app)
        visible: frozenset[str] | None = None
        app.dependency_overrides[access.readable_dags] = lambda: visible

        results = {}
        reports = [("dag", {}), ("dag,day", {}), ("team,source", {}), ("try", {"top": 100}), ("tag", {})]
        # --page-only keeps by=dag: how fast the machine answers now, against the numbers of a full run
        for by, extra in reports[:1] if args.page_only else reports:
            name = f"report?by={by}" + "".join(f"&{k}={v}" for k, v in extra.items())
            results[name] = timed(client, "/api/report", {"by": by, **LAST_30_DAYS, **extra}, args.rounds)
        if not args.page_only:
            visible = frozenset(dag_id(i) for i in range(0, DAGS, 4))
            results["report?by=dag, a user who may read 10 DAGs"] = timed(
                client, "/api/report", {"by": "dag", **LAST_30_DAYS}, args.rounds
            )
            visible = None
            results["report?by=dag, 90 days"] = timed(
                client,
                "/api/report",
                {"by": "dag", "since": "2026-09-22", "until": "2026-12-21"},
                args.rounds,
            )
            last_try = client.get("/api/report", params={"by": "try", "top": 1, **LAST_30_DAYS}).json()[
                "rows"
            ][0]
            results["task-instance"] = timed(
                client,
                "/api/task-instance",
                {key: last_try[key] for key in ("dag_id", "task_id", "run_id", "map_index", "try_number")},
                args.rounds,
            )
        from airflow_cost_provider.cli import budgets as budgets_command
        from benchmarks.budget_evaluation import ARRIVALS_FROM, budgets_yaml

        budgets_file = tmp / "cost_budgets.yaml"
        budgets_file.write_text(budgets_yaml())
        os.environ["AIRFLOW__COST_PROVIDER__BUDGETS_PATH"] = str(budgets_file)
        budgets_command._now = lambda: ARRIVALS_FROM  # the benchmark's "now": the ledger's last day
        from airflow_cost_provider import conf

        conf.clear_cache()
        app.dependency_overrides[access.read_every_dag] = lambda: None
        top_dag = client.get("/api/report", params={"by": "dag", "top": 1, **LAST_30_DAYS}).json()["rows"][0]
        page = timed_page(client, page_requests(top_dag["dag_id"]), args.rounds)
        page["budgets"] = timed(client, "/api/budgets", {}, max(3, args.rounds // 4))
        # a DAG run's Cost tab: the top DAG's latest run in the period
        runs = client.get(
            "/api/report", params={"by": "run,day", "dag_id": top_dag["dag_id"], **LAST_30_DAYS}
        ).json()["rows"]
        last_run = max(runs, key=lambda row: (row["day"], row["run_id"]))["run_id"]
        page["dag_run"] = timed(
            client, "/api/dag-run", {"dag_id": top_dag["dag_id"], "run_id": last_run}, args.rounds
        )
        page["separately"] = timed_page(client, separate_reports(), max(3, args.rounds // 4))
        result = {
            "ledger": engine.dialect.name,
            "fill": filled,
            "rounds": args.rounds,
            "requests": results,
            "page": page,
            # other jobs on the machine slow every request: the load they made during the run
            "load_average_1_5_15_min": [round(load, 2) for load in os.getloadavg()],
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
        print(
            f"{result['ledger']}, {filled['lines']:,} lines, {args.rounds} rounds (target: under {TARGET_MS} ms):"
        )
        for name, numbers in results.items():
            print(
                f"  {name}: median {numbers['median_ms']} ms, p95 {numbers['p95_ms']} ms ({numbers['rows']} rows)"
            )
        print(
            f"  the Costs page, one view's data: median {page['load_median_ms']} ms, p95 {page['load_p95_ms']} ms "
            "(its requests one after another):"
        )
        for name, numbers in page["requests"].items():
            print(
                f"    {name}: median {numbers['median_ms']} ms, p95 {numbers['p95_ms']} ms ({numbers['rows']} rows)"
            )
        budgets, separately = page["budgets"], page["separately"]
        print(
            f"    apart, budgets (50), shown when they come: median {budgets['median_ms']} ms, p95 {budgets['p95_ms']} ms"
            f" (the first, with nothing kept yet: {budgets['first_ms']} ms)"
        )
        dag_run = page["dag_run"]
        print(
            f"  a DAG run's Cost tab (/api/dag-run): median {dag_run['median_ms']} ms, p95 {dag_run['p95_ms']} ms "
            f"({dag_run['rows']} tries)"
        )
        print(
            f"    the overview's 9 reports asked one by one instead: median {separately['load_median_ms']} ms in all"
        )
        print(f"  load average at the end (1, 5, 15 min): {result['load_average_1_5_15_min']}")
        print(f"  written to {RESULTS.relative_to(REPO)}")
    finally:
        dispose_engines()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
