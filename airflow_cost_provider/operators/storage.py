"""ImportStorageCostsOperator: a scheduled import of storage costs from billing data;
ImportBillingCostsOperator: the same import keeping the whole bill (every service, with tags).

The run's data interval is the billing day. Each run reads that day and a trailing window of days
providers still revise (see `billing.window`), replaces them in the ledger in one transaction, and
emits the `costProvider_storageCost` facet on one output dataset per bucket (and per allocated
dataset) for its billing day. A day with no billing data yet gets no facet and no ledger row: a later
run within the window imports it when it arrives.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_cost_provider.billing import registry, window
from airflow_cost_provider.billing.importer import CollectedCosts, ImportSummary, save
from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)

# sources that can give the whole bill: every one (export files, the BigQuery export table, the
# Cost Explorer and Cost Management APIs, warehouse metering)
WHOLE_BILL_SOURCES = (
    "aws-cur",
    "aws-focus",
    "aws-cost-explorer",
    "azure-cost-management",
    "azure-export",
    "focus",
    "gcp-billing-export",
    "snowflake-metering",
    "databricks-usage",
)
# warehouse metering: no storage in it, imported with all_services only
METERING_SOURCES = ("snowflake-metering", "databricks-usage")

DEFAULT_CONN_IDS = {
    "aws-cur": "aws_default",
    "aws-focus": "aws_default",
    "aws-cost-explorer": "aws_default",
    "gcp-billing-export": "google_cloud_default",
    "azure-cost-management": "azure_default",
    "azure-export": "adls_default",
    "snowflake-metering": "snowflake_default",
    "databricks-usage": "databricks_default",
}


class ImportStorageCostsOperator(BaseOperator):
    """Import a billing source's storage costs for the run's billing day and the days before it.

    :param source: aws-cur, aws-focus or aws-cost-explorer; gcp-billing-export;
        azure-cost-management or azure-export; or focus (FOCUS files at `path`).
    :param path: where the export is (aws-cur, aws-focus, azure-export, focus): the Data Export's
        folder `s3://bucket/prefix/export-name/`, the Azure export's folder
        `abfss://container@account.dfs.core.windows.net/directory/export-name/`, or for focus any
        local path, directory, glob or URL (several as a list).
    :param table: gcp-billing-export: the export table `project.dataset.gcp_billing_export_resource_v1_XXXXXX`
        (standard, detailed or FOCUS, told apart by name unless `table_kind` says).
    :param scope: azure-cost-management: `/subscriptions/<id>` or a billing account scope.
    :param conn_id: the Airflow connection; default the provider's usual one (aws_default,
        google_cloud_default, azure_default, adls_default).
    :param reimport_days: days before the billing day to read again (default `[cost_provider]
        storage_reimport_days`, 5).
    :param previous_month_until_day: read the whole previous month again until this day of the month.
    :param allocation: dataset URL -> bytes (or None to list it): give each dataset its share of its
        bucket's storage cost (default `[cost_provider] storage_allocation`).
    :param ledger_conn: the ledger's URL or connection id (default `[cost_provider] ledger_conn`).
    :param all_services: keep the whole bill (every service, with its tags) in `cost_billing_costs`
        as well, from any source (Cost Explorer and Cost Management: per service, resource and the
        `openlineage_run_id` tag; see their modules).
    """

    template_fields: Sequence[str] = ("path", "table", "scope", "location", "project_id", "allocation")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        source: str,
        path: str | list[str] | None = None,
        table: str | None = None,
        table_kind: str | None = None,
        scope: str | None = None,
        conn_id: str | None = None,
        location: str | None = None,
        project_id: str | None = None,
        bucket_tag_key: str | None = "bucket",
        meter_dimension: str = "MeterCategory",
        reimport_days: int | None = None,
        previous_month_until_day: int = window.DEFAULT_PREVIOUS_MONTH_UNTIL_DAY,
        max_catch_up_days: int = window.DEFAULT_MAX_CATCH_UP_DAYS,
        allocation: dict[str, int | None] | None = None,
        ledger_conn: str | None = None,
        cache_ttl: dt.timedelta = dt.timedelta(hours=12),
        maximum_bytes_billed: int | None = None,
        all_services: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not all_services and source in METERING_SOURCES:
            raise ValueError(
                f"{type(self).__name__}(source={source!r}): warehouse metering holds no storage; import it "
                "with ImportBillingCostsOperator (all_services=True)"
            )
        self.all_services = all_services
        registry.source_provider(source)  # fails at parse time on an unknown source
        self.source = source
        self.path = path
        self.table = table
        self.table_kind = table_kind
        self.scope = scope
        self.conn_id = conn_id or DEFAULT_CONN_IDS.get(source)
        self.location = location
        self.project_id = project_id
        self.bucket_tag_key = bucket_tag_key
        self.meter_dimension = meter_dimension
        self.reimport_days = reimport_days
        self.previous_month_until_day = previous_month_until_day
        self.max_catch_up_days = max_catch_up_days
        self.allocation = allocation
        self.ledger_conn = ledger_conn
        self.cache_ttl = cache_ttl
        self.maximum_bytes_billed = maximum_bytes_billed
        self._required_arguments()
        self._output_datasets: list = []

    def _required_arguments(self) -> None:
        needs = {
            "aws-cur": "path",
            "aws-focus": "path",
            "azure-export": "path",
            "focus": "path",
            "gcp-billing-export": "table",
            "azure-cost-management": "scope",
        }.get(self.source)
        if needs and not getattr(self, needs):
            raise ValueError(f"ImportStorageCostsOperator(source={self.source!r}) needs {needs}=")

    # ------------------------------------------------------------------ what a run does

    def _conn_id(self) -> str | None:
        return self.conn_id

    def _paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path or [])

    def watermark_key(self) -> str:
        where = self.table or self.scope or ",".join(self._paths())
        return f"{'billing:' if self.all_services else ''}{self.source}:{where}"

    def _collect(self, import_window: DateWindow, engine) -> CollectedCosts:
        source = self.source
        if source == "gcp-billing-export":
            from airflow_cost_provider.billing import gcp_billing_export

            return gcp_billing_export.query_export(
                self.table,
                import_window,
                gcp_conn_id=self._conn_id(),
                project_id=self.project_id,
                location=self.location,
                kind=self.table_kind,
                maximum_bytes_billed=self.maximum_bytes_billed,
                all_services=self.all_services,
            )
        if source == "aws-cost-explorer":
            from airflow_cost_provider.billing import aws_cost_explorer

            return aws_cost_explorer.fetch(
                import_window,
                aws_conn_id=self._conn_id(),
                bucket_tag_key=self.bucket_tag_key,
                engine=engine,
                cache_ttl=self.cache_ttl,
                all_services=self.all_services,
            )
        if source == "snowflake-metering":
            from airflow_cost_provider.billing import snowflake_metering

            return snowflake_metering.fetch(import_window, snowflake_conn_id=self._conn_id())
        if source == "databricks-usage":
            from airflow_cost_provider.billing import databricks_usage

            return databricks_usage.fetch(import_window, databricks_conn_id=self._conn_id())
        if source == "azure-cost-management":
            from airflow_cost_provider.billing import azure_cost_management

            return azure_cost_management.fetch(
                import_window,
                scope=self.scope,
                azure_conn_id=self._conn_id(),
                meter_dimension=self.meter_dimension,
                all_services=self.all_services,
            )
        return self._collect_files(import_window)

    def _collect_files(self, import_window: DateWindow) -> CollectedCosts:
        from airflow_cost_provider.billing import aws_cur, azure_exports
        from airflow_cost_provider.billing.files import fetched, is_remote, split_url
        from airflow_cost_provider.billing.importer import read_files

        file_format = registry.file_format({"aws-focus": "focus"}.get(self.source, self.source))
        paths, listed = self._paths(), []
        if self.source in ("aws-cur", "aws-focus", "azure-export"):
            lister = azure_exports.list_export if self.source == "azure-export" else aws_cur.list_export
            for path in paths:
                if is_remote(path):
                    listed += lister(path, import_window, self._conn_id(), file_format.accepts)
            paths = [p for p in paths if not is_remote(p)]
        conn_ids = {split_url(p)[0]: self._conn_id() for p in self._paths() if is_remote(p)}
        if not paths and not listed:
            return CollectedCosts(source=self.source, costs=[], window=import_window)
        with fetched(paths, file_format.accepts, conn_ids, remote_objects=listed) as files:
            log.info("reading %d billing files for %s", len(files), import_window)
            return read_files(file_format, files, self.source, import_window, all_services=self.all_services)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_cost_provider import conf
        from airflow_cost_provider.ledger import store
        from airflow_cost_provider.ledger.store import get_engine, resolve_url

        started = dt.datetime.now(dt.timezone.utc)
        period = window.billing_period(context)
        reimport_days = self.reimport_days if self.reimport_days is not None else conf.storage_reimport_days()
        engine = get_engine(resolve_url(self.ledger_conn or conf.ledger_conn(), conf.default_ledger_url()))
        key = self.watermark_key()
        import_window = window.import_window(
            period,
            reimport_days=reimport_days,
            previous_month_until_day=self.previous_month_until_day,
            watermark=store.storage_watermark(engine, key),
            max_catch_up_days=self.max_catch_up_days,
        )
        log.info(
            "importing %s %s costs for billing day(s) %s, window %s",
            self.source,
            "billing" if self.all_services else "storage",
            period,
            import_window,
        )
        collected = self._collect(import_window, engine)
        ti = context.get("ti") or context.get("task_instance")
        run = {
            "dag_id": getattr(ti, "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(ti, "run_id", None),
        }
        summary = save(engine, collected, replace_days=True, watermark_key=key, run=run, started_at=started)
        log.info("%s", summary.one_line())
        missing = [day for day in period.days() if day not in collected.days_with_data]
        if missing:
            log.info(
                "no billing data yet for %s: nothing is written for %s; a later run within the re-import "
                "window imports it when it arrives",
                ", ".join(map(str, missing)),
                "it" if len(missing) == 1 else "them",
            )
        self._output_datasets = self._datasets(engine, period, collected, summary, reimport_days)
        return summary.as_dict()

    def _allocation_targets(self):
        from airflow_cost_provider import conf
        from airflow_cost_provider.billing.allocation import measure, parse_targets

        mapping = self.allocation if self.allocation is not None else conf.storage_allocation()
        targets = parse_targets(mapping)
        if not targets:
            return []
        # prefixes are listed with the scheme's usual connection; S3 ones with this task's AWS connection
        aws = self.conn_id if self.source.startswith("aws") else None
        return measure(targets, {"s3": aws})

    def _datasets(
        self, engine, period: DateWindow, collected: CollectedCosts, summary: ImportSummary, reimport_days
    ):
        from airflow_cost_provider.billing.allocation import allocate
        from airflow_cost_provider.ledger import store
        from airflow_cost_provider.openlineage.storage_facets import storage_datasets, storage_facets

        providers = {cost.provider for cost in collected.costs}
        if fixed := registry.source_provider(self.source):
            providers.add(fixed)
        rows = [r for r in store.read_storage_costs(engine, period.start, period.end, providers)]
        allocations = []
        targets = self._allocation_targets()
        if targets and rows:
            allocations = allocate(rows, targets)
            scope = {(r["provider"], r["billing_account"], r["day"], r["resource_id"]) for r in rows}
            store.replace_storage_allocations(engine, allocations, scope)
            log.info(
                "allocated storage cost to %d datasets",
                len({(a["dataset_namespace"], a["dataset_name"]) for a in allocations}),
            )
        status = window.period_status(
            period,
            dt.datetime.now(dt.timezone.utc).date(),
            reimport_days,
            self.previous_month_until_day,
            collected.estimated_days,
        )
        facets = storage_facets(rows, allocations, period, self.source, status)
        unmapped = sorted(
            {r["resource_id"] for r in rows if r["provider"] == "azure"}
            - {a["resource_id"] for a in allocations}
        )
        if unmapped:
            log.info(
                "Azure bills storage accounts, not containers: map containers in `allocation` to see these "
                "accounts' costs on datasets: %s",
                ", ".join(unmapped),
            )
        return storage_datasets(facets)

    def get_openlineage_facets_on_complete(self, task_instance: Any):
        """The buckets (and allocated datasets) with their storage cost, as output datasets."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(outputs=list(self._output_datasets))


class ImportBillingCostsOperator(ImportStorageCostsOperator):
    """Import the whole bill of a billing export (every service, per resource, SKU and tag set) for
    the run's billing day and the days before it; its storage costs and facets as
    ImportStorageCostsOperator gives them. Sources: aws-cur, aws-focus, aws-cost-explorer,
    azure-cost-management, azure-export, focus, gcp-billing-export, snowflake-metering and
    databricks-usage.
    """

    ui_color = "#e6eef8"

    def __init__(self, *, source: str, **kwargs: Any) -> None:
        super().__init__(source=source, all_services=True, **kwargs)
