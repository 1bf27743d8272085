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
