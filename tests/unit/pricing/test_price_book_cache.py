"""The parsed price book kept for other processes: the same book as parsing, parsed again when the
user's file, the shipped file or the parsing code changes, safe with several writers at once, and
never in the way (an unusable cache or folder only means parsing)."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_cost_provider.pricing import price_book
from airflow_cost_provider.pricing.price_book import PriceBookError, load_price_book, load_shipped

USER_BOOK = """\
version: "acme-1"
prices:
  - {source: athena, metric: data_scanned, unit: TB, amount: "4.10", currency: USD, effective_date: 2016-11-30}
  - {source: clickhouse, metric: cpu_time, unit: vCPU-hour, amount: "0.03", currency: EUR,
     match: {tier: 2, spot: true}, source_url: "https://example.com/prices"}
factors:
  glue_dpu_per_worker: {Z.9X: "9.5"}
"""


@pytest.fixture(autouse=True)
def nothing_kept_in_memory():
    price_book._parsed.clear()
    yield
    price_book._parsed.clear()


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The names of the YAML books parsed from now on."""
    seen: list[str] = []
    real = price_book.parse_price_book

    def counting(text: str, name: str):
        seen.append(name)
        return real(text, name)

    monkeypatch.setattr(price_book, "parse_price_book", counting)
    return seen


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("price_book-*.json"))


def test_the_cached_book_is_the_parsed_book(tmp_path, parses):
    user = write(tmp_path / "prices.yaml", USER_BOOK)
    parsed = load_price_book(user, cache_dir=tmp_path / "cache")
    assert parses == ["price_book.yaml", str(user)]
    [cache] = cache_files(tmp_path / "cache")
    assert json.loads(cache.read_text())["version"] == "2026.11.0+acme-1"

    price_book._parsed.clear()  # another process
    cached = load_price_book(user, cache_dir=tmp_path / "cache")
    assert parses == ["price_book.yaml", str(user)]  # nothing parsed again
    assert cached == parsed
    assert cached is not parsed
    # what pricing reads: exact amounts, dates, matches as strings, origins, factors
    [clickhouse] = cached.candidates("clickhouse", "cpu_time")
    assert clickhouse.amount == Decimal("0.03") and clickhouse.match == (("spot", "True"), ("tier", "2"))
    assert clickhouse.origin == f"{user} entry #2 (clickhouse/cpu_time)"
    assert clickhouse.source_url == "https://example.com/prices" and clickhouse.effective_date is None
    [athena] = cached.candidates("athena", "data_scanned")
    assert athena.effective_date.isoformat() == "2016-11-30" and athena.book_version == "acme-1"
    assert cached.factor("glue_dpu_per_worker", "Z.9X") == Decimal("9.5")
    assert cached.factor("glue_dpu_per_worker", "G.2X") == Decimal(2)


def test_the_shipped_book_alone_round_trips(tmp_path):
    load_price_book(None, cache_dir=tmp_path)
    price_book._parsed.clear()
    assert load_price_book(None, cache_dir=tmp_path) == load_shipped()


def test_one_process_parses_once_for_the_check_and_the_pricing(tmp_path, parses):
    first = load_price_book(None)
    assert load_price_book(None) is first
    assert parses == ["price_book.yaml"]


def test_an_edited_user_book_is_parsed_again(tmp_path, parses):
    user = write(tmp_path / "prices.yaml", USER_BOOK)
    load_price_book(user, cache_dir=tmp_path / "cache")
    stat = user.stat()
    # the same size and modification time: only the content tells
    write(user, USER_BOOK.replace('"4.10"', '"4.20"'))
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert user.stat().st_size == stat.st_size

    price_book._parsed.clear()
    book = load_price_book(user, cache_dir=tmp_path / "cache")
    [athena] = book.candidates("athena", "data_scanned")
    assert athena.amount == Decimal("4.20")
    assert parses.count(str(user)) == 2
    assert len(cache_files(tmp_path / "cache")) == 1  # replaced, not added

    # and in the same process too, without clearing anything
    write(user, USER_BOOK.replace('"4.10"', '"4.30"'))
    [athena] = load_price_book(user, cache_dir=tmp_path / "cache").candidates("athena", "data_scanned")
    assert athena.amount == Decimal("4.30")


