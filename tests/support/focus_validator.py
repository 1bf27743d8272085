"""The FinOps Foundation's `focus-validator` (PyPI), run on an exported file.

It needs Python >= 3.12 and pins numpy 1.x (which pyarrow >= 21 refuses), so it lives in its own
environment, `.tools/focus-validator` of this checkout, made with uv from the machine's own Python
3.12 (else 3.13; `scripts/setup.sh --test-servers` makes it ahead of the tests). It validates offline
against its bundled FOCUS 1.2 rules and reads its currency list from the relative path
`focus_validator/rules/currency_codes.csv`, so it runs in a folder holding a copy of that file.

It exits 0 whatever it finds: the verdict is read from its JUnit report. Its rule model has OR rules
whose items are alternatives (InvoiceId MUST be null when..., MUST NOT be null when...): a passing OR
rule means one alternative held, and the validator still reports the others as failed; those are
not failures of the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from tests.support.airflow_env import REPO

VERSION = "2.2.1"
REQUIREMENTS = (f"focus-validator=={VERSION}", "pyarrow<21")
TOOL_ENV = REPO / ".tools" / "focus-validator"
# What this export's data has: usage measured in units, and tags (the rules of these run too).
APPLICABILITY = "TAGGING_SUPPORTED,USAGE_MEASUREMENT_SUPPORTED"


def _runs(python: str | Path) -> bool:
    try:
        found = subprocess.run(
            [str(python), "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and found.stdout.strip() == "True"


def find_python() -> str | None:
    """A Python 3.12 or 3.13 that runs: on PATH (a pyenv shim may name one it will not run), in
    ~/.pyenv/versions, then among uv's managed Pythons."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates: list[str | Path] = []
    # 3.12 first: the validator's numpy 1.x has wheels for it, on 3.13 it is built from source (minutes)
    for minor in ("3.12", "3.13"):
        if found := shutil.which(f"python{minor}"):
            candidates.append(found)
        if pyenv.is_dir():
            candidates += sorted(pyenv.glob(f"{minor}*/bin/python{minor}"), reverse=True)
    uv = uv_binary()
    if uv:
        listed = subprocess.run(
            [uv, "python", "find", ">=3.12,<3.14"], capture_output=True, text=True, timeout=60, check=False
        )
        if listed.returncode == 0 and listed.stdout.strip():
            candidates.append(listed.stdout.strip())
    return next((str(c) for c in candidates if Path(c).exists() and _runs(c)), None)


def uv_binary() -> str | None:
    for candidate in (os.environ.get("UV"), shutil.which("uv"), REPO / ".tools" / "uv-venv" / "bin" / "uv"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def validator_binary() -> Path:
    """The validator's command, its environment made first when missing."""
    binary = TOOL_ENV / "bin" / "focus-validator"
    if binary.exists():
        return binary
    uv, python = uv_binary(), find_python()
    if uv is None or python is None:
        raise RuntimeError(
            f"focus-validator needs uv and a Python >= 3.12 (uv: {uv}, python: {python}); "
            "scripts/setup.sh --test-servers installs it"
        )
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [uv, "venv", "--quiet", "--python", python, str(TOOL_ENV)], env=env, check=True, timeout=300
    )
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(TOOL_ENV / "bin" / "python"), *REQUIREMENTS],
        env=env,
        check=True,
        timeout=600,
    )
    return binary


def _package_dir(work_dir: Path) -> Path:
    # importing it writes a log file into the current folder: the work folder, not the checkout
    found = subprocess.run(
        [
            str(TOOL_ENV / "bin" / "python"),
            "-c",
            "import focus_validator, os; print(os.path.dirname(focus_validator.__file__))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=work_dir,
    )
    return Path(found.stdout.strip())


def _alternatives(package: Path) -> dict[str, list[str]]:
    """OR rule -> the rules it chooses between, from the validator's own rule model."""
    model_file = next((package / "rules").glob("model-1.2*.json"))
    model = json.loads(model_file.read_text())
    alternatives = {}
    for rule_id, rule in model["ModelRules"].items():
        requirement = (rule.get("ValidationCriteria") or {}).get("Requirement") or {}
        if requirement.get("CheckFunction") == "OR":
            items = [item.get("ModelRuleId") for item in requirement.get("Items", [])]
            if items and all(items):
                alternatives[rule_id] = items
    return alternatives


@dataclass
class Verdict:
    total: int
    passed: set[str]
    failed: set[str]  # failures and errors, alternatives of a passing OR rule aside
    alternatives_not_taken: set[str]
    output: str


def validate(data_file: Path, work_dir: Path) -> Verdict:
    """Run focus-validator on a CSV or Parquet FOCUS file, offline, against its FOCUS 1.2 rules."""
    binary = validator_binary()
    rules = work_dir / "focus_validator" / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    package = _package_dir(work_dir)
    shutil.copy(package / "rules" / "currency_codes.csv", rules)
    report = work_dir / "focus-validator.xml"
    report.unlink(missing_ok=True)
    run = subprocess.run(
        [
            str(binary),
            "--data-file",
            str(data_file),
            "--validate-version",
            "1.2",
            "--block-download",
            "--applicability-criteria",
            APPLICABILITY,
            "--output-type",
            "unittest",
            "--output-destination",
            str(report),
        ],
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    if run.returncode != 0 or not report.exists():
        raise RuntimeError(f"focus-validator did not run (exit {run.returncode}): {output[-3000:]}")
    suites = ElementTree.parse(report).getroot()
    passed, failed = set(), set()
    for case in suites.iter("testcase"):
        rule_id = case.get("name", "").split(" :: ")[0]
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(rule_id)
        elif case.find("skipped") is None:
            passed.add(rule_id)
    not_taken = {
        item
        for rule_id, items in _alternatives(package).items()
        if rule_id in passed
        for item in items
        if item in failed
    }
    return Verdict(int(suites.get("tests", 0)), passed, failed - not_taken, not_taken, output)
