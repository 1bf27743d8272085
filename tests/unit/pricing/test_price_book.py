"""The price book: parsing and validation, the user's override file, and choosing a price for a usage."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from urllib.parse import urlparse

import pytest

from airflow_cost_provider.pricing.model import Price, Usage
from airflow_cost_provider.pricing.money import is_currency
from airflow_cost_provider.pricing.price_book import (
    PriceBook,
    PriceBookError,
    load_price_book,
    load_shipped,
    parse_price_book,
)
from airflow_cost_provider.pricing.units import get_unit

NAME = "team-prices.yaml"

# A valid first entry, so that the entry under test is entry #2 and its number is checked.
_GOOD_ENTRY = """\
  - source: bigquery
    metric: bytes_billed
    unit: TiB
    amount: "6.25"
    currency: USD
    effective_date: 2023-07-05
    source_url: https://cloud.google.com/bigquery/pricing
"""


def book_text(*entries: str, version: str = '"t-1"') -> str:
    """A book whose entries #2, #3... are `entries` (YAML lines of one mapping each, without the dash)."""
    body = ""
    for entry in entries:
        lines = textwrap.dedent(entry).strip().splitlines()
        body += "  - " + "\n    ".join(lines) + "\n"
    return f"version: {version}\nprices:\n{_GOOD_ENTRY}{body}"


def athena(**fields: str | None) -> str:
    """An athena/data_scanned entry, with fields replaced (value None drops the field)."""
    base = {
        "source": "athena",
        "metric": "data_scanned",
        "unit": "TB",
        "amount": '"5.00"',
        "currency": "USD",
        "effective_date": "2016-11-30",
        "source_url": "https://aws.amazon.com/athena/pricing/",
    }
    base.update(fields)
    return "\n".join(f"{key}: {value}" for key, value in base.items() if value is not None)


def parse_error(text: str, name: str = NAME) -> str:
    with pytest.raises(PriceBookError) as excinfo:
        parse_price_book(text, name)
    message = str(excinfo.value)
    assert name in message, message
    return message


def usage(source: str = "s", metric: str = "m", on: dt.date | None = None, **attributes: object) -> Usage:
    start = dt.datetime(on.year, on.month, on.day, 12, tzinfo=dt.timezone.utc) if on else None
    return Usage(source, metric, Decimal(1), "hour", start_time=start, attributes=dict(attributes))


def small_book(entries: str) -> PriceBook:
    return parse_price_book(f'version: "v"\nprices:\n{textwrap.dedent(entries)}', "small.yaml")


# ------------------------------------------------------------------ the shipped book


@pytest.fixture(scope="module")
def shipped() -> PriceBook:
    return load_shipped()


def test_shipped_book_loads_and_every_entry_is_complete(shipped):
    book = shipped
    assert book.version == "2026.11.0"
    assert len(book.prices) > 50
    for price in book.prices:
        where = price.origin
        assert where.startswith("price_book.yaml entry #"), where
        assert is_currency(price.currency), where
        get_unit(price.unit)  # raises for an unknown unit
        assert isinstance(price.amount, Decimal) and price.amount > 0, where
        assert type(price.effective_date) is dt.date, where
        url = urlparse(price.source_url or "")
        assert url.scheme == "https" and url.netloc, where
        assert price.book_version == "2026.11.0", where


def test_shipped_book_spot_checks(shipped):
    book = shipped
    [bq] = [
        p
        for p in book.candidates("bigquery", "bytes_billed")
        if dict(p.match) == {"pricing_model": "on_demand"}
    ]
    assert (bq.unit, bq.amount, bq.currency) == ("TiB", Decimal("6.25"), "USD")
    assert bq.effective_date == dt.date(2023, 7, 5)
    [athena_price] = book.candidates("athena", "data_scanned")
    assert (athena_price.unit, athena_price.amount, athena_price.match) == ("TB", Decimal("5.00"), ())
    assert athena_price.effective_date == dt.date(2016, 11, 30)
    assert book.factor("glue_dpu_per_worker", "G.025X") == Decimal("0.25")
    assert book.factor("snowflake_warehouse_credits_per_hour", "X6LARGE") == Decimal(512)
    assert book.factor("glue_dpu_per_worker", "R.1X") is None  # deliberately absent
    assert book.factor("no_such_table", "G.1X") is None


