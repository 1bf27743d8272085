"""[cost_provider] options, provider metadata, and what the plugin registers and warns about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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
        ("ENABLED", "maybe", conf.enabled, "enabled = 'maybe' is not a boolean: use True or False"),
        (
            "FINALIZE_TIMEOUT",
            "-1",
            conf.finalize_timeout,
            "finalize_timeout = '-1' is out of range: use seconds from 0.1 to 60",
        ),
        (
            "WORKER_VCPU_HOUR_RATE",
            "cheap",
            conf.worker_vcpu_hour_rate,
            "worker_vcpu_hour_rate = 'cheap' is not a number: use a price per vCPU-hour above 0 and at most "
            "100000 (in worker_rate_currency)",
        ),
        ("WORKER_RATE_CURRENCY", "dollars", conf.worker_rate_currency, "not an ISO 4217 code"),
        (
            "LISTENER_ORDER",
            "Middle",
            conf.listener_order,
            "listener_order = 'Middle' is not a listener order: use first or last",
        ),
        (
            "SPOOL_MAX_MB",
            "0",
            conf.spool_max_mb,
            "spool_max_mb = '0' is out of range: use a whole number of MB from 1 to 100000",
        ),
        ("SPOOL_MAX_MB", "1.5", conf.spool_max_mb, "spool_max_mb = '1.5' is not a whole number"),
        (
            "MAX_LINES_PER_TASK",
            "5",
            conf.max_lines_per_task,
            "max_lines_per_task = '5' is out of range: use a whole number of lines from 10 to 1000000",
        ),
        (
            "MAX_LINES_PER_TASK",
            "many",
            conf.max_lines_per_task,
            "max_lines_per_task = 'many' is not a whole number",
        ),
        ("SPOOL_DIR", "cost_spool", conf.spool_dir, "spool_dir = 'cost_spool' is not an absolute path"),
    ],
)
def test_bad_values_name_the_option(monkeypatch, option, value, getter, message):
    monkeypatch.setenv(f"AIRFLOW__COST_PROVIDER__{option}", value)
    conf.clear_cache()
    with pytest.raises(conf.ConfigError) as excinfo:
        getter()
    assert str(excinfo.value).startswith("[cost_provider] ")
    assert message in str(excinfo.value)


def test_every_option_has_a_getter_and_ranges_are_documented():
    assert set(conf.GETTERS) == set(CONFIG_OPTIONS)
    described = {name: option["description"] for name, option in CONFIG_OPTIONS.items()}
    assert "from 0.1 to 60" in described["finalize_timeout"]
    assert "above 0 and at most 100000" in described["worker_vcpu_hour_rate"].lower()
    assert "above 0 and at most 100000" in described["worker_memory_gib_hour_rate"].lower()
    assert "0 to 62" in described["storage_reimport_days"]
    assert "from 1 to 100000" in described["spool_max_mb"]
    assert "from 10 to 1000000" in described["max_lines_per_task"]
    assert "0 to 9223372036854775807" in described["storage_allocation"]


def test_the_spool_defaults_to_a_folder_in_airflow_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__SPOOL_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    conf.clear_cache()
    assert conf.spool_dir() == str(tmp_path / "cost_spool")
    assert conf.spool_max_mb() == 100


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.1", 0.1),
        ("60", 60.0),
        (" 2.5 ", 2.5),
    ],
)
def test_finalize_timeout_bounds_are_included(monkeypatch, value, expected):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", value)
    conf.clear_cache()
    assert conf.finalize_timeout() == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("cost_ledger", "cost_ledger"),
        ("sqlite:////var/lib/my ledgers/cost.db", "sqlite:////var/lib/my ledgers/cost.db"),
        ("postgresql://cost:p%40ss@ledger-db:5432/cost", "postgresql://cost:p%40ss@ledger-db:5432/cost"),
        ("postgres://cost:pa/ss@ledger-db/cost", "postgres://cost:pa/ss@ledger-db/cost"),
    ],
)
def test_usable_ledger_conn_values(monkeypatch, value, expected):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", value)
    conf.clear_cache()
    assert conf.ledger_conn() == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "my ledger",
            "ledger_conn = 'my ledger' is neither a database URL nor an Airflow connection id (at most 250 "
            "letters, digits and _-.:/\\#!()); use an SQLAlchemy URL like",
        ),
        (
            "postgresql://cost:p@ss@ledger-db:5432/cost",
            "ledger_conn = 'postgresql://***@ledger-db:5432/cost' is not a usable database URL: the user or "
            "password holds an @ (URL-encode it as %40); use an SQLAlchemy URL like",
        ),
        (
            "postgresql://cost:secret@ledger-db:54x2/cost",
            "ledger_conn = 'postgresql://***@ledger-db:54x2/cost' is not a usable database URL: the port '54x2' "
            "is not a number; use",
        ),
        (
            "post gres://ledger-db/cost",
            "ledger_conn = 'post gres://ledger-db/cost' is not a usable database URL: 'post gres' is not a "
            "database kind like postgresql or sqlite; use",
        ),
    ],
)
def test_unusable_ledger_conn_is_named_without_its_password(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", value)
    conf.clear_cache()
    with pytest.raises(conf.ConfigError) as excinfo:
        conf.ledger_conn()
    assert message in str(excinfo.value)
    assert "secret" not in str(excinfo.value) and "p@ss" not in str(excinfo.value)
    assert "or the id of an Airflow connection" in str(excinfo.value)


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
    assert "REGISTERED 3 1" in output  # the cost listener, and the pair that freezes the heap
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
        "REGISTERED 3 1" in configured.stdout
        and "custom_run_facets" not in configured.stdout + configured.stderr
    )
    disabled = _load_plugin({"AIRFLOW__COST_PROVIDER__ENABLED": "False"})
    assert "REGISTERED 0 0" in disabled.stdout


@pytest.mark.parametrize(
    ("extra_env", "registered"),
    [
        ({}, "REGISTERED 1 1"),  # OpenLineage has no transport: it is disabled and forks nothing
        ({"AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True"}, "REGISTERED 1 1"),
        ({"AIRFLOW__COST_PROVIDER__FREEZE_HEAP_FOR_OPENLINEAGE": "False"}, "REGISTERED 1 1"),
        ({"AIRFLOW__COST_PROVIDER__FREEZE_HEAP_FOR_OPENLINEAGE": "sometimes"}, "REGISTERED 1 1"),
    ],
)
def test_the_heap_is_frozen_only_around_forking_openlineage_events(extra_env, registered):
    facets = {
        "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "airflow_cost_provider.openlineage.get_cost_run_facets"
    }
    transport = {} if not extra_env else {"AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "console"}'}
    result = _load_plugin({**facets, **transport, **extra_env})
    output = result.stdout + result.stderr
    assert registered in output, output
    if "sometimes" in str(extra_env):  # a bad value keeps cost tracking on and is named once
        message = "freeze_heap_for_openlineage = 'sometimes' is not a boolean: use True or False"
        assert output.count(message) == 1, output


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


# ------------------------------------------------------------- reading the options without Airflow

OPTIONS = ("ledger_conn", "price_book_path", "finalize_timeout", "untagged_sources")


def airflow_values(option: str) -> tuple[str | None, str | None]:
    """What the Task SDK's conf (the one conf.py asks) and Airflow core's conf give, each built afresh
    the way Airflow builds it, so that it reads the current environment and file."""
    from airflow import configuration as core
    from airflow.sdk import configuration as sdk

    default = CONFIG_OPTIONS[option]["default"]
    core_conf = core.AirflowConfigParser()
    core_conf.read(conf._airflow_config_file())
    return (
        sdk.initialize_config().get("cost_provider", option, fallback=default),
        core_conf.get("cost_provider", option, fallback=default),
    )


@pytest.fixture
def airflow_cfg(tmp_path, monkeypatch):
    """Write an airflow.cfg that AIRFLOW_CONFIG points at."""
    path = tmp_path / "airflow.cfg"
    monkeypatch.setenv("AIRFLOW_CONFIG", str(path))
    for option in OPTIONS:
        monkeypatch.delenv(f"AIRFLOW__COST_PROVIDER__{option.upper()}", raising=False)

    def write(text: str) -> Path:
        path.write_text(textwrap.dedent(text))
        return path

    return write


def assert_read_as_airflow_reads(option: str, expected: str) -> None:
    light = conf._without_airflow(option)
    assert light == expected
    assert airflow_values(option) == (expected, expected)


def test_light_reader_takes_the_environment_variable(airflow_cfg, monkeypatch):
    airflow_cfg("[core]\nload_examples = False\n")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", "  sqlite:////env/ledger.db ")
    assert_read_as_airflow_reads("ledger_conn", "  sqlite:////env/ledger.db ")  # _raw strips it


def test_light_reader_takes_the_config_file(airflow_cfg):
    airflow_cfg(
        """\
        [core]
        load_examples = False

        # a comment line
        [cost_provider]
        ledger_conn =   postgresql://cost:p%%40ss@db:5432/cost
        price_book_path = /opt/prices.yaml # not a comment: Airflow has no inline comments
        finalize_timeout = 7
        """
    )
    assert_read_as_airflow_reads("ledger_conn", "postgresql://cost:p%40ss@db:5432/cost")
    assert_read_as_airflow_reads(
        "price_book_path", "/opt/prices.yaml # not a comment: Airflow has no inline comments"
    )
    assert_read_as_airflow_reads("finalize_timeout", "7")


def test_light_reader_prefers_the_environment_to_the_file(airflow_cfg, monkeypatch):
    airflow_cfg("[cost_provider]\nfinalize_timeout = 7\n")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "9")
    assert_read_as_airflow_reads("finalize_timeout", "9")


def test_light_reader_falls_back_to_the_default(airflow_cfg):
    # option names and sections are case-sensitive in Airflow's parser: neither of these counts
    airflow_cfg("[cost_provider]\nFINALIZE_TIMEOUT = 7\n[COST_PROVIDER]\nfinalize_timeout = 8\n")
    assert_read_as_airflow_reads("finalize_timeout", "5.0")
    assert_read_as_airflow_reads("ledger_conn", "")


def test_light_reader_with_no_file_and_an_empty_variable(airflow_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONFIG", str(tmp_path / "absent.cfg"))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "")
    assert_read_as_airflow_reads("untagged_sources", "")
    assert_read_as_airflow_reads("price_book_path", "")


def test_light_reader_expands_variables_and_the_default_section_as_airflow_does(airflow_cfg, monkeypatch):
    monkeypatch.setenv("PRICES_DIR", "/srv/prices")
    airflow_cfg("[DEFAULT]\nfinalize_timeout = 3\n[cost_provider]\nprice_book_path = $PRICES_DIR/book.yaml\n")
    assert_read_as_airflow_reads("price_book_path", "/srv/prices/book.yaml")
    assert_read_as_airflow_reads("finalize_timeout", "3")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH", "~/book.yaml")
    assert_read_as_airflow_reads("price_book_path", str(Path("~/book.yaml").expanduser()))


def test_config_file_is_found_where_airflow_looks(monkeypatch, tmp_path):
    from airflow import configuration as core
    from airflow.sdk import configuration as sdk

    def both() -> tuple[str, str]:
        return core.get_airflow_config(core.get_airflow_home()), sdk.get_airflow_config()

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONFIG", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    assert conf._airflow_config_file() == str(tmp_path / "airflow" / "airflow.cfg")
    assert both() == (conf._airflow_config_file(),) * 2
    monkeypatch.setenv("AIRFLOW_HOME", "~/af")
    assert conf._airflow_config_file() == str(tmp_path / "af" / "airflow.cfg")
    assert both() == (conf._airflow_config_file(),) * 2
    monkeypatch.setenv("CFG_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("AIRFLOW_CONFIG", "$CFG_DIR/airflow.cfg")
    assert conf._airflow_config_file() == str(tmp_path / "etc" / "airflow.cfg")
    assert both() == (conf._airflow_config_file(),) * 2


@pytest.fixture
def airflow_conf_reading_now(monkeypatch):
    """Airflow's conf built afresh, as a process starting now would build it (it reads airflow.cfg once)."""
    from airflow.sdk import configuration as sdk

    def rebuild() -> None:
        monkeypatch.setattr(sdk, "conf", sdk.initialize_config())

    return rebuild


