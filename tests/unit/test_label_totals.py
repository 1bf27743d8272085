"""cost_daily_label_totals, the daily sums per tag and label that tag and label budgets read, equal
the same sums taken from lines JOIN tries JOIN labels: on random ledgers whose tries carry tags and
labels (two currencies, unpriced lines, captures replaced by others with other lines and labels, lines
reconciled, reconciled again after a restated day, reconciled tries captured again), after a ledger
of 0010 is migrated, and on MariaDB's update-then-insert path."""

from __future__ import annotations

import datetime as dt
import random

import pytest
import sqlalchemy as sa

from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import daily_label_totals, lines, task_run_labels, task_runs
from tests.unit.test_ledger import _fresh_mariadb_ledger, attributed, make_result, migrate_to
from tests.unit.test_report_totals import FIRST, Statements, _fill, _reconciled_tries, no_rules  # noqa: F401

TAGS = ("pii", "nightly", "team:ads")
LABELS = {"env": ("prod", "dev"), "product": ("crm", "erp")}


def _labelled(rng: random.Random, result):
    """The capture with some of the tags and labels (possibly none)."""
    tags = tuple(sorted(rng.sample(TAGS, rng.choice((0, 1, 1, 2)))))
    labels = tuple((key, rng.choice(values)) for key, values in sorted(LABELS.items()) if rng.random() < 0.6)
    return attributed(result, dag_tags=tags, labels=labels)


def expected_label_totals(engine) -> dict[tuple, tuple[int, int, int]]:
    """What the table must hold, from lines JOIN tries JOIN labels: each line at its estimate under
    its currency, and a reconciled line's reconciled - estimate under its reconciled currency, once for
    each tag and label of its try."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(
                task_run_labels.c.kind,
                task_run_labels.c.key,
                task_run_labels.c.value,
                task_runs.c.end_time,
                lines.c.source,
                lines.c.currency,
                lines.c.amount_nanos,
                lines.c.reconciled_nanos,
                lines.c.reconciled_currency,
            ).select_from(
                lines.join(task_runs, task_runs.c.id == lines.c.task_run_id).join(
                    task_run_labels, task_run_labels.c.task_run_id == task_runs.c.id
                )
            )
        ).all()
    sums: dict[tuple, list[int]] = {}
    for kind, key, value, end, source, currency, nanos, reconciled, reconciled_currency in found:
        label = (kind, key, value, end.date(), source)
        own = sums.setdefault((*label, currency or ""), [0, 0, 0])
        own[0] += nanos or 0
        own[1] += 1
        own[2] += nanos is None
        if reconciled is not None:
            sums.setdefault((*label, reconciled_currency), [0, 0, 0])[0] += reconciled - (nanos or 0)
    return {key: tuple(values) for key, values in sums.items() if values[0] or values[1]}


def kept_label_totals(engine) -> dict[tuple, tuple[int, int, int]]:
    with engine.connect() as conn:
        return {
            tuple(row[:6]): (row.amount_nanos, row.lines, row.unpriced)
            for row in conn.execute(sa.select(daily_label_totals))
        }


@pytest.mark.parametrize("seed", [3, 2027])
def test_label_totals_equal_lines(ledger_url, no_rules, seed):  # noqa: F811
    engine = _fill(ledger_url, random.Random(seed), tries=60, labelled=_labelled)
    kept = kept_label_totals(engine)
    assert kept == expected_label_totals(engine)
    # the ledger holds what the comparison is meant to cover
    assert {key[0] for key in kept} == {"tag", "label"}
    assert {key[5] for key in kept} >= {"USD", "EUR", ""}
    assert any(values[2] for values in kept.values())  # unpriced lines
    with engine.connect() as conn:
        reconciled = conn.execute(
            sa.select(sa.func.count())
            .select_from(lines.join(task_run_labels, task_run_labels.c.task_run_id == lines.c.task_run_id))
            .where(lines.c.reconciled_nanos.is_not(None))
        ).scalar()
    assert reconciled, "no labelled line was reconciled: the test would not test the shifts"
    assert _reconciled_tries(engine)


def test_replaced_capture_takes_old_labels_out(ledger_url):
    engine = store.get_engine(ledger_url)
    day = make_result().end_time.date()
    first = attributed(
        make_result("c1", amounts=("1", "2"), unpriced=2), dag_tags=("pii",), labels=(("env", "prod"),)
    )
    other = attributed(make_result("o1", task_id="other", amounts=("5",), unpriced=0), dag_tags=("pii",))
    assert store.store(engine, first) and store.store(engine, other)
    assert kept_label_totals(engine) == {
        ("tag", "pii", "", day, "athena", "USD"): (8 * 10**9, 3, 0),
        ("tag", "pii", "", day, "postgres", ""): (0, 2, 2),
        ("label", "env", "prod", day, "athena", "USD"): (3 * 10**9, 2, 0),
        ("label", "env", "prod", day, "postgres", ""): (0, 2, 2),
    }
    # fewer lines, other labels, the next day: nothing of the first capture stays behind
    moved = make_result("c2", amounts=("0.5",), unpriced=0, end=FIRST + dt.timedelta(days=40))
    assert store.store(engine, attributed(moved, labels=(("env", "dev"),)))
    later = moved.end_time.date()
    assert kept_label_totals(engine) == {
        ("tag", "pii", "", day, "athena", "USD"): (5 * 10**9, 1, 0),
        ("label", "env", "dev", later, "athena", "USD"): (500_000_000, 1, 0),
    }
    # and a capture without labels takes the try out of every label
    assert store.store(engine, make_result("c3", amounts=("7",), end=moved.end_time))
    assert kept_label_totals(engine) == {("tag", "pii", "", day, "athena", "USD"): (5 * 10**9, 1, 0)}
    assert kept_label_totals(engine) == expected_label_totals(engine)


class LabelStatements:
    """The statements on cost_daily_label_totals the database received while active: those the server
    logged on PostgreSQL (the writer sends some through the driver alone), else SQLAlchemy's."""

    def __init__(self, engine, request) -> None:
        self.server = (
            request.getfixturevalue("postgres_server") if engine.dialect.name == "postgresql" else None
        )
        self.statements = Statements(engine)

    def __enter__(self):
        self.logged = len(self.server.statements()) if self.server else 0
        self.statements.__enter__()
        return self

    def __exit__(self, *exc):
        self.statements.__exit__(*exc)
        sent = self.server.statements()[self.logged :] if self.server else self.statements.sent
        self.sent = [statement for statement in sent if "cost_daily_label_totals" in statement]


