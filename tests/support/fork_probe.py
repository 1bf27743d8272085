"""Notes, to the file named by $COST_FORK_HEAP_PROBE, what the garbage collector sees where it runs: in a
task's own code, and in the OpenLineage listener's forked child (as a custom run facet function, which
the listener calls there)."""

from __future__ import annotations

import gc
import json
import os
from typing import Any

PROBE_FILE = "COST_FORK_HEAP_PROBE"


def note(where: str, **fields: Any) -> None:
    path = os.environ.get(PROBE_FILE)
    if not path:
        return
    line = {"where": where, "pid": os.getpid(), "ppid": os.getppid(), "frozen": gc.get_freeze_count()}
    line["tracked"] = len(gc.get_objects())
    with open(path, "a") as handle:
        handle.write(json.dumps({**line, **fields}) + "\n")


def heap_facets(task_instance: Any, ti_state: Any) -> dict:
    note("openlineage", task_id=task_instance.task_id, state=str(getattr(ti_state, "value", ti_state)))
    return {}
