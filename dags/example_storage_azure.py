"""Azure storage account costs from the Cost Management Query API, daily.

Queries the actual cost of the scope's storage accounts per day, resource and meter category through
the `azure_default` connection (with `use_azure_identity_object: true` in its extra; the identity
needs Cost Management Reader on the scope). Set the Airflow Variable `cost_azure_scope` to
`/subscriptions/<subscription id>` (or a billing account scope). The API's paging (nextLink) and
throttling headers are followed, with bounded waits.

Azure bills storage accounts, not containers: to see the costs on container datasets in Marquez
(`abfss://<container>@<account>.dfs.core.windows.net`), map the containers and their bytes (or null,
to list them) in `[cost_provider] storage_allocation`; each gets its share of the account's storage
cost, method `allocated`.

The data interval is the billing day. Each run also re-imports the 5 days before it, and the whole
previous month until the 10th. `ImportBillingCostsOperator` with the same arguments imports the
scope's whole bill (every resource per service, with the `openlineage_run_id` tag apart). With FocusCost exports in a storage account instead, use
`source="azure-export"` and `path="abfss://<container>@<account>.dfs.core.windows.net/<directory>/<export>/"`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_cost_provider.operators.storage import ImportStorageCostsOperator

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow < 3.2
    from airflow.timetables.interval import CronDataIntervalTimetable


@dag(
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "example", "storage", "azure"],
)
def example_storage_azure():
    ImportStorageCostsOperator(
        task_id="import_storage_account_costs",
        source="azure-cost-management",
        scope="{{ var.value.get('cost_azure_scope', '/subscriptions/00000000-0000-0000-0000-000000000000') }}",
        retries=2,
    )


example_storage_azure()
