"""Writing a reconciliation: one transaction that replaces the window's pools and shares.

Re-running a window replaces what an earlier run wrote for it (restated billing days included), so
the result depends only on the bill and the ledger, never on how often it ran.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import sqlalchemy as sa

from airflow_cost_provider.reconcile import corrections
from airflow_cost_provider.reconcile.engine import LINE_MARGIN, Reconciliation, stream_into

_INT, _TEXT = pa.int64(), pa.string()
_FETCH = 100_000  # rows per round trip from DuckDB: memory stays bounded
_DAILY_BATCH = 10_000  # daily total keys per statement

_POOL_TABLE_COLUMNS = (
    "day",
    "usage_hour",
    "provider",
    "billing_account",
    "service",
    "currency",
    "pool",
    "pool_kind",
    "source",
    "mode",
    "basis",
    "billed_nanos",
    "attributed_nanos",
    "unattributed_nanos",
    "estimated_nanos",
    "lines",
    "used_share",
    "billing_cost_ids",
    "reconciled_at",
)


def _share_text(share: float | None) -> str | None:
    if share is None:
        return None
    return format(Decimal(repr(share)).quantize(Decimal("1e-9")).normalize(), "f")


def _executemany(conn, statement: str, rows: list[tuple]) -> None:
    """Rows through the driver's executemany, `?` marks in `statement`: a million shares go in
    seconds, where per-row SQLAlchemy processing would take minutes."""
    if not rows:
        return
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.paramstyle != "qmark":
            statement = statement.replace("?", "%s")
        if conn.dialect.driver == "psycopg2" and statement.startswith("INSERT"):
            from psycopg2.extras import execute_values

            head, marks = statement.split(" VALUES ")
            execute_values(cursor, f"{head} VALUES %s", rows, page_size=5000)
        elif conn.dialect.driver == "psycopg2":
            from psycopg2.extras import execute_batch

            execute_batch(cursor, statement, rows, page_size=5000)
        else:
            cursor.executemany(statement, rows)
    finally:
        cursor.close()


def write(engine: sa.Engine, result: Reconciliation, now: dt.datetime | None = None) -> None:
    from airflow_cost_provider.ledger.schema import (
        budget_settled,
        line_reconciliations,
        lines,
        reconciliations,
    )

    now = now or dt.datetime.now(dt.timezone.utc)
    con = result.con
    window = result.window
    in_window = sa.and_(reconciliations.c.day >= window.since, reconciliations.c.day < window.until)
    # a try's or a platform run's pools can hold lines of other days: those just outside the window
    # keep their shares
    near = sa.and_(
        sa.or_(reconciliations.c.day < window.since, reconciliations.c.day >= window.until),
        reconciliations.c.day >= window.since - LINE_MARGIN,
        reconciliations.c.day < window.until + LINE_MARGIN,
        reconciliations.c.pool_kind.in_(("try", "run")),
    )
    with engine.begin() as conn:
        earlier = sa.select(reconciliations.c.id).where(in_window)
        # budgets read cost_daily_totals: take out what the lines' earlier reconciled amounts put in
        _shift_daily_totals(conn, sa.or_(in_window, near), -1)
        conn.execute(
            sa.update(lines)
            .where(
                lines.c.id.in_(
                    sa.select(line_reconciliations.c.line_id).where(
                        line_reconciliations.c.reconciliation_id.in_(earlier)
                    )
                )
            )
            .values(
                reconciled_nanos=None,
                reconciled_currency=None,
                status=sa.case((lines.c.amount_nanos.is_(None), "unpriced"), else_="estimated"),
            )
        )
        conn.execute(
            sa.delete(line_reconciliations).where(line_reconciliations.c.reconciliation_id.in_(earlier))
        )
        conn.execute(sa.delete(reconciliations).where(in_window))
        _insert_pools(conn, con, now)
        # the ids the ledger gave the pools, joined back in DuckDB: no per-pool dictionary in Python
        stream_into(
            con,
            conn,
            sa.select(
                reconciliations.c.id,
                sa.type_coerce(reconciliations.c.day, sa.String).label("day"),
                reconciliations.c.usage_hour,
                reconciliations.c.provider,
                reconciliations.c.billing_account,
                reconciliations.c.currency,
                reconciliations.c.pool_kind,
                reconciliations.c.pool,
            ).where(in_window),
            "written",
            {
                "id": _INT,
                "day": None,
                "usage_hour": _INT,
                "provider": _TEXT,
                "billing_account": _TEXT,
                "currency": _TEXT,
                "pool_kind": _TEXT,
                "pool": _TEXT,
            },
        )
        links = con.execute(
            """
