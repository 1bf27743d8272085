"""Validation of [cost_provider], the price book and the ledger.

`airflow-cost check` runs all of it (check_all); the plugin logs configuration_problems() as Airflow
loads it, which must stay cheap and never touch the ledger: every Airflow process loads the plugin.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_cost_provider import conf

if TYPE_CHECKING:
    from airflow_cost_provider.pricing.model import Price


@dataclass(frozen=True)
class CheckResult:
    problems: tuple[str, ...] = ()  # what must be fixed; `airflow-cost check` exits 1 on any
    notes: tuple[str, ...] = ()  # worth knowing, not wrong
    warnings: tuple[str, ...] = ()  # probably wrong, but usable (a budget currency the ledger never saw)


def configuration_problems(connection_types: Collection[str] | None = None) -> list[str]:
    """Every problem with a [cost_provider] option or the price book, each once, in option order.

    connection_types: Airflow's, for the source lists (a DB-API hook's statements take its connection
    type as their source). None leaves the source lists unchecked: an unknown name there is harmless
    at run time, and Airflow's providers are not for the plugin to load while Airflow loads it."""
    from airflow_cost_provider.pricing.price_book import PriceBookError, load_price_book

    problems: dict[str, None] = {}  # ordered and without repeats: one bad value can surface twice
    for option, getter in conf.GETTERS.items():
        try:
            getter()
        except conf.ConfigError as error:
            problems.setdefault(str(error))
        except Exception as error:  # e.g. a failing ledger_conn_cmd, which Airflow itself runs
            problems.setdefault(f"[{conf.SECTION}] {option} cannot be read: {type(error).__name__}: {error}")
    try:
        book = load_price_book(conf.price_book_path(), cache_dir=conf.cache_dir())
    except PriceBookError as error:
        problems.setdefault(str(error))
    else:
        # only against a book that loaded: the sources a broken book adds would all look unknown
        if connection_types is not None:
            sources = known_sources(book.prices)
            for option in conf.SOURCE_LISTS:
                try:
                    conf.check_source_names(option, sources, connection_types)
                except conf.ConfigError as error:
                    problems.setdefault(str(error))
    if problem := budgets_problem():
        problems.setdefault(problem)
    return list(problems)


def notifier_problems() -> list[str]:
    """A problem per notify target of the budgets file whose notifier cannot be imported here (not a
    path, no such module or class, not a BaseNotifier): its alerts could never be delivered. Imports
    the notifiers' modules, so Airflow; nothing to say when the file itself does not load."""
    from airflow_cost_provider.budgets.model import load_budgets
    from airflow_cost_provider.budgets.notify import unusable_notifiers

    try:
        path = conf.budgets_path()
        budgets = load_budgets(path) if path else []
    except Exception:  # reported by budgets_problem()
        return []
    return unusable_notifiers(budgets)


def budgets_problem() -> str | None:
    """What is wrong with the budgets file, as one message naming the file, the budget and the field;
    None without a file or with a good one. Reads no ledger."""
    try:
        path = conf.budgets_path()
    except Exception:  # reported with the options
        return None
    if not path:
        return None
    # imported only for a file: every task process that loads the plugin runs this check
    from airflow_cost_provider.budgets.model import BudgetError, load_budgets

    try:
        load_budgets(path)
    except BudgetError as error:
        return str(error)
    return None


def budget_currency_warnings(ledger_url: str | None) -> list[str]:
    """A warning per budget whose currency the ledger never recorded a cost in (its spend would stay
    0), when the budgets file loads and the ledger can be opened; otherwise nothing to say here."""
    from airflow_cost_provider.budgets.evaluate import unseen_currency_warnings
    from airflow_cost_provider.budgets.model import load_budgets
    from airflow_cost_provider.ledger.store import open_existing, resolve_url

    try:
        path = conf.budgets_path()
        if not path:
            return []
        budgets = load_budgets(path)
        url = resolve_url(ledger_url or conf.ledger_conn(), conf.default_ledger_url())
        return unseen_currency_warnings(open_existing(url), budgets)
    except Exception:  # the file's or the ledger's problem is reported on its own
        return []


def known_sources(prices: Iterable[Price]) -> frozenset[str]:
    """The sources the provider names itself: every source the price book prices, the task
    process's own (priced by the worker_* options instead), and dbt's artifacts (capture/dbt.py;
    disabling it stops reading them)."""
    from airflow_cost_provider.capture import dbt, worker

    return frozenset({price.source for price in prices} | {worker.SOURCE, dbt.SOURCE})


