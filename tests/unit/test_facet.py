"""The costProvider_cost facet against its shipped JSON schemas and the OpenLineage spec."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from jsonschema import ValidationError
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import nominal_time_run
from openlineage.client.generated import base as openlineage_base
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.openlineage.facets import (
    COST_FACET_KEY,
    MAX_EXTERNAL_IDS,
    PREVIOUS_SCHEMA_FILES,
    build_cost_facet,
    schema_document,
)
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.pricing.units import convert
from airflow_cost_provider.result import CostResult
from airflow_cost_provider.version import __version__
from tests.support.openlineage import validate_event

T0 = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
T1 = dt.datetime(2026, 11, 20, 0, 2, 5, 250000, tzinfo=dt.timezone.utc)
SCHEMA_1_0_0 = "https://airflow-cost-provider.github.io/spec/facets/1-0-0/CostProviderCostRunFacet.json"
SCHEMA_1_1_0 = "https://airflow-cost-provider.github.io/spec/facets/1-1-0/CostProviderCostRunFacet.json"
SCHEMA_1_2_0 = "https://airflow-cost-provider.github.io/spec/facets/1-2-0/CostProviderCostRunFacet.json"
SCHEMA_1_3_0 = "https://airflow-cost-provider.github.io/spec/facets/1-3-0/CostProviderCostRunFacet.json"


def bigquery_line(currency="USD") -> CostLine:
    return CostLine(
        Usage("bigquery", "bytes_billed", Decimal(10**12), "byte", external_id="job_1", resource="proj"),
        Decimal("5.684341886"),
        currency,
        "list_price",
        Price(
            "bigquery",
            "bytes_billed",
            "TiB",
            Decimal("6.25"),
            currency,
            "2026.11.0",
            match=(("pricing_model", "on_demand"),),
        ),
    )


def worker_memory_line() -> CostLine:
    """A short task's memory: the amount is below a millionth of a dollar."""
    return CostLine(
        Usage("airflow_worker", "memory_time", Decimal("0.400165551"), "GiB-second", resource="worker-7"),
        Decimal("0.000000494"),
        "USD",
        "runtime_rate",
        Price("airflow_worker", "memory_time", "GiB-hour", Decimal("0.004445"), "USD", "config"),
    )


def postgres_query(external_id=None, reason="no price for postgres/queries", resource=None) -> Unpriced:
    return Unpriced(Usage("postgres", "queries", Decimal(1), "query", resource, external_id), reason)


def make_result(lines=(), unpriced=(), start=T0, end=T1) -> CostResult:
    task_try = TaskTry("d", "t", "r", 1, -1, None)
    return CostResult(task_try, "cap", "success", start, end, "h", tuple(lines), tuple(unpriced))


def sample_result(currencies=("USD",)):
    unpriced = (Unpriced(Usage("postgres", "queries", Decimal(3), "query"), "no price for postgres/queries"),)
    return make_result([bigquery_line(currency) for currency in currencies], unpriced)


def event_with(facet: dict) -> dict:
    return {
        "eventType": "COMPLETE",
        "eventTime": T0.isoformat(),
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {COST_FACET_KEY: facet}},
        "job": {"namespace": "default", "name": "d.t"},
        "inputs": [],
        "outputs": [],
    }


def facet_dict(result: CostResult) -> dict:
    return Serde.to_dict(build_cost_facet(result))


def test_facet_follows_the_custom_facet_naming_and_schema_url():
    facet = facet_dict(sample_result())
    schema = schema_document()
    assert facet["_schemaURL"] == schema["$id"] + "#/$defs/CostProviderCostRunFacet"
    assert schema["$id"] == SCHEMA_1_3_0
    assert (
        facet["_producer"]
        == f"https://github.com/airflow-cost-provider/airflow-cost-provider/tree/{__version__}"
    )
    assert facet["period"] == {
        "start": "2026-11-20T00:00:00+00:00",
        "end": "2026-11-20T00:02:05.250000+00:00",
    }
    assert facet["lines"][0] == {
        "source": "bigquery",
        "metric": "bytes_billed",
        "quantity": 10**12,
        "unit": "byte",
        "amount": 5.684341886,
        "currency": "USD",
        "method": "list_price",
        "status": "estimated",
        "externalId": "job_1",
        "resource": "proj",
        "priceRef": "2026.11.0:bigquery/bytes_billed[pricing_model=on_demand]",
        "unitPrice": 6.25,
        "priceUnit": "TiB",
    }
    assert facet["status"] == "partial"
    assert facet["unpriced"] == [
        {
            "source": "postgres",
            "metric": "queries",
            "quantity": 3,
            "unit": "query",
            "count": 1,
            "reason": "no price for postgres/queries",
        }
    ]
    validate_event(event_with(facet))


