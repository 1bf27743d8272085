"""`billing_resources` rules and the idle mode per source: parsed and validated, pure (no Airflow).

A rule maps ledger lines (a source, optionally a resource glob) to billed resources the bill cannot
tie to a task (worker instances, a shared database): `match` selects billed rows by `resource_id`
glob and/or `tags` (key -> value glob). The billed rows a rule selects form one pool per day.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODES = ("keep", "spread")
_RULE_KEYS = {"name", "source", "resource", "match"}
_MATCH_KEYS = {"resource_id", "tags"}


class RuleError(ValueError):
    """A rule (or the mode option) that cannot be used; the message names it."""


@dataclass(frozen=True)
class BillingRule:
    name: str
    source: str
    resource: str | None  # glob over the lines' resource; None: every line of the source
    resource_id: str | None  # glob over the billed resource id
    tags: tuple[tuple[str, str], ...]  # (key, value glob): every one must match

    def claims(self, resource_id: str, tags: Mapping[str, Any] | None) -> bool:
        """Whether a billed row (its resource id and tags) belongs to this rule's pool."""
        if self.resource_id is not None and not _glob(resource_id, self.resource_id):
            return False
        for key, pattern in self.tags:
            value = (tags or {}).get(key)
            if value is None or not _glob(str(value), pattern):
                return False
        return True

    def uses(self, source: str, resource: str | None) -> bool:
        """Whether a ledger line (its source and resource) draws on this rule's pool."""
        if source != self.source:
            return False
        return self.resource is None or _glob(resource or "", self.resource)

    @property
    def pool(self) -> str:
        return f"rule:{self.name}"


def _glob(value: str, pattern: str) -> bool:
    # case-sensitive everywhere (fnmatch.fnmatch folds case on Windows only)
    return re.fullmatch(fnmatch.translate(pattern), value) is not None


def parse_rules(value: Any, option: str = "billing_resources") -> tuple[BillingRule, ...]:
    """The rules of a JSON list, or RuleError naming the rule (by its name or position) and the field."""
    if value in (None, "", []):
        return ()
    if not isinstance(value, list):
        raise RuleError(f"{option} must be a JSON list of rules, got {type(value).__name__}")
    rules: list[BillingRule] = []
    names: set[str] = set()
    for position, raw in enumerate(value, start=1):
        where = f"{option} rule {position}"
        if not isinstance(raw, dict):
            raise RuleError(f"{where} must be an object with source and match, got {type(raw).__name__}")
        if isinstance(raw.get("name"), str) and raw["name"].strip():
            where = f"{option} rule {raw['name'].strip()!r}"
        unknown = sorted(set(raw) - _RULE_KEYS)
        if unknown:
            raise RuleError(f"{where} has unknown key {unknown[0]!r}: use {', '.join(sorted(_RULE_KEYS))}")
        source = raw.get("source")
        if not isinstance(source, str) or not source.strip():
            raise RuleError(
                f'{where} needs a "source": the ledger source whose lines use the pool, e.g. airflow_worker'
            )
        resource = raw.get("resource")
        if resource is not None and (not isinstance(resource, str) or not resource):
            raise RuleError(f'{where}: "resource" must be a glob over the lines\' resource, e.g. "etl-*"')
        match = raw.get("match")
        if not isinstance(match, dict) or not match:
            raise RuleError(f'{where} needs a "match" object with resource_id and/or tags')
        unknown = sorted(set(match) - _MATCH_KEYS)
        if unknown:
            raise RuleError(f"{where}: match has unknown key {unknown[0]!r}: use resource_id and/or tags")
        resource_id = match.get("resource_id")
        if resource_id is not None and (not isinstance(resource_id, str) or not resource_id):
            raise RuleError(f'{where}: match.resource_id must be a glob, e.g. "arn:aws:ec2:*:instance/*"')
        tags = match.get("tags", {})
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in tags.items()
        ):
            raise RuleError(
                f'{where}: match.tags must be an object of tag -> value glob, e.g. {{"airflow-component": "worker"}}'
            )
        if resource_id is None and not tags:
            raise RuleError(f"{where}: match needs resource_id or tags, else it would claim the whole bill")
        name = (
            raw.get("name").strip()
            if isinstance(raw.get("name"), str) and raw["name"].strip()
            else str(position)
        )
        if name in names:
            raise RuleError(f"{where}: two rules are named {name!r}")
        names.add(name)
        rules.append(
            BillingRule(
                name=name,
                source=source.strip(),
                resource=resource,
                resource_id=resource_id,
                tags=tuple(sorted(tags.items())),
            )
        )
    return tuple(rules)


def parse_modes(value: Any, option: str = "reconcile_mode") -> dict[str, str]:
    """`keep`, `spread`, or an object source -> mode with "*" for the rest; `{"*": mode}` at least."""
    if value in (None, ""):
        return {"*": "keep"}
    if isinstance(value, str):
        if value not in MODES:
            raise RuleError(f"{option} = {value!r}: use keep or spread, or a JSON object source -> mode")
        return {"*": value}
    if not isinstance(value, dict):
        raise RuleError(f"{option} must be keep, spread or a JSON object source -> mode")
    for source, mode in value.items():
        if mode not in MODES:
            raise RuleError(f"{option}[{source!r}] = {mode!r}: use keep or spread")
    return {"*": "keep", **value}


def mode_for(modes: Mapping[str, str], source: str | None) -> str:
    return modes.get(source or "*", modes.get("*", "keep"))
