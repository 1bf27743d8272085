from __future__ import annotations

import pytest

from tests.support.airflow_env import AirflowEnv


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> AirflowEnv:
    env = AirflowEnv(tmp_path_factory.mktemp("airflow-home"))
    env.migrate()
    return env