def test_totals_keep_currencies_apart():
    facet = facet_dict(sample_result(("USD", "EUR")))
    assert facet["totals"] == [
        {"amount": 5.684341886, "currency": "EUR"},
        {"amount": 5.684341886, "currency": "USD"},
    ]


def test_producer_is_set_on_the_cost_facet_only():
    facet = build_cost_facet(sample_result())
    assert "airflow-cost-provider" in facet._producer and facet._producer.endswith(f"/{__version__}")
    # the client's default still applies to every other facet and to the event
    other = nominal_time_run.NominalTimeRunFacet(nominalStartTime=T0.isoformat())
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=T0.isoformat(),
        run=Run(runId=str(uuid.uuid4()), facets={COST_FACET_KEY: facet, "nominalTime": other}),
        job=Job(namespace="default", name="d.t"),
    )
    # the default of the moment: Airflow's OpenLineage provider sets its own once it is imported
    default_producer = openlineage_base.PRODUCER
    assert other._producer == default_producer != facet._producer
    assert event.producer == default_producer


def test_each_priced_line_states_the_price_its_amount_was_computed_from():
    facet = facet_dict(make_result([bigquery_line(), worker_memory_line()]))
    for line in facet["lines"]:
        quantity = convert(Decimal(str(line["quantity"])), line["unit"], line["priceUnit"])
        assert quantize_amount(quantity * Decimal(str(line["unitPrice"]))) == Decimal(str(line["amount"]))
    assert [(line["unitPrice"], line["priceUnit"]) for line in facet["lines"]] == [
        (6.25, "TiB"),
        (0.004445, "GiB-hour"),
    ]


def test_a_line_without_a_price_in_its_currency_states_no_unit_price():
    metered = CostLine(
        Usage("snowflake", "credits", Decimal(2), "credit"), Decimal("6"), "USD", "metered", None
    )
    line = bigquery_line()
    converted = CostLine(line.usage, Decimal("5.2"), "EUR", line.method, line.price)  # price in USD
    lines = facet_dict(make_result([metered, converted]))["lines"]
    assert [{"unitPrice", "priceUnit"} & set(line) for line in lines] == [set(), set()]
    assert "priceRef" in lines[1]