def test_unlabelled_try_writes_nothing_labelled_one_statement(ledger_url, request):
    engine = store.get_engine(ledger_url)
    with LabelStatements(engine, request) as plain:
        assert store.store(engine, make_result("c1", amounts=("1", "2"), unpriced=1))
    assert plain.sent == []
    assert kept_label_totals(engine) == {}
    labelled = attributed(
        make_result("c2", task_id="other", amounts=("1", "2"), unpriced=1),
        dag_tags=("pii", "nightly"),
        labels=(("env", "prod"), ("product", "crm")),
    )
    with LabelStatements(engine, request) as tagged:
        assert store.store(engine, labelled)
    # the changes of all four labels, both sources, in one statement
    assert len(tagged.sent) == 1, tagged.sent
    assert len(kept_label_totals(engine)) == 8
    assert kept_label_totals(engine) == expected_label_totals(engine)


def test_0010_ledger_filled_as_writer_keeps_it(ledger_url, no_rules):  # noqa: F811
    engine = _fill(ledger_url, random.Random(19), tries=40, labelled=_labelled)
    kept = kept_label_totals(engine)
    assert kept == expected_label_totals(engine) and kept
    store.dispose_engines()
    migrate_to(ledger_url, "0010", down=True)
    engine = sa.create_engine(ledger_url)
    assert "cost_daily_label_totals" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    engine = store.get_engine(ledger_url)  # migrates to head, filling the table from the lines
    assert store.schema_revision(engine) == "0011"
    assert kept_label_totals(engine) == kept


def test_mariadb_keeps_label_totals_and_fills_them_when_migrating(mariadb_server, no_rules):  # noqa: F811
    url = _fresh_mariadb_ledger(mariadb_server, "ledger_label_totals")
    try:
        engine = _fill(url, random.Random(23), tries=30, labelled=_labelled)
        kept = kept_label_totals(engine)
        assert kept == expected_label_totals(engine) and kept
        assert _reconciled_tries(engine)
        store.dispose_engines()
        migrate_to(url, "0010", down=True)
        engine = store.get_engine(url)
        assert kept_label_totals(engine) == kept
    finally:
        store.dispose_engines()
