"""Who a task try's cost belongs to: its owner, team (or cost center), DAG tags and cost labels.

A pure function of what the DAG file says (the task's params, merged over the DAG's by Airflow, the
DAG's tags, the task's owner) and the configured [cost_provider] team_mapping. The team comes from,
in order: params["cost_team"], the first DAG tag team:NAME or cost_center:NAME (in the DAG's order),
the first glob of team_mapping matching the DAG id. Labels come from params["cost_labels"].
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TEAM_PARAM = "cost_team"
LABELS_PARAM = "cost_labels"
TEAM_TAG_PREFIXES = ("team:", "cost_center:")
# The ledger's owner, team, tag and label columns hold 250 characters.
MAX_LENGTH = 250


@dataclass(frozen=True)
class Attribution:
    owner: str | None = None
    team: str | None = None
    dag_tags: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key


def fit(text: str) -> str:
    """Text within the ledger's columns: an over-long value keeps its start and a digest of the
    whole, so two long names stay distinct (the same rule as the ledger's other long ids)."""
    if len(text) <= MAX_LENGTH:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: MAX_LENGTH - 17]}~{digest}"


def _text(value: Any) -> str | None:
    """A non-blank string, stripped; anything else is no value."""
    if not isinstance(value, str) or not value.strip():
        return None
    return fit(value.strip())


def _team_from_tags(tags: Iterable[str]) -> str | None:
    for tag in tags:
        for prefix in TEAM_TAG_PREFIXES:
            if tag.startswith(prefix) and (team := _text(tag[len(prefix) :])):
                return team
    return None


def _team_from_mapping(dag_id: str, mapping: Iterable[tuple[str, str]]) -> str | None:
    for pattern, team in mapping:
        if fnmatch.fnmatchcase(dag_id, pattern):
            return _text(team)
    return None


def _labels(value: Any, dag_id: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        log.debug(
            "cost provider: %s params[%r] is not a mapping of text to text; ignored", dag_id, LABELS_PARAM
        )
        return ()
    labels: dict[str, str] = {}
    for key, text in value.items():
        clean_key, clean_value = _text(key), _text(text)
        if clean_key is None or clean_value is None:
            log.debug("cost provider: %s cost label %r = %r is not text; ignored", dag_id, key, text)
            continue
        labels[clean_key] = clean_value
    return tuple(sorted(labels.items()))


def resolve(
    dag_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    dag_tags: Iterable[str] = (),
    owner: Any = None,
    team_mapping: Iterable[tuple[str, str]] = (),
) -> Attribution:
    """The attribution of a try of `dag_id`'s task; see the module's docstring for the order."""
    params = params or {}
    tags = [tag for tag in dag_tags if isinstance(tag, str)]
    team_param = params.get(TEAM_PARAM)
    team = _text(team_param)
    if team_param is not None and team is None:
        log.debug("cost provider: %s params[%r] = %r is not text; ignored", dag_id, TEAM_PARAM, team_param)
    team = team or _team_from_tags(tags) or _team_from_mapping(dag_id, team_mapping)
    return Attribution(
        owner=_text(owner),
        team=team,
        dag_tags=tuple(sorted({fit(tag) for tag in tags})),
        labels=_labels(params.get(LABELS_PARAM), dag_id),
    )


def _param(params: Any, name: str) -> Any:
    """One param's value; a param that does not resolve (required, no default) is no value."""
    try:
        return params[name] if name in params else None
    except Exception:
        log.debug("cost provider: params[%r] does not resolve; ignored", name, exc_info=True)
        return None


def attribution_of(ti: Any) -> Attribution:
    """The attribution of a running task instance (Task SDK or the scheduler's model). Never raises:
    a try whose attribution cannot be read is recorded without one."""
    try:
        from airflow_cost_provider import conf

        task = getattr(ti, "task", None)
        dag = getattr(task, "dag", None) if task is not None else None
        params = getattr(task, "params", None) or {}
        try:
            mapping = conf.team_mapping()
        except conf.ConfigError as error:
            log.debug("cost provider: team_mapping ignored: %s", error)
            mapping = ()
        return resolve(
            ti.dag_id,
            params={name: _param(params, name) for name in (TEAM_PARAM, LABELS_PARAM)},
            dag_tags=getattr(dag, "tags", None) or (),
            owner=getattr(task, "owner", None),
            team_mapping=mapping,
        )
    except Exception:
        log.debug("cost provider: no attribution for %s", getattr(ti, "dag_id", "?"), exc_info=True)
        return Attribution()
