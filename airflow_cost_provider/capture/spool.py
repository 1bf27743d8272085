"""A local spool for captures the ledger did not take within the time budget, written to it later.

One JSON file per capture, named by its capture id, so spooling a capture twice keeps one file and
replaying it twice keeps one ledger row (the ledger leaves a capture it already holds alone). Files
are written whole (a temporary file, then a rename) and readable by their owner only. The spool is
bounded in size: past it a new capture is dropped with a warning. Nothing here raises into a task.

A deferred task's saved capture (what it used before deferring) is spooled the same way, named by
its task try, and replayed as the ledger's deferred snapshot unless the try's final capture is in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from airflow_cost_provider.capture.deferral import usage_from_json, usage_to_json
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.pricing.model import CostLine, Price, Unpriced
from airflow_cost_provider.result import CostResult

log = logging.getLogger("airflow_cost_provider")

SUFFIX = ".json"
UNREADABLE_SUFFIX = ".unreadable"
LOCK_FILE = ".replay.lock"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"[0-9A-Za-z_-]{1,100}")


# ---------------------------------------------------------------- serialising a capture


def _time(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _price_to_json(price: Price | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "source": price.source,
        "metric": price.metric,
        "unit": price.unit,
        "amount": str(price.amount),
        "currency": price.currency,
        "book_version": price.book_version,
        "effective_date": _time(price.effective_date),
        "source_url": price.source_url,
        "match": [list(pair) for pair in price.match],
        "origin": price.origin,
    }


def _price_from_json(data: dict[str, Any] | None) -> Price | None:
    if data is None:
        return None
    return Price(
        source=data["source"],
        metric=data["metric"],
        unit=data["unit"],
        amount=Decimal(data["amount"]),
        currency=data["currency"],
        book_version=data["book_version"],
        effective_date=dt.date.fromisoformat(data["effective_date"]) if data["effective_date"] else None,
        source_url=data["source_url"],
        match=tuple((key, value) for key, value in data["match"]),
        origin=data["origin"],
    )


def _task_try_to_json(task_try: TaskTry) -> dict[str, Any]:
    return {
        **dataclasses.asdict(task_try),
        "dag_tags": list(task_try.dag_tags),
        "labels": [list(pair) for pair in task_try.labels],
    }


def _task_try_from_json(data: dict[str, Any]) -> TaskTry:
    return TaskTry(
        **{
            **data,
            "dag_tags": tuple(data["dag_tags"]),
            "labels": tuple((key, value) for key, value in data["labels"]),
        }
    )


def result_to_json(result: CostResult) -> dict[str, Any]:
    """A capture as JSON, money as exact decimal strings. A CostResult holds usage, prices and the
    task's identity, never a connection or its credentials."""
    return {
        "version": FORMAT_VERSION,
        "kind": "capture",
        "task_try": _task_try_to_json(result.task_try),
        "capture_id": result.capture_id,
        "state": result.state,
        "start_time": _time(result.start_time),
        "end_time": _time(result.end_time),
        "hostname": result.hostname,
        "lines": [
            {
                "usage": usage_to_json(line.usage),
                "amount": str(line.amount),
                "currency": line.currency,
                "method": line.method,
                "price": _price_to_json(line.price),
                "status": line.status,
                **_correction_to_json(line),
            }
            for line in result.lines
        ],
        "unpriced": [{"usage": usage_to_json(item.usage), "reason": item.reason} for item in result.unpriced],
    }


def _correction_to_json(line: CostLine) -> dict[str, str]:
    """An estimate's correction, on the lines that have one (older spool files have none)."""
    if line.correction_factor is None:
        return {}
    return {
        "correction_factor": str(line.correction_factor),
        "uncorrected_amount": str(line.uncorrected_amount),
    }


def _decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def result_from_json(data: dict[str, Any]) -> CostResult:
    return CostResult(
        task_try=_task_try_from_json(data["task_try"]),
        capture_id=data["capture_id"],
        state=data["state"],
        start_time=dt.datetime.fromisoformat(data["start_time"]),
        end_time=dt.datetime.fromisoformat(data["end_time"]),
        hostname=data["hostname"],
        lines=tuple(
            CostLine(
                usage=usage_from_json(line["usage"]),
                amount=Decimal(line["amount"]),
                currency=line["currency"],
                method=line["method"],
                price=_price_from_json(line["price"]),
                status=line["status"],
                correction_factor=_decimal_or_none(line.get("correction_factor")),
                uncorrected_amount=_decimal_or_none(line.get("uncorrected_amount")),
            )
            for line in data["lines"]
        ),
        unpriced=tuple(Unpriced(usage_from_json(item["usage"]), item["reason"]) for item in data["unpriced"]),
    )


