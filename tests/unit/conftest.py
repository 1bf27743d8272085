from __future__ import annotations

import pytest

from airflow_cost_provider import conf, tracker
from airflow_cost_provider.capture import safety, session
from airflow_cost_provider.instrumentation import registry
from airflow_cost_provider.ledger import store


@pytest.fixture(autouse=True)
def fresh_provider_state(monkeypatch, tmp_path):
    """Each test gets its own ledger file, empty caches, no leftover sessions, and no wrapper a listener
    installed (a second instance of a source would wrap it twice, whatever order the tests run in)."""
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__SPOOL_DIR", str(tmp_path / "spool"))
    conf.clear_cache()
    tracker.price_book.cache_clear()
    session.clear_sessions()
    safety.failures.clear()
    monkeypatch.setattr(tracker, "_factors", None)
    yield
    conf.clear_cache()
    tracker.price_book.cache_clear()
    session.clear_sessions()
    registry.uninstrument_all()
    store.dispose_engines()
