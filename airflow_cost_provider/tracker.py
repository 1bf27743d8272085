"""Starting and finalizing the capture of a task try: measure, price, keep the result, write the ledger.

Each step is guarded on its own so one failure loses only its own part: a failed capture step keeps
the other usage, failed pricing keeps all usage as unpriced, a failed ledger write keeps the facet
and spools the capture, written later by the next try on the worker or `airflow-cost replay`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from airflow_cost_provider import conf
from airflow_cost_provider.capture import dbt, hook_lineage, worker
from airflow_cost_provider.capture.identity import task_try_from_ti, try_key
from airflow_cost_provider.capture.safety import failures, guarded, report_failure, suppress
from airflow_cost_provider.capture.session import (
    CaptureSession,
    current_session,
    drop_session,
    get_session,
    open_session,
)
from airflow_cost_provider.capture.writer import BackgroundWriter, ledger_writer
from airflow_cost_provider.get_provider_info import CONFIG_OPTIONS, WORKER_RATE_SOURCE
from airflow_cost_provider.pricing import CostLine, PriceBook, PriceBookError, Unpriced, Usage, estimate_all
from airflow_cost_provider.pricing.estimate import Estimator
from airflow_cost_provider.pricing.model import Price
from airflow_cost_provider.pricing.price_book import load_price_book
from airflow_cost_provider.result import CostResult

log = logging.getLogger("airflow_cost_provider")


def worker_prices() -> list[Price]:
    """The worker rates from [cost_provider], as prices; the shipped defaults name their source."""
    currency = conf.worker_rate_currency()
    prices = []
    for metric, unit, option, rate in (
        ("cpu_time", "vCPU-hour", "worker_vcpu_hour_rate", conf.worker_vcpu_hour_rate()),
        ("memory_time", "GiB-hour", "worker_memory_gib_hour_rate", conf.worker_memory_gib_hour_rate()),
    ):
        is_default = rate == Decimal(CONFIG_OPTIONS[option]["default"]) and currency == "USD"
        prices.append(
            Price(
                source=worker.SOURCE,
                metric=metric,
                unit=unit,
                amount=rate,
                currency=currency,
                book_version="config",
                source_url=WORKER_RATE_SOURCE if is_default else None,
                origin=f"[cost_provider] {option}",
            )
        )
    return prices


@functools.cache
def price_book() -> PriceBook:
    """The shipped book, the user's overrides, and the worker rates. Raises PriceBookError."""
    return load_price_book(conf.price_book_path(), cache_dir=conf.cache_dir()).with_prices(worker_prices())


_lost_try_sweeper = None
_lost_try_lock = threading.Lock()


@guarded("checking an ended DAG run for tries without a cost")
def dag_run_ended(dag_run: Any) -> None:
    """Queue the run for the check of tries that never reported their cost (see capture.lost_tries)."""
    global _lost_try_sweeper
    from airflow_cost_provider.capture import lost_tries

    logical_date = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
    with _lost_try_lock:
        if _lost_try_sweeper is None:
            _lost_try_sweeper = lost_tries.LostTrySweeper(_record_lost_tries, conf.finalize_timeout() + 5)
    _lost_try_sweeper.submit(dag_run.dag_id, dag_run.run_id, logical_date)


def _record_lost_tries(dag_id: str, run_id: str, logical_date: Any) -> None:
    from airflow_cost_provider.capture import lost_tries
    from airflow_cost_provider.ledger.store import get_engine

    tries = lost_tries.airflow_tries(dag_id, run_id)
    engine = get_engine(ledger_url(), timeout=conf.finalize_timeout())
    lost_tries.record_lost_tries(engine, dag_id, run_id, logical_date, tries)


def ledger_url() -> str:
    from airflow_cost_provider.ledger.store import resolve_url

    return resolve_url(conf.ledger_conn(), conf.default_ledger_url())


def terminal_state(ti: Any, hinted: str) -> str:
    """The task's own state when it says more than the hook that reported it (failed -> up_for_retry)."""
    state = str(getattr(getattr(ti, "state", None), "value", getattr(ti, "state", None)) or "").lower()
    return state if state in ("success", "failed", "up_for_retry", "skipped") else hinted


