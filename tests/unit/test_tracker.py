"""Finalizing a task try: one result per capture, in either order, whatever fails."""

from __future__ import annotations

import json
import logging
import os
import time
from decimal import Decimal

import pytest

from airflow_cost_provider import conf, tracker
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.session import record_usage
from airflow_cost_provider.ledger import store
from airflow_cost_provider.listener import make_listener
from airflow_cost_provider.openlineage import get_cost_run_facets
from airflow_cost_provider.pricing import Usage
from tests.support.airflow_env import ledger_rows
from tests.support.fake_ti import FakeTaskInstance
from tests.support.http_recorder import closed_port

ATHENA_SCAN = Usage("athena", "data_scanned", Decimal(2 * 10**12), "byte", external_id="q-123")


def cost_facet(ti, state="success") -> dict:
    """The facet as the OpenLineage client serializes it into the event."""
    from openlineage.client.serde import Serde

    return Serde.to_dict(get_cost_run_facets(ti, state)["costProvider_cost"])


def ledger_url() -> str:
    return os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"]


def run_task(ti, state="success", work=None):
    listener = make_listener("first")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    if work:
        work()
    getattr(listener, f"on_task_instance_{state}")(
        previous_state=None, task_instance=ti, **({"error": None} if state == "failed" else {})
    )
    return listener


def test_usage_recorded_during_the_task_is_priced_and_stored():
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    facet = cost_facet(ti)
    athena = [line for line in facet["lines"] if line["source"] == "athena"]
    assert athena == [
        {
            "source": "athena",
            "metric": "data_scanned",
            "quantity": 2 * 10**12,
            "unit": "byte",
            "amount": 10,  # 2 TB x $5/TB
            "currency": "USD",
            "method": "list_price",
            "status": "estimated",
            "externalId": "q-123",
            "priceRef": athena[0]["priceRef"],
            "unitPrice": 5,
            "priceUnit": "TB",
        }
    ]
    assert athena[0]["priceRef"].endswith(":athena/data_scanned")
    rows = ledger_rows(ledger_url(), "SELECT source, amount_nanos FROM cost_lines WHERE source = 'athena'")
    assert rows == [{"source": "athena", "amount_nanos": 10 * 10**9}]


def test_second_finalize_reuses_the_result_and_writes_once():
    ti = FakeTaskInstance()
    run_task(ti)
    first = tracker.finalize(ti, "success")
    time.sleep(0.05)
    assert tracker.finalize(ti, "success") is first
    assert len(ledger_rows(ledger_url(), "SELECT id FROM cost_task_runs")) == 1


def test_a_new_capture_of_the_same_try_replaces_the_ledger_row():
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    run_task(ti)  # e.g. the try re-run by `airflow tasks test`
    rows = ledger_rows(ledger_url(), "SELECT id, capture_id FROM cost_task_runs")
    assert len(rows) == 1
    assert ledger_rows(ledger_url(), "SELECT id FROM cost_lines WHERE source = 'athena'") == []


