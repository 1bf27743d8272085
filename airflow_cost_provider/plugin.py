"""The Airflow plugin: the cost listener, a hook-lineage reader (which makes Airflow's collector
record the query and job ids hooks report), and the Costs JSON API and pages in the api-server under
/cost, linked from the UI's navigation and from a Cost tab on task instances and DAG runs
(Airflow 3.1+). With
[cost_provider] enabled = False it registers nothing."""

from __future__ import annotations

import logging

from airflow.providers.common.compat.sdk import AirflowPlugin

# openlineage: the module of the facet function [openlineage] custom_run_facets names, imported here
# (it imports nothing heavy) so that, enabled or not, OpenLineage's forked children do not each import it
from airflow_cost_provider import conf, openlineage  # noqa: F401

log = logging.getLogger("airflow_cost_provider")


def _enabled() -> bool:
    try:
        return conf.enabled()
    except conf.ConfigError as error:
        log.error("cost provider disabled: %s", error)
        return False


def check_openlineage_setup() -> str | None:
    """The warning to give when OpenLineage is on but will not carry the cost facet, else None."""
    from airflow_cost_provider.checks import openlineage_setup_note

    note = openlineage_setup_note()
    return f"cost provider: {note}" if note else None


def check_configuration() -> list[str]:
    """Problems with [cost_provider] or the price book, each once (empty when all is well). Never the
    ledger: every Airflow process loads this plugin; `airflow-cost check` checks the ledger too."""
    from airflow_cost_provider.checks import configuration_problems

    return configuration_problems()


def _freezes_heap() -> bool:
    from airflow_cost_provider.capture import fork_heap

    try:
        return conf.freeze_heap_for_openlineage() and fork_heap.openlineage_forks()
    except conf.ConfigError:  # logged with the other bad options by check_configuration
        return False


def _listeners() -> list:
    try:
        from airflow_cost_provider.listener import make_listeners

        # imported here, once, so the OpenLineage listener's forked children do not each import it
        from airflow_cost_provider.openlineage import facets  # noqa: F401

        listeners = make_listeners(conf.listener_order(), _freezes_heap())
    except Exception as error:
        log.error("cost provider disabled: %s", error)
        return []
    for problem in check_configuration():
        log.error("cost provider: %s (tasks are not affected)", problem)
    if warning := check_openlineage_setup():
        log.warning(warning)
    return listeners


def _fastapi_apps() -> list[dict]:
    from airflow_cost_provider.api import URL_PREFIX, lazy_app

    return [{"app": lazy_app, "url_prefix": URL_PREFIX, "name": "Costs API"}]


def _external_views() -> list[dict]:
    from airflow_cost_provider.api import URL_PREFIX

    # the page, in the UI's main navigation (shown in a frame at /plugin/costs), and a "Cost" tab on
    # each task instance and each DAG run: the UI fills in the {DAG_ID}, {RUN_ID}, {TASK_ID} and
    # {MAP_INDEX} of the tab's task instance or run (a task that is not mapped leaves {MAP_INDEX} as
    # it is: the page reads it as -1)
    return [
        {
            "name": "Costs",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "costs",
            "nav_top_level": True,
        },
        {
            "name": "Cost",
            "href": f"{URL_PREFIX}/task-instance?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
            "&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "cost",
        },
        {
            "name": "Cost",
            "href": f"{URL_PREFIX}/dag-run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "run_cost",
        },
    ]


_ENABLED = _enabled()


class CostProviderPlugin(AirflowPlugin):
    name = "cost_provider"
    listeners = _listeners() if _ENABLED else []
    if listeners:
        from airflow.providers.common.compat.sdk import HookLineageReader

        hook_lineage_readers = [HookLineageReader]
    if _ENABLED:
        fastapi_apps = _fastapi_apps()
        external_views = _external_views()
