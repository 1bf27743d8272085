"""How long does evaluating the budgets a task try counts towards take at its end, on a large ledger?

Fills a ledger with `--lines` cost lines (default 1,000,000: 40 DAGs of 8 tasks, 10 of them hourly,
over about five months, with owners, teams, DAG tags, cost labels, a few EUR and unpriced lines) by
bulk inserts straight into the ledger's tables, cost_daily_totals included (summed in Python the way
the ledger's writer sums them), then defines 50 budgets (everything, teams, owners, DAGs, tasks,
sources, tags, labels; daily to quarterly, in UTC and other time zones; actual, forecast, run and day
anomaly thresholds).

The task tries of the last six hours are not bulk-written: they arrive one by one, in the order
they end, as on a running system. Each is written with ledger.store.store() (not timed), then what
the end of a task does with budgets is timed: the pure match of the 50 budgets against the try (DAG,
task, owner, team, tags, labels, the sources of its lines) and the evaluation of the matching ones
together (`evaluate_all()`: one statement for what they spent since the settled days, the imported
storage costs and the run-anomaly rule's latest runs), with the try's run for that rule and the top
contributors read only when something is crossed. Alert recording and delivery are not part of it.
Reports the median, p95 and p99 per try (target: under 5 ms), the first evaluation of a worker
(nothing kept yet) and of a new task process (settled days kept in the ledger), a new task process
in full (nothing in memory: its statement's text read from the cache folder, where earlier
processes left it), the budgets matched per try, and the median of one budget's evaluate() by scope
kind. Writes benchmarks/results/budget_evaluation.json.

    uv run python benchmarks/budget_evaluation.py                       # SQLite in a temp dir
    uv run python benchmarks/budget_evaluation.py --ledger postgresql://cost:cost@localhost:5433/bench
    uv run python benchmarks/budget_evaluation.py --lines 200000 --tries 300

A PostgreSQL database must be empty: the script creates the ledger's tables. PostgreSQL is ANALYZEd
after the fill, as its autovacuum would; SQLite is not (the provider never runs ANALYZE), unless
--analyze.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results" / "budget_evaluation.json"

UTC = dt.timezone.utc
LAST_DAY = dt.date(2026, 12, 20)  # the benchmark's "today": its tries end on this UTC day
# tries ending from here on are not bulk-written: they arrive one by one during the measurement
ARRIVALS_FROM = dt.datetime.combine(LAST_DAY, dt.time(18), tzinfo=UTC)
DAGS = 40
HOURLY_DAGS = 10
TASKS = 8
TEAMS = ["marketing", "finance", "ops", "sales", "data", "ml", "growth", "platform"]
OWNERS = [f"owner{i}" for i in range(12)]
SOURCES = ["bigquery", "snowflake", "athena", "databricks", "redshift"]
NANOS = 10**9


# ---------------------------------------------------------------- the synthetic estate


def dag_id(i: int) -> str:
    return f"{'hourly' if i < HOURLY_DAGS else 'daily'}_{i:02d}"


def attribution(i: int) -> dict:
    tags = [f"domain_{i % 5}", f"tier_{i % 3}"] + (["finance"] if i % 7 == 0 else [])
    return {
        "owner": OWNERS[i % len(OWNERS)],
        "team": TEAMS[i % len(TEAMS)],
        "tags": tuple(sorted(tags)),
        "labels": (("env", "prod" if i % 4 else "dev"), ("product", f"p{i % 6}")),
    }


def sources_of(i: int, j: int) -> list[str]:
    """The sources one task's tries have lines of: the worker, one platform, sometimes two."""
    found = ["airflow_worker", SOURCES[(i + j) % len(SOURCES)]]
    if j % 3 == 0:
        found.append(SOURCES[(i + j + 2) % len(SOURCES)])
    return found


def base_cost(i: int, j: int, source: str) -> int:
    """Nano-units of one line, before noise: the worker is cheap, platforms vary by DAG and task."""
    if source == "airflow_worker":
        return 2_000_000 + 100_000 * j
    scale = 1 if i < HOURLY_DAGS else 12  # a daily DAG does a day's work in one run
    return scale * (50_000_000 + 7_000_000 * ((i * 7 + j * 3) % 13))