def _facet_from_forked_child(ti) -> dict:
    """Call get_cost_run_facets in a forked child, as the OpenLineage listener does."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            payload = json.dumps(cost_facet(ti))
            os.write(write_end, payload.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        payload = reader.read()
    os.waitpid(pid, 0)
    return json.loads(payload)


@pytest.mark.parametrize("order", ["cost_listener_first", "openlineage_child_first"])
def test_both_listener_orders_give_one_row_that_matches_the_facet(order):
    ti = FakeTaskInstance()
    listener = make_listener("first")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    record_usage(ATHENA_SCAN)
    sum(i * i for i in range(300_000))  # some CPU for the worker lines
    if order == "cost_listener_first":
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
        facet = _facet_from_forked_child(ti)
    else:
        facet = _facet_from_forked_child(ti)
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
    rows = ledger_rows(ledger_url(), "SELECT l.source, l.metric, l.amount_nanos FROM cost_lines l")
    assert len(ledger_rows(ledger_url(), "SELECT id FROM cost_task_runs")) == 1
    ledger = sorted((r["source"], r["metric"], Decimal(r["amount_nanos"]).scaleb(-9)) for r in rows)
    from_facet = sorted((x["source"], x["metric"], Decimal(str(x["amount"]))) for x in facet["lines"])
    assert ledger == from_facet
    cpu = next(x for x in facet["lines"] if x["metric"] == "cpu_time")
    assert cpu["quantity"] > 0  # measured on the parent, not the child's fresh counters


def test_failed_and_retried_tries_are_kept_apart():
    ti = FakeTaskInstance(task_id="flaky")
    ti.state = "up_for_retry"
    run_task(ti, state="failed")
    retry = FakeTaskInstance(task_id="flaky", run_id=ti.run_id, try_number=2)
    run_task(retry)
    rows = ledger_rows(ledger_url(), "SELECT try_number, state FROM cost_task_runs ORDER BY try_number")
    assert rows == [{"try_number": 1, "state": "up_for_retry"}, {"try_number": 2, "state": "success"}]


def test_a_failing_capture_step_keeps_the_rest_and_warns_once(monkeypatch, caplog):
    def broken(*_args):
        raise OSError("proc is gone")

    monkeypatch.setattr(worker, "usage_between", broken)
    ti = FakeTaskInstance()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    facet = cost_facet(ti)
    assert [line["source"] for line in facet["lines"]] == ["athena"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cost provider: measuring the worker process failed: OSError: proc is gone (no impact on the task)"
    ]


def test_failing_pricing_keeps_all_usage_as_unpriced(monkeypatch):
    def broken(*_args, **_kwargs):
        raise ArithmeticError("boom")

    monkeypatch.setattr(tracker, "estimate_all", broken)
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    facet = cost_facet(ti)
    assert facet["status"] == "partial" and facet["lines"] == [] and facet["totals"] == []
    assert {u["source"] for u in facet["unpriced"]} == {"athena", "airflow_worker"}
    rows = ledger_rows(ledger_url(), "SELECT amount_nanos, unpriced_reason FROM cost_lines")
    assert rows and all(r["amount_nanos"] is None and "pricing failed" in r["unpriced_reason"] for r in rows)


def test_a_hung_ledger_write_is_cut_at_the_time_budget(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "0.5")
    monkeypatch.setattr(store, "store", lambda *_: time.sleep(5))
    ti = FakeTaskInstance()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        run_task(ti)
    assert time.monotonic() - started < 2
    assert "not done within finalize_timeout=0.5s" in caplog.text
    assert cost_facet(ti)["lines"]  # the facet is still there


def test_an_unreachable_ledger_database_degrades_to_a_warning(monkeypatch, caplog):
    url = f"postgresql+psycopg2://cost:secret-pw@127.0.0.1:{closed_port()}/ledger"
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "3")
    ti = FakeTaskInstance()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        run_task(ti)
    assert "writing the cost ledger failed" in caplog.text and "unreachable" in caplog.text
    assert "secret-pw" not in caplog.text
    assert cost_facet(ti)["totals"]


def test_a_malformed_price_book_keeps_usage_unpriced_with_the_reason(monkeypatch, tmp_path):
    book = tmp_path / "prices.yaml"
    book.write_text(
        'version: "1"\nprices:\n  - {source: athena, metric: data_scanned, unit: furlong, amount: "5", currency: USD}\n'
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH", str(book))
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    facet = cost_facet(ti)
    assert facet["lines"] == [] and facet["status"] == "partial"
    reason = facet["unpriced"][0]["reason"]
    assert str(book) in reason and "entry #1 (athena/data_scanned)" in reason and "furlong" in reason


def test_disabled_source_is_not_captured(monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "airflow_worker, snowflake")
    ti = FakeTaskInstance()
    run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    facet = cost_facet(ti)
    assert [line["source"] for line in facet["lines"]] == ["athena"]


def test_listener_hooks_never_raise_into_the_task(monkeypatch, caplog):
    def broken(_ti):
        raise KeyError("dag_run")

    monkeypatch.setattr("airflow_cost_provider.tracker.task_try_from_ti", broken)
    listener = make_listener("first")
    ti = FakeTaskInstance()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        listener.on_task_instance_running(previous_state=None, task_instance=ti)
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
    assert "opening the cost capture failed" in caplog.text
    assert get_cost_run_facets(ti, "success") == {}


def test_running_events_get_no_cost_facet():
    ti = FakeTaskInstance()
    make_listener("first").on_task_instance_running(previous_state=None, task_instance=ti)
    assert get_cost_run_facets(ti, "running") == {}


def test_openlineage_run_id_matches_the_provider_and_is_skipped_when_openlineage_is_off(monkeypatch):
    from airflow.providers.openlineage import conf as openlineage_conf
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    from airflow_cost_provider.capture.identity import task_try_from_ti

    ti = FakeTaskInstance(map_index=3, try_number=2)
    monkeypatch.setattr(openlineage_conf, "is_disabled", lambda: False)
    expected = OpenLineageAdapter.build_task_instance_run_id(
        dag_id=ti.dag_id, task_id=ti.task_id, try_number=2, logical_date=ti.logical_date, map_index=3
    )
    assert task_try_from_ti(ti).ol_run_id == expected
    monkeypatch.setattr(openlineage_conf, "is_disabled", lambda: True)
    assert task_try_from_ti(ti).ol_run_id is None


def spooled_files() -> list[str]:
    from airflow_cost_provider.capture.spool import configured_spool

    return sorted(path.name for path in configured_spool().pending())


def refused_ledger(monkeypatch) -> str:
    """Point the ledger at a closed port; returns the working ledger's URL for later."""
    working = ledger_url()
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__LEDGER_CONN",
        f"postgresql+psycopg2://cost:pw@127.0.0.1:{closed_port()}/ledger",
    )
    conf.clear_cache()
    return working


