"""`airflow-cost prune` on a real ledger (SQLite and PostgreSQL): the usage detail of old tries goes,
batch by batch, each batch one transaction; the daily totals and so every budget's spend stay; what
budgets read from lines is refused or kept."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.budgets.evaluate import evaluate
from airflow_cost_provider.budgets.model import parse_budgets
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.prune import BatchFailed, PruneRefused, prune
from airflow_cost_provider.ledger.schema import (
    billing_api_cache,
    budget_settled,
    daily_totals,
    lines,
    prunes,
    task_runs,
    usage,
)
from tests.unit.budgets.conftest import UTC, cost, keep, line, unpriced

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
NOV = dt.datetime(2026, 11, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def budgets(text: str):
    return parse_budgets(text, "budgets.yaml")


MONTHLY = "budgets:\n  - {name: b, period: monthly, amount: '100', currency: USD, forecast_days: 7}\n"


@pytest.fixture
def engine(ledger_url):
    from airflow_cost_provider.budgets import settled

    settled.clear()
    engine = store.get_engine(ledger_url)
    yield engine
    settled.clear()
    store.dispose_engines()


def fill(engine, days: int = 6, dag: str = "daily_sales") -> None:
    """One try a day in November (ending at 06:00 UTC), each with two priced lines and an unpriced one."""
    keep(
        engine,
        *(
            cost(dag, "load", f"r{n}", NOV + n * DAY + dt.timedelta(hours=6),
                 [line("bigquery", f"{n}.25"), line("airflow_worker", "0.000000123")], missing=[unpriced()])
            for n in range(days)
        ),
    )  # fmt: skip


def rows(engine, table) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(table))]


def detail_by_try(engine) -> dict[str, tuple[int, int]]:
    """run_id -> (lines, usage rows) of each try."""
    with engine.connect() as conn:
        found = {}
        for run in conn.execute(sa.select(task_runs.c.id, task_runs.c.run_id)):
            count = [
                conn.execute(sa.select(sa.func.count()).where(table.c.task_run_id == run.id)).scalar_one()
                for table in (lines, usage)
            ]
            found[run.run_id] = tuple(count)
        return found


def sorted_totals(engine) -> list[dict]:
    return sorted(rows(engine, daily_totals), key=lambda r: (str(r["day"]), r["source"], r["currency"]))


def forget_settled_spend(engine) -> None:
    from airflow_cost_provider.budgets import settled

    settled.clear()
    with engine.begin() as conn:
        conn.execute(sa.delete(budget_settled))


def test_detail_goes_in_batches_and_daily_totals_and_budgets_stay(engine):
    fill(engine)
    (budget,) = budgets(MONTHLY)
    november = (NOV, NOV + 30 * DAY)
    before_prune = evaluate(engine, budget, NOW, bounds=november)
    totals = sorted_totals(engine)

    outcome = prune(engine, dt.date(2026, 11, 5), budgets=[budget], now=NOW, batch_size=2)

    assert [(b.number, b.tries, b.lines, b.usage_rows) for b in outcome.batches] == [
        (1, 2, 6, 6),
        (2, 2, 6, 6),
    ]
    assert detail_by_try(engine) == {
        "r0": (0, 0), "r1": (0, 0), "r2": (0, 0), "r3": (0, 0), "r4": (3, 3), "r5": (3, 3),
    }  # fmt: skip
    assert len(rows(engine, task_runs)) == 6  # the tries themselves stay
    assert sorted_totals(engine) == totals
    forget_settled_spend(engine)  # read the ledger again, not what the first evaluation kept
    after_prune = evaluate(engine, budget, NOW, bounds=november)
    assert (after_prune.spent, after_prune.unpriced) == (before_prune.spent, before_prune.unpriced)
    assert after_prune.spent_amount == sum(Decimal(n) + Decimal("0.250000123") for n in range(6))
    (record,) = rows(engine, prunes)
    assert (record["before_day"], record["batches"], record["tries"], record["lines"]) == (
        dt.date(2026, 11, 5),
        2,
        4,
        12,
    )
    assert record["finished_at"] is not None


def test_a_dry_run_counts_what_a_run_then_deletes_and_a_second_run_finds_nothing(engine):
    fill(engine)
    detail = detail_by_try(engine)
    dry = prune(engine, dt.date(2026, 11, 4), now=NOW, batch_size=2, dry_run=True)
    assert (dry.tries, dry.lines, dry.usage_rows, len(dry.batches)) == (3, 9, 9, 2)
    assert detail_by_try(engine) == detail and rows(engine, prunes) == []
    done = prune(engine, dt.date(2026, 11, 4), now=NOW, batch_size=2)
    assert (done.tries, done.lines, done.usage_rows) == (dry.tries, dry.lines, dry.usage_rows)
    again = prune(engine, dt.date(2026, 11, 4), now=NOW, batch_size=2)
    assert (again.tries, again.batches) == (0, [])


def test_dates_that_budgets_read_or_in_the_future_are_refused(engine):
    fill(engine, days=1)
    with pytest.raises(
        PruneRefused,
        match=r"budget 'b' reads \(its current period starts 2026-12-01.*use --before 2026-12-01",
    ):
        prune(engine, dt.date(2026, 12, 2), budgets=budgets(MONTHLY), now=NOW, batch_size=10)
    four_weeks = MONTHLY.replace("forecast_days: 7", "forecast_days: 28")
    with pytest.raises(PruneRefused, match=r"last 28 days of history\): use --before 2026-11-22 or earlier"):
        prune(engine, dt.date(2026, 11, 23), budgets=budgets(four_weeks), now=NOW, batch_size=10)
    berlin = (
        "budgets:\n  - {name: berlin, period: weekly, timezone: Europe/Berlin, amount: '1', currency: USD,"
        " forecast_days: 7}\n"
    )
    # its week starts at local midnight on Monday 14 December: 23:00 UTC on the 13th
    with pytest.raises(PruneRefused, match=r"budget 'berlin'.*use --before 2026-12-13 or earlier"):
        prune(engine, dt.date(2026, 12, 14), budgets=budgets(berlin), now=NOW, batch_size=10)
    with pytest.raises(PruneRefused, match="in the future"):
        prune(engine, dt.date(2026, 12, 21), now=NOW, batch_size=10)
    assert rows(engine, prunes) == [] and detail_by_try(engine) == {"r0": (3, 3)}
    assert prune(engine, dt.date(2026, 12, 1), budgets=budgets(MONTHLY), now=NOW, batch_size=10).tries == 1


def test_the_latest_runs_a_run_rule_compares_are_kept(engine):
    fill(engine, days=8)
    fill(engine, days=2, dag="other")
    with_rule = budgets(
        MONTHLY.replace("}\n", ", thresholds: [anomaly: {run_cost_vs_median: 3, last_runs: 3}]}\n")
    )
    outcome = prune(engine, dt.date(2026, 12, 1), budgets=with_rule, now=NOW, batch_size=10)
    # each DAG keeps its last 3 + 2 runs
    assert outcome.tries == 3 and outcome.kept_for_run_rules == 7
    with engine.connect() as conn:
        kept = conn.execute(
            sa.select(task_runs.c.dag_id, task_runs.c.run_id)
            .where(sa.exists().where(usage.c.task_run_id == task_runs.c.id))
            .order_by(task_runs.c.dag_id, task_runs.c.run_id)
        ).all()
    assert [tuple(row) for row in kept] == [("daily_sales", f"r{n}") for n in range(3, 8)] + [
        ("other", "r0"),
        ("other", "r1"),
    ]


def _stop_deleting_usage_of(engine, task_run_id: int) -> None:
    """A trigger that makes the database refuse to delete one try's usage: a batch failing midway,
    after it deleted the lines of its tries."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER stop_prune BEFORE DELETE ON cost_usage WHEN OLD.task_run_id = {task_run_id} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION stop_prune() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER stop_prune BEFORE DELETE ON cost_usage FOR EACH ROW "
                f"WHEN (OLD.task_run_id = {task_run_id}) EXECUTE FUNCTION stop_prune()"
            )


