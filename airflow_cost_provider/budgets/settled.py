"""The spend of settled UTC days per scope, kept between evaluations.

A budget's history (the days its forecast and day anomalies read, the earlier days of its period)
no longer changes once a day is over: task tries are written at their end, so a past day changes
only when a capture of one of its tries is replaced. Reading those days again at every task end is
what makes a status slow on a large ledger; kept here, an evaluation reads only today from the ledger.

Kept in memory and in the ledger (cost_budget_settled, one row per scope), so every worker, task
process and pod shares what any of them read. A moment counts as settled a quarter of an hour after
it: a try that ended before it has been written by then. What is kept is read again from the ledger:
the last three days every hour, all of them every day, so a capture replaced soon after its try
shows within the hour (later, within the day). A row that cannot be read or written only costs the
full query.

Where a scope's spend is read from the tries' lines (tag and label scopes, and the parts of UTC days
a period in another time zone starts or ends in), today's settled hours are kept the same way: an
evaluation then reads only the last quarter of an hour or so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_cost_provider.ledger.schema import budget_settled

log = logging.getLogger(__name__)

# A try is written within finalize_timeout (at most 60 s) of its end: a quarter of an hour later
# nothing more arrives for that moment.
SETTLE_AFTER = dt.timedelta(minutes=15)
# Kept days are read again: the last RECENT_DAYS of them every hour (a capture replaced soon after its
# try), all of them every day (one replaced long after).
MAX_AGE_SECONDS = 3600
FULL_AGE_SECONDS = 86400
RECENT_DAYS = 3

# a day (ISO date) or a piece of time ("e:" or "h:" + start/end) -> currency ('' = unpriced) ->
# [nanos, unpriced lines]
Sums = dict[str, dict[str, list[int]]]

# key -> (all read at, recent days read at, first day kept, end day kept, sums)
_memory: dict[str, tuple[float, float, str, str, Sums]] = {}
_lock = threading.Lock()


def settled_until(now: dt.datetime) -> dt.datetime:
    """Tries that ended before this moment are all in the ledger."""
    return now.astimezone(dt.timezone.utc) - SETTLE_AFTER


def cache_key(ledger: str, scope: str) -> str:
    return hashlib.sha256(f"{ledger}\n{scope}".encode()).hexdigest()[:32]


def unread(keys: Iterable[str]) -> list[str]:
    """The keys not in memory: their kept rows are read with the evaluation's statement (all of
    them in a new task process)."""
    return sorted({key for key in keys if key not in _memory})


def absorb(rows: Iterable[tuple[str, str]]) -> None:
    """The kept rows (key, payload) read from the ledger, into memory; one that cannot be parsed is
    left out (its scope then reads its settled days again)."""
    with _lock:
        for key, payload in rows:
            if (entry := _parsed(payload)) is not None:
                _memory.setdefault(key, entry)


def lookup(
    conn: Connection,
    key: str,
    first: dt.date,
    end: dt.date,
    pieces: list[str],
    fetch: Callable[[list[tuple[dt.date, dt.date]], list[str]], Sums],
) -> Sums:
    """The sums of the settled days [first, end) and of the settled pieces of time `pieces`, fetching
    from the ledger only what is not kept or too old (`fetch(day ranges, piece keys)`)."""
    now = _wall_clock()
    entry = _memory.get(key)
    if entry is None or now - entry[0] > FULL_AGE_SECONDS:
        entry = (now, now, first.isoformat(), first.isoformat(), {})
    full_at, recent_at, have_first, have_end, sums = entry
    kept_first, kept_end = dt.date.fromisoformat(have_first), dt.date.fromisoformat(have_end)
    if now - recent_at > MAX_AGE_SECONDS:  # read the recent days and the pieces again
        kept_end = max(kept_first, kept_end - dt.timedelta(days=RECENT_DAYS))
        sums = {
            name: value for name, value in sums.items() if name[4:5] == "-" and name < kept_end.isoformat()
        }
        recent_at = now
    ranges = []
    if kept_first >= kept_end:  # no day kept
        ranges.append((first, end))
        kept_first, kept_end = first, end
    else:
        if first < kept_first:
            ranges.append((first, kept_first))
            kept_first = first
        if end > kept_end:
            ranges.append((kept_end, end))
            kept_end = end
    ranges = [(lo, hi) for lo, hi in ranges if lo < hi]
    missing = [piece for piece in pieces if piece not in sums]
    if ranges or missing or recent_at != entry[1]:
        fetched = fetch(ranges, missing) if ranges or missing else {}
        sums = _pruned({**sums, **fetched}, kept_first, end)
        for lo, hi in ranges:  # a day without spend is kept as one
            day = lo
            while day < hi:
                sums.setdefault(day.isoformat(), {})
                day += dt.timedelta(days=1)
        for piece in missing:
            sums.setdefault(piece, {})
        entry = (full_at, recent_at, kept_first.isoformat(), kept_end.isoformat(), sums)
        _write(conn, key, entry)
    with _lock:
        _memory[key] = entry
    return sums


def _pruned(sums: Sums, first: dt.date, settled_end: dt.date) -> Sums:
    """Without the hours of days now kept whole, and without the pieces from before the days kept."""
    hours_before = dt.datetime.combine(settled_end, dt.time(0), tzinfo=dt.timezone.utc).isoformat()
    pieces_before = dt.datetime.combine(first - dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)
    kept = {}
    for name, value in sums.items():
        if name.startswith("h:") and name[2:].split("/")[0] < hours_before:
            continue
        if name.startswith("e:") and name[2:].split("/")[1] < pieces_before.isoformat():
            continue
        kept[name] = value
    return kept


def _wall_clock() -> float:
    return time.time()


def clear() -> None:
    with _lock:
        _memory.clear()


# twice as fast as json.loads on these rows, which a new task process reads at its end
_decode = msgspec.json.Decoder().decode


def _parsed(payload: str) -> tuple[float, float, str, str, Sums] | None:
    try:
        full_at, recent_at, first, end, sums = _decode(payload)
        return float(full_at), float(recent_at), str(first), str(end), sums
    except (ValueError, TypeError, msgspec.DecodeError):
        return None


def _write(conn: Connection, key: str, entry: tuple[float, float, str, str, Sums]) -> None:
    """Keep the entry in the ledger for the other processes, on a connection of its own (the
    evaluation's stays read-only); a race with another writer or a failure only costs a re-read."""
    values = {
        "payload": msgspec.json.encode(list(entry)).decode(),
        "updated_at": dt.datetime.now(dt.timezone.utc),
    }
    row = budget_settled.c.cache_key == key
    try:
        with conn.engine.begin() as writer:
            if writer.execute(sa.update(budget_settled).where(row).values(values)).rowcount == 0:
                writer.execute(sa.insert(budget_settled).values(cache_key=key, **values))
    except Exception as error:
        log.debug("kept budget spend not written: %s: %s", type(error).__name__, error)
