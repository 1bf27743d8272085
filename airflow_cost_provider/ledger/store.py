"""Writing and reading the ledger. One engine per URL and process (engines do not survive a fork)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from airflow_cost_provider.ledger.schema import (
    NANOS_PER_UNIT,
    SCHEMA_REVISION,
    VERSION_TABLE,
    deferred_captures,
    lines,
    task_runs,
    usage,
)
from airflow_cost_provider.result import CostResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5


class LedgerError(RuntimeError):
    """The ledger cannot be reached or used; the message names the database (without credentials)."""


def resolve_url(conn: str | None, default_url: str) -> str:
    """An SQLAlchemy URL from `ledger_conn`: a URL as is, else an Airflow connection id."""
    if not conn:
        return default_url
    if "://" in conn:
        return _normalize(conn)
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        return _normalize(BaseHook.get_connection(conn).get_uri())
    except Exception as err:
        raise LedgerError(
            f"ledger_conn {conn!r} is not a URL nor a usable Airflow connection: {err}"
        ) from err


def _normalize(url: str) -> str:
    for airflow_scheme, sqlalchemy_scheme in (
        ("postgres://", "postgresql://"),
        ("mysql://", "mysql+pymysql://"),
    ):
        if url.startswith(airflow_scheme):
            return sqlalchemy_scheme + url[len(airflow_scheme) :]
    return url


def safe_url(url: str | sa.URL) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _connect_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    seconds = max(1, int(timeout))
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": timeout}
    if backend == "postgresql":
        return {"connect_timeout": seconds, "options": f"-c statement_timeout={seconds * 1000}"}
    if backend == "mysql":
        return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    return {}


_engines: dict[tuple[str, int], Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> Engine:
    """A cached engine for this process with its schema at head."""
    key = (url, os.getpid())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(url, timeout)
            ensure_schema(engine)
            _engines[key] = engine
        return engine


def _create_engine(url: str, timeout: float) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # a ping per checkout guards against dropped server connections; a local SQLite file has none
    is_server = parsed.get_backend_name() != "sqlite"
    engine = sa.create_engine(parsed, connect_args=_connect_args(parsed, timeout), pool_pre_ping=is_server)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets reports read while workers write; NORMAL skips an fsync per commit (WAL keeps it safe)
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def schema_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except (OperationalError, ProgrammingError) as err:
        if _is_unreachable(err):
            raise LedgerError(f"ledger database {safe_url(engine.url)} is unreachable: {err.orig}") from err
        return None


def _is_unreachable(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return "no such table" not in text and "does not exist" not in text and "doesn't exist" not in text


def ensure_schema(engine: Engine) -> None:
    """Bring the ledger to the head revision. A cheap check first: Alembic loads only to migrate."""
    if schema_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except (OperationalError, ProgrammingError, IntegrityError):
        # another worker may have migrated at the same moment; fine if the ledger is now at head
        if schema_revision(engine) != SCHEMA_REVISION:
            raise


def to_nanos(amount: Decimal) -> int:
    return int(amount * NANOS_PER_UNIT)


def from_nanos(nanos: int | None) -> Decimal | None:
    return None if nanos is None else Decimal(nanos).scaleb(-9)


def _jsonable(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        for key, value in attributes.items()
    }


def store(engine: Engine, result: CostResult) -> bool:
    """Write one task try in one transaction. A capture already stored is left alone (the facet
    already carries its numbers); another capture of the same try replaces it. True when written."""
    try:
        return _store(engine, result)
    except IntegrityError:
        # two processes inserted the same try at once: the second attempt sees the first one's row
        return _store(engine, result)


# Statements built once: building them per call costs more than SQLite takes to run them.
_TRY_COLUMNS = ("dag_id", "task_id", "run_id", "map_index", "try_number")
_FIND_TRY = sa.select(task_runs.c.id, task_runs.c.capture_id).where(
    *(task_runs.c[name] == sa.bindparam(name) for name in _TRY_COLUMNS)
)
_INSERT_TRY = sa.insert(task_runs)
_UPDATE_TRY = sa.update(task_runs).where(task_runs.c.id == sa.bindparam("existing_id"))
_DELETE_LINES = sa.delete(lines).where(lines.c.task_run_id == sa.bindparam("existing_id"))
_DELETE_USAGE = sa.delete(usage).where(usage.c.task_run_id == sa.bindparam("existing_id"))
_INSERT_USAGE = sa.insert(usage).returning(usage.c.id, sort_by_parameter_order=True)
_INSERT_LINES = sa.insert(lines)
_DELETE_DEFERRED = sa.delete(deferred_captures).where(
    *(deferred_captures.c[name] == sa.bindparam(name) for name in _TRY_COLUMNS)
)
_FIND_DEFERRED = sa.select(deferred_captures.c.capture).where(
    *(deferred_captures.c[name] == sa.bindparam(name) for name in _TRY_COLUMNS)
)


def _try_values(task_try) -> dict[str, Any]:
    return {name: getattr(task_try, name) for name in _TRY_COLUMNS}


def save_deferred(engine: Engine, task_try, capture: dict[str, Any]) -> None:
    """Keep what a deferring task try used so far; replaces an earlier deferral's snapshot."""
    values = _try_values(task_try)
    with engine.begin() as conn:
        conn.execute(_DELETE_DEFERRED, values)
        conn.execute(
            sa.insert(deferred_captures),
            {**values, "capture": capture, "deferred_at": dt.datetime.now(dt.timezone.utc)},
        )