def test_a_failing_batch_leaves_nothing_and_the_batches_before_it_stay_done(engine):
    fill(engine)
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(task_runs.c.run_id, task_runs.c.id)).all())
    _stop_deleting_usage_of(engine, ids["r3"])  # the second try of the second batch
    totals = sorted_totals(engine)
    with pytest.raises(BatchFailed, match="batch 2 failed: .*refused by the test") as failed:
        prune(engine, dt.date(2026, 11, 6), now=NOW, batch_size=2)
    assert [b.tries for b in failed.value.outcome.batches] == [2]
    assert detail_by_try(engine) == {
        "r0": (0, 0), "r1": (0, 0), "r2": (3, 3), "r3": (3, 3), "r4": (3, 3), "r5": (3, 3),
    }  # fmt: skip
    (record,) = rows(engine, prunes)
    assert (record["batches"], record["tries"], record["finished_at"]) == (1, 2, None)
    assert sorted_totals(engine) == totals


def test_stale_settled_spend_and_old_billing_responses_go(engine):
    fresh, stale = NOW - dt.timedelta(days=6), NOW - dt.timedelta(days=8)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(budget_settled),
            [{"cache_key": "fresh", "payload": "{}", "updated_at": fresh}, {"cache_key": "stale", "payload": "{}", "updated_at": stale}],
        )  # fmt: skip
        conn.execute(
            sa.insert(billing_api_cache),
            [
                {"request_key": "fresh", "source": "aws", "response": {}, "fetched_at": fresh},
                {"request_key": "stale", "source": "aws", "response": {}, "fetched_at": stale},
            ],
        )
    outcome = prune(engine, dt.date(2026, 11, 1), now=NOW, batch_size=10)
    assert (outcome.settled_rows, outcome.cache_rows) == (1, 1)
    assert [r["cache_key"] for r in rows(engine, budget_settled)] == ["fresh"]
    assert [r["request_key"] for r in rows(engine, billing_api_cache)] == ["fresh"]