def runs_backwards():
    """(day, dag index, run_id, run start) from LAST_DAY backwards, hourly and daily DAGs."""
    day = LAST_DAY
    while True:
        for i in range(DAGS):
            if i < HOURLY_DAGS:
                for hour in range(24):
                    start = dt.datetime.combine(day, dt.time(hour), tzinfo=UTC)
                    yield day, i, f"scheduled__{start.isoformat()}", start
            else:
                start = dt.datetime.combine(day, dt.time(2 + i % 6), tzinfo=UTC)
                yield day, i, f"scheduled__{start.isoformat()}", start
        day -= dt.timedelta(days=1)


class Estate:
    """What the generator learns while it writes: the daily totals, the tries that arrive during the
    measurement, the counts."""

    totals: dict[tuple, list[int]] = {}
    label_totals: dict[tuple, list[int]] = {}  # cost_daily_label_totals
    causes: dict[tuple, int] = {}  # cost_daily_unpriced
    arriving: list[dict] = []
    counts: tuple[int, int, int] = (0, 0, 0)


def generate(target_lines: int, seed: int):
    """Yield chunks (tries, usage, lines, labels) until target_lines lines, summing the daily totals
    into Estate as it goes. Ids are assigned here so the chunks insert with executemany or COPY."""
    rng = random.Random(seed)
    totals: dict[tuple, list[int]] = {}
    label_totals: dict[tuple, list[int]] = {}
    causes: dict[tuple, int] = {}
    tries, usages, lines, labels = [], [], [], []
    try_id = line_id = label_id = 0
    arriving: list[dict] = []  # tries of the last hours, stored during the measurement
    for day, i, run_id, run_start in runs_backwards():
        if line_id >= target_lines:
            break
        who = attribution(i)
        for j in range(TASKS):
            try_id += 1
            start = run_start + dt.timedelta(minutes=3 * j)
            end = start + dt.timedelta(minutes=2, seconds=rng.randint(0, 59))
            if end.date() != day:  # keep each run's tries on its day
                end = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=UTC)
            if end >= ARRIVALS_FROM:
                arriving.append(
                    {
                        "i": i,
                        "task": f"task_{j}",
                        "run_id": run_id,
                        "start": start,
                        "end": end,
                        "lines": [(source, *_priced(rng, i, j, source)) for source in sources_of(i, j)],
                    }
                )
                continue
            tries.append((try_id, dag_id(i), f"task_{j}", run_id, start, end, who["owner"], who["team"]))
            tagged = [("tag", tag, "") for tag in who["tags"]] + [("label", k, v) for k, v in who["labels"]]
            for kind, key, value in tagged:
                label_id += 1
                labels.append((label_id, try_id, kind, key, value))
            for source in sources_of(i, j):
                line_id += 1
                nanos, currency = _priced(rng, i, j, source)
                usages.append((line_id, try_id, source))
                lines.append((line_id, try_id, source, nanos, currency))
                key = (day, dag_id(i), f"task_{j}", who["owner"], who["team"], source, currency or "")
                sums = totals.setdefault(key, [0, 0, 0, 0])
                sums[0] += nanos or 0
                sums[1] += 1
                sums[2] += nanos is None
                sums[3] += nanos or 0  # the estimate: nothing is reconciled here
                for kind, key, value in tagged:  # as the writer sums cost_daily_label_totals
                    per_label = label_totals.setdefault(
                        (kind, key, value, day, source, currency or ""), [0, 0, 0]
                    )
                    per_label[0] += nanos or 0
                    per_label[1] += 1
                    per_label[2] += nanos is None
                if nanos is None:
                    cause = (day, dag_id(i), f"task_{j}", source, "m", UNPRICED_KEY)
                    causes[cause] = causes.get(cause, 0) + 1
        if len(lines) >= 50_000:
            yield tries, usages, lines, labels
            tries, usages, lines, labels = [], [], [], []
    Estate.totals, Estate.causes, Estate.counts = totals, causes, (try_id, line_id, label_id)
    Estate.label_totals = label_totals
    Estate.arriving = sorted(arriving, key=lambda item: item["end"])
    yield tries, usages, lines, labels