# ------------------------------------------------------------------ parsing a valid book


def test_parse_valid_book_keeps_exact_values():
    text = book_text(
        """
        source: emr
        metric: instance_time
        unit: instance-hour
        amount: 3
        currency: EUR
        effective_date: "2024-02-29"
        region: eu-west-1
        note: contract rate
        match: {instance_type: m5.xlarge, component: emr, nodes: 2}
        """,
        version="2",
    )
    book = parse_price_book(text, NAME)
    assert book.version == "2"
    first, second = book.prices
    assert first.amount == Decimal("6.25") and str(first.amount) == "6.25"
    assert first.effective_date == dt.date(2023, 7, 5)
    assert first.origin == f"{NAME} entry #1 (bigquery/bytes_billed)"
    assert second.amount == Decimal(3)  # an unquoted integer is exact, so allowed
    assert second.currency == "EUR"
    assert second.effective_date == dt.date(2024, 2, 29)  # quoted ISO date string
    assert second.match == (
        ("component", "emr"),
        ("instance_type", "m5.xlarge"),
        ("nodes", "2"),
    )  # sorted, str
    assert second.origin == f"{NAME} entry #2 (emr/instance_time)"
    assert second.book_version == "2"
    assert second.source_url is None
    assert book.factors == {}


def test_parse_factors_as_decimals():
    text = 'version: "1"\nprices: []\nfactors:\n  sizes: {S: "1", M: 2, L: 0.5}\n  empty: {}\n'
    book = parse_price_book(text, NAME)
    assert book.prices == ()
    assert book.factors == {"sizes": {"S": Decimal(1), "M": Decimal(2), "L": Decimal("0.5")}, "empty": {}}
    assert all(isinstance(v, Decimal) for v in book.factors["sizes"].values())


def test_same_source_metric_with_other_match_or_date_is_not_a_duplicate():
    text = book_text(athena(), athena(effective_date="2024-01-01"), athena(match="{workgroup: a}"))
    book = parse_price_book(text, NAME)
    assert len(book.candidates("athena", "data_scanned")) == 3


# ------------------------------------------------------------------ malformed books


def test_invalid_yaml():
    message = parse_error('version: "1"\nprices: [\n  - {source: a\n')
    assert "not valid YAML" in message


@pytest.mark.parametrize(
    "text",
    ['version: "1"\n', 'version: "1"\nprices: {a: 1}\n', "- just\n- a list\n", "", 'version: "1"\nprices:\n'],
)
def test_missing_prices_list(text):
    assert "'prices'" in parse_error(text)


@pytest.mark.parametrize("version_line", ["", "version:\n", 'version: ""\n', 'version: "   "\n'])
def test_missing_version(version_line):
    assert "missing 'version'" in parse_error(f"{version_line}prices: []\n")


def test_missing_amount():
    message = parse_error(book_text(athena(amount=None)))
    assert "entry #2 (athena/data_scanned)" in message
    assert "missing required field(s): amount" in message


def test_several_missing_fields_are_all_named():
    message = parse_error(book_text(athena(amount='""', currency=None, unit=None)))
    assert "entry #2 (athena/data_scanned)" in message
    assert "unit, amount, currency" in message


def test_unquoted_float_amount():
    message = parse_error(book_text(athena(amount="5.10")))
    assert "entry #2 (athena/data_scanned)" in message
    assert "5.1" in message and "quoted" in message


def test_negative_amount():
    message = parse_error(book_text(athena(amount='"-0.01"')))
    assert "entry #2 (athena/data_scanned)" in message
    assert "-0.01" in message and "negative" in message


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        ('"abc"', "not a number"),
        ('"NaN"', "not a finite number"),
        ('"1,50"', "not a number"),
        ("true", "not a number"),
    ],
)
def test_non_numeric_amount(amount, problem):
    message = parse_error(book_text(athena(amount=amount)))
    assert "entry #2 (athena/data_scanned)" in message
    assert "amount" in message and problem in message


