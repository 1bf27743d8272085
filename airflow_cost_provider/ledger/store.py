"""Writing and reading the ledger. One engine per URL and process (engines do not survive a fork)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from airflow_cost_provider.ledger.schema import (
    NANOS_PER_UNIT,
    SCHEMA_REVISION,
    VERSION_TABLE,
    daily_label_totals,
    daily_totals,
    daily_unpriced,
    deferred_captures,
    lines,
    reason_key,
    task_run_labels,
    task_runs,
    usage,
)

if TYPE_CHECKING:  # readers (reports) need no pricing code
    from airflow_cost_provider.result import CostResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
# A server connection is pinged at checkout only when it has been idle this long: a task's finalize
# writes its try, then reads its budgets, on the connection it has just used.
PING_AFTER_IDLE_SECONDS = 5.0


class LedgerError(RuntimeError):
    """The ledger cannot be reached or used; the message names the database (without credentials)."""


def resolve_url(conn: str | None, default_url: str) -> str:
    """An SQLAlchemy URL from `ledger_conn`: a URL as is, else an Airflow connection id."""
    if not conn:
        return default_url
    if "://" in conn:
        return normalize_url(conn)
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        return normalize_url(BaseHook.get_connection(conn).get_uri())
    except Exception as err:
        raise LedgerError(
            f"ledger_conn {conn!r} is not a URL nor a usable Airflow connection: {err}"
        ) from err


def normalize_url(url: str) -> str:
    """Airflow's connection schemes as SQLAlchemy's, with a PostgreSQL driver that is installed."""
    url = url.strip()
    for airflow_scheme, sqlalchemy_scheme in (
        ("postgres://", "postgresql://"),
        ("mysql://", "mysql+pymysql://"),
    ):
        if url.startswith(airflow_scheme):
            url = sqlalchemy_scheme + url[len(airflow_scheme) :]
    if url.startswith("postgresql://") and not _installed("psycopg2") and _installed("psycopg"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def safe_url(url: str | sa.URL) -> str:
    if isinstance(url, str) and _unencoded_at(url):
        return _redacted(url)
    return sa.make_url(url).render_as_string(hide_password=True)


def _unencoded_at(url: str) -> bool:
    """True when the URL's credentials hold a raw @ (the password was not URL-encoded)."""
    netloc = url.partition("://")[2].split("/", 1)[0]
    return netloc.count("@") > 1


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


