"""Astronomer Cosmos's local operators: each dbt command that runs nodes is read as soon as dbt exits,
while Cosmos's temporary copy of the project still exists, into the try of the task that ran it; dbt
gets the task try's map index and OpenLineage run id for its query comment. A real Cosmos operator,
with dbt's process (or dbtRunner) replaced by a stand-in writing the artifacts dbt writes; the
DAGs end to end are in tests/integration/test_dbt_cosmos.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cosmos.config import ProfileConfig
from cosmos.constants import InvocationMode
from cosmos.dbt import runner as dbt_runner
from cosmos.hooks.subprocess import FullOutputSubprocessResult
from cosmos.operators import local
from cosmos.operators.local import DbtRunLocalOperator

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.safety import suppress
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation.cosmos import CosmosDbtRuns
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from tests.unit.test_dbt_capture import result, write_run

OL_RUN_ID = "0193a1c2-5e4f-7abc-8def-0123456789ab"
NODES = ["model.shop.stg_orders", "test.shop.unique_order.1a2b"]


class FakeDbtProcess:
    """Stands in for dbt's process: records what it was given, writes the artifacts of a run of
    NODES under `--project-dir`/target (none when `writes` is False) and exits with `exit_code`."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.writes = True
        self.exit_code = 0

    def run_command(self, command, env, cwd, **kwargs) -> FullOutputSubprocessResult:
        self.calls.append((list(command), dict(env)))
        if self.writes:
            project = Path(command[command.index("--project-dir") + 1])
            write_run(project / "target", "duckdb", [result(node) for node in NODES])
        return FullOutputSubprocessResult(self.exit_code, "", [])


@pytest.fixture
def instrumented():
    instrumentation = CosmosDbtRuns()
    instrumentation.instrument()
    yield instrumentation
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def operator(tmp_path, instrumented):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: shop\n")
    op = DbtRunLocalOperator(
        task_id="stg_orders_run",
        project_dir=str(project),
        profile_config=ProfileConfig(
            profile_name="shop", target_name="dev", profiles_yml_filepath=project / "dbt_project.yml"
        ),
        invocation_mode=InvocationMode.SUBPROCESS,
        install_deps=False,
    )
    op.subprocess_hook = FakeDbtProcess()
    return op


@pytest.fixture
def session():
    return open_session(TaskTry("dag", "stg_orders_run", "run", 1, 3, ol_run_id=OL_RUN_ID), worker.sample())


def run_dbt(op, tmp_path, *words: str, env: dict | None = None):
    """What Cosmos's run_command does: dbt in a copy of the project, removed afterwards."""
    copy = tmp_path / "copy"
    copy.mkdir(exist_ok=True)
    command = ["/opt/dbt-venv/bin/dbt", *words, "--project-dir", str(copy), "--profile", "shop"]
    return op.run_subprocess(command, env if env is not None else {"AIRFLOW_CTX_DAG_ID": "dag"}, str(copy))


def test_a_run_is_read_when_dbt_exits_into_the_running_task(operator, session, tmp_path):
    env = {"AIRFLOW_CTX_DAG_ID": "dag", "AIRFLOW_CTX_TASK_ID": "stg_orders_run"}
    outcome = run_dbt(operator, tmp_path, "run", "--select", "stg_orders", env=env)
    assert outcome.exit_code == 0
    assert sorted(u.resource for u in session.usages()) == sorted(NODES)
    for usage in session.usages():
        assert usage.source == "duckdb" and usage.attributes["dbt_unique_id"] == usage.resource
        assert usage.attributes["status"] == "success"
    # dbt's query comment gets the rest of the task try; the caller's environment is left alone
    ((_, given),) = operator.subprocess_hook.calls
    assert given == {**env, "AIRFLOW_CTX_MAP_INDEX": "3", "OPENLINEAGE_RUN_ID": OL_RUN_ID}
    assert env == {"AIRFLOW_CTX_DAG_ID": "dag", "AIRFLOW_CTX_TASK_ID": "stg_orders_run"}


