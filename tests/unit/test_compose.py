"""docker-compose.yaml, its Dockerfile and .env.example, checked without a Docker engine: the Compose
specification's JSON schema, then what the schema cannot see (service references, the OpenLineage and
ledger settings, host ports, image pins, health checks, and the files they point at)."""

from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openlineage.client.transport import get_default_factory
from openlineage.client.transport.http import HttpTransport
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before Python 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SCHEMA = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"
PRICE_BOOK = REPO / "airflow_cost_provider" / "pricing" / "price_book.yaml"

FACETS_FUNCTION = "airflow_cost_provider.openlineage.get_cost_run_facets"
AIRFLOW_COMPONENTS = {"api-server", "scheduler", "dag-processor", "triggerer"}
# Compose interpolation: $$ is a literal $, ${NAME}, ${NAME:-default} (unset or empty), ${NAME-default}.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """The compose file as `docker compose config` would see it with these variables set."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group("name", "op", "default")
        current = env.get(name)
        if op == ":-" and not current:
            return default
        if op == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_used(text: str) -> set[str]:
    return {m.group("name") for m in _VARIABLE.finditer(text) if m.group("name")}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # anchors and << merge keys resolved


@pytest.fixture(scope="module")
def compose(raw_compose) -> dict[str, Any]:
    """With no .env file: every variable takes its default."""
    return interpolate(raw_compose, {})


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    targets = service.get("depends_on") or {}
    if isinstance(targets, list):
        return {name: {"condition": "service_started"} for name in targets}
    return targets


def airflow_services(services) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "build" in s}


def image_name(service: dict[str, Any]) -> str:
    return service["image"].rsplit(":", 1)[0]


