"""Print the ids of the example DAGs that run without a cloud account (tagged `local`); those tagged
`reconcile` last, since they reconcile what the others ran."""

import ast
from pathlib import Path

local, last = [], []
for path in sorted((Path(__file__).resolve().parents[1] / "dags").glob("*.py")):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dag" for d in node.decorator_list
        ):
            tags = [
                kw.value
                for kw in next(d for d in node.decorator_list if isinstance(d, ast.Call)).keywords
                if kw.arg == "tags"
            ]
            names = ast.literal_eval(tags[0]) if tags else []
            if "local" in names:
                (last if "reconcile" in names else local).append(node.name)
print("\n".join(local + last))
