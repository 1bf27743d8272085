"""Test-session set-up: Airflow reads AIRFLOW_HOME at import, so point it at a scratch folder first."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="cost-provider-tests-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
for _name in [k for k in os.environ if k.startswith(("AIRFLOW__COST_PROVIDER__", "AIRFLOW__OPENLINEAGE__"))]:
    del os.environ[_name]

import pytest  # noqa: E402

from tests.support.mariadb import MariaDBServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    server = MariaDBServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    name = "ledger_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres_server.create_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh, empty ledger database of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")