def _priced(rng: random.Random, i: int, j: int, source: str) -> tuple[int | None, str | None]:
    """(nanos, currency) of one line; 2 % of platform lines unpriced, a few EUR, rare outliers."""
    currency: str | None = "EUR" if (source == "bigquery" and i % 9 == 0) else "USD"
    nanos: int | None = int(base_cost(i, j, source) * rng.uniform(0.7, 1.3))
    if source != "airflow_worker" and rng.random() < 0.02:
        return None, None  # unpriced: never zero
    if rng.random() < 0.0005:  # a rare run that costs far more than usual: anomalies exist
        nanos *= 20
    return nanos, currency


# ---------------------------------------------------------------- writing the ledger fast


TRY_COLUMNS = (
    "id, dag_id, task_id, run_id, map_index, try_number, ol_run_id, capture_id, state, status, hostname, "
    "start_time, end_time, recorded_at, owner, team"
)
USAGE_COLUMNS = "id, task_run_id, source, metric, quantity, unit, attributes"
LINE_COLUMNS = (
    "id, task_run_id, usage_id, source, metric, amount_nanos, currency, method, status, unpriced_reason"
)
LABEL_COLUMNS = "id, task_run_id, kind, key, value"
DAILY_COLUMNS = (
    "day, dag_id, task_id, owner, team, source, currency, amount_nanos, lines, unpriced, estimate_nanos"
)
UNPRICED_COLUMNS = "day, dag_id, task_id, source, metric, reason_key, reason, lines"
LABEL_TOTALS_COLUMNS = "kind, key, value, day, source, currency, amount_nanos, lines, unpriced"
UNPRICED_REASON = "no price"
UNPRICED_KEY = hashlib.sha256(UNPRICED_REASON.encode()).hexdigest()  # ledger.schema.reason_key


def stamp(moment: dt.datetime) -> str:
    # as SQLAlchemy keeps a UTCDateTime: naive UTC, microseconds in SQLite's text form
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def rows_for(tries, usages, lines, labels):
    recorded = stamp(dt.datetime.now(UTC))
    try_rows = [
        (
            t,
            dag,
            task,
            run,
            -1,
            1,
            None,
            f"{t:032x}",
            "success",
            "estimated",
            "w",
            stamp(s),
            stamp(e),
            recorded,
            o,
            tm,
        )
        for t, dag, task, run, s, e, o, tm in tries
    ]
    usage_rows = [(u, t, source, "m", "1", "query", "{}") for u, t, source in usages]
    line_rows = [
        (
            line_id,
            t,
            line_id,
            source,
            "m",
            nanos,
            currency,
            None if nanos is None else "list_price",
            "unpriced" if nanos is None else "estimated",
            UNPRICED_REASON if nanos is None else None,
        )
        for line_id, t, source, nanos, currency in lines
    ]
    return (
        ("cost_task_runs", TRY_COLUMNS, try_rows),
        ("cost_usage", USAGE_COLUMNS, usage_rows),
        ("cost_lines", LINE_COLUMNS, line_rows),
        ("cost_task_run_labels", LABEL_COLUMNS, labels),
    )


def insert(cursor, backend: str, table: str, columns: str, rows: list[tuple]) -> None:
    if not rows:
        return
    if backend == "postgresql":  # COPY: the fastest way into PostgreSQL
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:  # \\N for NULL: an empty field is an empty string ('' = no team, a tag's value)
            writer.writerow(["\\N" if value is None else value for value in row])
        statement = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        if hasattr(cursor, "copy_expert"):  # psycopg2
            buffer.seek(0)
            cursor.copy_expert(statement, buffer)
        else:  # psycopg 3, SQLAlchemy's default PostgreSQL driver
            with cursor.copy(statement) as copy:
                copy.write(buffer.getvalue())
        return
    marks = ", ".join("?" * len(columns.split(",")))
    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def fill(engine, target_lines: int, seed: int, analyze: bool) -> dict:
    backend = engine.dialect.name
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if backend == "sqlite":
            cursor.execute("PRAGMA synchronous=OFF")
        for chunk in generate(target_lines, seed):
            for table, columns, rows in rows_for(*chunk):
                insert(cursor, backend, table, columns, rows)
        daily = [(day.isoformat(), *key, *sums) for (day, *key), sums in Estate.totals.items()]
        insert(cursor, backend, "cost_daily_totals", DAILY_COLUMNS, daily)
        causes = [
            (day.isoformat(), *key, UNPRICED_REASON, count) for (day, *key), count in Estate.causes.items()
        ]
        insert(cursor, backend, "cost_daily_unpriced", UNPRICED_COLUMNS, causes)
        by_label = [
            (kind, key, value, day.isoformat(), *rest, *sums)
            for (kind, key, value, day, *rest), sums in Estate.label_totals.items()
        ]
        insert(cursor, backend, "cost_daily_label_totals", LABEL_TOTALS_COLUMNS, by_label)
        if backend == "postgresql":  # the ids were given: the tries stored later take the next ones
            for table in ("cost_task_runs", "cost_usage", "cost_lines", "cost_task_run_labels"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
        raw.commit()
        if analyze:
            cursor.execute("ANALYZE")
            raw.commit()
        cursor.close()
    finally:
        raw.close()
    tries, line_count, labels = Estate.counts
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "task_tries": tries,
        "lines": line_count,
        "labels": labels,
        "daily_totals": len(Estate.totals),
        "daily_label_totals": len(Estate.label_totals),
        "days": len({key[0] for key in Estate.totals}),
    }


