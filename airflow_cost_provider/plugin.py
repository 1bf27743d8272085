"""The Airflow plugin: the cost listener and a hook-lineage reader (which makes Airflow's collector
record the query and job ids hooks report). With [cost_provider] enabled = False it registers nothing."""

from __future__ import annotations

import logging

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_cost_provider import conf
from airflow_cost_provider.openlineage import CUSTOM_RUN_FACETS_PATH

log = logging.getLogger("airflow_cost_provider")


def _enabled() -> bool:
    try:
        return conf.enabled()
    except conf.ConfigError as error:
        log.error("cost provider disabled: %s", error)
        return False


def check_openlineage_setup() -> str | None:
    """The warning to give when OpenLineage is on but will not carry the cost facet, else None."""
    try:
        from airflow.providers.openlineage import conf as ol_conf
    except ImportError:
        return None
    if ol_conf.is_disabled() or CUSTOM_RUN_FACETS_PATH in ol_conf.custom_run_facets():
        return None
    return (
        "cost provider: OpenLineage is enabled but its events will not carry task costs. Add to "
        f"airflow.cfg: [openlineage] custom_run_facets = {CUSTOM_RUN_FACETS_PATH} (or set "
        f"AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS={CUSTOM_RUN_FACETS_PATH}; separate several functions with ';')"
    )


def check_configuration() -> list[str]:
    """Problems with [cost_provider] or the price book, as clear messages (empty when all is well)."""
    from airflow_cost_provider import tracker

    problems = []
    try:
        tracker.price_book()
    except (conf.ConfigError, ValueError) as error:
        problems.append(str(error))
    for getter in (
        conf.connection_pricing,
        conf.bigquery_pricing,
        conf.storage_reimport_days,
        conf.storage_allocation,
    ):
        try:
            getter()
        except conf.ConfigError as error:
            problems.append(str(error))
    return problems


def _listeners() -> list:
    try:
        from airflow_cost_provider.listener import make_listener

        # imported here, once, so the OpenLineage listener's forked children do not each import it
        from airflow_cost_provider.openlineage import facets  # noqa: F401

        listener = make_listener(conf.listener_order())
    except Exception as error:
        log.error("cost provider disabled: %s", error)
        return []
    for problem in check_configuration():
        log.error("%s (costs are kept as unpriced until this is fixed)", problem)
    if warning := check_openlineage_setup():
        log.warning(warning)
    return [listener]


class CostProviderPlugin(AirflowPlugin):
    name = "cost_provider"
    listeners = _listeners() if _enabled() else []
    if listeners:
        from airflow.providers.common.compat.sdk import HookLineageReader

        hook_lineage_readers = [HookLineageReader]
