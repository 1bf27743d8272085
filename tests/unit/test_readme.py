"""The README as a user reads it: its configuration reference is the provider's options with their
defaults, its examples are accepted as written, the files it links to exist, and its command summary
names every `airflow-cost` command."""

from __future__ import annotations

import json
import re

import pytest

from airflow_cost_provider import conf
from airflow_cost_provider.cli import build_parser
from airflow_cost_provider.get_provider_info import CONFIG_OPTIONS
from airflow_cost_provider.pricing.price_book import parse_price_book
from tests.support.airflow_env import REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def reference() -> dict[str, tuple[str, str]]:
    """Option -> (default cell, meaning cell) of the `[cost_provider]` table."""
    rows = re.findall(
        r"^\| `([a-z_]+)` \| ([^|]*) \| (.*) \|$",
        section("Configuration reference: `[cost_provider]`"),
        re.M,
    )
    return {name: (default.strip(), meaning) for name, default, meaning in rows}


def test_the_configuration_reference_lists_every_option_once_and_nothing_else():
    names = re.findall(r"^\| `([a-z_]+)` \|", section("Configuration reference: `[cost_provider]`"), re.M)
    assert len(names) == len(set(names)), "an option is listed twice"
    assert set(names) == set(CONFIG_OPTIONS)


@pytest.mark.parametrize("option", sorted(CONFIG_OPTIONS))
def test_the_configuration_reference_states_each_default(option):
    default = CONFIG_OPTIONS[option]["default"]
    shown = reference()[option][0]
    if default:
        assert shown == f"`{default}`"
    else:
        assert re.fullmatch(r"\*\(empty(: .+)?\)\*", shown), shown


def _json_examples(meaning: str) -> list[str]:
    return [text for text in re.findall(r"`(\{.*?\}|\[.*?\])`", meaning) if text.startswith(('{"', "[{"))]


EXAMPLED = [name for name in CONFIG_OPTIONS if _json_examples(reference().get(name, ("", ""))[1])]


def test_the_json_options_show_examples():
    assert {"connection_pricing", "billing_resources", "reconcile_mode", "spark_endpoints"} <= set(EXAMPLED)


@pytest.mark.parametrize("option", EXAMPLED)
def test_each_json_example_of_the_reference_is_accepted_as_written(monkeypatch, option):
    for example in _json_examples(reference()[option][1]):
        json.loads(example)
        monkeypatch.setenv(f"AIRFLOW__COST_PROVIDER__{option.upper()}", example)
        conf.clear_cache()
        assert conf.GETTERS[option]()


def test_the_price_book_example_is_a_price_book():
    example = re.search(r"```yaml\n(.*?)```", section("The price book"), re.S).group(1)
    book = parse_price_book(example, "README.md")
    assert [(p.source, p.metric, str(p.amount), p.unit) for p in book.prices] == [
        ("athena", "data_scanned", "5.00", "TB")
    ]


def test_every_file_the_readme_links_or_names_exists():
    linked = {target.split("#")[0] for target in re.findall(r"\]\(([^)]+)\)", README)}
    named = set(
        re.findall(r"`((?:docs|dags|benchmarks|scripts|airflow_cost_provider|tests)/[^` *<]+)`", README)
    )
    paths = {path for path in linked | named if not path.startswith(("http://", "https://"))}
    assert len(paths) > 20
    missing = sorted(path for path in paths if not (REPO / path).exists())
    assert not missing, missing


def test_the_command_summary_names_every_command():
    summary = section("Reports").split("```\n", 2)[1]
    commands = build_parser()._subparsers._group_actions[0].choices
    kinds = commands["report"]._subparsers._group_actions[0].choices
    shown = set(re.findall(rf"^airflow-cost ([a-z][a-z-]*(?: (?:{'|'.join(kinds)}))?)", summary, re.M))
    assert shown == set(commands) | {f"report {kind}" for kind in kinds}


def test_the_price_book_section_names_every_unit():
    from airflow_cost_provider.pricing.units import known_units

    text = section("The price book")
    paragraph = text[text.index("Units are exact") :]
    words = set(re.findall(r"[A-Za-z][\w-]*-?", paragraph))
    missing = [
        unit
        for unit in known_units()
        if unit not in words
        and not (re.match(r"(.+-)(ms|second|minute|hour)$", unit) and unit.rsplit("-", 1)[0] + "-" in words)
    ]
    assert not missing, missing


def test_the_install_section_names_every_extra():
    pyproject = (REPO / "pyproject.toml").read_text()
    block = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([a-z][a-z0-9-]*) = \[", block, re.M))
    install = section("Install into an existing Airflow")
    sentence = install[install.index("Extras pull in") :].split("\n\n", 1)[0]
    assert extras and extras == set(re.findall(r"`([a-z][a-z0-9-]*)`", sentence))


def test_the_focus_section_names_every_column_of_its_own():
    from airflow_cost_provider.export.focus import COLUMNS

    shown = set(re.findall(r"`(x_[A-Za-z]+)`", section("Export to FOCUS")))
    assert shown == {column for column in COLUMNS if column.startswith("x_")}
