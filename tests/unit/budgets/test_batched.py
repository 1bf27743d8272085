"""A task try's budgets in one statement: each budget of every kind of scope spends exactly what its
scope's lines add up to, on SQLite, PostgreSQL and MariaDB, before and after its settled days are
kept."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.budgets import settled
from airflow_cost_provider.budgets.evaluate import evaluate, evaluate_all
from airflow_cost_provider.budgets.model import Budget, parse_budgets
from airflow_cost_provider.ledger.schema import budget_settled
from tests.unit.budgets.conftest import UTC, cost, keep, line, unpriced

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
SCOPES = [
    "{}",
    "{team: a}",
    "{team: b}",
    "{owner: bob}",
    "{dag_id: d1}",
    "{dag_id: d1, task_id: t2}",
    "{source: bigquery}",
    "{team: a, source: snowflake}",
    "{tag: x}",
    "{tag: y}",
    "{label: {env: prod}}",
    "{tag: x, team: b}",
    "{label: {env: dev}, source: bigquery}",
    "{tag: y, owner: ana}",
]
BUDGETS = "budgets:\n" + "".join(
    f"  - {{name: b{n}-{period}, scope: {scope}, period: {period}, amount: '1000', currency: USD}}\n"
    for n, scope in enumerate(SCOPES)
    for period in ("daily", "monthly")
)


def _estate(seed: int = 7) -> list:
    """60 tries over the last five days and today (a dozen in its last quarter of an hour, not settled
    yet), of three DAGs, two owners, two teams or none, tags, labels, two sources, two currencies and
    unpriced usage."""
    rng = random.Random(seed)
    results = []
    for number in range(60):
        if number < 12:
            end = NOW - dt.timedelta(minutes=rng.randint(1, 14))
        else:
            end = NOW - dt.timedelta(minutes=rng.randint(16, 5 * 24 * 60))
        lines = [
            line(
                rng.choice(["bigquery", "snowflake"]),
                f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
                currency,
            )
            for currency in rng.sample(["USD", "USD", "EUR"], rng.randint(1, 3))
        ]
        results.append(
            cost(
                rng.choice(["d1", "d2", "d3"]),
                rng.choice(["t1", "t2"]),
                f"r{number}",
                end,
                lines,
                missing=[unpriced(rng.choice(["bigquery", "snowflake"]))] if number % 7 == 0 else [],
                owner=rng.choice(["ana", "bob"]),
                team=rng.choice(["a", "b", None]),
                tags=tuple(sorted(rng.sample(["x", "y"], rng.randint(0, 2)))),
                labels=(("env", rng.choice(["prod", "dev"])),) if number % 3 else (),
            )
        )
    return results


def _expected(budget: Budget, results: list) -> tuple[dict[str, Decimal], int]:
    """What the scope's lines in the period add up to, per currency, and its unpriced lines, counted
    from the tries themselves."""
    start, end = budget.bounds(NOW)
    scope = budget.scope
    spent: dict[str, Decimal] = {budget.currency: Decimal(0)}
    unpriced_lines = 0
    for result in results:
        tt = result.task_try
        if not start <= result.end_time < end:
            continue
        if any(
            getattr(scope, key) not in (None, getattr(tt, key))
            for key in ("dag_id", "task_id", "owner", "team")
        ):
            continue
        if scope.tag is not None and scope.tag not in tt.dag_tags:
            continue
        if scope.label is not None and scope.label not in tt.labels:
            continue
        for item in result.lines:
            if scope.source in (None, item.usage.source):
                spent[item.currency] = spent.get(item.currency, Decimal(0)) + item.amount
        unpriced_lines += sum(scope.source in (None, item.usage.source) for item in result.unpriced)
    return {currency: amount for currency, amount in sorted(spent.items())}, unpriced_lines


def _statements(engine, call) -> list[str]:
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()).upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return sent


def _check(engine) -> None:
    results = _estate()
    keep(engine, *results)
    budgets = parse_budgets(BUDGETS, "b.yaml")
    run = (results[0].task_try.dag_id, results[0].task_try.run_id)
    first = evaluate_all(
        engine, budgets, NOW, run=run, contributors=False
    )  # the settled days and hours read and kept
    found: list = []
    (statement,) = _statements(
        engine, lambda: found.extend(evaluate_all(engine, budgets, NOW, run=run, contributors=False))
    )
    assert "UNION ALL" in statement  # today's spend of the fourteen scopes, in one round trip
    assert found == first
    for status in found:
        assert (status.spent, status.unpriced) == _expected(status.budget, results), status.budget.scope
    # a new task process: nothing in memory, the settled days kept in the ledger and read with the
    # statement, still one round trip
    settled.clear()
    again: list = []
    (statement,) = _statements(
        engine, lambda: again.extend(evaluate_all(engine, budgets, NOW, run=run, contributors=False))
    )
    assert "FROM COST_BUDGET_SETTLED" in statement
    assert again == found
    settled.clear()  # and each alone, nothing kept
    with engine.begin() as conn:
        conn.execute(sa.delete(budget_settled))
    assert [evaluate(engine, budget, NOW, run=run, contributors=False) for budget in budgets] == found


def test_every_scope_spends_what_its_lines_add_up_to(engine):
    _check(engine)


def test_every_scope_spends_what_its_lines_add_up_to_on_mariadb(mariadb_server):
    from airflow_cost_provider.ledger import store
    from tests.unit.test_ledger import _fresh_mariadb_ledger

    engine = store.get_engine(_fresh_mariadb_ledger(mariadb_server, "ledger_budget_batched"))
    try:
        _check(engine)
    finally:
        store.dispose_engines()


def test_no_garbage_collection_while_a_task_end_evaluates(engine, monkeypatch):
    """Collections are paused for the evaluation and on again after it, even when it fails; a pause
    that was already there (another thread's) stays."""
    import gc

    from airflow_cost_provider.budgets import evaluate as evaluation

    seen = []
    original = evaluation._sums_many

    def recording(*args, **kwargs):
        seen.append(gc.isenabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_sums_many", recording)
    budgets = parse_budgets(BUDGETS, "b.yaml")
    assert gc.isenabled()
    evaluate_all(engine, budgets, NOW)
    assert seen and not any(seen) and gc.isenabled()

    def failing(*args, **kwargs):
        raise RuntimeError("the ledger went away")

    monkeypatch.setattr(evaluation, "_sums_many", failing)
    with pytest.raises(RuntimeError):
        evaluate_all(engine, budgets, NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        monkeypatch.setattr(evaluation, "_sums_many", recording)
        evaluate_all(engine, budgets, NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()
