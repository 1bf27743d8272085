"""The registry arms each instrumentation without importing it: a task that imports no provider hook
pays for none of them, and one that does is instrumented as its hook module is imported."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from airflow_cost_provider.instrumentation import registry

REPO = Path(__file__).resolve().parents[3]


def test_every_instrumentation_is_armed_by_exactly_its_own_modules():
    assert registry.TRIGGERS.keys() == registry.INSTRUMENTATIONS.keys()
    for name, (target, _package) in registry.INSTRUMENTATIONS.items():
        module, class_name = target.split(":")
        assert registry.TRIGGERS[name] == getattr(importlib.import_module(module), class_name).modules, name


# In a fresh interpreter: nothing of the hooks or of the instrumentations is imported before.
PROBE = textwrap.dedent(
    """
    import json, sys
    import wrapt
    from airflow_cost_provider.instrumentation import registry

    def ours():
        return sorted(m.rsplit(".", 1)[1] for m in sys.modules
                      if m.startswith("airflow_cost_provider.instrumentation.")
                      and m.rsplit(".", 1)[1] not in ("registry", "base"))

    seen = {"instrumented_now": registry.instrument_all(), "imported_after_arming": ours()}
    from airflow.providers.amazon.aws.hooks.athena import AthenaHook
    seen["imported_with_the_athena_hook"] = ours()
    seen["run_query_wrapped"] = isinstance(AthenaHook.__dict__["run_query"], wrapt.FunctionWrapper)
    registry.uninstrument_all()
    seen["run_query_wrapped_after_uninstrument"] = isinstance(
        AthenaHook.__dict__["run_query"], wrapt.FunctionWrapper)
    from airflow.providers.amazon.aws.hooks.glue import GlueJobHook
    seen["glue_wrapped_after_disarming"] = isinstance(
        GlueJobHook.__dict__["initialize_job"], wrapt.FunctionWrapper)
    seen["instrumentations_at_the_end"] = ours()
    print(json.dumps(seen))
    """
)


def test_arming_imports_nothing_and_a_hook_import_instruments_its_source():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["AIRFLOW__COST_PROVIDER__DISABLED_SOURCES"] = ""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["instrumented_now"] == []
    assert seen["imported_after_arming"] == []
    # athena and what it builds on (its AWS calls, its SQL engine); no other source's module
    assert seen["imported_with_the_athena_hook"] == ["athena", "aws", "sql"]
    assert seen["run_query_wrapped"] is True
    assert seen["run_query_wrapped_after_uninstrument"] is False
    assert seen["glue_wrapped_after_disarming"] is False
    assert seen["instrumentations_at_the_end"] == ["athena", "aws", "sql"]


def test_a_hook_module_imported_before_arming_is_instrumented_at_once():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, wrapt\n"
            "from airflow.providers.amazon.aws.hooks.glue import GlueJobHook\n"
            "from airflow_cost_provider.instrumentation import registry\n"
            "names = registry.instrument_all()\n"
            "print(json.dumps([names, isinstance(GlueJobHook.__dict__['initialize_job'], wrapt.FunctionWrapper)]))",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names, wrapped = json.loads(done.stdout.strip().splitlines()[-1])
    assert "glue" in names and wrapped is True