@pytest.mark.parametrize("amount", ['"1e30"', '"9223372036.854775808"', "10000000000", '"1e999999"'])
def test_amount_the_ledger_cannot_hold(amount):
    message = parse_error(book_text(athena(amount=amount)))
    shown = amount.strip('"')
    assert message == (
        f"price book {NAME} entry #2 (athena/data_scanned): amount {shown} does not fit the ledger, which "
        "keeps money as 64-bit nano-units: use an amount below 9223372036.854775808"
    )


def test_largest_amount_the_ledger_holds():
    book = parse_price_book(book_text(athena(amount='"9223372036.854775807"')), NAME)
    assert book.prices[1].amount * 10**9 == 2**63 - 1


def test_unknown_unit():
    message = parse_error(book_text(athena(unit="terabyte")))
    assert "entry #2 (athena/data_scanned)" in message
    assert "unknown unit 'terabyte'" in message


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", '"U$D"', "840"])
def test_bad_currency(currency):
    message = parse_error(book_text(athena(currency=currency)))
    assert "entry #2 (athena/data_scanned)" in message
    assert "currency" in message and "ISO 4217" in message
    if currency == "usd":
        assert "'usd'" in message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"2016-13-01"', "'2016-13-01'"),
        ('"30/11/2016"', "'30/11/2016'"),
        ("20161130", "20161130"),
        ('"yesterday"', "'yesterday'"),
    ],
)
def test_bad_effective_date(value, shown):
    message = parse_error(book_text(athena(effective_date=value)))
    assert "entry #2 (athena/data_scanned)" in message
    assert f"effective_date {shown} is not an ISO date" in message


def test_unquoted_impossible_date_names_the_file():
    message = parse_error(book_text(athena(effective_date="2016-13-01")))
    assert "2016-13-01" in message or "month" in message


def test_timestamp_effective_date_is_rejected_or_made_a_date():
    text = book_text(athena(effective_date="2016-11-30 10:00:00"))
    try:
        book = parse_price_book(text, NAME)
    except PriceBookError as err:  # rejecting it is fine too
        assert "effective_date" in str(err)
        return
    found = book.find(usage("athena", "data_scanned", on=dt.date(2020, 1, 1)))
    assert found is not None and found.amount == Decimal("5.00")


@pytest.mark.parametrize(
    "url",
    ["ftp://aws.amazon.com/athena/pricing/", "aws.amazon.com/athena/pricing", "javascript:alert(1)", "42"],
)
def test_non_http_source_url(url):
    message = parse_error(book_text(athena(source_url=url)))
    assert "entry #2 (athena/data_scanned)" in message
    assert "source_url" in message and "http(s)" in message


def test_http_source_url_is_accepted():
    book = parse_price_book(book_text(athena(source_url="http://example.com/p")), NAME)
    assert book.prices[1].source_url == "http://example.com/p"


def test_source_url_without_host_is_rejected():
    parse_error(book_text(athena(source_url='"https://"')))


def test_unknown_field():
    message = parse_error(book_text(athena(efective_date="2016-11-30", price='"5"')))
    assert "entry #2 (athena/data_scanned)" in message
    assert "unknown field(s): efective_date, price" in message


def test_entry_that_is_not_a_mapping():
    text = f'version: "1"\nprices:\n{_GOOD_ENTRY}  - just a string\n'
    message = parse_error(text)
    assert "entry #2 (?)" in message and "must be a mapping" in message


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("source", "5", "source must be a string"),
        ("metric", "[a, b]", "metric must be a string"),
        ("match", "[edition]", "match must map"),
    ],
)
def test_wrong_field_types(field, value, problem):
    message = parse_error(book_text(athena(**{field: value})))
    assert "entry #2" in message and problem in message


