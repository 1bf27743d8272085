"""Files in the cache folder (conf.cache_dir()) that save every task process work it would
otherwise repeat. Nothing here imports Airflow: pricing uses it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("airflow_cost_provider")


def write_json(target: Path, document: Any, what: str) -> None:
    """Write `document` as JSON to `target`, atomically: a reader sees the old file or the new one,
    whole. A folder that cannot be written is no error (every process does the work itself, as
    without a cache); `what` names the cache in the debug log."""
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(document, out, separators=(",", ":"))
        os.replace(temporary, target)
        temporary = None
    except Exception as error:
        log.debug("cost provider: %s cache not written to %s: %s", what, target.parent, error)
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