# ---------------------------------------------------------------- the budgets


def budgets_yaml() -> str:
    """50 budgets over every kind of scope, period and threshold."""
    entries = []

    def add(name, scope, period, amount, thresholds, **extra):
        entries.append(
            {
                "name": name,
                "scope": scope,
                "period": period,
                "amount": amount,
                "currency": "USD",
                "thresholds": thresholds,
                **extra,
            }
        )

    usual = [{"actual": "80%"}, {"forecast": "100%"}]
    runs = {"anomaly": {"run_cost_vs_median": 5, "last_runs": 10}}
    days = {"anomaly": {"daily_mad": 6, "last_days": 28}}
    add("everything-monthly", {}, "monthly", "1000000", [*usual, days])
    add("everything-quarterly-berlin", {}, "quarterly", "3000000", usual, timezone="Europe/Berlin")
    for n, team in enumerate(TEAMS):  # 8
        tz = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"][n % 4]
        add(f"team-{team}", {"team": team}, "monthly", "200000", [*usual, runs], timezone=tz)
    for i in range(0, DAGS, 4):  # 10
        period = ["daily", "weekly"][i % 8 // 4]
        add(
            f"dag-{dag_id(i)}",
            {"dag_id": dag_id(i)},
            period,
            "50000",
            [*usual, runs, days],
            week_start="sunday",
        )
    for i in range(1, DAGS, 8):  # 5
        add(f"task-{dag_id(i)}", {"dag_id": dag_id(i), "task_id": "task_3"}, "weekly", "20000", usual)
    for owner in OWNERS[:6]:  # 6
        add(f"owner-{owner}", {"owner": owner}, "monthly", "300000", usual, timezone="America/Los_Angeles")
    for source in SOURCES:  # 5 + 1
        add(f"source-{source}", {"source": source}, "monthly", "500000", usual)
    add("marketing-bigquery", {"team": "marketing", "source": "bigquery"}, "daily", "20000", [*usual, days])
    for n in range(5):  # 5 tags
        add(f"tag-domain_{n}", {"tag": f"domain_{n}"}, "monthly", "400000", usual)
    add("tag-finance", {"tag": "finance"}, "weekly", "100000", usual)
    add("tag-tier_0-ml", {"tag": "tier_0", "team": "ml"}, "monthly", "100000", usual)
    add("tag-tier_1", {"tag": "tier_1"}, "quarterly", "900000", usual)
    for n in range(4):  # 4 labels
        add(f"label-product-p{n}", {"label": {"product": f"p{n}"}}, "monthly", "300000", usual)
    add("label-env-dev", {"label": {"env": "dev"}}, "weekly", "100000", usual)
    assert len(entries) == 50, len(entries)
    import yaml

    return yaml.safe_dump({"budgets": entries}, sort_keys=False)


def scope_kind(budget) -> str:
    keys = {key for key, _ in budget.scope.items()}
    if not keys:
        return "everything"
    if keys & {"tag", "label"}:
        return "tag/label (lines path)"
    return "+".join(sorted(keys))


# ---------------------------------------------------------------- the measurement


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def result_of(item: dict):
    """The CostResult a worker would store for an arriving try."""
    from airflow_cost_provider.capture.identity import TaskTry
    from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
    from airflow_cost_provider.result import CostResult

    priced, unpriced = [], []
    for source, nanos, currency in item["lines"]:
        usage = Usage(source, "m", Decimal(1), "query")
        if nanos is None:
            unpriced.append(Unpriced(usage, "no price"))
        else:
            amount = Decimal(nanos).scaleb(-9)
            priced.append(
                CostLine(
                    usage, amount, currency, "list_price", Price(source, "m", "query", amount, currency, "b")
                )
            )
    return CostResult(
        TaskTry(dag_id(item["i"]), item["task"], item["run_id"], 1, -1, **_who(item["i"])),
        f"{item['i']:04d}{item['task']}{item['run_id']}"[-32:],
        "success",
        item["start"],
        item["end"],
        "w",
        tuple(priced),
        tuple(unpriced),
    )


def load_baseline(path: Path):
    """Another version of budgets/evaluate.py (e.g. `git show main:airflow_cost_provider/budgets/evaluate.py`),
    loaded beside the package's own to be timed against it on the same ledger, try by try."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_evaluate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    if hasattr(module, "_sql_cache_dir"):  # its compiled statements in a folder of its own
        folder = tempfile.mkdtemp(prefix="cost-budget-baseline-")
        module._sql_cache_dir = lambda: folder
    return module


def measure(engine, budgets, arriving: list[dict], tries: int, baseline=None) -> dict:
    """Each arriving try in the order they end: written (not timed), then its budgets matched and
    evaluated (timed), as at the end of a task: evaluate_all() of the matching budgets. With a
    `baseline` module, its evaluate_all() is timed too after each write, in every mode, the two
    alternating which goes first, and both must give the same statuses."""
    from airflow_cost_provider.budgets import evaluate as evaluation
    from airflow_cost_provider.budgets import settled
    from airflow_cost_provider.budgets.evaluate import evaluate
    from airflow_cost_provider.budgets.model import matching_budgets
    from airflow_cost_provider.ledger.store import store

    counts = {"crossed": 0, "anomalous": 0}
    paired: dict[str, tuple[list[float], list[float]]] = {}  # mode -> (this version, the baseline)

    def timed(module, item: dict, now: dt.datetime, fresh) -> tuple[float, list]:
        result = result_of(item)
        sources = {line.usage.source for line in result.lines} | {u.usage.source for u in result.unpriced}
        if fresh is not None:
            fresh(module)
        started = time.perf_counter()
        found = matching_budgets(budgets, result.task_try, sources)
        statuses = module.evaluate_all(
            engine, found, now, run=(result.task_try.dag_id, result.task_try.run_id)
        )
        return (time.perf_counter() - started) * 1000, statuses

    def evaluate_try(item: dict, mode: str, fresh=None, now: dt.datetime | None = None) -> tuple[float, int]:
        """This version's time (and the baseline's, alternating which goes first, in `mode`); `fresh`
        empties what a new task process would not have before each."""
        now = now or item["end"] + dt.timedelta(seconds=1)
        if baseline is None:
            ms, statuses = timed(evaluation, item, now, fresh)
        else:
            mine, theirs = paired.setdefault(mode, ([], []))
            sides = [(evaluation, mine), (baseline, theirs)]
            answers = []
            for module, times in sides if len(mine) % 2 else sides[::-1]:
                ms_, statuses_ = timed(module, item, now, fresh)
                times.append(ms_)
                answers.append((module, statuses_))
            ms, statuses = mine[-1], next(found for module, found in answers if module is evaluation)
            before = next(found for module, found in answers if module is baseline)
            if [_status_key(s) for s in before] != [_status_key(s) for s in statuses]:
                raise SystemExit(f"the baseline's statuses differ at {item['task']} of {item['run_id']}")
        counts["crossed"] += sum(bool(status.crossed) for status in statuses)
        counts["anomalous"] += sum(bool(status.anomalies) for status in statuses)
        return ms, len(statuses)

    def clear_settled(_module) -> None:
        settled.clear()

    def new_process(module) -> None:
        """What a new task process starts without: the settled days and the statements' text in
        memory (the text is read from the cache folder, where the first process compiled and left
        it; its connection is the pool's: the task's write has just opened it)."""
        settled.clear()
        for name in dir(module):
            if callable(cached := getattr(module, name)) and hasattr(cached, "cache_clear"):
                cached.cache_clear()
        engine._compiled_cache.clear()

    chosen = arriving[:tries]
    cold = {}
    store(engine, result_of(chosen[0]))
    # a worker's first evaluation: nothing kept yet; then a new process with the kept rows
    cold["nothing kept (ms)"] = round(
        timed(evaluation, chosen[0], chosen[0]["end"] + dt.timedelta(seconds=1), None)[0], 3
    )
    cold["new process, kept in the ledger (ms)"] = round(
        timed(evaluation, chosen[0], chosen[0]["end"] + dt.timedelta(seconds=1), new_process)[0], 3
    )
    same, fresh, matched = [], [], []
    for number, item in enumerate(chosen[1:]):
        store(engine, result_of(item))
        if number % 2:  # every other try as in a new task process: settled days from the kept rows only
            fresh.append(evaluate_try(item, "new process", clear_settled)[0])
        else:
            ms, count = evaluate_try(item, "same process")
            same.append(ms)
            matched.append(count)
    # a new task process in full: nothing built or compiled in memory either. The budgets of each of the last
    # 40 tries, at the moment the last one ended (no try ends after it), each as the first
    # evaluation of its process
    moment = chosen[-1]["end"] + dt.timedelta(seconds=1)
    built_anew = [evaluate_try(item, "new process in full", new_process, moment)[0] for item in chosen[-40:]]
    # one budget at a time, by scope kind (the last 100 tries again)
    per_kind: dict[str, list[float]] = {}
    with engine.connect() as conn:
        for item in chosen[-100:]:
            result = result_of(item)
            sources = {line.usage.source for line in result.lines} | {u.usage.source for u in result.unpriced}
            now = item["end"] + dt.timedelta(seconds=1)
            for budget in matching_budgets(budgets, result.task_try, sources):
                started = time.perf_counter()
                evaluate(conn, budget, now, run=(result.task_try.dag_id, result.task_try.run_id))
                per_kind.setdefault(scope_kind(budget), []).append((time.perf_counter() - started) * 1000)

    def summary(values: list[float]) -> dict:
        return {
            "median": round(statistics.median(values), 3),
            "p95": round(percentile(values, 0.95), 3),
            "p99": round(percentile(values, 0.99), 3),
            "max": round(max(values), 3),
        }

    compared = {}
    if baseline is not None:
        compared = {
            "against_the_baseline": {
                mode: {
                    "this version": summary(mine),
                    "baseline": summary(theirs),
                    "ratio of medians": round(statistics.median(mine) / statistics.median(theirs), 3),
                }
                for mode, (mine, theirs) in paired.items()
            }
        }
    return {
        **compared,
        "tries": len(same) + len(fresh),
        "per_try_ms": summary(same),
        "per_try_new_process_ms": summary(fresh),
        "per_try_new_process_statements_built_ms": summary(built_anew),
        "first_evaluation": cold,
        "budgets_matched_per_try": {
            "mean": round(statistics.mean(matched), 2),
            "min": min(matched),
            "max": max(matched),
        },
        "per_budget_ms_by_scope": {
            kind: {
                "median": round(statistics.median(t), 3),
                "p95": round(percentile(t, 0.95), 3),
                "evaluations": len(t),
            }
            for kind, t in sorted(per_kind.items())
        },
        "evaluations_with_a_crossed_threshold": counts["crossed"],
        "evaluations_with_an_anomaly": counts["anomalous"],
    }


def _status_key(status) -> tuple:
    """What an evaluation decides: spend, forecast, thresholds crossed and anomalies."""
    return (
        status.budget.name,
        status.spent,
        status.forecast,
        status.unpriced,
        [t.key for t in status.crossed],
        [a.key for a in status.anomalies],
    )


def _who(i: int) -> dict:
    who = attribution(i)
    return {"owner": who["owner"], "team": who["team"], "dag_tags": who["tags"], "labels": who["labels"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", help="an empty PostgreSQL database URL (default: SQLite in a temp dir)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--tries", type=int, default=1000, help="at most this many arriving tries measured (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--analyze", action="store_true", help="ANALYZE SQLite too after the fill")
    parser.add_argument("--keep-temp", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics of the measurement here")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="EVALUATE_PY",
        help="another version of airflow_cost_provider/budgets/evaluate.py, timed against this one on the "
        "same ledger, try by try (e.g. git show main:airflow_cost_provider/budgets/evaluate.py > /tmp/evaluate_main.py)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cost-budget-bench-"))
    os.environ["AIRFLOW_HOME"] = str(tmp)
    for key in [k for k in os.environ if k.startswith("AIRFLOW__COST_PROVIDER__")]:
        del os.environ[key]
    import sqlalchemy as sa

    from airflow_cost_provider.budgets.model import parse_budgets
    from airflow_cost_provider.ledger.store import get_engine, normalize_url, safe_url

    url = normalize_url(args.ledger) if args.ledger else f"sqlite:///{tmp / 'ledger.db'}"
    try:
        engine = get_engine(url)
        with engine.connect() as conn:
            existing = conn.execute(sa.text("SELECT count(*) FROM cost_lines")).scalar()
        if existing:
            print(f"{safe_url(url)} holds {existing:,} lines: give an empty database", file=sys.stderr)
            return 2
        print(f"filling {safe_url(url)} with {args.lines:,} lines ...", flush=True)
        filled = fill(engine, args.lines, args.seed, analyze=args.analyze or engine.dialect.name != "sqlite")
        print(f"  {filled}", flush=True)

        baseline = load_baseline(args.baseline) if args.baseline else None
        started = time.perf_counter()
        budgets = parse_budgets(budgets_yaml(), "benchmark budgets")
        load_ms = (time.perf_counter() - started) * 1000
        if args.profile:
            import cProfile

            with cProfile.Profile() as profile:
                result = measure(engine, budgets, Estate.arriving, args.tries, baseline)
            profile.dump_stats(args.profile)
        else:
            result = measure(engine, budgets, Estate.arriving, args.tries, baseline)
        result.update(
            {
                "ledger": engine.dialect.name,
                "fill": filled,
                "budgets": len(budgets),
                "budgets_file_parse_ms": round(load_ms, 2),
                "analyzed": args.analyze or engine.dialect.name != "sqlite",
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            }
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
        per_try = result["per_try_ms"]
        print(
            f"{result['ledger']}: {result['tries']} task tries, {result['budgets_matched_per_try']['mean']} of "
            f"{len(budgets)} budgets matched per try (min {result['budgets_matched_per_try']['min']}, max "
            f"{result['budgets_matched_per_try']['max']})"
        )
        print(
            f"  budget evaluation per try: median {per_try['median']} ms, p95 {per_try['p95']} ms, p99 "
            f"{per_try['p99']} ms, max {per_try['max']} ms (target: under 5 ms)"
        )
        if baseline is not None:
            print(f"  against the baseline {args.baseline}, the same tries, alternating which goes first:")
            for mode, numbers in result["against_the_baseline"].items():
                mine, theirs = numbers["this version"], numbers["baseline"]
                print(
                    f"    {mode}: median {mine['median']} vs {theirs['median']} ms ({numbers['ratio of medians']}), "
                    f"p95 {mine['p95']} vs {theirs['p95']} ms"
                )
        fresh = result["per_try_new_process_ms"]
        print(
            f"  the same in a new task process each time (settled days read from the ledger's kept rows): median "
            f"{fresh['median']} ms, p95 {fresh['p95']} ms, p99 {fresh['p99']} ms"
        )
        built = result["per_try_new_process_statements_built_ms"]
        print(
            f"  a new task process in full, the statement's text from the cache folder (the last 40 tries' budgets): "
            f"median {built['median']} ms, p95 {built['p95']} ms"
        )
        first = result["first_evaluation"]
        print(
            f"  a worker's first evaluation: {first['nothing kept (ms)']} ms; a new task process's, with "
            f"the settled days kept in the ledger: {first['new process, kept in the ledger (ms)']} ms"
        )
        for kind, numbers in result["per_budget_ms_by_scope"].items():
            print(f"  one budget, {kind}: median {numbers['median']} ms, p95 {numbers['p95']} ms")
        print(f"  parsing the 50 budgets: {result['budgets_file_parse_ms']} ms (once per process)")
        print(f"  written to {RESULTS.relative_to(REPO)}")
    finally:
        from airflow_cost_provider.ledger.store import dispose_engines

        dispose_engines()
        if args.keep_temp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
