"""The versioned price book: shipped list prices, overridden entry by entry from a user's YAML file.

A malformed book raises PriceBookError naming the file, the entry and the problem; nothing is
partially loaded.

Parsing the YAML costs 5 to 30 ms, in every task process that prices anything. A book that parsed is
kept in memory (the configuration check and the pricing share it) and, given a cache folder, as JSON
there: keyed by the content of the shipped and the user's file and by the code that parses them, so
an edited file or an upgrade is parsed again. Writers replace the file atomically; an unreadable or
stale cache is parsed over. A book that fails to parse is never cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from airflow_cost_provider.cache_file import write_json
from airflow_cost_provider.pricing.model import Price, Usage
from airflow_cost_provider.pricing.money import is_currency, to_decimal
from airflow_cost_provider.pricing.units import UnknownUnitError, get_unit
from airflow_cost_provider.version import __version__

log = logging.getLogger("airflow_cost_provider")

SHIPPED_PRICE_BOOK = "price_book.yaml"
CACHE_FORMAT = 1
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's is ~10x faster when present
_REQUIRED = ("source", "metric", "unit", "amount", "currency")
_KNOWN_KEYS = set(_REQUIRED) | {"effective_date", "source_url", "region", "match", "note"}
# The ledger keeps money as nano-units in a signed 64-bit column: from 2**63 nano-units on, every
# write of a line priced this way overflows.
_AMOUNT_LIMIT = Decimal(2**63).scaleb(-9)


class PriceBookError(ValueError):
    """A price book that cannot be used, with the file and entry at fault."""


PriceKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class PriceBook:
    version: str
    prices: tuple[Price, ...]
    factors: Mapping[str, Mapping[str, Decimal]]

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], list[Price]] = {}
        for price in self.prices:
            index.setdefault((price.source, price.metric), []).append(price)
        object.__setattr__(self, "_index", index)

    def candidates(self, source: str, metric: str) -> list[Price]:
        return self._index.get((source, metric), [])  # type: ignore[attr-defined]

    def find(self, usage: Usage) -> Price | None:
        """The price for this usage. Candidates: entries whose `match` is a subset of the usage's
        attributes. Among those in effect on the usage's day, the most specific wins, then the latest
        effective date. Usage older than every candidate takes the most specific, earliest one: the
        book's best knowledge of that price."""
        on_day = (usage.start_time or usage.end_time or dt.datetime.now(dt.timezone.utc)).date()
        matching = [
            price
            for price in self.candidates(usage.source, usage.metric)
            if all(
                key in usage.attributes and str(usage.attributes[key]) == value for key, value in price.match
            )
        ]
        in_effect = [p for p in matching if p.effective_date is None or p.effective_date <= on_day]
        if in_effect:
            return max(in_effect, key=lambda p: (len(p.match), p.effective_date or dt.date.min))
        if matching:
            return max(matching, key=lambda p: (len(p.match), -(p.effective_date or dt.date.min).toordinal()))
        return None

    def factor(self, table: str, key: str) -> Decimal | None:
        return self.factors.get(table, {}).get(key)

    def with_prices(self, extra: Iterable[Price]) -> PriceBook:
        """This book plus prices defined elsewhere (config options), replacing same-key entries."""
        merged = {_key(p): p for p in self.prices}
        merged.update({_key(p): p for p in extra})
        return PriceBook(self.version, tuple(merged.values()), self.factors)


def _key(price: Price) -> tuple[Any, ...]:
    return (price.source, price.metric, price.match, price.effective_date)


def _fail(origin: str, problem: str) -> PriceBookError:
    return PriceBookError(f"price book {origin}: {problem}")