def test_duplicate_entry():
    # the same match written in another order and with 1 vs '1' is the same key
    text = book_text(
        athena(match="{workgroup: a, tier: 1}"), athena(match="{tier: '1', workgroup: a}", amount='"9"')
    )
    message = parse_error(text)
    assert f"{NAME} entry #3 (athena/data_scanned)" in message
    assert f"duplicates {NAME} entry #2 (athena/data_scanned)" in message
    assert "same source, metric, match and effective_date" in message


@pytest.mark.parametrize(
    ("factors", "where", "problem"),
    [
        ("factors: [1, 2]\n", "factors", "must be a mapping"),
        ("factors:\n  sizes: 4\n", "factors.sizes", "must be a mapping"),
        ("factors:\n  sizes: {S: abc}\n", "factors.sizes", "not a number"),
        ("factors:\n  sizes: {S: .nan}\n", "factors.sizes", "not a finite number"),
        ("factors:\n  sizes: {S: true}\n", "factors.sizes", "not a number"),
    ],
)
def test_bad_factors_table(factors, where, problem):
    message = parse_error(f'version: "1"\nprices: []\n{factors}')
    assert f"{NAME} {where}" in message
    assert problem in message


# ------------------------------------------------------------------ load_price_book: the user's override


def _write(tmp_path, text: str, name: str = "my_prices.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def test_no_override_is_the_shipped_book(shipped):
    for override in (None, ""):
        book = load_price_book(override)
        assert book.version == shipped.version
        assert book.prices == shipped.prices


def test_user_entry_replaces_same_key_and_adds_new_ones(tmp_path, shipped):
    path = _write(
        tmp_path,
        """\
        version: "acme-3"
        prices:
          - {source: athena, metric: data_scanned, unit: TB, amount: "4.10", currency: USD,
             effective_date: "2016-11-30"}
          - {source: athena, metric: data_scanned, unit: TB, amount: "3.00", currency: USD,
             effective_date: 2016-11-30, match: {workgroup: analytics}}
          - {source: clickhouse, metric: cpu_time, unit: vCPU-hour, amount: "0.03", currency: EUR}
        """,
    )
    book = load_price_book(path)
    assert book.version == "2026.11.0+acme-3"
    assert len(book.prices) == len(shipped.prices) + 2

    athena_prices = {p.match: p for p in book.candidates("athena", "data_scanned")}
    assert set(athena_prices) == {(), (("workgroup", "analytics"),)}
    replaced = athena_prices[()]
    assert replaced.amount == Decimal("4.10")
    assert replaced.book_version == "acme-3"
    assert replaced.origin == f"{path} entry #1 (athena/data_scanned)"
    assert athena_prices[(("workgroup", "analytics"),)].amount == Decimal("3.00")
    [added] = book.candidates("clickhouse", "cpu_time")
    assert (added.amount, added.currency) == (Decimal("0.03"), "EUR")

    # everything else is the shipped book, untouched
    rest = [p for p in book.prices if p.source not in ("athena", "clickhouse")]
    assert rest == [p for p in shipped.prices if p.source != "athena"]

    # and the replaced price is the one found
    assert book.find(usage("athena", "data_scanned", on=dt.date(2024, 5, 1))).amount == Decimal("4.10")
    assert (
        book.find(usage("athena", "data_scanned", on=dt.date(2024, 5, 1), workgroup="analytics")).amount == 3
    )


def test_user_factors_merge_key_by_key(tmp_path, shipped):
    path = _write(
        tmp_path,
        """\
        version: "f1"
        prices: []
        factors:
          glue_dpu_per_worker: {G.1X: "1.5", Z.9X: "9"}
          my_sizes: {tiny: "0.1"}
        """,
    )
    book = load_price_book(path)
    glue = book.factors["glue_dpu_per_worker"]
    assert glue["G.1X"] == Decimal("1.5")  # overridden
    assert glue["Z.9X"] == Decimal(9)  # added
    assert glue["G.2X"] == Decimal(2)  # kept from the shipped table
    assert set(glue) == set(shipped.factors["glue_dpu_per_worker"]) | {"Z.9X"}
    assert book.factors["my_sizes"] == {"tiny": Decimal("0.1")}
    assert (
        book.factors["snowflake_warehouse_credits_per_hour"]
        == shipped.factors["snowflake_warehouse_credits_per_hour"]
    )
    assert book.prices == shipped.prices


def test_missing_user_file_names_the_path(tmp_path):
    path = tmp_path / "does_not_exist.yaml"
    with pytest.raises(PriceBookError) as excinfo:
        load_price_book(path)
    assert str(path) in str(excinfo.value)
    assert "cannot be read" in str(excinfo.value)


def test_malformed_user_file_names_the_user_file(tmp_path):
    path = _write(
        tmp_path,
        """\
        version: "bad"
        prices:
          - {source: athena, metric: data_scanned, unit: TB, amount: 4.1, currency: USD}
        """,
    )
    with pytest.raises(PriceBookError) as excinfo:
        load_price_book(str(path))
    message = str(excinfo.value)
    assert f"{path} entry #1 (athena/data_scanned)" in message
    assert "quoted" in message


def test_non_utf8_user_file_names_the_user_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(
        'version: "1"\nprices: []\n# Preise in \u20ac / caf\u00e9\n'.encode("latin-1", "replace")
    )
    with pytest.raises(PriceBookError, match="latin1.yaml"):
        load_price_book(path)


def test_with_prices_replaces_same_key_and_keeps_version():
    book = small_book(
        """\
        - {source: s, metric: m, unit: hour, amount: "1", currency: USD, effective_date: 2020-01-01}
        """
    )
    replacement = Price("s", "m", "hour", Decimal(2), "USD", "cfg", effective_date=dt.date(2020, 1, 1))
    extra = Price("s", "m", "hour", Decimal(3), "USD", "cfg", effective_date=dt.date(2021, 1, 1))
    merged = book.with_prices([replacement, extra])
    assert merged.version == "v"
    assert [p.amount for p in merged.candidates("s", "m")] == [Decimal(2), Decimal(3)]
    assert [p.amount for p in book.candidates("s", "m")] == [Decimal(1)]  # the original is unchanged


# ------------------------------------------------------------------ PriceBook.find


SPECIFICITY = """\
- {source: s, metric: m, unit: hour, amount: "1", currency: USD, effective_date: 2024-01-01}
- {source: s, metric: m, unit: hour, amount: "2", currency: USD, effective_date: 2020-01-01,
   match: {edition: enterprise}}
- {source: s, metric: m, unit: hour, amount: "3", currency: USD, effective_date: 2020-01-01,
   match: {edition: enterprise, region: eu}}
"""


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"edition": "enterprise", "region": "eu", "other": "x"}, "3"),
        ({"edition": "enterprise", "region": "us"}, "2"),
        ({"edition": "enterprise"}, "2"),
        ({"region": "eu"}, "1"),
        ({"edition": "standard"}, "1"),
        ({}, "1"),
    ],
)
def test_most_specific_match_wins(attributes, expected):
    # the generic entry is newer, yet a more specific entry in effect wins
    found = small_book(SPECIFICITY).find(usage(on=dt.date(2025, 6, 1), **attributes))
    assert found is not None and found.amount == Decimal(expected)