def test_period_is_the_task_try_in_utc():
    berlin = dt.timezone(dt.timedelta(hours=1))
    start = dt.datetime(2026, 11, 20, 1, 0, tzinfo=berlin)
    end = dt.datetime(2026, 11, 20, 0, 30)  # naive: Airflow's times are UTC
    facet = facet_dict(make_result(start=start, end=end))
    assert facet["period"] == {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-20T00:30:00+00:00"}
    validate_event(event_with(facet))


def test_many_unpriced_usages_of_one_cause_become_one_entry_with_a_count():
    statements = [postgres_query(f"q{n}") for n in range(500)]
    other_connection = postgres_query("other-1", resource="reporting")
    other_reason = postgres_query("other-2", reason="price postgres/queries does not fit the usage")
    facet = facet_dict(make_result(unpriced=[statements[0], other_connection, *statements[1:], other_reason]))
    assert facet["unpriced"] == [
        {
            "source": "postgres",
            "metric": "queries",
            "quantity": 500,
            "unit": "query",
            "count": 500,
            "reason": "no price for postgres/queries",
            "externalIds": [f"q{n}" for n in range(MAX_EXTERNAL_IDS)],
        },
        {
            "source": "postgres",
            "metric": "queries",
            "quantity": 1,
            "unit": "query",
            "count": 1,
            "reason": "no price for postgres/queries",
            "resource": "reporting",
            "externalId": "other-1",
        },
        {
            "source": "postgres",
            "metric": "queries",
            "quantity": 1,
            "unit": "query",
            "count": 1,
            "reason": "price postgres/queries does not fit the usage",
            "externalId": "other-2",
        },
    ]
    assert facet["status"] == "partial"
    validate_event(event_with(facet))


def test_a_few_unpriced_usages_of_one_cause_are_one_entry_too_in_the_order_of_their_causes():
    few = [postgres_query(f"q{n}") for n in range(3)]
    between = postgres_query("x", reason="no price for postgres/queries with edition=None")
    facet = facet_dict(make_result(unpriced=[few[0], between, *few[1:]]))
    assert [
        (u.get("externalId"), u.get("externalIds"), u["count"], u["quantity"]) for u in facet["unpriced"]
    ] == [
        (None, ["q0", "q1", "q2"], 3, 3),
        ("x", None, 1, 1),
    ]


def test_a_folded_entry_sums_quantities_and_samples_only_the_ids_it_has():
    usages = [
        Unpriced(Usage("sqlite", "instance_time", Decimal("0.25"), "instance-second", "local"), "no rate"),
        *[
            Unpriced(
                Usage("sqlite", "instance_time", Decimal("0.5"), "instance-second", "local", "s1"), "no rate"
            )
            for _ in range(MAX_EXTERNAL_IDS)
        ],
    ]
    (entry,) = facet_dict(make_result(unpriced=usages))["unpriced"]
    assert (entry["count"], entry["quantity"]) == (MAX_EXTERNAL_IDS + 1, 5.25)
    assert entry["externalIds"] == ["s1"] and "externalId" not in entry
    without_ids = [Unpriced(Usage("sqlite", "queries", Decimal(1), "query"), "no rate")] * (
        MAX_EXTERNAL_IDS + 1
    )
    (entry,) = facet_dict(make_result(unpriced=without_ids))["unpriced"]
    assert entry["count"] == MAX_EXTERNAL_IDS + 1 and not {"externalId", "externalIds"} & set(entry)


def test_counts_add_up_to_every_unpriced_usage():
    unpriced = [postgres_query(f"q{n}") for n in range(37)] + [postgres_query("a", resource="r")] * 4
    facet = facet_dict(make_result(unpriced=unpriced))
    assert sum(u["count"] for u in facet["unpriced"]) == len(unpriced)
    assert len(facet["unpriced"]) == 2


def emitted_event_text(result: CostResult, tmp_path) -> str:
    """The event as the OpenLineage client writes it: client.emit -> transport -> Serde.to_json."""
    path = tmp_path / "events.jsonl"
    client = OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))
    client.emit(
        RunEvent(
            eventType=RunState.COMPLETE,
            eventTime=T0.isoformat(),
            run=Run(runId=str(uuid.uuid4()), facets={COST_FACET_KEY: build_cost_facet(result)}),
            job=Job(namespace="default", name="d.t"),
        )
    )
    (line,) = path.read_text().splitlines()
    return line


def float_tokens(text: str) -> list[str]:
    """The JSON text of every non-integer number (json hands an exponent form to parse_float too)."""
    tokens: list[str] = []
    json.loads(text, parse_float=lambda token: tokens.append(token) or Decimal(token))
    return tokens


def test_numbers_in_emitted_events_have_no_exponent_where_the_encoder_allows_it(tmp_path):
    line = bigquery_line()
    petabytes = CostLine(
        Usage("bigquery", "bytes_billed", Decimal(10**18), "byte"),
        Decimal("5684341.886"),
        "USD",
        "list_price",
        None,
    )
    huge_fraction = Unpriced(Usage("gcs", "bytes_read", Decimal("12345678901234567.5"), "byte"), "no price")
    cheap = CostLine(line.usage, Decimal("0.000123456"), "USD", "list_price", line.price)
    text = emitted_event_text(make_result([line, petabytes, cheap], [huge_fraction]), tmp_path)
    tokens = float_tokens(text)
    assert "0.000123456" in tokens and "5.684341886" in tokens
    assert not [token for token in tokens if "e" in token.lower()], tokens
    facet = json.loads(text)["run"]["facets"][COST_FACET_KEY]
    assert facet["lines"][1]["quantity"] == 10**18
    # float(12345678901234567.5) is 12345678901234568.0, printed as 1.2345678901234568e+16
    assert facet["unpriced"][0]["quantity"] == 12345678901234568
    validate_event(json.loads(text))


def test_a_tiny_amount_reaches_the_emitted_event_exactly(tmp_path):
    text = emitted_event_text(make_result([worker_memory_line()]), tmp_path)
    facet = json.loads(text, parse_float=Decimal)["run"]["facets"][COST_FACET_KEY]
    assert facet["lines"][0]["amount"] == Decimal("0.000000494")
    assert facet["totals"] == [{"amount": Decimal("0.000000494"), "currency": "USD"}]
    validate_event(json.loads(text))