def connection_types() -> frozenset[str]:
    """The connection types of the installed Airflow providers that are source names (this imports
    Airflow). Not those captured under another name: mssql statements are azure_sql's."""
    from airflow_cost_provider.capture.hook_lineage import _SOURCE_BY_CONN_TYPE

    try:
        try:
            from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Providers
        except ImportError:  # Airflow before the Task SDK had its own
            from airflow.providers_manager import ProvidersManager as Providers

        types = set(Providers().hooks)
    except Exception:  # without them a DB-API source may be reported unknown, nothing worse
        return frozenset()
    return frozenset(types - {kind for kind, source in _SOURCE_BY_CONN_TYPE.items() if kind != source})


def check_all(ledger_url: str | None = None) -> CheckResult:
    """Everything `airflow-cost check` reports: configuration_problems() with the source lists checked,
    the ledger (reachable and at the schema this version expects; migrated when older, as a worker
    would) and the OpenLineage setup. Imports Airflow (its providers' connection types).

    ledger_url: the ledger to check, an SQLAlchemy URL or an Airflow connection id; None checks the
    configured one (ledger_conn, else the SQLite file in AIRFLOW_HOME), which may not exist yet.
    """
    problems = configuration_problems(connection_types())
    problems += [problem for problem in notifier_problems() if problem not in problems]
    notes: list[str] = []
    ledger_problem, ledger_note = _check_ledger(ledger_url)
    if ledger_problem and ledger_problem not in problems:
        problems.append(ledger_problem)
    notes += [note for note in (ledger_note, openlineage_setup_note()) if note]
    warnings = [] if ledger_problem or ledger_note else budget_currency_warnings(ledger_url)
    if waiting := _spool_waiting():
        warnings.append(waiting)
    return CheckResult(tuple(problems), tuple(notes), tuple(warnings))


def _spool_waiting() -> str | None:
    """Captures spooled on this machine while the ledger was unreachable, not in the ledger yet."""
    from airflow_cost_provider.capture.spool import waiting_message

    return waiting_message()


def _check_ledger(explicit: str | None) -> tuple[str | None, str | None]:
    """(problem, note) about the ledger."""
    from airflow_cost_provider.ledger.store import LedgerError, open_existing, resolve_url

    if explicit:
        conn = explicit
    else:
        try:
            conn = conf.ledger_conn()
        except Exception:  # reported with the options already
            return None, None
    try:
        url = resolve_url(conn, conf.default_ledger_url())
    except LedgerError as error:
        return str(error), None
    if not explicit and (path := _missing_sqlite_file(url)):
        # a worker creates the configured SQLite ledger at its first task: nothing to fix yet
        return None, f"the ledger {path} does not exist yet: the first task to finish creates it"
    try:
        open_existing(url)
    except LedgerError as error:
        return str(error), None
    except Exception as error:  # a driver error; the URL shown without its password
        return f"ledger {_safe(url)} cannot be used: {type(error).__name__}: {error}", None
    return None, None


def _missing_sqlite_file(url: str) -> str | None:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None  # open_existing says what is wrong with it
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or path in (None, "", ":memory:") or Path(path).exists():
        return None
    return path


def _safe(url: str) -> str:
    from airflow_cost_provider.ledger.store import safe_url

    try:
        return safe_url(url)
    except Exception:
        return "the ledger"


def openlineage_setup_note() -> str | None:
    """What to add when OpenLineage is on but its events will not carry task costs, else None (the
    plugin logs it at start-up; `check` prints it as a note)."""
    import importlib.util

    from airflow_cost_provider.openlineage import CUSTOM_RUN_FACETS_PATH

    try:
        if importlib.util.find_spec("airflow.providers.openlineage") is None:
            return None
    except (ImportError, ValueError):
        return None
    from airflow.providers.openlineage import conf as ol_conf  # imports Airflow: only when it is there

    if ol_conf.is_disabled() or CUSTOM_RUN_FACETS_PATH in ol_conf.custom_run_facets():
        return None
    return (
        "OpenLineage is enabled but its events will not carry task costs. Add to airflow.cfg: "
        f"[openlineage] custom_run_facets = {CUSTOM_RUN_FACETS_PATH} (or set "
        f"AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS={CUSTOM_RUN_FACETS_PATH}; separate several functions "
        "with ';')"
    )