def deferred_to_json(task_try: TaskTry, snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "kind": "deferred",
        "task_try": _task_try_to_json(task_try),
        "snapshot": snapshot,
    }


def _try_digest(task_try: TaskTry) -> str:
    return hashlib.sha256(json.dumps(list(task_try.key)).encode()).hexdigest()[:32]


# ---------------------------------------------------------------- the spool folder


@dataclass(frozen=True)
class Spooled:
    """A spooled item read back: a capture (CostResult) or a deferred snapshot (task try, document)."""

    path: Path
    kind: str
    result: CostResult | None = None
    task_try: TaskTry | None = None
    snapshot: dict[str, Any] | None = None


@dataclass
class ReplayOutcome:
    written: int = 0
    remaining: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)
    busy: bool = False  # another process was replaying this spool


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # (the folder's mtime, its files' total size) when last summed: summing stats every file, and
        # the folder's mtime moves whenever any process adds or removes one
        self._known_size: tuple[int, int] | None = None

    # -- writing

    def put(self, result: CostResult) -> Path | None:
        """Keep a capture; its path, or None when it was dropped (spool full, disk full, ...)."""
        return self._put(_name(result.capture_id), lambda: result_to_json(result))

    def put_deferred(self, task_try: TaskTry, snapshot: dict[str, Any]) -> Path | None:
        """Keep a deferred task's saved capture; a later deferral of the same try replaces it."""
        return self._put(self.deferred_name(task_try), lambda: deferred_to_json(task_try, snapshot))

    @staticmethod
    def deferred_name(task_try: TaskTry) -> str:
        return f"deferred-{_try_digest(task_try)}{SUFFIX}"

    def _put(self, name: str, document: Callable[[], dict[str, Any]]) -> Path | None:
        path = self.directory / name
        try:
            payload = json.dumps(document(), separators=(",", ":")).encode()
            self._make_directory()
            replaced = path.stat().st_size if path.exists() else 0
            used = self._used_bytes() - replaced + len(payload)
            if used > self.max_bytes:
                log.warning(
                    "cost provider: the spool %s is full (spool_max_mb): capture %s dropped, it is not in "
                    "the ledger (no impact on the task)",
                    self.directory,
                    name.removesuffix(SUFFIX),
                )
                return None
            descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)  # mode 0600
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(payload)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            self._known_size = (os.stat(self.directory).st_mtime_ns, used)
        except Exception as error:
            why = "the disk is full" if getattr(error, "errno", None) == errno.ENOSPC else str(error)
            log.warning(
                "cost provider: could not spool capture %s to %s: %s: %s; it is not in the ledger "
                "(no impact on the task)",
                name.removesuffix(SUFFIX),
                self.directory,
                type(error).__name__,
                why,
            )
            return None
        return path

    def _make_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # the umask may have widened it

    # -- reading

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as entries:
                return [e for e in entries if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
        except FileNotFoundError:
            return []

    def _used_bytes(self) -> int:
        modified = os.stat(self.directory).st_mtime_ns
        if self._known_size is None or self._known_size[0] != modified:
            self._known_size = (modified, self.size_bytes())
        return self._known_size[1]

    def size_bytes(self) -> int:
        total = 0
        for entry in self._entries():
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def pending(self) -> list[Path]:
        """The spooled files, oldest first."""
        dated = []
        for entry in self._entries():
            with contextlib.suppress(FileNotFoundError):
                dated.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
        return [path for _, _, path in sorted(dated)]

    def count(self) -> int:
        return len(self._entries())

    def contains(self, capture_id: str) -> bool:
        return (self.directory / _name(capture_id)).exists()

    @staticmethod
    def load(path: Path) -> Spooled:
        data = json.loads(path.read_bytes())
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"spool format {data.get('version')!r}, expected {FORMAT_VERSION}")
        if data.get("kind") == "deferred":
            return Spooled(
                path, "deferred", task_try=_task_try_from_json(data["task_try"]), snapshot=data["snapshot"]
            )
        return Spooled(path, "capture", result=result_from_json(data))

    def load_deferred(self, task_try: TaskTry) -> dict[str, Any] | None:
        """The deferred snapshot spooled on this machine for the try, if any."""
        path = self.directory / self.deferred_name(task_try)
        try:
            return self.load(path).snapshot
        except FileNotFoundError:
            return None

    def discard(self, path: Path) -> None:
        # a file left behind is written again later, and the ledger keeps one row per capture
        with contextlib.suppress(OSError):
            path.unlink()

    def discard_capture(self, capture_id: str) -> None:
        self.discard(self.directory / _name(capture_id))

    def set_aside(self, path: Path) -> None:
        """Rename an unreadable file so it no longer blocks the others; kept for a person to read."""
        with contextlib.suppress(FileNotFoundError):
            path.rename(path.with_suffix(UNREADABLE_SUFFIX))

    # -- replaying

    @contextlib.contextmanager
    def replay_lock(self) -> Iterator[bool]:
        """True while this process alone replays the spool; False when another one does now."""
        try:
            descriptor = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            yield True  # no spool folder: nothing to replay
            return
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(descriptor)  # closing releases the lock

    def replay(
        self,
        write: Callable[[Spooled, float | None], tuple[bool, BaseException | None]],
        *,
        limit: int | None = None,
        deadline: Callable[[], float | None] = lambda: None,
        stop_on_failure: bool = False,
    ) -> ReplayOutcome:
        """Write the spooled items, oldest first, through `write(item, seconds left) -> (finished, error)`;
        a file is removed only once its write committed. At most `limit` items; none once `deadline()`
        says no time is left (0 or less)."""
        outcome = ReplayOutcome()
        with self.replay_lock() as mine:
            if not mine:
                outcome.busy = True
                outcome.remaining = self.count()
                return outcome
            for path in self.pending()[:limit]:
                left = deadline()
                if left is not None and left <= 0:
                    break
                try:
                    item = self.load(path)
                except FileNotFoundError:
                    continue  # replayed by a process that held the lock before us
                except Exception as error:
                    self.set_aside(path)
                    outcome.failed.append(
                        (path.name, f"unreadable, renamed to *{UNREADABLE_SUFFIX}: {error}")
                    )
                    continue
                finished, error = write(item, left)
                if finished and error is None:
                    self.discard(path)
                    outcome.written += 1
                    continue
                why = f"{type(error).__name__}: {error}" if error else "not done in time"
                outcome.failed.append((path.name, " ".join(why.split())))
                if stop_on_failure:
                    break
        outcome.remaining = self.count()
        return outcome