def services_running(services, image: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "build" not in s and image_name(s) == image}


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    published = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if "published" in port:
                published.append(
                    (port.get("host_ip", "0.0.0.0"), int(port["published"]), int(port["target"]))
                )
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            published.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            published.append(("0.0.0.0", int(parts[0]), int(parts[1])))
    return published


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = (
            (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        )
        if source.startswith("."):
            mounts.append(((REPO / source).resolve(), target))
    return mounts


# --------------------------------------------------------------------------------------------- schema


def test_compose_file_follows_the_compose_specification(raw_compose, compose):
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    validator.validate(raw_compose)
    validator.validate(compose)


def test_the_schema_rejects_a_misspelt_setting(raw_compose):
    # the schema is strict enough to catch what a typo would silently ignore at run time
    broken = copy.deepcopy(raw_compose)
    broken["services"]["marquez-api"]["depends-on"] = broken["services"]["marquez-api"].pop("depends_on")
    with pytest.raises(jsonschema.ValidationError, match="depends-on"):
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(broken)


# ------------------------------------------------------------------------------- service references


def test_every_dependency_exists_and_its_condition_can_be_met(services):
    for name, service in services.items():
        for target, spec in depends_on(service).items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy"
                assert not services[target]["healthcheck"].get("disable")
            elif condition == "service_completed_successfully":
                # a one-shot service: restarting it would never let it complete
                assert services[target].get("restart", "no") == "no", target
            else:
                assert condition == "service_started", condition


def test_services_start_in_an_order_without_cycles(services):
    started: list[str] = []
    waiting = dict(services)
    while waiting:
        ready = [name for name, s in waiting.items() if set(depends_on(s)) <= set(started)]
        assert ready, f"these services wait for each other: {sorted(waiting)}"
        started += ready
        for name in ready:
            del waiting[name]
    assert started.index("airflow-db") < started.index("airflow-init") < started.index("airflow-scheduler")
    assert started.index("marquez-api") < started.index("airflow-scheduler")


def test_the_four_airflow_components_run_on_the_local_executor(services):
    airflow = airflow_services(services)
    commands = {name: s.get("command") for name, s in airflow.items()}
    assert AIRFLOW_COMPONENTS <= {c for c in commands.values() if isinstance(c, str)}, commands
    for name, service in airflow.items():
        env = environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        database = services[metadata.host]
        db_env = environment(database)
        assert image_name(database) == "postgres"
        assert (metadata.database, metadata.username, metadata.password) == (
            db_env["POSTGRES_DB"],
            db_env["POSTGRES_USER"],
            db_env["POSTGRES_PASSWORD"],
        )
        assert depends_on(service)[metadata.host]["condition"] == "service_healthy", name
    # tasks authenticate to the API server with tokens every component must be able to check
    shared = [
        {k: v for k, v in environment(s).items() if not k.startswith("_AIRFLOW_")} for s in airflow.values()
    ]
    assert all(env == shared[0] for env in shared)
    assert shared[0]["AIRFLOW__API_AUTH__JWT_SECRET"]


# -------------------------------------------------------------------------- OpenLineage and ledger


def test_openlineage_events_go_to_the_marquez_api_with_the_cost_facet(services):
    marquez_api = services_running(services, "marquezproject/marquez")
    assert list(marquez_api) == ["marquez-api"]
    api_port = int(environment(marquez_api["marquez-api"])["MARQUEZ_PORT"])
    for name, service in airflow_services(services).items():
        env = environment(service)
        # the OpenLineage client itself reads the setting, as the Airflow provider does
        transport = get_default_factory().create(json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"]))
        assert isinstance(transport, HttpTransport), name
        host, _, port = transport.url.removeprefix("http://").partition(":")
        assert (host, int(port)) == ("marquez-api", api_port), transport.url
        assert transport.endpoint.strip("/") == "api/v1/lineage"
        assert 0 < transport.timeout <= 30
        assert FACETS_FUNCTION in env["AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS"].split(";")
        assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"]
    module, _, function = FACETS_FUNCTION.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    # with the LocalExecutor the scheduler runs the tasks: Marquez must be up before the first event
    assert depends_on(services["airflow-scheduler"])["marquez-api"]["condition"] == "service_healthy"


def test_the_ledger_is_its_own_postgresql_database_of_this_stack(services):
    for name, service in airflow_services(services).items():
        env = environment(service)
        ledger = make_url(env["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])
        metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert ledger.get_backend_name() == "postgresql"
        assert (ledger.host, ledger.database) != (metadata.host, metadata.database)
        database = services[ledger.host]
        db_env = environment(database)
        assert image_name(database) == "postgres"
        assert (ledger.database, ledger.username, ledger.password) == (
            db_env["POSTGRES_DB"],
            db_env["POSTGRES_USER"],
            db_env["POSTGRES_PASSWORD"],
        )
        assert ledger.port == 5432
        assert depends_on(service)[ledger.host]["condition"] == "service_healthy", name


def test_the_runnable_examples_connections_point_at_what_the_stack_creates(services):
    env = environment(services["airflow-scheduler"])
    shop = make_url(env["AIRFLOW_CONN_POSTGRES_DEFAULT"])
    init_sql = "\n".join(
        path.read_text() for path, target in bind_mounts(services[shop.host]) if "initdb.d" in target
    )
    assert f"CREATE ROLE {shop.username} LOGIN PASSWORD '{shop.password}'" in init_sql
    assert f"CREATE DATABASE {shop.database} OWNER {shop.username}" in init_sql
    # the instance named for postgres_default has a price in the shipped price book
    pricing = json.loads(env["AIRFLOW__COST_PROVIDER__CONNECTION_PRICING"])
    instance = pricing["postgres_default"]["instance_type"]
    prices = yaml.safe_load(PRICE_BOOK.read_text())["prices"]
    assert any(p["source"] == "postgres" and p["match"].get("instance_type") == instance for p in prices)
    sqlite = json.loads(env["AIRFLOW_CONN_LOCAL_SQLITE"])
    assert sqlite["conn_type"] == "sqlite" and sqlite["host"].startswith("/opt/airflow/")


# ---------------------------------------------------------------------------------------- host ports


@pytest.mark.parametrize("env_file", [None, ENV_EXAMPLE], ids=["defaults", "env-example"])
def test_no_host_port_is_published_twice_and_none_is_5000(raw_compose, env_file):
    env = read_env_file(env_file) if env_file else {}
    services = interpolate(raw_compose, env)["services"]
    published = [(name, ip, port) for name, s in services.items() for ip, port, _ in published_ports(s)]
    ports = [port for _, _, port in published]
    assert len(ports) == len(set(ports)), published
    assert 5000 not in ports  # macOS keeps it for AirPlay
    assert {name for name, _, _ in published} >= {"airflow-apiserver", "marquez-web", "marquez-api"}


def test_every_host_port_comes_from_a_variable(raw_compose):
    for name, service in raw_compose["services"].items():
        for port in service.get("ports", []):
            host_part = str(port).rsplit(":", 1)[0]
            assert re.search(r"\$\{\w+:-\d+\}$", host_part), f"{name}: {port} is not configurable"


def test_env_example_documents_every_variable_with_the_compose_defaults(raw_compose):
    text = COMPOSE_FILE.read_text()
    example = read_env_file(ENV_EXAMPLE)
    assert variables_used(text) == set(example)
    # copying .env.example to .env changes nothing until a value is edited
    assert interpolate(raw_compose, example) == interpolate(raw_compose, {})


def test_the_walkthrough_ports_are_the_defaults(services):
    ports = {
        name: {container: host for _, host, container in published_ports(s)} for name, s in services.items()
    }
    assert ports["airflow-apiserver"][8080] == 8080
    assert ports["marquez-web"][3000] == 3000


# ------------------------------------------------------------------------------ images and checks


def test_every_image_is_pinned_to_a_version(services):
    for name, service in services.items():
        if "build" in service:
            continue  # built from the Dockerfile, whose base image is checked below
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {service['image']}"
        assert re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: {service['image']} is not a version"
    assert services["marquez-api"]["image"].split(":")[1].startswith("0.51.")
    assert services["marquez-web"]["image"].split(":")[1] == services["marquez-api"]["image"].split(":")[1]
    assert services["marquez-db"]["image"].split(":")[1].startswith("14.")


def test_databases_and_the_marquez_api_have_health_checks(services):
    for name, service in services_running(services, "postgres").items():
        test = " ".join(service["healthcheck"]["test"])
        # over TCP: during its init scripts the server only listens on its socket
        assert "pg_isready" in test and "-h 127.0.0.1" in test, name
    for name in ("marquez-api", "marquez-web", "airflow-apiserver", "airflow-scheduler"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["timeout"] and check["retries"], name
    api = environment(services["marquez-api"])
    assert f"127.0.0.1:{api['MARQUEZ_ADMIN_PORT']}/healthcheck" in " ".join(
        services["marquez-api"]["healthcheck"]["test"]
    )


def test_marquez_has_the_settings_it_needs_to_start(services):
    api, web = environment(services["marquez-api"]), environment(services["marquez-web"])
    assert api["SEARCH_ENABLED"] == "false"  # no OpenSearch in this stack
    assert api["POSTGRES_HOST"] == "marquez-db"
    assert web["MARQUEZ_HOST"] in services and web["MARQUEZ_HOST"] == "marquez-api"
    assert web["MARQUEZ_PORT"] == api["MARQUEZ_PORT"]
    assert [container for _, _, container in published_ports(services["marquez-web"])] == [
        int(web["WEB_PORT"])
    ]


def test_the_marquez_database_lets_the_marquez_user_create_its_tables(services):
    scripts = [path for path, target in bind_mounts(services["marquez-db"]) if "initdb.d" in target]
    assert scripts
    sql = "\n".join(path.read_text() for path in scripts)
    assert "CREATE ROLE marquez LOGIN PASSWORD 'marquez'" in sql
    assert "CREATE DATABASE marquez OWNER marquez" in sql
    # the grant must run inside the marquez database, where Marquez creates its tables
    connect = sql.index("\\connect marquez")
    assert re.search(r"GRANT (ALL|CREATE)[^;]* ON SCHEMA public TO marquez;", sql[connect:])


def test_every_bind_mount_points_at_a_file_in_the_repository(services):
    mounts = [mount for service in services.values() for mount in bind_mounts(service)]
    assert mounts
    for source, _ in mounts:
        assert source.exists(), source
        assert REPO in source.parents
    dag_mounts = [target for source, target in mounts if source == REPO / "dags"]
    assert dag_mounts and all(t == "/opt/airflow/dags" for t in dag_mounts)


# ------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_pins_the_official_airflow_image():
    bases = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert len(bases) == 1
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", bases[0])
    assert match, bases[0]
    airflow_version, python_version = match.groups()
    # the image runs the Airflow minor version the test suite runs on
    assert airflow_version.split(".")[:2] == version("apache-airflow").split(".")[:2]
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python_version in SpecifierSet(requires_python), (python_version, requires_python)


def test_the_dockerfile_copies_and_installs_the_project():
    instructions = dockerfile_instructions()
    copied = {}
    for instruction, args in instructions:
        if instruction == "COPY":
            *sources, target = [word for word in args.split() if not word.startswith("--")]
            copied.update({source: target for source in sources})
    assert {"pyproject.toml", "README.md", "airflow_cost_provider"} <= set(copied)
    project_dir = copied["pyproject.toml"].rstrip("/")
    installs = [args for instruction, args in instructions if instruction == "RUN" and "pip install" in args]
    assert len(installs) == 1
    words = [word.strip('"') for word in installs[0].split()]
    assert "apache-airflow==${AIRFLOW_VERSION}" in words  # pip must not replace the image's Airflow
    project = next(word for word in words if word.startswith(project_dir + "["))
    extras = set(project[len(project_dir) + 1 : -1].split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared)
    assert providers_the_example_dags_need() <= extras


def providers_the_example_dags_need() -> set[str]:
    """Extras for the provider packages the DAGs import, and for the connections they name."""
    extra_for_module = {
        "amazon": "amazon",
        "google": "google",
        "microsoft.azure": "microsoft-azure",
        "databricks": "databricks",
        "snowflake": "snowflake",
    }
    extra_for_conn = {"postgres_default": "postgres", "mysql_default": "mysql", "trino_default": "trino"}
    needed = set()
    for path in (REPO / "dags").glob("*.py"):
        text = path.read_text()
        for module in re.findall(r"from airflow\.providers\.([\w.]+) import", text):
            needed |= {extra for prefix, extra in extra_for_module.items() if module.startswith(prefix + ".")}
        needed |= {extra for conn, extra in extra_for_conn.items() if f'"{conn}"' in text}
    assert needed, "no provider imports found in dags/"
    return needed


def dockerignored(path: str) -> bool:
    ignored = False
    for rule in DOCKERIGNORE.read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        ):
            ignored = not negate
    return ignored


def test_the_build_context_holds_the_package_and_nothing_heavy():
    for path in ("pyproject.toml", "README.md", "airflow_cost_provider/pricing/price_book.yaml"):
        assert not dockerignored(path), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "uv.lock",
        "airflow_cost_provider/__pycache__/x.pyc",
    ):
        assert dockerignored(path), path