def open_existing(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> Engine:
    """An engine on a ledger that must already exist, for readers (reports, checks, exports): a
    missing SQLite file or a database without the ledger's tables is a LedgerError, never a new,
    empty ledger. An older schema is migrated (what a worker would do); a newer one is an error."""
    if _unencoded_at(url):
        raise LedgerError(
            f"ledger URL {_redacted(url)!r}: the user or password holds an @; URL-encode it as %40"
        )
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise LedgerError(
            f"ledger URL {_redacted(url)!r} is not a database URL (e.g. sqlite:////path/cost_ledger.db "
            "or postgresql://user:password@host:5432/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path in (None, "", ":memory:"):
            raise LedgerError(f"ledger URL {url!r} names no SQLite file")
        if Path(path).is_dir():
            raise LedgerError(f"ledger {safe_url(parsed)}: {path} is a directory, not an SQLite file")
        if not Path(path).exists():
            raise LedgerError(f"ledger {safe_url(parsed)} does not exist: no file {path}")
    key = (url, os.getpid())
    with _engines_lock:
        if (engine := _engines.get(key)) is not None:
            return engine
    try:
        engine = _create_engine(url, timeout)
    except sa.exc.NoSuchModuleError:
        raise LedgerError(
            f"ledger URL {safe_url(parsed)}: unknown database kind {parsed.drivername!r}"
        ) from None
    except ImportError as error:
        extra = {"postgresql": "postgres", "mysql": "mysql"}.get(parsed.get_backend_name())
        advice = f": pip install 'airflow-cost-provider[{extra}]'" if extra else ""
        raise LedgerError(
            f"ledger URL {safe_url(parsed)}: its database driver {error.name or ''} is not installed{advice}"
        ) from None
    try:
        revision = schema_revision(engine)
    except sa.exc.DatabaseError as error:
        engine.dispose()
        raise LedgerError(f"ledger {safe_url(parsed)} cannot be read: {error.orig}") from None
    if revision is None:
        engine.dispose()
        raise LedgerError(f"{safe_url(parsed)} is not a cost ledger: it has no {VERSION_TABLE} table")
    if revision != SCHEMA_REVISION:
        if revision > SCHEMA_REVISION:
            engine.dispose()
            raise LedgerError(
                f"ledger {safe_url(parsed)} is at schema {revision}, newer than this airflow-cost-provider "
                f"knows ({SCHEMA_REVISION}): upgrade airflow-cost-provider"
            )
        ensure_schema(engine)
    with _engines_lock:
        return _engines.setdefault(key, engine)


def _redacted(url: str) -> str:
    """A URL that did not parse, with anything between :// and the last @ masked."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _create_engine(url: str, timeout: float) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args=_connect_args(parsed, timeout))
    if parsed.get_backend_name() != "sqlite":  # a local SQLite file drops no connection
        _ping_when_idle(engine)
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets reports read while workers write; NORMAL skips an fsync per commit (WAL keeps it safe)
            _switch_to_wal(cursor, timeout)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a server connection at checkout when it has been idle for PING_AFTER_IDLE_SECONDS, not at
    every checkout (SQLAlchemy's pool_pre_ping): a dropped connection is still replaced before use
    after an idle while, and the checkouts of one finalize cost no extra round trip."""

    @sa.event.listens_for(engine, "connect")
    def _connected(_dbapi_connection, record):
        record.info["used_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        if record is not None:
            record.info["used_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        used_at = record.info.get("used_at")
        if used_at is not None and time.monotonic() - used_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # the pool drops this connection and checks out a new one (up to three times)
            raise sa.exc.DisconnectionError(f"ledger connection lost: {error}") from error


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for reads that runs no transaction. On PostgreSQL the driver's own autocommit
    switch, a client-side flag: SQLAlchemy's AUTOCOMMIT isolation level costs a SET round trip at
    checkout and another at checkin on psycopg2, a transaction a BEGIN and a ROLLBACK. Elsewhere a
    plain connection: SQLite begins no transaction for a read, and MySQL's autocommit switch is a
    round trip each way."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            yield conn
            return
        raw = conn.connection.dbapi_connection
        raw.autocommit = True
        try:
            yield conn
        finally:
            try:  # back as the pool lends it: transactions on
                raw.autocommit = False
            except Exception:
                conn.invalidate()


def _switch_to_wal(cursor, timeout: float) -> None:
    """Turn WAL on, retrying while another process holds the lock.

    The switch needs an exclusive lock, and SQLite answers "database is locked" at once, without its
    busy handler, when the lock is contended (many workers opening a fresh ledger together). WAL stays
    on in the file, so once any connection has switched, the others find it already on.
    """
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


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


# Every worker migrating a ledger takes this database lock first, so only one runs the migrations.
MIGRATION_LOCK_KEY = 7_341_105_062_281_633_136  # pg_advisory_lock's 64-bit key, fixed for the ledger
MIGRATION_LOCK_NAME = "airflow_cost_ledger_migration"  # MySQL/MariaDB GET_LOCK's name


def ensure_schema(engine: Engine) -> None:
    """Bring the ledger to the head revision. A cheap check first: Alembic loads only to migrate.

    A ledger at a newer revision (workers of mixed versions during an upgrade) is left as it is:
    migrations only add, so this package's tables are still there to write."""
    revision = schema_revision(engine)
    if revision == SCHEMA_REVISION:
        return
    if revision is not None and revision > SCHEMA_REVISION:
        _check_newer_schema(engine, revision)
        return
    try:
        _migrate_locked(engine)
    except (OperationalError, ProgrammingError, IntegrityError) as error:
        # a database without these locks, or a lock wait cut by a timeout: fine if now at head
        if schema_revision(engine) != SCHEMA_REVISION:
            raise
        log.warning("ledger migration failed but the ledger is at the head revision now: %s", error.orig)


def _migrate_locked(engine: Engine) -> None:
    """Run the migrations while holding a database lock, re-reading the revision once it is held:
    another worker may have migrated while this one waited."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":  # session-level: held across the transaction below
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
        elif dialect in ("mysql", "mariadb"):
            got = conn.execute(
                sa.text("SELECT GET_LOCK(:name, :wait)"),
                {"name": MIGRATION_LOCK_NAME, "wait": CONNECT_TIMEOUT_SECONDS},
            ).scalar()
            conn.commit()
            if got != 1:
                raise LedgerError(f"ledger {safe_url(engine.url)}: another worker's migration held the lock")
        try:
            with conn.begin():
                if dialect == "sqlite":
                    # the write lock now, and DDL inside the transaction: a migration that stops half
                    # way leaves nothing behind
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                revision = _revision_on(conn)
                if revision is not None and revision >= SCHEMA_REVISION:
                    return
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        finally:
            if conn.in_transaction():
                conn.rollback()
            if dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
            elif dialect in ("mysql", "mariadb"):
                conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK_NAME})
                conn.commit()


def _revision_on(conn) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


_newer_schema_noted: set[str] = set()


def _check_newer_schema(engine: Engine, revision: str) -> None:
    """An older package on a newer ledger writes on while the tables it writes exist."""
    from airflow_cost_provider.ledger.schema import metadata

    missing = sorted(set(metadata.tables) - set(sa.inspect(engine).get_table_names()))
    if missing:
        raise LedgerError(
            f"ledger {safe_url(engine.url)} is at schema {revision}, newer than this airflow-cost-provider "
            f"knows ({SCHEMA_REVISION}), and has no {', '.join(missing)}: upgrade airflow-cost-provider"
        )
    if revision not in _newer_schema_noted:
        _newer_schema_noted.add(revision)
        log.info(
            "ledger %s is at schema %s, newer than this package's %s: writing on; upgrade the package",
            safe_url(engine.url),
            revision,
            SCHEMA_REVISION,
        )


def to_nanos(amount: Decimal) -> int:
    return int(amount * NANOS_PER_UNIT)


def from_nanos(nanos: int | None) -> Decimal | None:
    return None if nanos is None else Decimal(nanos).scaleb(-9)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _jsonable(attributes: dict[str, Any]) -> dict[str, Any]:
    """JSON values as they are (a list of them too: an aggregate's first ids), anything else as text."""
    return {
        key: value
        if isinstance(value, _JSON_SCALARS)
        or (isinstance(value, list) and all(isinstance(item, _JSON_SCALARS) for item in value))
        else str(value)
        for key, value in attributes.items()
    }


def store(engine: Engine, result: CostResult, only_if_absent: bool = False) -> bool:
    """Write one task try in one transaction. A capture already stored is left alone (the facet
    already carries its numbers); another capture of the same try replaces it, unless
    `only_if_absent` (a try recorded without its capture never replaces one). True when written."""
    try:
        return _store(engine, result, only_if_absent)
    except IntegrityError:
        # two processes inserted the same try at once: the second attempt sees the first one's row
        return _store(engine, result, only_if_absent)


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
_DELETE_LABELS = sa.delete(task_run_labels).where(
    task_run_labels.c.task_run_id == sa.bindparam("existing_id")
)
_INSERT_LABELS = sa.insert(task_run_labels)
_OLD_LABELS = sa.select(task_run_labels.c.kind, task_run_labels.c.key, task_run_labels.c.value).where(
    task_run_labels.c.task_run_id == sa.bindparam("existing_id")
)
# What a stored try added to the daily totals, to take back out when another capture replaces it.
_OLD_CONTRIBUTION = (
    sa.select(
        task_runs.c.end_time,
        task_runs.c.owner,
        task_runs.c.team,
        lines.c.source,
        lines.c.currency,
        sa.func.sum(lines.c.amount_nanos).label("nanos"),
        sa.func.count().label("lines"),
        sa.func.sum(sa.case((lines.c.amount_nanos.is_(None), 1), else_=0)).label("unpriced"),
        sa.func.sum(lines.c.reconciled_nanos).label("reconciled_nanos"),
        sa.func.count(lines.c.reconciled_nanos).label("reconciled_lines"),
    )
    .select_from(lines.join(task_runs, lines.c.task_run_id == task_runs.c.id))
    .where(lines.c.task_run_id == sa.bindparam("existing_id"))
    .group_by(task_runs.c.end_time, task_runs.c.owner, task_runs.c.team, lines.c.source, lines.c.currency)
)
# ...and what reconciling its lines added to the budget amounts (under the reconciled currency)
_OLD_RECONCILED_SHIFT = (
    sa.select(
        lines.c.source,
        lines.c.reconciled_currency,
        sa.func.sum(lines.c.reconciled_nanos - sa.func.coalesce(lines.c.amount_nanos, 0)).label("nanos"),
    )
    .where(lines.c.task_run_id == sa.bindparam("existing_id"), lines.c.reconciled_nanos.is_not(None))
    .group_by(lines.c.source, lines.c.reconciled_currency)
)
_OLD_UNPRICED = (
    sa.select(lines.c.source, lines.c.metric, lines.c.unpriced_reason, sa.func.count().label("lines"))
    .where(lines.c.task_run_id == sa.bindparam("existing_id"), lines.c.amount_nanos.is_(None))
    .group_by(lines.c.source, lines.c.metric, lines.c.unpriced_reason)
)
_DAILY_KEY = ("day", "dag_id", "task_id", "owner", "team", "source", "currency")
# budgets' amount, lines, unpriced lines; the lines' estimates, reconciled amounts, reconciled lines
_DAILY_SUMS = ("amount_nanos", "lines", "unpriced", "estimate_nanos", "reconciled_nanos", "reconciled_lines")


def _sum_statements(table: sa.Table, key: tuple[str, ...], sums: tuple[str, ...]) -> tuple:
    """For a table of sums (cost_daily_totals, cost_daily_label_totals), with the key as k_* and the
    changes as d_* parameters: add to a row, insert one, and delete a row with no line left and
    nothing a budget counts (reconcile can add to a currency with no line)."""
    where = [table.c[name] == sa.bindparam(f"k_{name}") for name in key]
    add = (
        sa.update(table)
        .where(*where)
        .values({name: table.c[name] + sa.bindparam(f"d_{name}") for name in sums})
    )
    insert = sa.insert(table).values(
        {name: sa.bindparam(f"k_{name}") for name in key} | {name: sa.bindparam(f"d_{name}") for name in sums}
    )
    delete_empty = sa.delete(table).where(*where, table.c.lines <= 0, table.c.amount_nanos == 0)
    return add, insert, delete_empty


_ADD_TO_DAILY, _INSERT_DAILY, _DELETE_EMPTY_DAILY = _sum_statements(daily_totals, _DAILY_KEY, _DAILY_SUMS)
_LABEL_KEY = ("kind", "key", "value", "day", "source", "currency")
_LABEL_SUMS = ("amount_nanos", "lines", "unpriced")
_ADD_TO_LABELS, _INSERT_LABEL_TOTALS, _DELETE_EMPTY_LABELS = _sum_statements(
    daily_label_totals, _LABEL_KEY, _LABEL_SUMS
)
_UNPRICED_KEY = ("day", "dag_id", "task_id", "source", "metric", "reason_key")
_ADD_TO_UNPRICED = (
    sa.update(daily_unpriced)
    .where(*(daily_unpriced.c[name] == sa.bindparam(f"k_{name}") for name in _UNPRICED_KEY))
    .values(lines=daily_unpriced.c.lines + sa.bindparam("d_lines"))
)
_DELETE_EMPTY_UNPRICED = sa.delete(daily_unpriced).where(
    *(daily_unpriced.c[name] == sa.bindparam(f"k_{name}") for name in _UNPRICED_KEY),
    daily_unpriced.c.lines <= 0,
)


def _try_values(task_try) -> dict[str, Any]:
    return {name: getattr(task_try, name) for name in _TRY_COLUMNS}


def save_deferred(engine: Engine, task_try, capture: dict[str, Any], unless_final: bool = False) -> bool:
    """Keep what a deferring task try used so far; replaces an earlier deferral's snapshot. With
    `unless_final` (a snapshot replayed late), nothing is written once the try's final capture is in:
    that capture holds the snapshot's usage already. True when written."""
    values = _try_values(task_try)
    with engine.begin() as conn:
        if unless_final and conn.execute(_FIND_TRY, values).first() is not None:
            return False
        conn.execute(_DELETE_DEFERRED, values)
        conn.execute(
            sa.insert(deferred_captures),
            {**values, "capture": capture, "deferred_at": dt.datetime.now(dt.timezone.utc)},
        )
    return True


def load_deferred(engine: Engine, task_try) -> dict[str, Any] | None:
    """The snapshot a resumed task try left when it deferred, if any."""
    with engine.connect() as conn:
        return conn.execute(_FIND_DEFERRED, _try_values(task_try)).scalar()


def _store(engine: Engine, result: CostResult, only_if_absent: bool = False) -> bool:
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
        "owner": tt.owner,
        "team": tt.team,
    }
    with engine.begin() as conn:
        # the try is final now: what it kept across a deferral is in this result
        conn.execute(_DELETE_DEFERRED, {name: row[name] for name in _TRY_COLUMNS})
        existing = conn.execute(_FIND_TRY, {name: row[name] for name in _TRY_COLUMNS}).first()
        if existing is not None and (only_if_absent or existing.capture_id == result.capture_id):
            return False
        daily: dict[tuple, list[int]] = {}
        causes: dict[tuple, list] = {}
        by_label: dict[tuple, list[int]] = {}
        if existing is None:
            task_run_id = conn.execute(_INSERT_TRY, row).inserted_primary_key[0]
        else:
            task_run_id = existing.id
            _take_out_old(conn, task_run_id, tt, daily, causes)
            old_labels = conn.execute(_OLD_LABELS, {"existing_id": task_run_id}).all()
            if old_labels:
                # `daily` holds only the old capture's take-out yet: the same amounts leave each old label
                old: dict[tuple, list[int]] = {}
                for key, sums in daily.items():
                    found = old.setdefault((key[0], key[5], key[6]), [0, 0, 0])
                    for index in range(3):
                        found[index] += sums[index]
                _add_label_changes(by_label, old_labels, old)
            conn.execute(_DELETE_LINES, {"existing_id": task_run_id})
            conn.execute(_DELETE_USAGE, {"existing_id": task_run_id})
            conn.execute(_DELETE_LABELS, {"existing_id": task_run_id})
            conn.execute(_UPDATE_TRY, {"existing_id": task_run_id, **row})
        labels = [
            {"task_run_id": task_run_id, "kind": "tag", "key": tag, "value": ""} for tag in tt.dag_tags
        ] + [{"task_run_id": task_run_id, "kind": "label", "key": k, "value": v} for k, v in tt.labels]
        if labels:
            conn.execute(_INSERT_LABELS, labels)
        priced_and_unpriced = [(line.usage, _line_values(line)) for line in result.lines] + [
            (item.usage, {"status": "unpriced", "unpriced_reason": item.reason}) for item in result.unpriced
        ]
        # the daily totals sum exactly what the lines below hold
        day = result.end_time.astimezone(dt.timezone.utc).date()
        new: dict[tuple, list[int]] = {}  # (day, source, currency): the new lines' sums, for the labels
        for item, values in priced_and_unpriced:
            nanos = values.get("amount_nanos")
            key = (day, tt.dag_id, tt.task_id, tt.owner or "", tt.team or "", item.source)
            _add_daily(daily, key, values.get("currency"), nanos or 0, 1, int(nanos is None), nanos or 0)
            if nanos is None:
                key = (day, tt.dag_id, tt.task_id, item.source, item.metric)
                _add_unpriced(causes, key, values["unpriced_reason"], 1)
            if labels:
                sums = new.setdefault((day, item.source, values.get("currency") or ""), [0, 0, 0])
                sums[0] += nanos or 0
                sums[1] += 1
                sums[2] += nanos is None
        if labels:
            _add_label_changes(by_label, [(r["kind"], r["key"], r["value"]) for r in labels], new)
        write_daily_changes(conn, daily)
        write_unpriced_changes(conn, causes)
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
        # last: a tag's row of the day is shared by every try that carries it, so its lock is held
        # from here to the commit only
        write_label_changes(conn, by_label)
    return True


def _add_label_changes(by_label: dict[tuple, list[int]], labels: Iterable[tuple], sums: dict) -> None:
    """Add a try's sums per (day, source, currency) to each of its (kind, key, value) labels."""
    for label in labels:
        for key, (nanos, line_count, unpriced) in sums.items():
            found = by_label.setdefault((*label, *key), [0, 0, 0])
            found[0] += nanos
            found[1] += line_count
            found[2] += unpriced


def _take_out_old(
    conn, task_run_id: int, tt, daily: dict[tuple, list[int]], causes: dict[tuple, list]
) -> None:
    """What a stored try added to the daily totals and unpriced counts, as changes that take it out."""
    day = owner = team = None
    reconciled = unpriced = False
    for old in conn.execute(_OLD_CONTRIBUTION, {"existing_id": task_run_id}).all():
        day, owner, team = old.end_time.astimezone(dt.timezone.utc).date(), old.owner, old.team
        key = (day, tt.dag_id, tt.task_id, owner or "", team or "", old.source)
        nanos = -int(old.nanos or 0)
        _add_daily(
            daily,
            key,
            old.currency,
            nanos,
            -int(old.lines),
            -int(old.unpriced or 0),
            nanos,
            -int(old.reconciled_nanos or 0),
            -int(old.reconciled_lines),
        )
        reconciled = reconciled or bool(old.reconciled_lines)
        unpriced = unpriced or bool(old.unpriced)
    if unpriced:
        for cause in conn.execute(_OLD_UNPRICED, {"existing_id": task_run_id}):
            key = (day, tt.dag_id, tt.task_id, cause.source, cause.metric)
            _add_unpriced(causes, key, cause.unpriced_reason, -int(cause.lines))
    if reconciled:
        for shift in conn.execute(_OLD_RECONCILED_SHIFT, {"existing_id": task_run_id}):
            key = (day, tt.dag_id, tt.task_id, owner or "", team or "", shift.source)
            _add_daily(daily, key, shift.reconciled_currency, int(-(shift.nanos or 0)), 0, 0)


def _add_daily(
    daily: dict[tuple, list[int]],
    key: tuple,
    currency: str | None,
    nanos: int,
    line_count: int,
    unpriced: int,
    estimate: int = 0,
    reconciled: int = 0,
    reconciled_lines: int = 0,
) -> None:
    """Add one contribution to daily-total changes, keyed as cost_daily_totals is ('' = none):
    `key` is (day, dag_id, task_id, owner, team, source)."""
    sums = daily.setdefault((*key, currency or ""), [0, 0, 0, 0, 0, 0])
    sums[0] += nanos
    sums[1] += line_count
    sums[2] += unpriced
    sums[3] += estimate
    sums[4] += reconciled
    sums[5] += reconciled_lines


def _add_unpriced(causes: dict[tuple, list], key: tuple, reason: str | None, count: int) -> None:
    """Add unpriced lines to cost_daily_unpriced changes: `key` is (day, dag_id, task_id, source, metric)."""
    text = reason or ""
    found = causes.setdefault((*key, reason_key(text)), [text, 0])
    found[1] += count


def write_daily_changes(conn, daily: dict[tuple, list[int]]) -> None:
    """Apply changes to cost_daily_totals (each key's sums in _DAILY_SUMS order; a shorter list: the
    first of them, the rest 0): add to the existing rows, insert the new ones, and drop the rows left
    with no line and no amount, so the totals always equal the lines' sums."""
    _add_to_sums(
        conn,
        (daily_totals, _DAILY_KEY, _DAILY_SUMS),
        daily,
        _daily_upsert,
        (_ADD_TO_DAILY, _INSERT_DAILY, _DELETE_EMPTY_DAILY),
    )


def write_label_changes(conn, by_label: dict[tuple, list[int]]) -> None:
    """Apply changes to cost_daily_label_totals, as write_daily_changes does to the daily totals: each
    key (kind, key, value, day, source, currency) with its [amount_nanos, lines, unpriced]."""
    _add_to_sums(
        conn,
        (daily_label_totals, _LABEL_KEY, _LABEL_SUMS),
        by_label,
        _label_upsert,
        (_ADD_TO_LABELS, _INSERT_LABEL_TOTALS, _DELETE_EMPTY_LABELS),
    )


def _add_to_sums(conn, columns: tuple, changed: dict[tuple, list[int]], upsert_of, statements: tuple) -> None:
    """The changes {key: sums (a shorter list: the rest 0)} to a table of sums (`columns`: the table,
    its key and its sums), as _apply takes them."""
    table, key, sums = columns
    width = len(sums)
    changes = [
        {
            **{f"k_{name}": value for name, value in zip(key, values_key, strict=True)},
            **{
                f"d_{name}": value
                for name, value in zip(sums, [*values, *[0] * (width - len(values))], strict=True)
            },
        }
        for values_key, values in changed.items()
        if any(values)
    ]
    emptied = [
        {f"k_{name}": change[f"k_{name}"] for name in key}
        for change in changes
        if any(change[f"d_{name}"] < 0 for name in sums)
    ]
    _apply(conn, changes, emptied, upsert_of, *statements, (table, key, (), sums))


def write_unpriced_changes(conn, causes: dict[tuple, list]) -> None:
    """Apply changes to cost_daily_unpriced, as write_daily_changes does to the daily totals."""
    changes = [
        {
            **{f"k_{name}": value for name, value in zip(_UNPRICED_KEY, key, strict=True)},
            "reason": text,
            "d_lines": count,
        }
        for key, (text, count) in causes.items()
        if count
    ]
    emptied = [{f"k_{name}": c[f"k_{name}"] for name in _UNPRICED_KEY} for c in changes if c["d_lines"] < 0]
    _apply(
        conn,
        changes,
        emptied,
        _unpriced_upsert,
        _ADD_TO_UNPRICED,
        _INSERT_UNPRICED,
        _DELETE_EMPTY_UNPRICED,
        (daily_unpriced, _UNPRICED_KEY, ("reason",), ("lines",)),
    )


def _apply(
    conn,
    changes: list[dict],
    emptied: list[dict],
    upsert_of,
    add,
    insert,
    delete_empty,
    columns: tuple[sa.Table, tuple[str, ...], tuple[str, ...], tuple[str, ...]],
) -> None:
    """Add `changes` to a table of sums (one upsert where the database has it, else update, then
    insert the keys not there yet), then drop the `emptied` keys' rows left with nothing. `columns`:
    the table, its key (k_<name> in a change), the columns set on insert (<name>) and those a change
    adds to (d_<name>)."""
    if not changes:
        return
    table, key, kept, added = columns
    # in key order: writers that share rows (a tag's day, a DAG's day) take their locks in one order
    changes = sorted(changes, key=lambda change: tuple(change[f"k_{name}"] for name in key))
    if conn.dialect.driver == "psycopg2":
        # its executemany is a round trip per row, execute_values one for them all
        rows = [
            (
                *(change[f"k_{name}"] for name in key),
                *(change[name] for name in kept),
                *(change[f"d_{name}"] for name in added),
            )
            for change in changes
        ]
        _bulk_upsert(conn, table, (*key, *kept, *added), rows, key, added)
    elif (upsert := upsert_of(conn.dialect.name)) is not None:
        conn.execute(upsert, changes)
    else:
        missing = [change for change in changes if conn.execute(add, change).rowcount == 0]
        if missing:
            # a concurrent writer inserting the same key makes this an IntegrityError: store() retries
            conn.execute(insert, missing)
    if emptied:
        conn.execute(delete_empty, emptied)


_INSERT_UNPRICED = sa.insert(daily_unpriced).values(
    {name: sa.bindparam(f"k_{name}") for name in _UNPRICED_KEY}
    | {"reason": sa.bindparam("reason"), "lines": sa.bindparam("d_lines")}
)


def _insert_module(dialect: str):
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


def _adding_upsert(dialect: str, table: sa.Table, key: tuple[str, ...], sums: tuple[str, ...]):
    """One INSERT .. ON CONFLICT adding to the row where the databases that share it have it: a
    statement per try instead of two per key, and no race between two workers on a new key."""
    insert = _insert_module(dialect)
    if insert is None:
        return None
    statement = insert(table).values(
        {name: sa.bindparam(f"k_{name}") for name in key} | {name: sa.bindparam(f"d_{name}") for name in sums}
    )
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={name: table.c[name] + statement.excluded[name] for name in sums}
    )


@functools.cache
def _daily_upsert(dialect: str) -> sa.Insert | None:
    return _adding_upsert(dialect, daily_totals, _DAILY_KEY, _DAILY_SUMS)


@functools.cache
def _label_upsert(dialect: str) -> sa.Insert | None:
    return _adding_upsert(dialect, daily_label_totals, _LABEL_KEY, _LABEL_SUMS)


@functools.cache
def _unpriced_upsert(dialect: str) -> sa.Insert | None:
    insert = _insert_module(dialect)
    if insert is None:
        return None
    statement = insert(daily_unpriced).values(
        {name: sa.bindparam(f"k_{name}") for name in _UNPRICED_KEY}
        | {"reason": sa.bindparam("reason"), "lines": sa.bindparam("d_lines")}
    )
    return statement.on_conflict_do_update(
        index_elements=list(_UNPRICED_KEY),
        set_={"lines": daily_unpriced.c.lines + statement.excluded.lines},
    )


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
        "correction_factor",
        "uncorrected_nanos",
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
        "correction_factor": None if line.correction_factor is None else str(line.correction_factor),
        "uncorrected_nanos": None if line.uncorrected_amount is None else to_nanos(line.uncorrected_amount),
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


# ---------------------------------------------------------------- storage costs from billing data


def _fit(value: str | None, length: int) -> str | None:
    """Text that fits its column: an over-long value keeps its start and a digest of the whole, so
    two long ids stay distinct."""
    if value is None or len(value) <= length:
        return value
    import hashlib

    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{value[: length - 17]}~{digest}"


def _nanos(amount: Decimal) -> int:
    """Round once, half to even, to the nano-unit."""
    from airflow_cost_provider.pricing.money import quantize_amount

    return int(quantize_amount(amount).scaleb(9))


_STORAGE_COLUMNS = (
    "provider",
    "billing_account",
    "day",
    "resource_id",
    "sku",
    "usage_class",
    "currency",
    "amount_nanos",
    "effective_nanos",
    "list_nanos",
    "credit_nanos",
    "correction_nanos",
    "quantity",
    "unit",
    "storage_bytes",
    "usage_type",
    "service",
    "region",
    "source_rows",
    "source",
    "import_id",
    "updated_at",
)
_STORAGE_KEY = ("day", "provider", "billing_account", "resource_id", "sku", "usage_class", "currency")
_BILLING_COLUMNS = (
    "row_key",
    "provider",
    "billing_account",
    "day",
    "usage_hour",
    "service",
    "resource_id",
    "sku",
    "usage_class",
    "currency",
    "amount_nanos",
    "effective_nanos",
    "list_nanos",
    "credit_nanos",
    "correction_nanos",
    "quantity",
    "unit",
    "usage_type",
    "region",
    "tags",
    "tagged_run_id",
    "source_rows",
    "source",
    "import_id",
    "updated_at",
)
_BILLING_KEY = ("row_key",)


_BULK_DIALECTS = ("sqlite", "postgresql")  # the ones that share INSERT .. ON CONFLICT


def _bulk_path(dialect) -> bool:
    return dialect.name in _BULK_DIALECTS and dialect.paramstyle in ("qmark", "format", "pyformat")


def _bulk_upsert(
    conn,
    table: sa.Table,
    columns: tuple[str, ...],
    rows: Iterable[tuple],
    key: tuple[str, ...],
    added: tuple[str, ...] = (),
) -> None:
    """Insert rows (driver-ready tuples in `columns` order), replacing those with the same key (the
    `added` columns: adding to them), in as few round trips as the driver allows: one INSERT .. ON
    CONFLICT, executed by the driver.

    Imports write tens of thousands of daily costs: SQLAlchemy's per-value processing would be the
    slowest part of the import, so SQLite and PostgreSQL take this path.
    """
    names = ", ".join(columns)
    updates = ", ".join(
        f"{c} = {table.name}.{c} + excluded.{c}" if c in added else f"{c} = excluded.{c}"
        for c in columns
        if c not in key
    )
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.driver == "psycopg2":
            from psycopg2.extras import execute_values

            statement = f"INSERT INTO {table.name} ({names}) VALUES %s {conflict}"
            execute_values(cursor, statement, rows, page_size=2000)
        else:
            marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            placeholders = ", ".join([marker] * len(columns))
            statement = f"INSERT INTO {table.name} ({names}) VALUES ({placeholders}) {conflict}"
            cursor.executemany(statement, rows)
    finally:
        cursor.close()


def _portable_upsert(conn, table: sa.Table, records: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    """The same for any database SQLAlchemy speaks: delete the keys, then insert."""
    if not records:
        return
    conn.execute(
        sa.delete(table).where(*(table.c[name] == sa.bindparam(f"key_{name}") for name in key)),
        [{f"key_{name}": record[name] for name in key} for record in records],
    )
    conn.execute(sa.insert(table), records)


def _write_costs(
    conn,
    table: sa.Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    batches: Iterable[list],
    import_id: int,
    now: dt.datetime,
    days_by_account: dict[tuple[str, str], set[dt.date]] | None,
) -> None:
    """Upsert an import's cost tuples (in `columns` order, without import_id and updated_at), a
    batch at a time within the caller's transaction; with `days_by_account` (replace_days), first
    delete the rows of each provider, billing account and day the import holds."""
    width = len(columns) - 2
    day_at = columns.index("day")
    for (provider, account), days in (days_by_account or {}).items():
        conn.execute(
            sa.delete(table).where(
                table.c.provider == provider,
                table.c.billing_account == account,
                table.c.day.in_(sorted(days)),
            )
        )
    bulk = _bulk_path(conn.dialect)
    # as SQLAlchemy stores them: updated_at naive UTC, and in SQLite dates and times as text;
    # tags are JSON text already
    stamp: Any = now.replace(tzinfo=None)
    sqlite = bulk and conn.dialect.name == "sqlite"
    if sqlite:
        stamp = stamp.strftime("%Y-%m-%d %H:%M:%S.%f")
    for costs in batches:
        if sqlite:
            iso = {day: day.isoformat() for day in {cost[day_at] for cost in costs}}
            rows = (
                (*cost[:day_at], iso[cost[day_at]], *cost[day_at + 1 : width], import_id, stamp)
                for cost in costs
            )
            _bulk_upsert(conn, table, columns, rows, key)
            continue
        if bulk:
            rows = ((*cost[:width], import_id, stamp) for cost in costs)  # generated as written
            _bulk_upsert(conn, table, columns, rows, key)
            continue
        records = [dict(zip(columns, (*cost[:width], import_id, now), strict=True)) for cost in costs]
        if "tags" not in columns:
            _portable_upsert(conn, table, records, key)
            continue
        # SQLAlchemy would store None as JSON null: rows without tags leave the column out (SQL NULL)
        tagged = [{**record, "tags": json.loads(record["tags"])} for record in records if record["tags"]]
        untagged = [
            {k: v for k, v in record.items() if k != "tags"} for record in records if not record["tags"]
        ]
        _portable_upsert(conn, table, tagged, key)
        _portable_upsert(conn, table, untagged, key)


def _days_by_account(costs: list) -> dict[tuple[str, str], set[dt.date]]:
    found: dict[tuple[str, str], set[dt.date]] = {}
    for cost in costs:
        found.setdefault((cost.provider, cost.billing_account), set()).add(cost.day)
    return found


def write_storage_import(
    engine: Engine,
    collected,
    *,
    replace_days: bool = False,
    watermark_key: str | None = None,
    run: dict[str, str] | None = None,
    started_at: dt.datetime | None = None,
) -> int:
    """Write one import of storage costs (and, for an import of the whole bill, its rows of every
    service into `cost_billing_costs`) in one transaction; returns the import's id.

    Each cost replaces the row with the same provider + billing account + day + resource + SKU +
    usage class + currency (restated data wins). With `replace_days`, every row of a provider,
    billing account and day that the import has data for is replaced, so a charge that vanished from
    a restated export vanishes here too. Days the import has no data for are left as they are: a day
    not billed yet is never written as zero.
    """
    from airflow_cost_provider.ledger.schema import (
        billing_costs,
        storage_costs,
        storage_imports,
        storage_watermarks,
    )

    now = dt.datetime.now(dt.timezone.utc)
    window = collected.window
    with engine.begin() as conn:
        import_id = conn.execute(
            sa.insert(storage_imports),
            {
                "source": collected.source,
                "files": list(collected.files),
                "window_start": window.start if window else None,
                "window_end": window.end if window else None,
                "rows_read": collected.rows_read,
                "rows_imported": collected.rows_imported,
                "rows_skipped": dict(collected.skipped),
                "costs_written": len(collected.costs),
                "dag_id": (run or {}).get("dag_id"),
                "task_id": (run or {}).get("task_id"),
                "run_id": (run or {}).get("run_id"),
                "started_at": started_at or now,
                "finished_at": now,
            },
        ).inserted_primary_key[0]
        costs = collected.costs
        _write_costs(
            conn,
            storage_costs,
            _STORAGE_COLUMNS,
            _STORAGE_KEY,
            [costs],
            import_id,
            now,
            _days_by_account(costs) if replace_days else None,
        )
        bill = collected.billing_costs
        if bill is not None:
            # a batch at a time from DuckDB, all in this transaction: a failure leaves nothing written
            _write_costs(
                conn,
                billing_costs,
                _BILLING_COLUMNS,
                _BILLING_KEY,
                bill.batches(),
                import_id,
                now,
                bill.days_by_account() if replace_days else None,
            )
        if collected.query_credits and collected.query_credits_source and window is not None:
            write_query_credits(conn, collected.query_credits_source, collected.query_credits, window)
        if watermark_key and collected.days_with_data:
            last_day = max(collected.days_with_data)
            existing = conn.execute(
                sa.select(storage_watermarks.c.last_day).where(
                    storage_watermarks.c.source_key == watermark_key
                )
            ).scalar()
            values = {"last_day": last_day, "import_id": import_id, "updated_at": now}
            if existing is None:
                conn.execute(sa.insert(storage_watermarks), {"source_key": watermark_key, **values})
            elif last_day >= existing:
                conn.execute(
                    sa.update(storage_watermarks)
                    .where(storage_watermarks.c.source_key == watermark_key)
                    .values(**values)
                )
    return import_id


def write_query_credits(conn, source: str, credits: dict[str, Decimal], window) -> int:
    """Keep each query's measured credits on the usage of that query (by external id) in its
    attributes (`ATTRIBUTED_CREDITS`), for the lines of tries that ended in the window or two days
    around it; returns how many usages matched. Writing the same credits again changes nothing."""
    from airflow_cost_provider.ledger.schema import ATTRIBUTED_CREDITS, task_runs, usage

    margin = dt.timedelta(days=2)  # a query started in the window by a try that ended after it
    start = dt.datetime.combine(window.start, dt.time(), dt.timezone.utc) - margin
    end = dt.datetime.combine(window.end, dt.time(), dt.timezone.utc) + margin
    found = conn.execute(
        sa.select(usage.c.id, usage.c.external_id, usage.c.attributes)
        .join(task_runs, task_runs.c.id == usage.c.task_run_id)
        .where(
            task_runs.c.end_time >= start,
            task_runs.c.end_time < end,
            usage.c.source == source,
            usage.c.external_id.is_not(None),
        )
    )
    changes, matched = [], 0
    for usage_id, external_id, attributes in found:
        value = credits.get(external_id)
        if value is None:
            continue
        matched += 1
        text = str(value)
        if (attributes or {}).get(ATTRIBUTED_CREDITS) != text:
            changes.append(
                {"usage_id": usage_id, "attributes": {**(attributes or {}), ATTRIBUTED_CREDITS: text}}
            )
    if changes:
        conn.execute(
            sa.update(usage)
            .where(usage.c.id == sa.bindparam("usage_id"))
            .values(attributes=sa.bindparam("attributes")),
            changes,
        )
    log.info("%d of %d measured queries matched %s usage in the ledger", matched, len(credits), source)
    return matched


def storage_watermark(engine: Engine, source_key: str) -> dt.date | None:
    """The last billing day the source had data for, if it was ever imported."""
    from airflow_cost_provider.ledger.schema import storage_watermarks

    with engine.connect() as conn:
        return conn.execute(
            sa.select(storage_watermarks.c.last_day).where(storage_watermarks.c.source_key == source_key)
        ).scalar()


def read_storage_costs(
    engine: Engine,
    since: dt.date | None = None,
    until: dt.date | None = None,
    providers: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Storage cost rows with billing day in [since, until), amounts as exact Decimals."""
    from airflow_cost_provider.ledger.schema import storage_costs

    query = sa.select(storage_costs).order_by(
        storage_costs.c.day, storage_costs.c.provider, storage_costs.c.resource_id, storage_costs.c.sku
    )
    if since is not None:
        query = query.where(storage_costs.c.day >= since)
    if until is not None:
        query = query.where(storage_costs.c.day < until)
    if providers:
        query = query.where(storage_costs.c.provider.in_(sorted(providers)))
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        for name in ("amount", "effective", "list", "credit", "correction"):
            row[name] = from_nanos(row.pop(f"{name}_nanos"))
        row["quantity"] = None if row["quantity"] is None else Decimal(row["quantity"])
    return rows


def replace_storage_allocations(engine: Engine, allocations: list[dict[str, Any]], scope: set[tuple]) -> None:
    """Replace the allocations of each (provider, billing account, day, resource) in `scope` in one
    transaction. Each allocation has those keys plus usage_class, currency, dataset_namespace,
    dataset_name, bytes, share (Decimal), amount (Decimal) and method."""
    from airflow_cost_provider.ledger.schema import storage_allocations

    now = dt.datetime.now(dt.timezone.utc)
    table = storage_allocations
    with engine.begin() as conn:
        for provider, account, day, resource in sorted(scope):
            conn.execute(
                sa.delete(table).where(
                    table.c.provider == provider,
                    table.c.billing_account == account,
                    table.c.day == day,
                    table.c.resource_id == resource,
                )
            )
        if allocations:
            conn.execute(
                sa.insert(table),
                [
                    {
                        "provider": a["provider"],
                        "billing_account": a["billing_account"],
                        "day": a["day"],
                        "resource_id": a["resource_id"],
                        "usage_class": a["usage_class"],
                        "currency": a["currency"],
                        "dataset_namespace": _fit(a["dataset_namespace"], 500),
                        "dataset_name": _fit(a["dataset_name"], 500),
                        "bytes": a["bytes"],
                        "share": format(a["share"], "f"),
                        "amount_nanos": _nanos(a["amount"]),
                        "method": a["method"],
                        "computed_at": now,
                    }
                    for a in allocations
                ],
            )


def read_storage_allocations(
    engine: Engine, since: dt.date | None = None, until: dt.date | None = None
) -> list[dict[str, Any]]:
    from airflow_cost_provider.ledger.schema import storage_allocations as table

    query = sa.select(table).order_by(table.c.day, table.c.dataset_namespace, table.c.dataset_name)
    if since is not None:
        query = query.where(table.c.day >= since)
    if until is not None:
        query = query.where(table.c.day < until)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row["amount"] = from_nanos(row.pop("amount_nanos"))
        row["share"] = Decimal(row["share"])
    return rows


def cached_billing_response(engine: Engine, request_key: str, max_age: dt.timedelta) -> Any | None:
    """A billing API response fetched less than `max_age` ago, if any."""
    from airflow_cost_provider.ledger.schema import billing_api_cache

    with engine.connect() as conn:
        row = conn.execute(
            sa.select(billing_api_cache.c.response, billing_api_cache.c.fetched_at).where(
                billing_api_cache.c.request_key == request_key
            )
        ).first()
    if row is None or row.fetched_at < dt.datetime.now(dt.timezone.utc) - max_age:
        return None
    return row.response


def cache_billing_response(engine: Engine, request_key: str, source: str, response: Any) -> None:
    from airflow_cost_provider.ledger.schema import billing_api_cache

    with engine.begin() as conn:
        conn.execute(sa.delete(billing_api_cache).where(billing_api_cache.c.request_key == request_key))
        conn.execute(
            sa.insert(billing_api_cache),
            {
                "request_key": request_key,
                "source": source,
                "response": response,
                "fetched_at": dt.datetime.now(dt.timezone.utc),
            },
        )
