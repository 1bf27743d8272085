"""OpenLineage integration: the cost run facet, delivered through the provider's custom_run_facets.

Add to airflow.cfg:  [openlineage] custom_run_facets = airflow_cost_provider.openlineage.get_cost_run_facets
"""

from __future__ import annotations

from typing import Any

CUSTOM_RUN_FACETS_PATH = "airflow_cost_provider.openlineage.get_cost_run_facets"
STORAGE_FACET_KEY = "costProvider_storageCost"

__all__ = [
    "CUSTOM_RUN_FACETS_PATH",
    "STORAGE_FACET_KEY",
    "CostProviderStorageCostDatasetFacet",
    "get_cost_run_facets",
]


def __getattr__(name: str):
    # the facet class imports the OpenLineage client: only when asked for
    if name == "CostProviderStorageCostDatasetFacet":
        from airflow_cost_provider.openlineage.storage_facets import CostProviderStorageCostDatasetFacet

        return CostProviderStorageCostDatasetFacet
    raise AttributeError(name)


_TERMINAL_STATES = {"success", "failed", "up_for_retry", "skipped"}


def _enabled(conf) -> bool:
    try:
        return conf.enabled()
    except conf.ConfigError:  # already reported by the plugin at start-up
        return False


def get_cost_run_facets(task_instance: Any, ti_state: Any) -> dict[str, Any]:
    """Called by the OpenLineage listener for each task event; returns the cost facet on terminal ones.

    The OpenLineage listener runs this in a forked child by default. If the cost listener has already
    finalized the task try, its result is reused; otherwise it is computed here (measuring the parent
    process) and written to the ledger, and the parent's own finalize later finds it stored.
    """
    # imported by the plugin already, in any mode: a disabled provider's child imports nothing
    from airflow_cost_provider import conf

    try:
        state = str(getattr(ti_state, "value", ti_state) or "").lower()
        if state not in _TERMINAL_STATES or not _enabled(conf):
            return {}
        from airflow_cost_provider import tracker
        from airflow_cost_provider.openlineage.facets import COST_FACET_KEY, build_cost_facet

        result = tracker.finalize(task_instance, tracker.terminal_state(task_instance, state))
        return {} if result is None else {COST_FACET_KEY: build_cost_facet(result)}
    except Exception as error:
        from airflow_cost_provider.capture.safety import report_failure

        report_failure("building the OpenLineage cost facet", error)
        return {}
