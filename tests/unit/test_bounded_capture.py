"""A task try that records thousands of usages keeps max_lines_per_task of them one by one and sums
the rest per source, metric, unit, resource and price (or unpriced reason), with exact totals."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from decimal import Decimal

import pytest
from airflow.providers.common.sql.hooks.sql import DbApiHook
from openlineage.client.serde import Serde

from airflow_cost_provider import conf, tracker
from airflow_cost_provider.capture import session as capture_session
from airflow_cost_provider.capture.aggregation import (
    AGGREGATED_ATTRIBUTE,
    EXTERNAL_IDS_ATTRIBUTE,
    UsageAggregates,
)
from airflow_cost_provider.capture.session import record_usage
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.listener import make_listener
from airflow_cost_provider.openlineage import get_cost_run_facets
from airflow_cost_provider.openlineage.facets import COST_FACET_KEY
from airflow_cost_provider.pricing import CostLine, Price, PriceBook, Unpriced, Usage, estimate
from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import ledger_rows
from tests.support.fake_ti import FakeTaskInstance
from tests.support.openlineage import validate_event

AT = dt.datetime(2026, 11, 20, 10, tzinfo=dt.timezone.utc)
STATEMENTS = 5_000
MAX_LINES = 100


@pytest.fixture(autouse=True)
def max_lines(monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__MAX_LINES_PER_TASK", str(MAX_LINES))
    conf.clear_cache()


def athena_scan(n: int) -> Usage:
    # 10 MiB and a bit: each scan costs 0.15 of a nano-dollar more than a whole number of them, so
    # rounding each one and rounding their sum give different totals
    return Usage(
        "athena", "data_scanned", Decimal(10_485_830 + 1_000 * n), "byte", "wg", f"q-{n}", AT, AT,
        {"workgroup": "primary", "statement": n},
    )  # fmt: skip


def sqlite_query(n: int) -> Usage:
    return Usage("sqlite", "queries", Decimal(1), "query", "local", f"s-{n}", AT, AT)


def run_task(ti, work) -> dict:
    listener = make_listener("first")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    work()
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    return Serde.to_dict(get_cost_run_facets(ti, "success")[COST_FACET_KEY])


def event_with(facet: dict) -> dict:
    return {
        "eventType": "COMPLETE",
        "eventTime": AT.isoformat(),
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "0193a1c2-5e4f-7abc-8def-0123456789ab", "facets": {COST_FACET_KEY: facet}},
        "job": {"namespace": "default", "name": "d.t"},
        "inputs": [],
        "outputs": [],
    }


def ledger_url() -> str:
    return os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"]


def test_past_the_cap_usages_are_summed_per_price_and_reason_with_exact_totals():
    usages = [athena_scan(n) if n % 5 else sqlite_query(n) for n in range(STATEMENTS)]
    seen_while_running = {}

    def work():
        for usage in usages:
            record_usage(usage)
        session = capture_session.current_session()
        seen_while_running.update(detailed=len(session.usage), aggregates=len(session.aggregates))

    facet = run_task(FakeTaskInstance(), work)

    # bounded while the task runs: the first 100 whole, then one aggregate per price or reason
    assert seen_while_running == {"detailed": MAX_LINES, "aggregates": 2}
    scans = [u for u in usages if u.source == "athena"]
    each_priced = [estimate(u, tracker.price_book()) for u in scans]
    exact_total = sum((line.amount for line in each_priced), Decimal(0))
    summed_quantity = sum((u.quantity for u in scans), Decimal(0))
    price = each_priced[0].price
    assert quantize_amount(summed_quantity * price.amount / Decimal(10**12)) != exact_total

    athena_lines = [line for line in facet["lines"] if line["source"] == "athena"]
    aggregated = [line for line in athena_lines if "count" in line]
    assert len(athena_lines) == 81 and len(aggregated) == 1  # 80 of the first 100, then the rest in one
    assert aggregated[0]["count"] == len(scans) - 80
    assert aggregated[0]["externalIds"] == [f"q-{n}" for n in range(101, 200) if n % 5][:10]
    assert "externalId" not in aggregated[0]
    assert sum(line.get("count", 1) for line in athena_lines) == len(scans)
    assert len(facet["lines"]) <= MAX_LINES + 3  # the worker's two lines come last
    (unpriced,) = facet["unpriced"]
    assert unpriced["count"] == STATEMENTS // 5 and unpriced["quantity"] == STATEMENTS // 5
    validate_event(event_with(facet))

    rows = ledger_rows(
        ledger_url(),
        "SELECT u.quantity, u.external_id, u.attributes, l.amount_nanos, l.status FROM cost_usage u "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'athena'",
    )
    assert len(rows) == 81
    assert sum(Decimal(row["quantity"]) for row in rows) == summed_quantity
    assert sum(row["amount_nanos"] for row in rows) == int(exact_total.scaleb(9))
    (kept,) = [row for row in rows if row["external_id"] is None]
    attributes = (
        kept["attributes"] if isinstance(kept["attributes"], dict) else json.loads(kept["attributes"])
    )
    assert attributes[AGGREGATED_ATTRIBUTE] == len(scans) - 80
    assert attributes[EXTERNAL_IDS_ATTRIBUTE] == aggregated[0]["externalIds"]
    assert attributes["workgroup"] == "primary" and "statement" not in attributes  # only what all share
    unpriced_rows = ledger_rows(
        ledger_url(), "SELECT u.attributes FROM cost_usage u WHERE u.source = 'sqlite'"
    )
    assert len(unpriced_rows) == 21


def test_under_the_cap_every_usage_keeps_its_own_line():
    facet = run_task(FakeTaskInstance(), lambda: [record_usage(athena_scan(n)) for n in range(50)])
    athena_lines = [line for line in facet["lines"] if line["source"] == "athena"]
    assert [line["externalId"] for line in athena_lines] == [f"q-{n}" for n in range(50)]
    assert not any("count" in line for line in facet["lines"])


class SqliteHook(DbApiHook):
    """SQLite through DbApiHook.run, the path every SQL operator takes."""

    conn_name_attr = "sqlite_conn_id"
    conn_type = "sqlite"

    def __init__(self, path, conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path, self.conn_id = str(path), conn_id

    def get_conn(self):
        return sqlite3.connect(self.path)

    def get_conn_id(self) -> str:
        return self.conn_id


def test_statements_of_a_real_hook_past_the_cap_cost_what_they_cost_one_by_one(monkeypatch, tmp_path):
    book = tmp_path / "prices.yaml"
    book.write_text(
        'version: "test"\nprices:\n  - source: sqlite\n    metric: instance_time\n    unit: instance-hour\n'
        '    amount: "0.017"\n    currency: USD\n    effective_date: 2020-01-01\n'
        "    match: {instance_type: db.t3.micro}\n"
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH", str(book))
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", '{"priced_sqlite": {"instance_type": "db.t3.micro"}}'
    )
    conf.clear_cache()
    tracker.price_book.cache_clear()
    recorded: list[Usage] = []
    record = capture_session.CaptureSession.record

    def keep_a_copy(self, usage):
        recorded.append(usage)
        return record(self, usage)

    monkeypatch.setattr(capture_session.CaptureSession, "record", keep_a_copy)
    instrumentation = SqlStatements()
    instrumentation.instrument()
    try:
        priced = SqliteHook(tmp_path / "db.sqlite", "priced_sqlite")
        unpriced = SqliteHook(tmp_path / "db.sqlite", "other_sqlite")
        facet = run_task(
            FakeTaskInstance(),
            lambda: (priced.run(["SELECT 1"] * 400), unpriced.run(["SELECT 2"] * 200)),
        )
    finally:
        instrumentation.uninstrument()

    statements = [u for u in recorded if u.source == "sqlite"]
    assert len(statements) == 600
    one_by_one = [estimate(u, tracker.price_book()) for u in statements]
    lines = [line for line in facet["lines"] if line["source"] == "sqlite"]
    assert sum(line.get("count", 1) for line in lines) == 400
    assert len(lines) == MAX_LINES + 1
    (entry,) = facet["unpriced"]
    assert entry["count"] == 200 and "other_sqlite" in entry["reason"]
    rows = ledger_rows(
        ledger_url(),
        "SELECT l.amount_nanos FROM cost_lines l WHERE l.source = 'sqlite' AND l.currency = 'USD'",
    )
    expected = sum((line.amount for line in one_by_one if isinstance(line, CostLine)), Decimal(0))
    assert sum(row["amount_nanos"] for row in rows) == int(expected.scaleb(9))
    validate_event(event_with(facet))


def priced(quantity: str, price: Price, **attributes) -> CostLine:
    usage = Usage("athena", "data_scanned", Decimal(quantity), "byte", "wg", attributes=attributes)
    return estimate(usage, PriceBook("b", (price,), {}))  # type: ignore[return-value]


def test_aggregates_part_by_price_and_reason_and_one_usage_stays_itself():
    old = Price("athena", "data_scanned", "TB", Decimal("5"), "USD", "b", dt.date(2016, 1, 1))
    new = Price("athena", "data_scanned", "TB", Decimal("6"), "USD", "b", dt.date(2026, 1, 1))
    aggregates = UsageAggregates()
    alone = priced("100", new)
    aggregates.add(alone)
    for quantity in ("1000", "2000"):
        aggregates.add(priced(quantity, old, wg="a", n=quantity))
    aggregates.add(Unpriced(Usage("athena", "data_scanned", Decimal(3), "byte", "wg"), "no rate"))
    aggregates.add(Unpriced(Usage("athena", "data_scanned", Decimal(4), "byte", "wg"), "no rate"))
    aggregates.add(Unpriced(Usage("athena", "data_scanned", Decimal(5), "byte", "wg"), "other"))
    lines, unpriced = aggregates.results()
    assert lines[0] is alone
    assert (lines[1].usage.quantity, lines[1].amount, lines[1].price) == (
        Decimal(3000),
        Decimal("1.5E-8"),
        old,
    )
    assert lines[1].usage.attributes == {"wg": "a", AGGREGATED_ATTRIBUTE: 2}
    assert [(u.reason, u.usage.quantity, u.usage.attributes.get(AGGREGATED_ATTRIBUTE)) for u in unpriced] == [
        ("no rate", Decimal(7), 2),
        ("other", Decimal(5), None),
    ]


def test_the_estimator_prices_every_usage_as_estimate_does():
    from airflow_cost_provider.pricing.estimate import Estimator
    from airflow_cost_provider.pricing.price_book import load_price_book

    earlier = Price("bigquery", "bytes_billed", "TiB", Decimal(5), "USD", "b", dt.date(2020, 1, 1), None,
                    (("pricing_model", "on_demand"),))  # fmt: skip
    book = load_price_book("").with_prices([earlier])
    days = [dt.datetime(2023, 7, 4, tzinfo=dt.timezone.utc), dt.datetime(2023, 7, 6, tzinfo=dt.timezone.utc)]
    usages = [
        Usage("bigquery", "bytes_billed", Decimal(3 * 10**9 + n), "byte", "p", None, day, day, attributes)
        for n in range(3)
        for day in days  # the on-demand price here changes on 2023-07-05
        for attributes in ({"pricing_model": "on_demand"}, {"pricing_model": "flat"}, {})
    ]
    usages += [
        Usage("athena", "data_scanned", Decimal(n), "byte", attributes={"cost_method": "metered"})
        for n in range(3)
    ]
    usages += [Usage("athena", "data_scanned", Decimal(1), "vCPU-second")]  # a unit the price does not fit
    usages += [
        Usage(
            "sqlite",
            "instance_time",
            Decimal(n),
            "instance-second",
            attributes={"why_unpriced": f"hint {n % 2}"},
        )
        for n in range(4)
    ]
    estimator = Estimator(book)
    assert [estimator(usage) for usage in usages] == [estimate(usage, book) for usage in usages]
    priced = [estimate(usage, book) for usage in usages]
    assert {line.price.amount for line in priced if isinstance(line, CostLine)} == {5, Decimal("6.25")}
    assert sum(isinstance(line, Unpriced) for line in priced) == 12 + 1 + 4