def test_what_the_task_set_itself_is_kept(operator, session, tmp_path):
    parent = "default/dag.stg_orders_run/0193a1c2-0000-7000-8000-000000000000"
    env = {"OPENLINEAGE_PARENT_ID": parent, "AIRFLOW_CTX_MAP_INDEX": "7"}
    run_dbt(operator, tmp_path, "build", env=env)
    ((_, given),) = operator.subprocess_hook.calls
    assert given == env


def test_commands_that_run_no_nodes_are_left_alone(operator, session, tmp_path):
    for words in (["deps"], ["ls", "--output", "json"], ["source", "freshness"], ["docs", "generate"]):
        run_dbt(operator, tmp_path, *words)
    assert session.usages() == []
    assert [given for _, given in operator.subprocess_hook.calls] == [{"AIRFLOW_CTX_DAG_ID": "dag"}] * 4


def test_a_dbt_that_wrote_nothing_is_one_unpriced_line_naming_the_project(operator, session, tmp_path):
    operator.subprocess_hook.writes = False
    operator.subprocess_hook.exit_code = 2
    assert run_dbt(operator, tmp_path, "seed").exit_code == 2  # Cosmos raises on it afterwards
    (usage,) = session.usages()
    assert usage.source == "dbt" and usage.resource == operator.project_dir
    assert (
        "run_results.json does not exist: dbt wrote no results" in usage.attributes[UNPRICED_HINT_ATTRIBUTE]
    )


def test_outside_a_task_disabled_or_untagged_nothing_is_added(operator, tmp_path, monkeypatch):
    run_dbt(operator, tmp_path, "run")  # no task running here
    with_session = open_session(TaskTry("dag", "t", "run", 1, -1, ol_run_id=OL_RUN_ID), worker.sample())
    with suppress():
        run_dbt(operator, tmp_path, "run")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "dbt")
    conf.clear_cache()
    run_dbt(operator, tmp_path, "run")
    assert with_session.usages() == []
    assert [given for _, given in operator.subprocess_hook.calls] == [{"AIRFLOW_CTX_DAG_ID": "dag"}] * 3
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "dbt")
    conf.clear_cache()
    run_dbt(operator, tmp_path, "run")
    assert operator.subprocess_hook.calls[-1][1] == {"AIRFLOW_CTX_DAG_ID": "dag"}
    assert len(with_session.usages()) == len(NODES)  # untagged, still read


def test_dbt_runner_invocations_are_read_too(operator, session, tmp_path, monkeypatch):
    process = FakeDbtProcess()
    monkeypatch.setattr(dbt_runner, "is_available", lambda: True)
    monkeypatch.setattr(dbt_runner, "run_command", process.run_command)
    operator.invocation_mode = InvocationMode.DBT_RUNNER
    copy = tmp_path / "copy"
    copy.mkdir()
    operator.run_dbt_runner(["dbt", "build", "--project-dir", str(copy)], {}, str(copy), context={})
    assert sorted(u.resource for u in session.usages()) == sorted(NODES)
    assert process.calls[0][1]["OPENLINEAGE_RUN_ID"] == OL_RUN_ID


def test_a_failing_read_never_reaches_the_task(operator, session, tmp_path, monkeypatch, caplog):
    from airflow_cost_provider.capture import dbt

    monkeypatch.setattr(dbt, "usages_of_run", lambda *a, **k: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="airflow_cost_provider"):
        for _ in range(2):
            assert run_dbt(operator, tmp_path, "run").exit_code == 0
    assert len(operator.subprocess_hook.calls) == 2 and session.usages() == []
    assert len([r for r in caplog.records if "reading dbt's artifacts" in r.getMessage()]) == 1


def test_instrument_and_uninstrument_are_symmetric_and_idempotent():
    base = local.AbstractDbtLocalBase
    originals = {name: base.__dict__[name] for name in ("run_subprocess", "run_dbt_runner")}
    instrumentation = CosmosDbtRuns()
    instrumentation.instrument()
    instrumentation.instrument()
    for name, original in originals.items():
        assert base.__dict__[name].__wrapped__ is original
    instrumentation.uninstrument()
    instrumentation.uninstrument()
    assert {name: base.__dict__[name] for name in originals} == originals