def reachable_ledger(monkeypatch, url: str) -> None:
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    conf.clear_cache()


def test_an_unreachable_ledger_spools_the_captures_and_the_next_try_writes_them(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "3")
    working = refused_ledger(monkeypatch)
    missed = [FakeTaskInstance(task_id=f"missed_{n}") for n in range(2)]
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        for ti in missed:
            run_task(ti, work=lambda: record_usage(ATHENA_SCAN))
    assert caplog.text.count("writing the cost ledger failed") == 2
    assert caplog.text.count(", written later (no impact on the task)") == 2
    assert len(spooled_files()) == 2
    reachable_ledger(monkeypatch, working)
    with caplog.at_level(logging.INFO, logger="airflow_cost_provider"):
        run_task(FakeTaskInstance(task_id="next"))
    assert "wrote 2 spooled capture(s) to the ledger, 0 remain" in caplog.text
    assert spooled_files() == []
    rows = ledger_rows(
        working, "SELECT task_id, count(*) AS n FROM cost_task_runs GROUP BY task_id ORDER BY 1"
    )
    assert rows == [
        {"task_id": "missed_0", "n": 1},
        {"task_id": "missed_1", "n": 1},
        {"task_id": "next", "n": 1},
    ]
    athena = ledger_rows(working, "SELECT amount_nanos FROM cost_lines WHERE source = 'athena'")
    assert athena == [{"amount_nanos": 10 * 10**9}] * 2


def test_a_write_that_lands_after_the_time_budget_is_spooled_and_stays_one_row(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "0.3")
    real_store = store.store
    slow = {"seconds": 1.0}

    def late_store(engine, result):
        time.sleep(slow["seconds"])
        return real_store(engine, result)

    monkeypatch.setattr(store, "store", late_store)
    ti = FakeTaskInstance()
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        run_task(ti)
    assert "not done within finalize_timeout=0.3s (it may still land); spooled to" in caplog.text
    assert "writing the cost ledger failed" not in caplog.text
    time.sleep(1.5)
    assert len(ledger_rows(ledger_url(), "SELECT id FROM cost_task_runs")) == 1  # it landed
    assert len(spooled_files()) == 1
    slow["seconds"] = 0
    run_task(FakeTaskInstance(task_id="next"))
    assert spooled_files() == []
    assert len(ledger_rows(ledger_url(), "SELECT id FROM cost_task_runs")) == 2  # one row per try


def test_listener_order_last_spends_one_time_budget_on_a_hung_ledger(monkeypatch):
    # a budget long enough that a loaded machine's slowness cannot pass for a second one
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "2")
    real_store = store.store
    hung = {"seconds": 30.0}

    def hung_store(engine, result):
        time.sleep(hung["seconds"])
        return real_store(engine, result)

    monkeypatch.setattr(store, "store", hung_store)
    ti = FakeTaskInstance()
    listener = make_listener("last")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    record_usage(ATHENA_SCAN)
    started = time.monotonic()
    facet = _facet_from_forked_child(ti)  # the OpenLineage child finalizes first and spools
    child_done = time.monotonic()
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    assert child_done - started >= 2 and time.monotonic() - child_done < 1
    assert len(spooled_files()) == 1
    hung["seconds"] = 0
    run_task(FakeTaskInstance(task_id="next"))
    rows = ledger_rows(
        ledger_url(),
        "SELECT l.source, l.metric, l.amount_nanos FROM cost_lines l JOIN cost_task_runs r "
        f"ON r.id = l.task_run_id WHERE r.run_id = '{ti.run_id}' AND r.task_id = '{ti.task_id}'",
    )
    ledger = sorted((r["source"], r["metric"], Decimal(r["amount_nanos"]).scaleb(-9)) for r in rows)
    assert ledger == sorted((x["source"], x["metric"], Decimal(str(x["amount"]))) for x in facet["lines"])


def test_a_deferral_saved_while_the_ledger_is_down_is_restored_on_resume(monkeypatch, caplog):
    from types import SimpleNamespace

    from airflow_cost_provider.capture.session import clear_sessions

    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "3")
    working = refused_ledger(monkeypatch)
    ti = FakeTaskInstance()
    listener = make_listener("first")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    record_usage(ATHENA_SCAN)
    ti.state = "deferred"
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        listener.before_stopping(component=None)
    assert "keeping the cost capture across a deferral failed" in caplog.text
    assert [name.startswith("deferred-") for name in spooled_files()] == [True]
    clear_sessions()  # the task resumes in a new process of this worker, the ledger back
    reachable_ledger(monkeypatch, working)
    ti.state = None
    ti._ti_context_from_server = SimpleNamespace(next_method="execute_complete", dag_run=None)
    run_task(ti)
    athena = ledger_rows(working, "SELECT amount_nanos FROM cost_lines WHERE source = 'athena'")
    assert athena == [{"amount_nanos": 10 * 10**9}]
    assert spooled_files() == []
    assert ledger_rows(working, "SELECT try_number FROM cost_deferred_captures") == []