def _parse_price(raw: Any, version: str, origin: str) -> Price:
    if not isinstance(raw, Mapping):
        raise _fail(origin, f"must be a mapping, got {type(raw).__name__}")
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "")]
    if missing:
        raise _fail(origin, f"missing required field(s): {', '.join(missing)}")
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise _fail(origin, f"unknown field(s): {', '.join(unknown)}")
    for name in ("source", "metric", "unit"):
        if not isinstance(raw[name], str):
            raise _fail(origin, f"{name} must be a string")
    try:
        get_unit(raw["unit"])
    except UnknownUnitError as err:
        raise _fail(origin, str(err)) from None
    if isinstance(raw["amount"], float):
        raise _fail(origin, f"amount {raw['amount']!r} must be a quoted string so it stays exact")
    try:
        amount = to_decimal(raw["amount"])
    except ValueError as err:
        raise _fail(origin, f"amount: {err}") from None
    if amount < 0:
        raise _fail(origin, f"amount {amount} is negative")
    if amount >= _AMOUNT_LIMIT:  # compared, not multiplied: 1e999999 * 10**9 would overflow Decimal
        raise _fail(
            origin,
            f"amount {raw['amount']} does not fit the ledger, which keeps money as 64-bit nano-units: "
            f"use an amount below {_AMOUNT_LIMIT}",
        )
    if not is_currency(raw["currency"]):
        raise _fail(origin, f"currency {raw['currency']!r} is not an ISO 4217 code like USD")
    effective = raw.get("effective_date")
    if isinstance(effective, dt.datetime):
        raise _fail(origin, f"effective_date {effective} must be a date (YYYY-MM-DD), not a date-time")
    if effective is not None:
        if isinstance(effective, str):
            try:
                effective = dt.date.fromisoformat(effective)
            except ValueError:
                raise _fail(origin, f"effective_date {effective!r} is not an ISO date") from None
        elif not isinstance(effective, dt.date):
            raise _fail(origin, f"effective_date {effective!r} is not an ISO date")
    url = raw.get("source_url")
    if url is not None and (
        not isinstance(url, str)
        or urlparse(url).scheme not in ("http", "https")
        or not urlparse(url).hostname
    ):
        raise _fail(origin, f"source_url {url!r} is not an http(s) URL")
    match = raw.get("match") or {}
    if not isinstance(match, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int))
        for k, v in match.items()  # int covers bool
    ):
        raise _fail(origin, "match must map attribute names to values (strings, numbers or booleans)")
    return Price(
        source=raw["source"],
        metric=raw["metric"],
        unit=raw["unit"],
        amount=amount,
        currency=raw["currency"],
        book_version=version,
        effective_date=effective,
        source_url=url,
        match=tuple(sorted((k, str(v)) for k, v in match.items())),
        origin=origin,
    )