def _name(capture_id: str) -> str:
    """The file name of a capture: its id when that is a safe file name, else a digest of it."""
    if _SAFE_NAME.fullmatch(capture_id):
        return f"{capture_id}{SUFFIX}"
    return f"capture-{hashlib.sha256(capture_id.encode()).hexdigest()[:32]}{SUFFIX}"


_spools: dict[tuple[str, int], Spool] = {}


def configured_spool() -> Spool:
    """The spool of [cost_provider] spool_dir, one per process (it remembers the folder's size)."""
    from airflow_cost_provider import conf

    key = (conf.spool_dir(), conf.spool_max_mb() * 1024 * 1024)
    spool = _spools.get(key)
    if spool is None:
        spool = _spools[key] = Spool(*key)
    return spool


def write_to(engine: Any, item: Spooled) -> None:
    """Write one spooled item to the ledger; a capture or snapshot already there is left alone."""
    from airflow_cost_provider.ledger.store import save_deferred, store

    if item.kind == "deferred":
        save_deferred(engine, item.task_try, item.snapshot, unless_final=True)
    else:
        store(engine, item.result)


def writer_for(engine: Any) -> Callable[[Spooled, float | None], tuple[bool, BaseException | None]]:
    """A `write` for Spool.replay that writes each item to the ledger at once, reporting its error."""

    def write(item: Spooled, _left: float | None) -> tuple[bool, BaseException | None]:
        try:
            write_to(engine, item)
        except Exception as error:
            return True, error
        return True, None

    return write


def waiting_message() -> str | None:
    """What `airflow-cost report` and `check` say while captures wait in this machine's spool."""
    try:
        spool = configured_spool()
        waiting = spool.count()
    except Exception:  # a bad spool_dir is reported with the options
        return None
    if not waiting:
        return None
    return f"{waiting} capture(s) wait in {spool.directory}: run airflow-cost replay"