def test_a_lone_percent_in_the_file_is_a_config_error_both_ways(
    airflow_cfg, airflow_conf_reading_now, monkeypatch
):
    airflow_cfg("[cost_provider]\nledger_conn = postgresql://cost:p%40ss@db/cost\n")
    airflow_conf_reading_now()
    message = "[cost_provider] ledger_conn in airflow.cfg holds a % that is neither %% nor %(option)s: write a literal % as %%"
    assert "airflow.configuration" in sys.modules  # through Airflow's conf, which raises its own error
    with pytest.raises(conf.ConfigError) as excinfo:
        conf._raw("ledger_conn")
    assert str(excinfo.value) == message
    monkeypatch.delitem(sys.modules, "airflow.configuration")  # and without Airflow
    with pytest.raises(conf.ConfigError) as excinfo:
        conf._raw("ledger_conn")
    assert str(excinfo.value) == message


@pytest.mark.parametrize("where", ["environment", "file"])
@pytest.mark.parametrize("variant", ["cmd", "secret"])
def test_cmd_and_secret_variants_need_airflow(airflow_cfg, monkeypatch, where, variant):
    if where == "environment":
        airflow_cfg("[cost_provider]\n")
        monkeypatch.setenv(f"AIRFLOW__COST_PROVIDER__LEDGER_CONN_{variant.upper()}", "echo sqlite:////cmd.db")
    else:
        airflow_cfg(f"[cost_provider]\nledger_conn_{variant} = echo sqlite:////cmd.db\n")
    assert conf._without_airflow("ledger_conn") is None
    assert conf._without_airflow("finalize_timeout") == "5.0"  # other options stay light


