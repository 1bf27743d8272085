"""[cost_provider] options, provider metadata, and what the plugin registers and warns about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from airflow_cost_provider import conf
from airflow_cost_provider.get_provider_info import CONFIG_OPTIONS, get_provider_info

REPO = Path(__file__).resolve().parents[2]


def test_provider_info_is_valid_for_airflow():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    Draft7Validator(schema).validate(get_provider_info())
    assert set(CONFIG_OPTIONS) >= {
        "enabled",
        "ledger_conn",
        "price_book_path",
        "tagging_enabled",
        "disabled_sources",
        "finalize_timeout",
        "worker_vcpu_hour_rate",
        "worker_memory_gib_hour_rate",
    }
    assert all(option["description"] for option in CONFIG_OPTIONS.values())
    assert CONFIG_OPTIONS["ledger_conn"]["sensitive"] is True


def test_defaults_and_typed_values(monkeypatch):
    assert conf.enabled() is True
    assert conf.finalize_timeout() == 5.0
    assert conf.worker_vcpu_hour_rate() == Decimal("0.04048")
    conf.clear_cache()
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", " bigquery ,airflow_worker,, ")
    assert conf.disabled_sources() == frozenset({"bigquery", "airflow_worker"})
    assert not conf.source_enabled("bigquery") and conf.source_enabled("athena")


@pytest.mark.parametrize(
    ("option", "value", "getter", "message"),
    [
        ("ENABLED", "maybe", conf.enabled, "enabled = 'maybe' is not a boolean"),
        (
            "FINALIZE_TIMEOUT",
            "-1",
            conf.finalize_timeout,
            "finalize_timeout = '-1' must be greater than zero",
        ),
        (
            "WORKER_VCPU_HOUR_RATE",
            "cheap",
            conf.worker_vcpu_hour_rate,
            "worker_vcpu_hour_rate = 'cheap' is not a number",
        ),
        ("WORKER_RATE_CURRENCY", "dollars", conf.worker_rate_currency, "not an ISO 4217 code"),
        ("LISTENER_ORDER", "middle", conf.listener_order, "must be 'first' or 'last'"),
    ],
)
def test_bad_values_name_the_option(monkeypatch, option, value, getter, message):
    monkeypatch.setenv(f"AIRFLOW__COST_PROVIDER__{option}", value)
    conf.clear_cache()
    with pytest.raises(conf.ConfigError, match=message):
        getter()


def _load_plugin(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__COST", "AIRFLOW__OPENLINEAGE", "OPENLINEAGE"))
    }
    env.update(extra_env, PYTHONPATH=str(REPO))
    code = (
        "from airflow_cost_provider.plugin import CostProviderPlugin as P;"
        "print('REGISTERED', len(P.listeners), len(getattr(P, 'hook_lineage_readers', [])))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def test_plugin_warns_once_when_openlineage_lacks_the_facet_function():
    result = _load_plugin({"AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "console"}'})
    output = result.stdout + result.stderr
    assert "REGISTERED 1 1" in output
    expected = "custom_run_facets = airflow_cost_provider.openlineage.get_cost_run_facets"
    assert output.count(expected) == 1, output


def test_plugin_is_quiet_when_configured_and_registers_nothing_when_disabled():
    configured = _load_plugin(
        {
            "AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "console"}',
            "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "other.module.facets;airflow_cost_provider.openlineage.get_cost_run_facets",
        }
    )
    assert (
        "REGISTERED 1 1" in configured.stdout
        and "custom_run_facets" not in configured.stdout + configured.stderr
    )
    disabled = _load_plugin({"AIRFLOW__COST_PROVIDER__ENABLED": "False"})
    assert "REGISTERED 0 0" in disabled.stdout


def test_plugin_with_a_bad_price_book_logs_the_file_and_entry(tmp_path):
    book = tmp_path / "prices.yaml"
    book.write_text(
        'version: "x"\nprices:\n  - {source: glue, metric: dpu_time, unit: DPU-hour, amount: 0.44, currency: USD}\n'
    )
    result = _load_plugin({"AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book)})
    output = result.stdout + result.stderr
    assert "REGISTERED 1 1" in output
    assert f"price book {book} entry #1 (glue/dpu_time): amount 0.44 must be a quoted string" in output


def test_check_command_exits_nonzero_on_a_bad_price_book(tmp_path):
    book = tmp_path / "prices.yaml"
    book.write_text("prices: [}")
    env = {**os.environ, "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "airflow_cost_provider.cli", "check"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"price book {book}: not valid YAML" in result.stderr
