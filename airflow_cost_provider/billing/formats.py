"""File formats: how a billing file's columns become the FOCUS-shaped columns, in SQL.

`FocusFormat` reads any FOCUS 1.x export (AWS Data Exports FOCUS tables, Azure FocusCost, GCP's FOCUS
table exported to files, or a FOCUS file of your own); the cloud-specific formats live with their
source (`aws_cur`, `azure_exports`, `gcp_billing_export`).
"""

from __future__ import annotations

from airflow_cost_provider.billing import focus
from airflow_cost_provider.billing.errors import BillingDataError
from airflow_cost_provider.billing.scan import IS_STORAGE, ROW, TAGS, Normalised, quote

CSV_SUFFIXES = (".csv", ".csv.gz", ".gz")
PARQUET_SUFFIXES = (".parquet", ".snappy.parquet", ".gz.parquet", ".zstd.parquet")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")


class FileFormat:
    """A billing file format: its name (as on the command line), the files it reads, its SQL."""

    name: str = ""
    provider: str | None = None  # when every file of the format comes from one cloud
    suffixes: tuple[str, ...] = (*PARQUET_SUFFIXES, *CSV_SUFFIXES)
    description: str = ""

    def normalise(self, columns: dict[str, str], label: str) -> Normalised:
        """A SELECT over `billing_input` (whose columns and DuckDB types are `columns`)."""
        raise NotImplementedError

    def accepts(self, path: str) -> bool:
        lowered = path.lower()
        return lowered.endswith(self.suffixes) and not lowered.endswith(("manifest.json", "_manifest.json"))

    @staticmethod
    def require(columns: dict[str, str], label: str, *names: str) -> None:
        for name in names:
            if name not in columns:
                raise BillingDataError(label, "missing required column", column=name)


def first_present(columns: dict[str, str], *names: str) -> str | None:
    return next((name for name in names if name in columns), None)


def column_or_null(columns: dict[str, str], *names: str) -> str:
    """COALESCE over the given columns that exist in the file; NULL when none does."""
    present = [quote(name) for name in names if name in columns]
    if not present:
        return "NULL"
    return present[0] if len(present) == 1 else f"COALESCE({', '.join(present)})"


def tags_sql(columns: dict[str, str], name: str | None) -> str:
    """A tags column as JSON text: a MAP, STRUCT or list of {key, value} (Parquet, JSON lines) is
    written as JSON; text is taken as it is (it is parsed once per distinct value, later)."""
    if name is None:
        return "NULL"
    kind = columns[name].upper()
    if kind.startswith(("MAP(", "STRUCT(")) or kind.endswith("[]"):
        return f"CAST(to_json({quote(name)}) AS VARCHAR)"
    return f"CAST({quote(name)} AS VARCHAR)"


class FocusFormat(FileFormat):
    name = "focus"
    description = "FOCUS 1.x cost and usage export (CSV, gzip CSV or Parquet) from any provider"

    def __init__(self, provider: str | None = None) -> None:
        self.provider = provider

    def provider_sql(self, columns: dict[str, str]) -> str:
        named = column_or_null(columns, focus.X_PROVIDER, "ServiceProviderName", focus.PROVIDER_NAME)
        if self.provider:
            return focus.sql_text(self.provider)
        return named

    def usage_type_sql(self, columns: dict[str, str]) -> str:
        # AWS: x_UsageType; Azure FocusCost: x_SkuMeterName / x_SkuMeterSubcategory; FOCUS 1.2: SkuMeter
        return column_or_null(
            columns,
            focus.X_USAGE_TYPE,
            "x_SkuMeterName",
            "x_SkuMeterSubcategory",
            "SkuMeter",
            "x_SkuDescription",
            "ChargeDescription",
        )

    def storage_sql(self, columns: dict[str, str]) -> str:
        by_service = focus.storage_services_sql(quote(focus.SERVICE_NAME))
        if focus.RESOURCE_ID not in columns or self.provider not in (None, "azure"):
            return by_service
        # Azure books a storage account's bandwidth under other services: its resource says it is a
        # storage account (looked at on Azure's rows only)
        account = f"contains(lower({quote(focus.RESOURCE_ID)}), {focus.sql_text(focus.AZURE_STORAGE_ACCOUNT_MARKER)})"
        if self.provider == "azure":
            return f"({by_service} OR {account})"
        microsoft = ", ".join(
            focus.sql_text(name) for name in ("Microsoft", "Microsoft Azure", "Azure", "azure")
        )
        return f"(CASE WHEN {by_service} THEN true WHEN {self.provider_sql(columns)} IN ({microsoft}) THEN {account} ELSE false END)"

    def normalise(self, columns: dict[str, str], label: str) -> Normalised:
        self.require(
            columns,
            label,
            focus.BILLED_COST,
            focus.BILLING_CURRENCY,
            focus.CHARGE_PERIOD_START,
            focus.CHARGE_PERIOD_END,
            focus.SERVICE_NAME,
        )
        if not self.provider and not first_present(
            columns, focus.X_PROVIDER, "ServiceProviderName", focus.PROVIDER_NAME
        ):
            raise BillingDataError(label, "missing required column", column=focus.PROVIDER_NAME)
        select = {
            ROW: ROW,
            focus.BILLING_ACCOUNT_ID: column_or_null(columns, focus.BILLING_ACCOUNT_ID),
            focus.BILLED_COST: quote(focus.BILLED_COST),
            focus.EFFECTIVE_COST: column_or_null(columns, focus.EFFECTIVE_COST),
            focus.LIST_COST: column_or_null(columns, focus.LIST_COST),
            focus.BILLING_CURRENCY: quote(focus.BILLING_CURRENCY),
            focus.CHARGE_PERIOD_START: quote(focus.CHARGE_PERIOD_START),
            focus.CHARGE_PERIOD_END: quote(focus.CHARGE_PERIOD_END),
            focus.CHARGE_CATEGORY: column_or_null(columns, focus.CHARGE_CATEGORY),
            focus.CHARGE_CLASS: column_or_null(columns, focus.CHARGE_CLASS),
            focus.SERVICE_NAME: quote(focus.SERVICE_NAME),
            focus.RESOURCE_ID: column_or_null(columns, focus.RESOURCE_ID),
            focus.REGION_ID: column_or_null(columns, focus.REGION_ID, "Region"),
            focus.SKU_ID: column_or_null(columns, focus.SKU_ID),
            focus.CONSUMED_QUANTITY: column_or_null(columns, focus.CONSUMED_QUANTITY),
            focus.CONSUMED_UNIT: column_or_null(columns, focus.CONSUMED_UNIT),
            focus.X_PROVIDER: self.provider_sql(columns),
            focus.X_USAGE_TYPE: self.usage_type_sql(columns),
            IS_STORAGE: self.storage_sql(columns),
            TAGS: tags_sql(columns, tags := first_present(columns, "Tags", "tags")),
        }
        sql = "SELECT " + ", ".join(f"{expr} AS {quote(name)}" for name, expr in select.items())
        return Normalised(sql + " FROM billing_input", origin={}, tags_column=tags)