def load_deferred(engine: Engine, task_try) -> dict[str, Any] | None:
    """The snapshot a resumed task try left when it deferred, if any."""
    with engine.connect() as conn:
        return conn.execute(_FIND_DEFERRED, _try_values(task_try)).scalar()


def _store(engine: Engine, result: CostResult) -> bool:
    tt = result.task_try
    row = {
        "dag_id": tt.dag_id,
        "task_id": tt.task_id,
        "run_id": tt.run_id,
        "map_index": tt.map_index,
        "try_number": tt.try_number,
        "ol_run_id": tt.ol_run_id,
        "capture_id": result.capture_id,
        "state": result.state,
        "status": result.status,
        "hostname": result.hostname,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "recorded_at": dt.datetime.now(dt.timezone.utc),
    }
    with engine.begin() as conn:
        # the try is final now: what it kept across a deferral is in this result
        conn.execute(_DELETE_DEFERRED, {name: row[name] for name in _TRY_COLUMNS})
        existing = conn.execute(_FIND_TRY, {name: row[name] for name in _TRY_COLUMNS}).first()
        if existing is not None and existing.capture_id == result.capture_id:
            return False
        if existing is None:
            task_run_id = conn.execute(_INSERT_TRY, row).inserted_primary_key[0]
        else:
            task_run_id = existing.id
            conn.execute(_DELETE_LINES, {"existing_id": task_run_id})
            conn.execute(_DELETE_USAGE, {"existing_id": task_run_id})
            conn.execute(_UPDATE_TRY, {"existing_id": task_run_id, **row})
        priced_and_unpriced = [(line.usage, _line_values(line)) for line in result.lines] + [
            (item.usage, {"status": "unpriced", "unpriced_reason": item.reason}) for item in result.unpriced
        ]
        if priced_and_unpriced:
            usage_ids = (
                conn.execute(
                    _INSERT_USAGE, [_usage_values(task_run_id, item) for item, _ in priced_and_unpriced]
                )
                .scalars()
                .all()
            )
            conn.execute(
                _INSERT_LINES,
                [
                    {
                        "task_run_id": task_run_id,
                        "usage_id": usage_id,
                        "source": item.source,
                        "metric": item.metric,
                        **_EMPTY_LINE,
                        **values,
                    }
                    for usage_id, (item, values) in zip(usage_ids, priced_and_unpriced, strict=True)
                ],
            )
    return True


_EMPTY_LINE = dict.fromkeys(
    (
        "amount_nanos",
        "currency",
        "method",
        "price_ref",
        "price_amount",
        "price_unit",
        "price_source_url",
        "unpriced_reason",
    )
)


def _line_values(line) -> dict[str, Any]:
    price = line.price
    return {
        "amount_nanos": to_nanos(line.amount),
        "currency": line.currency,
        "method": line.method,
        "status": line.status,
        "price_ref": price.ref if price else None,
        "price_amount": str(price.amount) if price else None,
        "price_unit": price.unit if price else None,
        "price_source_url": price.source_url if price else None,
    }


def _usage_values(task_run_id: int, item) -> dict[str, Any]:
    return {
        "task_run_id": task_run_id,
        "source": item.source,
        "metric": item.metric,
        "quantity": str(item.quantity),
        "unit": item.unit,
        "resource": item.resource,
        "external_id": item.external_id,
        "start_time": item.start_time,
        "end_time": item.end_time,
        "attributes": _jsonable(item.attributes),
    }