@guarded("opening the cost capture")
def start(ti: Any) -> CaptureSession | None:
    _instrument()
    mark = _hook_lineage_mark()
    session = open_session(
        task_try_from_ti(ti), worker.sample(), mark, ti, max_lines=_max_lines(), price=_pricer()
    )
    if _resumed_from_deferral(ti):
        session.resumed_from_deferral = True
        _restore_deferred(session)
    return session


def _resumed_from_deferral(ti: Any) -> bool:
    return bool(getattr(getattr(ti, "_ti_context_from_server", None), "next_method", None))


@guarded("restoring the cost capture after a deferral")
def _restore_deferred(session: CaptureSession) -> None:
    from airflow_cost_provider.capture import deferral
    from airflow_cost_provider.ledger.store import get_engine, load_deferred, save_deferred

    spool = _guarded_spool()
    spooled = _guarded_spooled_deferral(spool, session.task_try) if spool is not None else None
    document = None

    def read() -> None:
        nonlocal document
        engine = get_engine(ledger_url(), timeout=conf.finalize_timeout())
        if spooled is not None:  # saved on this worker while the ledger was down: newer than the ledger's
            save_deferred(engine, session.task_try, spooled, unless_final=True)
            spool.discard(spool.directory / spool.deferred_name(session.task_try))
        document = load_deferred(engine, session.task_try)

    finished, error = ledger_writer.run(read, timeout=conf.finalize_timeout())
    if not finished or error is not None:
        if spooled is None:
            raise error or TimeoutError(f"not done within finalize_timeout={conf.finalize_timeout()}s")
        document = spooled  # the ledger is unreachable: what this worker spooled still counts
    if document:
        usages, pending = deferral.restore(document)
        for usage in usages:
            session.record(usage)
        for resolve, item in pending:
            session.defer(resolve, item)


@guarded("keeping the cost capture across a deferral")
def suspend_if_deferred() -> None:
    """At the end of a task process: if the task deferred, keep what it used so far in the ledger for
    the process that resumes it, instead of finalizing."""
    session = current_session()
    if session is None or session.result is not None or session.pid != os.getpid():
        return
    state = getattr(session.ti, "state", None)
    if str(getattr(state, "value", state)).lower() != "deferred":
        return
    from airflow_cost_provider.capture import deferral
    from airflow_cost_provider.ledger.store import get_engine, save_deferred

    usages = session.usages()
    end = _guarded_sample(session.pid)
    if end is not None and conf.source_enabled(worker.SOURCE):
        usages += [
            dataclasses.replace(u, attributes={**u.attributes, "phase": "before_deferral"})
            for u in _guarded_worker_usage(session.start, end) or []
        ]
    document = deferral.snapshot(usages, session.pending)
    drop_session(session)

    def write() -> None:
        save_deferred(get_engine(ledger_url(), timeout=conf.finalize_timeout()), session.task_try, document)

    finished, error = ledger_writer.run(write, timeout=conf.finalize_timeout())
    if finished and error is None:
        return
    spool = _guarded_spool()
    path = spool.put_deferred(session.task_try, document) if spool is not None else None
    _report_unwritten("keeping the cost capture across a deferral", finished, error, path)


@functools.cache
def _instrument() -> None:
    """Patch the installed providers' hooks once per process (already-imported ones now, the others
    when the task imports them)."""
    from airflow_cost_provider.instrumentation import instrument_all

    instrument_all()


@guarded(
    "reading [cost_provider] max_lines_per_task", default=int(CONFIG_OPTIONS["max_lines_per_task"]["default"])
)
def _max_lines() -> int:
    return conf.max_lines_per_task()


@guarded("reading hook lineage at task start")
def _hook_lineage_mark() -> list[int] | None:
    return hook_lineage.mark() if conf.capture_hook_lineage() else None


