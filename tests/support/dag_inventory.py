"""Print, as JSON, what a DAG folder holds: each DAG's tags, schedule, docs and its tasks' operator classes.

Run in a subprocess with the Airflow environment under test (Airflow logs to stdout, so the JSON
goes to a file): `python -m tests.support.dag_inventory /path/to/dags inventory.json`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def inventory(dag_folder: str) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=dag_folder, safe_mode=False)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "fileloc": dag.fileloc,
            "tags": sorted(dag.tags),
            "schedule": None if dag.schedule is None else str(dag.schedule),
            "catchup": dag.catchup,
            "doc_md": dag.doc_md,
            "tasks": {
                task.task_id: {
                    "operator": _class_path(task),
                    "conn_ids": sorted(
                        {
                            str(value)
                            for name, value in vars(task).items()
                            if name.endswith("conn_id") and isinstance(value, str)
                        }
                    ),
                }
                for task in dag.tasks
            },
        }
    return {"dags": dags, "import_errors": dict(bag.import_errors)}


def _class_path(task: Any) -> str:
    # a mapped task is a MappedOperator standing for the operator class it expands
    cls = getattr(task, "operator_class", None) or type(task)
    return f"{cls.__module__}.{cls.__qualname__}"


if __name__ == "__main__":
    dag_folder, output = sys.argv[1:3]
    with open(output, "w") as out:
        json.dump(inventory(dag_folder), out)
