"""Who may read what, with Airflow's own API security: every endpoint needs an authenticated Airflow
user (a JWT as a bearer token or the UI's cookie), and costs are shown only for DAGs the user may read."""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, HTTPException, status

# one try's lines, or a DAG run's tries and lines: Airflow's check of its DAG's task instances
# (dag_id is a required parameter there)
read_task_instances = requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)


def signed_in(user: GetUserDep) -> None:
    """Any authenticated Airflow user (401 without a token, 403 with a bad one)."""


def readable_dags(user: GetUserDep) -> frozenset[str] | None:
    """The DAG ids the user may read; None when the user may read every DAG (then DAGs Airflow no
    longer knows, which no per-DAG permission can name, are shown too)."""
    manager = get_auth_manager()
    if manager.is_authorized_dag(method="GET", user=user):
        return None
    return frozenset(manager.get_authorized_dag_ids(user=user, method="GET"))


def read_every_dag(user: GetUserDep) -> None:
    """Budgets and storage costs sum over DAGs: they need read access to all of them. Never taken
    from a request's own dag_id parameter, which would narrow the check to one DAG."""
    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="Forbidden: budgets and storage costs need read access to every DAG",
        )


SignedIn = Annotated[None, Depends(signed_in)]
ReadableDags = Annotated[frozenset[str] | None, Depends(readable_dags)]
