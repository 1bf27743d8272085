"""Cost attribution for Apache Airflow: every task's cost in a ledger and on its OpenLineage events."""

from airflow_cost_provider.version import __version__

__all__ = ["__version__"]
