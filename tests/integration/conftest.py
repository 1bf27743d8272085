from __future__ import annotations

import pytest

from tests.support.airflow_env import AirflowEnv
from tests.support.api_server import ApiServer, running_api_server


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> AirflowEnv:
    env = AirflowEnv(tmp_path_factory.mktemp("airflow-home"))
    env.migrate()
    return env


@pytest.fixture(scope="package")
def api_server(airflow_env, tmp_path_factory) -> ApiServer:
    """A real api-server on a ledger a real `airflow dags test` run of cost_attribution filled; one
    for the API's and the page's tests."""
    home = tmp_path_factory.mktemp("api-server")
    ledger_url = f"sqlite:///{home / 'cost_ledger.db'}"
    run = airflow_env.dags_test("cost_attribution", ledger_url=ledger_url)
    assert run.process.returncode == 0, run.output[-4000:]
    with running_api_server(airflow_env, home, ledger_url) as server:
        yield server