def test_a_new_shipped_book_or_parser_is_parsed_again(tmp_path, parses, monkeypatch):
    load_price_book(None, cache_dir=tmp_path)
    price_book._parsed.clear()
    shipped = price_book._shipped_text()
    monkeypatch.setattr(price_book, "_shipped_text", lambda: shipped.replace('"2026.11.0"', '"2027.1.0"', 1))
    assert load_price_book(None, cache_dir=tmp_path).version == "2027.1.0"
    assert len(parses) == 2

    price_book._parsed.clear()
    monkeypatch.setattr(price_book, "__version__", "99.0")  # an upgrade that ships the same book
    load_price_book(None, cache_dir=tmp_path)
    assert len(parses) == 3


def test_a_broken_user_book_is_never_cached_and_still_fails(tmp_path):
    user = write(tmp_path / "prices.yaml", USER_BOOK.replace('"0.03"', "0.03"))
    for _ in range(2):
        price_book._parsed.clear()
        with pytest.raises(PriceBookError, match="quoted string"):
            load_price_book(user, cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []
    with pytest.raises(PriceBookError, match="cannot be read"):
        load_price_book(tmp_path / "missing.yaml", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("content", ["{not json", '{"key": 1}', "[]", ""])
def test_a_torn_or_foreign_cache_file_is_parsed_over(tmp_path, parses, content):
    expected = load_price_book(None, cache_dir=tmp_path)
    [cache] = cache_files(tmp_path)
    key = json.loads(cache.read_text())["key"]
    if content == '{"key": 1}':
        content = json.dumps({"key": key, "prices": [["too", "short"]], "factors": {}})
    cache.write_text(content)

    price_book._parsed.clear()
    assert load_price_book(None, cache_dir=tmp_path) == expected
    assert len(parses) == 2
    assert json.loads(cache.read_text())["key"] == key  # written again, whole


def test_an_unwritable_cache_folder_only_means_parsing(tmp_path, parses):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    expected = load_shipped()
    for _ in range(2):
        price_book._parsed.clear()
        assert load_price_book(None, cache_dir=blocker / "cache") == expected
    assert len(parses) == 3  # the expected book, then each load
    assert not list(tmp_path.glob("**/.price_book-*"))  # no temporary file left behind


def _write_and_read(folder: str, rounds: int, queue) -> None:
    book = load_shipped()
    key = price_book._cache_key(price_book._shipped_text(), None, None)
    whole = 0
    for _ in range(rounds):
        price_book._write_cache(folder, None, key, book)
        if price_book._read_cache(folder, None, key) == book:
            whole += 1
    queue.put(whole)


def test_several_processes_writing_at_once_never_leave_a_torn_book(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_write_and_read, args=(str(tmp_path), 40, queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * 6
    assert sorted(queue.get(timeout=5) for _ in workers) == [40] * 6  # every read found a whole book
    assert len(cache_files(tmp_path)) == 1
    assert not list(tmp_path.glob(".price_book-*"))


def test_the_pricing_and_the_check_keep_it_under_airflow_home(monkeypatch, tmp_path, parses):
    from airflow_cost_provider import checks, conf, tracker

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH", raising=False)
    conf.clear_cache()
    tracker.price_book.cache_clear()
    assert conf.cache_dir() == str(tmp_path / "cost_cache")

    priced = tracker.price_book()  # a task process's first pricing
    assert len(cache_files(tmp_path / "cost_cache")) == 1
    assert parses == ["price_book.yaml"]

    price_book._parsed.clear()  # the next task process: its plugin's check, then its pricing
    assert checks.configuration_problems() == []
    tracker.price_book.cache_clear()
    assert tracker.price_book() == priced
    assert parses == ["price_book.yaml"]