DATED = """\
- {source: s, metric: m, unit: hour, amount: "2", currency: USD, effective_date: 2023-01-01}
- {source: s, metric: m, unit: hour, amount: "1", currency: USD, effective_date: 2020-01-01}
- {source: s, metric: m, unit: hour, amount: "3", currency: USD, effective_date: 2025-01-01}
"""


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (dt.date(2020, 1, 1), "1"),  # the effective date itself counts
        (dt.date(2022, 12, 31), "1"),
        (dt.date(2023, 1, 1), "2"),
        (dt.date(2024, 12, 31), "2"),
        (dt.date(2025, 1, 1), "3"),
        (dt.date(2031, 7, 1), "3"),
        (dt.date(1999, 1, 1), "1"),  # older than every entry: the earliest one
        (dt.date(2019, 12, 31), "1"),
    ],
)
def test_latest_effective_date_not_after_the_usage_wins(on, expected):
    found = small_book(DATED).find(usage(on=on))
    assert found is not None and found.amount == Decimal(expected)


def test_start_time_decides_then_end_time_then_today():
    book = small_book(DATED)
    both = Usage(
        "s",
        "m",
        Decimal(1),
        "hour",
        start_time=dt.datetime(2022, 12, 31, 23, 30),
        end_time=dt.datetime(2023, 1, 1, 0, 30),
    )
    assert book.find(both).amount == Decimal(1)
    only_end = Usage("s", "m", Decimal(1), "hour", end_time=dt.datetime(2023, 6, 1))
    assert book.find(only_end).amount == Decimal(2)
    undated = Usage("s", "m", Decimal(1), "hour")
    assert book.find(undated).amount == Decimal(3)  # today is after 2025-01-01