def test_a_cmd_variant_is_run_by_airflow(airflow_cfg, airflow_conf_reading_now, monkeypatch):
    airflow_cfg("[cost_provider]\nledger_conn_cmd = echo sqlite:////from-file-cmd.db\n")
    airflow_conf_reading_now()
    assert airflow_values("ledger_conn") == ("sqlite:////from-file-cmd.db\n",) * 2
    # as in a CLI process: Airflow's configuration not loaded, so conf.py reads alone until it cannot
    monkeypatch.delitem(sys.modules, "airflow.configuration")
    assert conf._raw("ledger_conn") == "sqlite:////from-file-cmd.db"
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN_CMD", "echo sqlite:////from-env-cmd.db")
    assert conf._raw("ledger_conn") == "sqlite:////from-env-cmd.db"  # the environment first, as in Airflow


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "PYTHONPATH": str(REPO),
        **extra,
    }


def test_reading_the_configuration_does_not_import_airflow(tmp_path):
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "airflow.cfg").write_text(
        "[cost_provider]\nledger_conn = sqlite:////data/cost.db\nfinalize_timeout = 7\n"
    )
    code = (
        "import json, sys\n"
        "from airflow_cost_provider import conf\n"
        "values = [conf.ledger_conn(), conf.finalize_timeout(), conf.worker_rate_currency(), conf.enabled()]\n"
        "print(json.dumps([values, sorted(m for m in sys.modules if m.split('.')[0] == 'airflow')]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(tmp_path, AIRFLOW__COST_PROVIDER__WORKER_RATE_CURRENCY="EUR"),
    )
    values, airflow_modules = json.loads(result.stdout)
    assert values == ["sqlite:////data/cost.db", 7.0, "EUR", True]
    assert airflow_modules == []


def test_a_cmd_variant_makes_the_cli_read_through_airflow(tmp_path):
    code = (
        "import sys\n"
        "from airflow_cost_provider import conf\n"
        "print(conf.finalize_timeout(), 'airflow.configuration' in sys.modules)\n"
        "print(conf.ledger_conn(), 'airflow.configuration' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(tmp_path, AIRFLOW__COST_PROVIDER__LEDGER_CONN_CMD="echo sqlite:////from-cmd.db"),
    )
    assert result.stdout.splitlines() == ["5.0 False", "sqlite:////from-cmd.db True"]
