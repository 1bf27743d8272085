"""Writing a reconciliation: one transaction that replaces the window's pools and shares.

Re-running a window replaces what an earlier run wrote for it (restated billing days included), so
the result depends only on the bill and the ledger, never on how often it ran.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal

import sqlalchemy as sa

from airflow_cost_provider.reconcile.engine import Reconciliation

_BATCH = 5000

_POOL_COLUMNS = (
    "pool_id",
    "day",
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
    "estimated_nanos",
    "lines",
    "used_share",
    "billing_cost_ids",
)


def _batches(items: Iterable, size: int = _BATCH) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _share_text(share: float | None) -> str | None:
    if share is None:
        return None
    return format(Decimal(repr(share)).quantize(Decimal("1e-9")).normalize(), "f")


def _insert_links(conn, rows: list[tuple[int, int, int]]) -> None:
    """(line_id, reconciliation_id, amount_nanos) rows through the driver's executemany: a million
    shares go in seconds, where per-row SQLAlchemy processing would take minutes."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        statement = "INSERT INTO cost_line_reconciliations (line_id, reconciliation_id, amount_nanos) VALUES "
        if conn.dialect.driver == "psycopg2":
            from psycopg2.extras import execute_values

            execute_values(cursor, statement + "%s", rows, page_size=5000)
        else:
            marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            cursor.executemany(statement + f"({marker}, {marker}, {marker})", rows)
    finally:
        cursor.close()


def write(engine: sa.Engine, result: Reconciliation, now: dt.datetime | None = None) -> None:
    from airflow_cost_provider.ledger.schema import line_reconciliations, lines, reconciliations

    now = now or dt.datetime.now(dt.timezone.utc)
    con = result.con
    window = result.window
    pools = con.execute(f"SELECT {', '.join(_POOL_COLUMNS)} FROM pool_results ORDER BY pool_id").fetchall()
    in_window = sa.and_(reconciliations.c.day >= window.since, reconciliations.c.day < window.until)
    with engine.begin() as conn:
        earlier = sa.select(reconciliations.c.id).where(in_window)
        touched = {
            row[0]
            for row in conn.execute(
                sa.select(line_reconciliations.c.line_id)
                .where(line_reconciliations.c.reconciliation_id.in_(earlier))
                .distinct()
            )
        }
        conn.execute(
            sa.delete(line_reconciliations).where(line_reconciliations.c.reconciliation_id.in_(earlier))
        )
        conn.execute(sa.delete(reconciliations).where(in_window))
        records = []
        for row in pools:
            pool = dict(zip(_POOL_COLUMNS, row, strict=True))
            billed, attributed = int(pool["billed_nanos"]), int(pool["attributed_nanos"])
            records.append(
                {
                    "day": pool["day"],
                    "provider": pool["provider"],
                    "billing_account": pool["billing_account"],
                    "service": pool["service"] or "",
                    "currency": pool["currency"],
                    "pool": pool["pool"] or "",
                    "pool_kind": pool["pool_kind"],
                    "source": pool["source"],
                    "mode": pool["mode"],
                    "basis": pool["basis"],
                    "billed_nanos": billed,
                    "attributed_nanos": attributed,
                    "unattributed_nanos": billed - attributed,
                    "estimated_nanos": None
                    if pool["estimated_nanos"] is None
                    else int(pool["estimated_nanos"]),
                    "lines": int(pool["lines"]),
                    "used_share": _share_text(pool["used_share"]) if pool["lines"] else None,
                    "billing_cost_ids": [int(i) for i in pool["billing_cost_ids"]],
                    "reconciled_at": now,
                }
            )
        for batch in _batches(records, 1000):
            conn.execute(sa.insert(reconciliations), batch)
        key_columns = ("day", "provider", "billing_account", "currency", "pool_kind", "pool")
        written = {
            tuple(row[1:]): row[0]
            for row in conn.execute(
                sa.select(reconciliations.c.id, *(reconciliations.c[name] for name in key_columns)).where(
                    in_window
                )
            )
        }
        pool_ids = {
            int(row[0]): written[(row[1], row[2], row[3], row[5], row[7], row[6] or "")] for row in pools
        }
        cursor = con.execute("SELECT line_id, pool_id, amount_nanos FROM line_results")
        while batch := cursor.fetchmany(50_000):
            links = [
                (int(line_id), pool_ids[int(pool_id)], int(amount)) for line_id, pool_id, amount in batch
            ]
            touched.update(link[0] for link in links)
            _insert_links(conn, links)
        linked = sa.select(line_reconciliations.c.line_id).where(line_reconciliations.c.line_id == lines.c.id)
        currency = (
            sa.select(sa.func.min(reconciliations.c.currency))
            .select_from(line_reconciliations.join(reconciliations))
            .where(line_reconciliations.c.line_id == lines.c.id)
            .scalar_subquery()
        )
        total = (
            sa.select(sa.func.sum(line_reconciliations.c.amount_nanos))
            .where(line_reconciliations.c.line_id == lines.c.id)
            .scalar_subquery()
        )
        status = sa.case(
            (sa.exists(linked), "reconciled"),
            (lines.c.amount_nanos.is_(None), "unpriced"),
            else_="estimated",
        )
        for ids in _batches(sorted(touched)):
            conn.execute(
                sa.update(lines)
                .where(lines.c.id.in_(ids))
                .values(reconciled_nanos=total, reconciled_currency=currency, status=status)
            )