def finalize(ti: Any, state: str) -> CostResult | None:
    """Cost the task try once; later calls (the other listener, a forked child) reuse the result."""
    session = get_session(try_key(ti))
    if session is None:
        return None
    deadline = time.monotonic() + conf.finalize_timeout()
    with session.lock:
        if session.result is None:
            session.result = _compute(session, state, deadline)
    if not session.ledger_write_attempted:
        session.ledger_write_attempted = True
        if _store_within(session, deadline):
            _replay_spool_within(deadline)
            _alert_budgets_within(session, deadline)
    return session.result


def _compute(session: CaptureSession, state: str, deadline: float) -> CostResult:
    end = _guarded_sample(session.pid)
    # what arrives at the end takes the same path as what the task recorded: past max_lines_per_task
    # it is aggregated too
    for usage in _resolve_pending(session, deadline):
        session.record(usage)
    for usage in _guarded_dbt_usage(session, deadline) or []:
        session.record(usage)
    own_pod, pod_read = _guarded_executor_pod(deadline) or ([], False)
    for usage in own_pod:
        session.record(usage)
    # under the KubernetesExecutor the try's pod is what it cost; its process ran inside the pod
    if end is not None and conf.source_enabled(worker.SOURCE) and not pod_read:
        for usage in _guarded_worker_usage(session.start, end) or []:
            session.record(usage)
    if session.hook_lineage_mark is not None:
        reported = _guarded_hook_lineage(session.hook_lineage_mark) or []
        for usage in _not_captured_otherwise(reported, session.usage, session.aggregates.sources()):
            session.record(usage)
    lines, unpriced = _price([u for u in session.usage if conf.source_enabled(u.source)])
    aggregated_lines, aggregated_unpriced = session.aggregates.results()
    lines += [line for line in aggregated_lines if conf.source_enabled(line.usage.source)]
    unpriced += [item for item in aggregated_unpriced if conf.source_enabled(item.usage.source)]
    lines = _corrected(lines)
    end_time = end.at if end is not None else dt.datetime.now(dt.timezone.utc)
    return CostResult(
        task_try=session.task_try,
        capture_id=session.capture_id,
        state=state,
        start_time=session.start.at,
        end_time=end_time,
        hostname=socket.gethostname(),
        lines=tuple(lines),
        unpriced=tuple(unpriced),
    )


# The factors reconcile learnt, read once per process and again after an hour (reconcile runs daily).
_FACTORS_TTL_SECONDS = 3600.0
_factors: tuple[float, dict] | None = None


def _corrected(lines: list[CostLine]) -> list[CostLine]:
    """Estimates of the sources opted into `correct_estimates`, multiplied by their factor."""
    if not conf.correct_estimates() or not any(
        conf.corrects_estimates_of(line.usage.source) for line in lines
    ):
        return lines
    factors = _guarded_factors()
    if not factors:
        return lines
    from airflow_cost_provider.reconcile.corrections import corrected

    return [
        corrected(line, factors) if conf.corrects_estimates_of(line.usage.source) else line for line in lines
    ]


@guarded("reading the estimate correction factors", default={})
def _guarded_factors() -> dict:
    global _factors
    if _factors is not None and time.monotonic() - _factors[0] < _FACTORS_TTL_SECONDS:
        return _factors[1]
    from airflow_cost_provider.ledger.store import get_engine
    from airflow_cost_provider.reconcile.corrections import load

    chosen = conf.correct_estimates()
    found = load(get_engine(ledger_url(), timeout=conf.finalize_timeout()), None if "*" in chosen else chosen)
    _factors = (time.monotonic(), found)
    return found


def _resolve_pending(session: CaptureSession, deadline: float) -> list[Usage]:
    """Fetch the statistics instrumentations left for the end, one batched look-up per kind, within
    the time budget. A look-up that fails keeps its queries, unpriced, with the reason."""
    usages: list[Usage] = []
    for resolve, items in list(session.pending.items()):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError(f"no time left within finalize_timeout={conf.finalize_timeout()}s")
            with suppress():
                usages += resolve(items, remaining)
        except Exception as error:
            report_failure("reading query statistics", error)
            reason = f"statistics look-up failed: {type(error).__name__}: {error}"
            usages += [item.unresolved(reason) for item in items]
    return usages