def test_the_openlineage_serialiser_cannot_write_a_tiny_number_without_exponent():
    """Why the facet's amounts below 1e-4 keep their exponent: Serde.to_json (json.dumps) prints any
    float, subclasses too, with float.__repr__, and turns what it cannot encode (Decimal) into a string."""

    class PlainFloat(float):
        def __repr__(self) -> str:
            return format(Decimal(str(float(self))), "f")

        __str__ = __repr__

    assert repr(PlainFloat(4.94e-07)) == "0.000000494"
    assert Serde.to_json({"amount": PlainFloat(4.94e-07)}) == '{"amount": 4.94e-07}'
    assert Serde.to_json({"amount": Decimal("0.000000494")}) == '{"amount": "<<non-serializable: Decimal>>"}'


def facet_1_0_0() -> dict:
    """A facet as version 1.0 of this package wrote it."""
    return {
        "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.40.1/client/python",
        "_schemaURL": SCHEMA_1_0_0 + "#/$defs/CostProviderCostRunFacet",
        "status": "partial",
        "totals": [{"amount": 5.684341886, "currency": "USD"}],
        "lines": [
            {
                "source": "bigquery",
                "metric": "bytes_billed",
                "quantity": 10**12,
                "unit": "byte",
                "amount": 5.684341886,
                "currency": "USD",
                "method": "list_price",
                "status": "estimated",
                "externalId": "job_1",
                "resource": "proj",
                "priceRef": "2026.11.0:bigquery/bytes_billed[pricing_model=on_demand]",
            }
        ],
        "unpriced": [
            {
                "source": "postgres",
                "metric": "queries",
                "quantity": 1,
                "unit": "query",
                "reason": "no price",
                "externalId": f"q{n}",
            }
            for n in range(3)
        ],
    }


def test_the_1_0_0_schema_stays_shipped_for_old_events():
    assert [schema_document(name)["$id"] for name in PREVIOUS_SCHEMA_FILES] == [
        SCHEMA_1_0_0,
        SCHEMA_1_1_0,
        SCHEMA_1_2_0,
    ]
    assert schema_document()["$id"] == SCHEMA_1_3_0
    validate_event(event_with(facet_1_0_0()))
    validate_event(event_with(facet_dict(sample_result())))


def test_each_facet_is_held_to_the_schema_its_schema_url_names():
    counted = facet_1_0_0()
    counted["unpriced"][0]["count"] = 1  # a 1.1 field
    with pytest.raises(ValidationError, match="count"):
        validate_event(event_with(counted))
    counted["_schemaURL"] = SCHEMA_1_1_0 + "#/$defs/CostProviderCostRunFacet"
    validate_event(event_with(counted))
    new_under_old_url = facet_dict(sample_result())
    new_under_old_url["_schemaURL"] = SCHEMA_1_0_0 + "#/$defs/CostProviderCostRunFacet"
    with pytest.raises(ValidationError):
        validate_event(event_with(new_under_old_url))
    unknown_version = facet_dict(sample_result())
    unknown_version["_schemaURL"] = (
        SCHEMA_1_1_0.replace("1-1-0", "9-9-9") + "#/$defs/CostProviderCostRunFacet"
    )
    with pytest.raises(ValidationError, match="does not ship"):
        validate_event(event_with(unknown_version))


def folded_facet() -> dict:
    return facet_dict(
        make_result([bigquery_line()], [postgres_query(f"q{n}") for n in range(MAX_EXTERNAL_IDS + 5)])
    )


@pytest.mark.parametrize(
    "breakage",
    [
        lambda f: f.pop("status"),
        lambda f: f.update(status="guessed"),
        lambda f: f["lines"][0].pop("currency"),
        lambda f: f["lines"][0].update(method="vibes"),
        lambda f: f["lines"][0].update(sqlText="select secret"),
        lambda f: f["unpriced"][0].pop("reason"),
        lambda f: f["totals"].append({"amount": 1, "currency": "dollars"}),
        lambda f: f.pop("_producer"),
        lambda f: f["lines"][0].update(unitPrice="6.25"),
        lambda f: f["lines"][0].pop("priceUnit"),
        lambda f: f["period"].pop("end"),
        lambda f: f["period"].update(start="yesterday"),
        lambda f: f["unpriced"][0].update(count=0),
        lambda f: f["unpriced"][0].update(externalId="q0"),
        lambda f: f["unpriced"][0]["externalIds"].append("q99"),
    ],
)
def test_schema_rejects_malformed_facets(breakage):
    facet = folded_facet()
    validate_event(event_with(facet))
    broken = copy.deepcopy(facet)
    breakage(broken)
    with pytest.raises(ValidationError):
        validate_event(event_with(broken))