SELECT l.line_id, w.id, l.amount_nanos::BIGINT
FROM line_results AS l JOIN pool_results AS p USING (pool_id)
JOIN written AS w ON CAST(w.day AS DATE) = p.day AND w.usage_hour IS NOT DISTINCT FROM p.usage_hour
  AND w.provider = p.provider
  AND w.billing_account = p.billing_account AND w.currency = p.currency AND w.pool_kind = p.pool_kind
  AND w.pool = COALESCE(p.pool, '')
"""
        )
        while batch := links.fetchmany(_FETCH):
            _executemany(
                conn,
                "INSERT INTO cost_line_reconciliations (line_id, reconciliation_id, amount_nanos) VALUES (?, ?, ?)",
                batch,
            )
        stream_into(
            con,
            conn,
            sa.select(
                line_reconciliations.c.line_id,
                line_reconciliations.c.amount_nanos,
                reconciliations.c.currency,
            )
            .join(reconciliations)
            .where(near),
            "outside_shares",
            {"line_id": _INT, "amount_nanos": _INT, "currency": _TEXT},
        )
        totals = con.execute(
            """
SELECT sum(amount_nanos)::BIGINT, min(currency), line_id FROM (
  SELECT l.line_id, l.amount_nanos, p.currency FROM line_results AS l JOIN pool_results AS p USING (pool_id)
  UNION ALL SELECT line_id, amount_nanos, currency FROM outside_shares
) GROUP BY line_id
"""
        )
        while batch := totals.fetchmany(_FETCH):
            _executemany(
                conn,
                "UPDATE cost_lines SET reconciled_nanos = ?, reconciled_currency = ?, status = 'reconciled' "
                "WHERE id = ?",
                batch,
            )
        _shift_daily_totals(conn, sa.or_(in_window, near), +1)
        # the spend budgets keep of settled days changed with it: read again at their next evaluation
        conn.execute(sa.delete(budget_settled))
        # what the estimates were off by, from the latest reconciled days, for correct_estimates
        latest = conn.execute(sa.select(sa.func.max(reconciliations.c.day))).scalar()
        if latest is not None:
            factors = corrections.compute(conn, _day(latest) + dt.timedelta(days=1))
            corrections.replace_all(conn, factors, now)


def _shift_daily_totals(conn, pools, sign: int) -> None:
    """Add (sign +1) or take out (-1) what the reconciled lines the pools hold put in their tries'
    daily totals: for budgets, the difference reconciled - estimated (a budget then counts a
    reconciled line at its reconciled amount, every other line at its estimate; an unpriced line adds
    all of its reconciled amount), under the reconciled currency; for reports, the reconciled amounts
    and how many lines have one, under the lines' own currency."""
    from airflow_cost_provider.ledger.schema import line_reconciliations, lines, reconciliations, task_runs
    from airflow_cost_provider.ledger.store import write_daily_changes

    in_pools = sa.select(line_reconciliations.c.line_id).join(reconciliations).where(pools)
    difference = sa.func.sum(lines.c.reconciled_nanos - sa.func.coalesce(lines.c.amount_nanos, 0))
    attribution = (
        sa.func.date(task_runs.c.end_time),
        task_runs.c.dag_id,
        task_runs.c.task_id,
        sa.func.coalesce(task_runs.c.owner, ""),
        sa.func.coalesce(task_runs.c.team, ""),
        lines.c.source,
    )
    line_currency = sa.func.coalesce(lines.c.currency, "")
    result = conn.execute(
        sa.select(
            *attribution,
            lines.c.reconciled_currency,
            line_currency,
            difference,
            sa.func.sum(lines.c.reconciled_nanos),
            sa.func.count(),
        )
        .select_from(lines.join(task_runs, task_runs.c.id == lines.c.task_run_id))
        .where(lines.c.id.in_(in_pools), lines.c.reconciled_nanos.is_not(None))
        .group_by(*attribution, lines.c.reconciled_currency, line_currency)
    )
    # a batch of groups at a time: a year of tries is some 100,000 of them, which as rows, changes and
    # statement parameters all at once would take hundreds of MB; the changes add up, so a key that
    # comes in two batches is added twice, as it would be once
    for rows in result.partitions(_DAILY_BATCH):
        changes: dict[tuple, list[int]] = {}
        for row in rows:
            key = (_day(row[0]), *row[1:6])
            budget = changes.setdefault((*key, row[6]), [0, 0, 0, 0, 0, 0])
            budget[0] += sign * int(row[8])
            report = changes.setdefault((*key, row[7]), [0, 0, 0, 0, 0, 0])
            report[4] += sign * int(row[9])
            report[5] += sign * int(row[10])
        write_daily_changes(conn, changes)
    _shift_label_totals(conn, in_pools, difference, sign)