def test_an_undated_entry_is_in_effect_but_loses_to_a_dated_one_in_effect():
    book = small_book(
        """\
        - {source: s, metric: m, unit: hour, amount: "0.5", currency: USD}
        - {source: s, metric: m, unit: hour, amount: "1", currency: USD, effective_date: 2020-01-01}
        """
    )
    assert book.find(usage(on=dt.date(2019, 6, 1))).amount == Decimal("0.5")
    assert book.find(usage(on=dt.date(2021, 6, 1))).amount == Decimal(1)


def test_attribute_values_are_compared_as_strings():
    book = small_book(
        """\
        - {source: s, metric: m, unit: hour, amount: "1", currency: USD, match: {nodes: 2}}
        - {source: s, metric: m, unit: hour, amount: "7", currency: USD, match: {spot: true}}
        """
    )
    assert book.find(usage(nodes=2)).amount == Decimal(1)
    assert book.find(usage(nodes="2")).amount == Decimal(1)
    assert book.find(usage(nodes=2.0)) is None  # "2.0" is not "2"
    assert book.find(usage(nodes=" 2")) is None
    assert book.find(usage(spot=True)).amount == Decimal(7)
    assert book.find(usage(spot="True")).amount == Decimal(7)
    assert book.find(usage(spot="true")) is None


def test_no_candidate_is_none():
    book = small_book(SPECIFICITY)
    assert book.find(usage("other_source", "m", edition="enterprise")) is None
    assert book.find(usage("s", "other_metric", edition="enterprise")) is None
    only_specific = small_book(
        """\
        - {source: s, metric: m, unit: hour, amount: "2", currency: USD, match: {edition: enterprise}}
        """
    )
    assert only_specific.find(usage(edition="standard")) is None
    assert only_specific.find(usage()) is None


def test_find_in_the_shipped_book(shipped):
    book = shipped
    found = book.find(usage("bigquery", "slot_time", on=dt.date(2024, 1, 1), edition="enterprise", x="y"))
    assert (found.amount, found.unit) == (Decimal("0.06"), "slot-hour")
    found = book.find(usage("emr", "instance_time", instance_type="m5.xlarge", component="ec2"))
    assert found.amount == Decimal("0.192")
    assert book.find(usage("emr", "instance_time", instance_type="m5.xlarge")) is None


def test_a_missing_attribute_never_satisfies_a_match():
    book = small_book(
        """\
        - {source: s, metric: m, unit: hour, amount: "2", currency: USD, match: {edition: "None"}}
        """
    )
    assert book.find(usage()) is None  # no "edition" attribute at all
    assert book.find(usage(edition="None")).amount == Decimal(2)


def test_a_null_match_value_is_rejected_with_the_entry():
    with pytest.raises(PriceBookError, match=r"small.yaml entry #1 \(s/m\): match must map"):
        small_book(
            """\
            - {source: s, metric: m, unit: hour, amount: "2", currency: USD, match: {edition: }}
            """
        )
