"""The identity as AWS resource tags (EMR Serverless and EMR on EKS job runs) and as AWS Glue job run
arguments (Glue job runs take no tags). Pure functions: the user's own tags and arguments always win.

AWS tags: keys of 1-128 and values of 0-256 characters, no key starting with `aws:`, and a
per-resource limit (EMR Serverless: 200 tags, pattern `[A-Za-z0-9 /_.:=+@-]`; EMR on EKS: 50 tags, any
value with a non-blank character). https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

# When the user's own tags leave little room, the tags that identify the try best go first: the
# OpenLineage run id alone joins a job run to Marquez and to the ledger.
TAG_PRIORITY = (
    "openlineage_run_id",
    "airflow_dag_id",
    "airflow_task_id",
    "airflow_run_id",
    "airflow_try_number",
    "airflow_map_index",
)


@dataclass(frozen=True)
class TagRules:
    """What one AWS service accepts as tags."""

    max_tags: int
    max_key: int = 128
    max_value: int = 256
    # characters a value may not hold (replaced by `_`); None: any character
    invalid_characters: re.Pattern[str] | None = None


EMR_SERVERLESS_TAGS = TagRules(max_tags=200, invalid_characters=re.compile(r"[^A-Za-z0-9 /_.:=+@-]"))
EMR_ON_EKS_TAGS = TagRules(max_tags=50)
# Glue passes run arguments to the job's script, so they stay short and free of blanks.
GLUE_ARGUMENT_PREFIX = "--"
GLUE_ARGUMENT_MAX = 256
_GLUE_ARGUMENT_INVALID = re.compile(r"[^A-Za-z0-9_.:=+@/-]")


def _fit(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    # keep it unique when cut: a short digest of the full value replaces the tail
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: limit - 9]}-{digest}"


def _clean(value: str, invalid: re.Pattern[str] | None, limit: int) -> str:
    cleaned = invalid.sub("_", value) if invalid is not None else value
    if not cleaned.strip():
        cleaned = "_"
    return _fit(cleaned, limit)


def _ranked(task_tags: Mapping[str, str]) -> list[str]:
    return sorted(task_tags, key=lambda k: TAG_PRIORITY.index(k) if k in TAG_PRIORITY else len(TAG_PRIORITY))


def job_run_tags(
    task_tags: Mapping[str, str], user_tags: Mapping[str, str] | None, rules: TagRules
) -> dict[str, str]:
    """The user's tags, plus the task's where they do not clash and while the service's limit allows."""
    merged = dict(user_tags or {})
    for key in _ranked(task_tags):
        if len(merged) >= rules.max_tags:
            break
        if key in merged or key.lower().startswith("aws:") or len(key) > rules.max_key:
            continue
        merged[key] = _clean(str(task_tags[key]), rules.invalid_characters, rules.max_value)
    return merged


def glue_run_arguments(
    task_tags: Mapping[str, str], user_arguments: Mapping[str, str] | None
) -> dict[str, str]:
    """The user's job run arguments, plus `--<tag>` for each identity tag the user did not set."""
    merged = dict(user_arguments or {})
    for key in _ranked(task_tags):
        argument = f"{GLUE_ARGUMENT_PREFIX}{key}"
        if argument not in merged:
            merged[argument] = _clean(str(task_tags[key]), _GLUE_ARGUMENT_INVALID, GLUE_ARGUMENT_MAX)
    return merged