def _shift_label_totals(conn, in_pools, difference, sign: int) -> None:
    """The same budget difference in cost_daily_label_totals, once for each tag and label of the try."""
    from airflow_cost_provider.ledger.schema import lines, task_run_labels, task_runs
    from airflow_cost_provider.ledger.store import write_label_changes

    key = (
        task_run_labels.c.kind,
        task_run_labels.c.key,
        task_run_labels.c.value,
        sa.func.date(task_runs.c.end_time),
        lines.c.source,
        lines.c.reconciled_currency,
    )
    result = conn.execute(
        sa.select(*key, difference)
        .select_from(
            lines.join(task_runs, task_runs.c.id == lines.c.task_run_id).join(
                task_run_labels, task_run_labels.c.task_run_id == lines.c.task_run_id
            )
        )
        .where(lines.c.id.in_(in_pools), lines.c.reconciled_nanos.is_not(None))
        .group_by(*key)
    )
    for rows in result.partitions(_DAILY_BATCH):
        write_label_changes(
            conn, {(*row[:3], _day(row[3]), *row[4:6]): [sign * int(row[6]), 0, 0] for row in rows}
        )


def _insert_pools(conn, con, now: dt.datetime) -> None:
    """The pools, a batch at a time, with the values as SQLAlchemy would store them."""
    stamp: object = now.astimezone(dt.timezone.utc).replace(tzinfo=None)
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:  # SQLite keeps dates and times as text
        stamp = stamp.strftime("%Y-%m-%d %H:%M:%S.%f")  # type: ignore[attr-defined]
    day = "strftime(day, '%Y-%m-%d')" if sqlite else "day"
    pools = con.execute(
        f"""
SELECT {day}, usage_hour::INTEGER, provider, billing_account, COALESCE(service, ''), currency,
  COALESCE(pool, ''), pool_kind, source, mode, basis, billed_nanos::BIGINT, attributed_nanos::BIGINT,
  (billed_nanos - attributed_nanos)::BIGINT, estimated_nanos::BIGINT, lines,
  CASE WHEN lines > 0 THEN used_share END, to_json(billing_cost_ids)::VARCHAR
FROM pool_results ORDER BY pool_id
"""
    )
    quote = conn.dialect.identifier_preparer.quote  # `lines` is a reserved word in MySQL
    statement = (
        f"INSERT INTO cost_reconciliations ({', '.join(map(quote, _POOL_TABLE_COLUMNS))}) "
        f"VALUES ({', '.join('?' * len(_POOL_TABLE_COLUMNS))})"
    )
    while batch := pools.fetchmany(20_000):
        _executemany(conn, statement, [(*row[:16], _share_text(row[16]), row[17], stamp) for row in batch])


def _day(value) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value