def test_the_command_prints_each_batch_and_reports_name_the_pruned_tries(engine, ledger_url, capsys):
    fill(engine)
    assert (
        main(["prune", "--before", "2026-11-04", "--batch", "2", "--ledger", ledger_url, "-o", "json"]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert [row["tries"] for row in document["rows"]] == [2, 1]
    assert (document["tries"], document["lines"], document["usage_rows"]) == (3, 9, 9)

    # by day, whole days come from the daily totals, which keep the pruned tries' costs
    argv = ["report", "--by", "day", "--since", "2026-11-01", "--until", "2026-11-07", "--ledger", ledger_url]
    assert main([*argv, "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "pruned" not in report
    assert [(row["day"], row["amount"], row["lines"]) for row in report["rows"]] == [
        (f"2026-11-0{n + 1}", f"{n}.250000123", 3) for n in range(6)
    ]
    # by tag, lines are read: the pruned tries are not in the rows, and the report says so
    argv[2] = "tag"
    assert main([*argv, "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pruned"] == {"before": "2026-11-04", "tries": 3}
    assert [row["lines"] for row in report["rows"]] == [9]
    assert main(argv) == 0
    assert (
        "3 task tries of this period ended before 2026-11-04 and had their usage detail pruned"
        in " ".join(capsys.readouterr().out.split())
    )
    assert main([*argv[:4], "2026-11-05", *argv[5:], "-o", "json"]) == 0
    assert "pruned" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("before", "message"),
    [
        ("2026-13-01", "--before '2026-13-01' is not a date (YYYY-MM-DD)"),
        ("2999-01-01", "--before 2999-01-01 is in the future"),
    ],
)
def test_bad_dates(engine, ledger_url, capsys, before, message):
    """A date that does not parse, or in the future: one line on stderr, exit 2, nothing pruned."""
    fill(engine, days=1)
    assert main(["prune", "--before", before, "--ledger", ledger_url]) == 2
    assert message in capsys.readouterr().err
    assert detail_by_try(engine) == {"r0": (3, 3)}
