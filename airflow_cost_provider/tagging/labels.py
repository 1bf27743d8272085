"""The identity in the carriers other than SQL comments: BigQuery labels, Snowflake QUERY_TAG, names."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

# BigQuery: keys and values lowercase letters, digits, `_` and `-`, at most 63 characters; keys start
# with a letter. https://cloud.google.com/bigquery/docs/labels-intro#requirements
LABEL_MAX = 63
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")
# Snowflake's QUERY_TAG session parameter holds at most 2000 characters.
QUERY_TAG_MAX = 2000


def _label_text(text: str) -> str:
    cleaned = _LABEL_INVALID.sub("_", text.lower())
    if len(cleaned) <= LABEL_MAX:
        return cleaned
    # keep it unique when cut: a short digest of the full text replaces the tail (MD5, which dbt's
    # `local_md5` computes too, so the shipped dbt macro makes the same labels)
    digest = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{cleaned[: LABEL_MAX - 9]}-{digest}"


def bigquery_labels(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags as valid BigQuery job labels."""
    labels = {}
    for key, value in tags.items():
        label_key = _label_text(key)
        if not label_key[:1].isalpha():
            label_key = _label_text(f"k_{key}")
        labels[label_key] = _label_text(str(value))
    return labels


def snowflake_query_tag(tags: Mapping[str, str], existing: str | None = None) -> str:
    """A JSON QUERY_TAG holding the tags; a tag the user already set is kept (merged when it is a JSON
    object, else under "query_tag"). Falls back to the user's own tag when the result would not fit."""
    merged: dict[str, object] = {}
    if existing:
        try:
            parsed = json.loads(existing)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            merged.update(parsed)
        else:
            merged["query_tag"] = existing
    merged.update(tags)
    tag = json.dumps(merged, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    if len(tag) > QUERY_TAG_MAX:
        return existing or json.dumps(dict(tags), separators=(",", ":"), sort_keys=True)[:QUERY_TAG_MAX]
    return tag


def statement_name(tags: Mapping[str, str], limit: int = 500) -> str:
    """A compact `dag_id.task_id.try` name for services with a free-text name field (Redshift Data API
    StatementName holds 500 characters)."""
    name = ".".join(
        str(tags[key]) for key in ("airflow_dag_id", "airflow_task_id", "airflow_try_number") if key in tags
    )
    return name[:limit]