def _not_captured_otherwise(
    reported: list[Usage], captured: list[Usage], aggregated_sources: set[str] = frozenset()
) -> list[Usage]:
    """Hook lineage reports queries an instrumentation may have captured already, with their usage:
    keep only what no instrumentation saw (by id, or by source when the hook gave no id). Aggregated
    usages keep only their first ids: their sources count as captured."""
    ids = {(u.source, u.external_id) for u in captured if u.external_id}
    sources = {u.source for u in captured}
    return [
        u
        for u in reported
        if (u.source, u.external_id) not in ids
        and (u.external_id is not None or u.source not in sources)
        and u.source not in aggregated_sources
    ]


@guarded("measuring the worker process")
@guarded("reading the task's own pod")
def _guarded_executor_pod(deadline: float) -> tuple[list[Usage], bool] | None:
    from airflow_cost_provider.capture import executor_pod

    if not executor_pod.in_executor_pod() or not conf.source_enabled("kubernetes"):
        return None
    return executor_pod.own_pod_usages(max(0.1, (deadline - time.monotonic()) * 0.5))


def _guarded_sample(pid: int) -> worker.ProcessSample:
    return worker.sample(pid)


@guarded("measuring the worker process")
def _guarded_worker_usage(start: worker.ProcessSample, end: worker.ProcessSample) -> list[Usage]:
    return worker.usage_between(start, end)


@guarded("reading dbt's artifacts")
def _guarded_dbt_usage(session: CaptureSession, deadline: float) -> list[Usage]:
    if not conf.source_enabled(dbt.SOURCE):
        return []
    invocation = dbt.dbt_invocation(getattr(session.ti, "task", None))
    if invocation is None:
        return []
    return dbt.usages_of_run(*invocation, session.start.at, deadline)


@guarded("reading hook lineage")
def _guarded_hook_lineage(mark: list[int]) -> list[Usage]:
    return hook_lineage.usage_since(mark, dt.datetime.now(dt.timezone.utc))


def _pricer() -> Callable[[Usage], CostLine | Unpriced]:
    """Prices a task's usages past max_lines_per_task as they arrive, with the reasons _price gives;
    the book is loaded at the first of them, and each kind of usage looked up once."""
    estimator: Estimator | None = None

    def price(usage: Usage) -> CostLine | Unpriced:
        nonlocal estimator
        try:
            if estimator is None:
                estimator = Estimator(price_book())
            return estimator(usage)
        except PriceBookError as error:
            return Unpriced(usage, f"price book unusable: {error}")
        except Exception as error:
            report_failure("pricing", error)
            return Unpriced(usage, f"pricing failed: {type(error).__name__}: {error}")

    return price


def _price(usages: list[Usage]):
    try:
        return estimate_all(usages, price_book())
    except PriceBookError as error:
        reason = f"price book unusable: {error}"
    except Exception as error:
        report_failure("pricing", error)
        reason = f"pricing failed: {type(error).__name__}: {error}"
    return [], [Unpriced(usage, reason) for usage in usages]


def _store_within(session: CaptureSession, deadline: float) -> bool:
    """Write the ledger on the writer thread so a slow or hung database cannot hold the task past the
    time budget; the database driver's own timeouts end a stuck write soon after. True if written.

    A capture not written in time goes to the spool, to be written later: replaying it is harmless
    even when the late write lands after all (the ledger keeps one row per capture)."""
    spool = _guarded_spool()
    forked = session.pid != os.getpid()
    if spool is not None and not forked and _guarded_contains(spool, session.capture_id):
        # the OpenLineage child (listener_order = last) tried first and spooled it: one time budget
        # per try is enough on a ledger that just failed
        log.info("cost provider: capture %s waits in %s for the ledger", session.capture_id, spool.directory)
        return False
    ahead = spool.put(session.result) if spool is not None and forked else None

    def write() -> None:
        from airflow_cost_provider.ledger.store import get_engine, store

        store(get_engine(ledger_url(), timeout=conf.finalize_timeout()), session.result)

    finished, error = ledger_writer.run(write, timeout=max(0.0, deadline - time.monotonic()))
    if finished and error is None:
        if ahead is not None:
            spool.discard(ahead)
        if session.resumed_from_deferral and spool is not None:
            spool.discard(spool.directory / spool.deferred_name(session.task_try))
        return True
    path = ahead or (spool.put(session.result) if spool is not None else None)
    _report_unwritten("writing the cost ledger", finished, error, path)
    if path is not None and session.resumed_from_deferral:
        spool.discard(spool.directory / spool.deferred_name(session.task_try))
    return False


