"""Alembic environment for the ledger; run only through airflow_cost_provider.ledger.store."""

from alembic import context

from airflow_cost_provider.ledger.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
