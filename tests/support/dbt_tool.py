"""dbt, in its own environment: `.tools/dbt` of this checkout.

dbt-core pins versions of packages Airflow also pins (protobuf, jsonschema, ...), so it never goes
into the project's environment: the provider only reads the JSON artifacts dbt writes, and the
tests and the demo run dbt's own command from here. dbt-core stays on 1.11: 1.12 builds a parser
that its installer downloads from outside the package registry. `scripts/setup.sh --test-servers`
makes the environment ahead of the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tests.support.airflow_env import REPO
from tests.support.focus_validator import uv_binary

REQUIREMENTS = ("dbt-core==1.11.16", "dbt-duckdb==1.11.1", "dbt-postgres==1.11.0")
TOOL_ENV = REPO / ".tools" / "dbt"
# no usage statistics, no version check against the registry: dbt runs offline in the tests
OFFLINE_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1", "DBT_VERSION_CHECK": "false"}


def dbt_binary() -> Path:
    """dbt's command, its environment made first when missing."""
    binary = TOOL_ENV / "bin" / "dbt"
    if binary.exists():
        return binary
    uv = uv_binary()
    if uv is None:
        raise RuntimeError("dbt's environment needs uv; scripts/setup.sh --test-servers installs it")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    # the interpreter this checkout's environment runs on: dbt 1.11 supports 3.10 to 3.13
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(TOOL_ENV)], env=env, check=True, timeout=300
    )
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(TOOL_ENV / "bin" / "python"), *REQUIREMENTS],
        env=env,
        check=True,
        timeout=600,
    )
    return binary


PROJECT = REPO / "dags" / "dbt" / "cost_demo"
# the cost_demo project's nodes, and how each table-like one is materialized
SEED = ["seed.cost_demo.raw_orders"]
MODELS = [
    "model.cost_demo.stg_orders",
    "model.cost_demo.stg_customers",
    "model.cost_demo.customer_totals",
    "model.cost_demo.daily_orders",
]
TESTS = [
    "test.cost_demo.not_null_stg_orders_order_id.81cfe2fe64",
    "test.cost_demo.unique_stg_orders_order_id.e3b841c71a",
    "test.cost_demo.unique_customer_totals_customer_id.947261d2cb",
]
MATERIALIZED = {
    "seed.cost_demo.raw_orders": "seed",
    "model.cost_demo.stg_orders": "view",
    "model.cost_demo.stg_customers": "view",
    "model.cost_demo.customer_totals": "table",
    "model.cost_demo.daily_orders": "incremental",
}

PER_HOUR = Decimal("3.6")  # the tests' DuckDB rate: 0.001 per second


def duckdb_price_book(folder: Path) -> Path:
    """A user price book that gives DuckDB a rate (none is shipped), as a user with a rate would."""
    book = folder / "prices.yaml"
    book.write_text(
        'version: "test-dbt"\nprices:\n  - source: duckdb\n    metric: instance_time\n'
        f'    unit: instance-hour\n    amount: "{PER_HOUR}"\n    currency: USD\n'
    )
    return book


def run_dbt(
    *args: str, env: dict[str, str], work_dir: Path, timeout: float = 300, project: Path = PROJECT
) -> subprocess.CompletedProcess:
    """`dbt ARGS` on the cost_demo project (or a copy of it), its target, logs and packages in `work_dir`."""
    dbt_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CTX_", "OPENLINEAGE_"))},
        **OFFLINE_ENV,
        "DBT_PROFILES_DIR": str(PROJECT),
        "DBT_TARGET_PATH": str(work_dir / "target"),
        "DBT_LOG_PATH": str(work_dir / "logs"),
        **env,
    }
    return subprocess.run(
        [str(dbt_binary()), *args, "--project-dir", str(project)],
        env=dbt_env,
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


if __name__ == "__main__":
    print(dbt_binary())