def _report_unwritten(step: str, finished: bool, error: BaseException | None, path: Any) -> None:
    """Say what is missing from the ledger and where it waits, so the logs tell what a replay adds."""
    failures[step] += 1
    why = (
        f"not done within finalize_timeout={conf.finalize_timeout()}s (it may still land)"
        if not finished
        else f"failed: {type(error).__name__}: {' '.join(str(error).split())}"
    )
    where = f"spooled to {path}, written later" if path is not None else "not spooled, lost"
    log.warning("cost provider: %s %s; %s (no impact on the task)", step, why, where)


# A few per try, so a worker drains a backlog over its next tries without holding any of them long.
REPLAY_PER_TRY = 3


@guarded("writing spooled captures")
def _replay_spool_within(deadline: float) -> None:
    """After a ledger write succeeded: write the oldest spooled captures of this worker, within what
    is left of the time budget. Another process replaying the spool now keeps it."""
    spool = _guarded_spool()
    if spool is None or not spool.count():
        return
    from airflow_cost_provider.capture.spool import write_to
    from airflow_cost_provider.ledger.store import get_engine

    def write(item, left):
        def work() -> None:
            write_to(get_engine(ledger_url(), timeout=conf.finalize_timeout()), item)

        return ledger_writer.run(work, timeout=max(0.0, left))

    outcome = spool.replay(
        write,
        limit=REPLAY_PER_TRY,
        deadline=lambda: deadline - time.monotonic(),
        stop_on_failure=True,
    )
    if outcome.written or outcome.failed:
        log.info(
            "cost provider: wrote %d spooled capture(s) to the ledger, %d remain in %s%s",
            outcome.written,
            outcome.remaining,
            spool.directory,
            "".join(f"; {name} not written: {why}" for name, why in outcome.failed),
        )


@guarded("opening the cost spool")
def _guarded_spool():
    from airflow_cost_provider.capture.spool import configured_spool

    return configured_spool()


@guarded("reading the cost spool", default=False)
def _guarded_contains(spool, capture_id: str) -> bool:
    return spool.contains(capture_id)


@guarded("reading the cost spool")
def _guarded_spooled_deferral(spool, task_try) -> dict | None:
    return spool.load_deferred(task_try)


budget_worker = BackgroundWriter("cost-budget-alerts")


@guarded("checking budgets")
def _alert_budgets_within(session: CaptureSession, deadline: float) -> None:
    """After the ledger write: evaluate the budgets this try counts towards, then record and deliver
    their alerts, all within what is left of finalize_timeout (on a thread of its own, so a slow
    ledger or notifier cannot hold the task). Without a budgets file this costs one cached lookup."""
    if not conf.budgets_path():
        return
    from airflow_cost_provider.budgets.model import configured_budgets, matching_budgets

    result = session.result
    sources = {line.usage.source for line in result.lines} | {u.usage.source for u in result.unpriced}
    budgets = matching_budgets(configured_budgets(), session.task_try, sources)
    if not budgets:
        return

    def check() -> None:
        from airflow_cost_provider.budgets.alerts import evaluate_and_alert
        from airflow_cost_provider.ledger.store import get_engine

        with suppress():
            engine = get_engine(ledger_url(), timeout=conf.finalize_timeout())
            evaluate_and_alert(engine, budgets, result.end_time, deadline, session.task_try)

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(
            f"no time left within finalize_timeout={conf.finalize_timeout()}s: the next evaluation alerts"
        )
    finished, error = budget_worker.run(check, timeout=remaining)
    if not finished:
        raise TimeoutError(
            f"not done within finalize_timeout={conf.finalize_timeout()}s: alerts not delivered yet are "
            "delivered at a later evaluation"
        )
    if error is not None:
        raise error