def _parse_factors(raw: Any, name: str) -> dict[str, dict[str, Decimal]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(f"{name} factors", "must be a mapping of table name to {key: number}")
    tables: dict[str, dict[str, Decimal]] = {}
    for table, values in raw.items():
        if not isinstance(values, Mapping):
            raise _fail(f"{name} factors.{table}", "must be a mapping of key to number")
        try:
            tables[str(table)] = {str(k): to_decimal(v) for k, v in values.items()}
        except ValueError as err:
            raise _fail(f"{name} factors.{table}", str(err)) from None
    return tables


def parse_price_book(text: str, name: str) -> PriceBook:
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, ValueError) as err:  # PyYAML raises ValueError for dates like 2016-13-01
        raise PriceBookError(f"price book {name}: not valid YAML: {err}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("prices"), list):
        raise PriceBookError(f"price book {name}: must be a mapping with a 'prices' list")
    version = str(document.get("version") or "").strip()
    if not version:
        raise PriceBookError(f"price book {name}: missing 'version'")
    prices: dict[tuple[Any, ...], Price] = {}
    for index, raw in enumerate(document["prices"]):
        label = f"{raw.get('source')}/{raw.get('metric')}" if isinstance(raw, Mapping) else "?"
        price = _parse_price(raw, version, f"{name} entry #{index + 1} ({label})")
        if _key(price) in prices:
            raise _fail(
                price.origin,
                f"duplicates {prices[_key(price)].origin}: same source, metric, match and effective_date",
            )
        prices[_key(price)] = price
    return PriceBook(version, tuple(prices.values()), _parse_factors(document.get("factors"), name))


def _shipped_text() -> str:
    return resources.files("airflow_cost_provider.pricing").joinpath(SHIPPED_PRICE_BOOK).read_text("utf-8")


def load_shipped() -> PriceBook:
    return parse_price_book(_shipped_text(), SHIPPED_PRICE_BOOK)


def load_price_book(
    override_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> PriceBook:
    """The shipped book, with the entries of the user's file replacing those of the same key.

    cache_dir: a folder to keep the parsed book in for other processes (created when missing); the
    book is the same with or without it."""
    shipped = _shipped_text()
    path = Path(override_path) if override_path else None
    user_text = _read_user_book(path) if path is not None else None
    key = _cache_key(shipped, path, user_text)
    book = _parsed.get(key)
    if book is not None:
        return book
    book = _read_cache(cache_dir, path, key) if cache_dir else None
    if book is None:
        book = _merge(parse_price_book(shipped, SHIPPED_PRICE_BOOK), path, user_text)
        if cache_dir:
            _write_cache(cache_dir, path, key, book)
    _parsed.clear()  # one book per process in practice; a changed file replaces the old one
    _parsed[key] = book
    return book


def _read_user_book(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as err:
        raise PriceBookError(f"price book {path}: cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise PriceBookError(f"price book {path}: not UTF-8 text: {err}") from None


def _merge(book: PriceBook, path: Path | None, user_text: str | None) -> PriceBook:
    if path is None or user_text is None:
        return book
    user = parse_price_book(user_text, str(path))
    # a user's entry replaces every shipped entry of the same source, metric and match, whatever
    # their dates: a contract price must not lose to a later-dated list price
    overridden = {(p.source, p.metric, p.match) for p in user.prices}
    kept = tuple(p for p in book.prices if (p.source, p.metric, p.match) not in overridden)
    factors = {**book.factors, **{t: {**book.factors.get(t, {}), **v} for t, v in user.factors.items()}}
    return PriceBook(f"{book.version}+{user.version}", kept + user.prices, factors)


# -- the parsed book, kept ------------------------------------------------------------------------

_parsed: dict[str, PriceBook] = {}


def _code_stamp() -> str:
    """The parsing code's files, by size and modification time: a changed parser parses again even
    where the package version stays the same (an editable install)."""
    here = Path(__file__).resolve().parent
    stamps = []
    for name in ("price_book.py", "model.py", "money.py", "units.py"):
        try:
            info = (here / name).stat()
            stamps.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        except OSError:
            stamps.append(f"{name}:?")
    return ",".join(stamps)


def _cache_key(shipped: str, path: Path | None, user_text: str | None) -> str:
    digest = hashlib.sha256()
    for part in (str(CACHE_FORMAT), __version__, _code_stamp(), shipped, str(path or ""), user_text or ""):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _cache_file(cache_dir: str | Path, path: Path | None) -> Path:
    # one file per user book path: editing the book replaces its cache rather than adding one
    name = hashlib.sha256(str(path or "").encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(cache_dir) / f"price_book-{name}.json"


def _read_cache(cache_dir: str | Path, path: Path | None, key: str) -> PriceBook | None:
    try:
        document = json.loads(_cache_file(cache_dir, path).read_text("utf-8"))
        if document.get("key") != key:
            return None
        return _from_json(document)
    except FileNotFoundError:
        return None
    except Exception as error:  # a torn or foreign file: parse the YAML instead, and write it over
        log.debug("cost provider: price book cache unusable, parsing the book: %s", error)
        return None


def _write_cache(cache_dir: str | Path, path: Path | None, key: str, book: PriceBook) -> None:
    write_json(_cache_file(cache_dir, path), _to_json(book, key), "price book")


def _to_json(book: PriceBook, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "version": book.version,
        "prices": [
            [
                p.source,
                p.metric,
                p.unit,
                str(p.amount),
                p.currency,
                p.book_version,
                p.effective_date.isoformat() if p.effective_date else None,
                p.source_url,
                [list(pair) for pair in p.match],
                p.origin,
            ]
            for p in book.prices
        ],
        "factors": {table: {k: str(v) for k, v in values.items()} for table, values in book.factors.items()},
    }


def _from_json(document: Mapping[str, Any]) -> PriceBook:
    prices = tuple(
        Price(
            source=source,
            metric=metric,
            unit=unit,
            amount=Decimal(amount),
            currency=currency,
            book_version=book_version,
            effective_date=dt.date.fromisoformat(effective) if effective else None,
            source_url=url,
            match=tuple((str(k), str(v)) for k, v in match),
            origin=origin,
        )
        for source, metric, unit, amount, currency, book_version, effective, url, match, origin in document[
            "prices"
        ]
    )
    factors = {
        str(table): {str(k): Decimal(v) for k, v in values.items()}
        for table, values in document["factors"].items()
    }
    return PriceBook(str(document["version"]), prices, factors)
