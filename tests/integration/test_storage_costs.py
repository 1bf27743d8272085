"""Storage costs end to end: each example DAG of `dags/`, unchanged, under real `airflow dags test`
against servers on 127.0.0.1 that speak the clouds' APIs (moto for S3 and Cost Explorer, a BigQuery
REST server running the export query, the Azure Cost Management Query API with its paging and
throttling). Asserts on what the servers were asked, on the ledger (every day of the run's window,
per bucket and usage class, equal to the sample model the exports were written from) and on the
`costProvider_storageCost` facet of each bucket in the import task's COMPLETE event (validated
against the OpenLineage spec and the facet's schema)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import defaultdict
from decimal import Decimal

import pytest

from airflow_cost_provider.billing import samples
from tests.support import fake_aws
from tests.support.airflow_env import REPO, TEST_DAGS, AirflowEnv, ledger_rows
from tests.support.fake_bigquery_billing import fake_bigquery_billing
from tests.support.fake_cost_explorer import queue_cost_and_usage, reset_moto
from tests.support.fake_cost_management import (
    azure_connection,
    fake_cost_management,
    identity_environment,
    records_of,
)
from tests.support.storage_billing import (
    FACET,
    assert_matches_model,
    ledger_totals,
    model_totals,
    validate_storage_event,
)

pytestmark = pytest.mark.integration

EXAMPLES = ("example_storage_sample", "example_storage_aws", "example_storage_gcp", "example_storage_azure")
# the runs' logical dates are in January 2026: their windows reach back into December 2025
DATA_START = dt.date(2025, 11, 25)
DATA_DAYS = 75
# the DAGs import the days before their logical date: one inside the data, however many runs came before
DATA_LOGICAL_DATE = "2026-01-20"


@pytest.fixture(scope="module")
def storage_env(tmp_path_factory) -> AirflowEnv:
    dags = tmp_path_factory.mktemp("storage-dags")
    for name in EXAMPLES:
        shutil.copy(REPO / "dags" / f"{name}.py", dags)
    shutil.copy(TEST_DAGS / "cost_storage_cost_explorer.py", dags)
    env = AirflowEnv(tmp_path_factory.mktemp("airflow-home-storage"), dags_folder=dags)
    env.migrate()
    return env


def expected_window(billing_day: dt.date) -> set[dt.date]:
    """The days a scheduled run reads: its billing day and the 5 before, and the previous month
    until the 10th (written out here, not taken from the code under test)."""
    start = billing_day - dt.timedelta(days=5)
    if billing_day.day <= 10:
        start = min(start, (billing_day.replace(day=1) - dt.timedelta(days=1)).replace(day=1))
    return {start + dt.timedelta(days=n) for n in range((billing_day - start).days + 1)}


def import_event(run, task_id: str) -> dict:
    events = run.events()
    assert events, run.output[-3000:]
    for event in events:
        validate_storage_event(event)
    (complete,) = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(f".{task_id}")
    ]
    return complete


def storage_facets(event: dict) -> dict[tuple[str, str], dict]:
    return {
        (d["namespace"], d["name"]): d["facets"][FACET]
        for d in event["outputs"]
        if FACET in d.get("facets", {})
    }


def billing_day_of(facets: dict) -> dt.date:
    (period,) = {json.dumps(f["period"], sort_keys=True) for f in facets.values()}
    period = json.loads(period)
    assert dt.date.fromisoformat(period["end"]) - dt.date.fromisoformat(period["start"]) == dt.timedelta(
        days=1
    )
    return dt.date.fromisoformat(period["start"])


def ledger_days(url: str) -> set[dt.date]:
    return {
        dt.date.fromisoformat(str(r["day"]))
        for r in ledger_rows(url, "SELECT DISTINCT day FROM cost_storage_costs")
    }


def assert_facet_equals_ledger(facet: dict, url: str, resource_id: str, day: dt.date) -> None:
    rows = ledger_rows(
        url,
        "SELECT usage_class, currency, sum(amount_nanos) AS nanos FROM cost_storage_costs "
        f"WHERE resource_id = '{resource_id}' AND day = '{day}' GROUP BY usage_class, currency",
    )
    ledger = {(r["usage_class"], r["currency"]): Decimal(int(r["nanos"])).scaleb(-9) for r in rows}
    classes = {(c["usageClass"], c["currency"]): Decimal(str(c["amount"])) for c in facet["usageClasses"]}
    assert classes == ledger
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for (_, currency), amount in ledger.items():
        totals[currency] += amount
    assert {t["currency"]: Decimal(str(t["amount"])) for t in facet["totals"]} == dict(totals)


# ---------------------------------------------------------------------------------------- sample


def test_sample_dag_imports_the_bundled_exports_twice_without_duplicates(storage_env, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = storage_env.dags_test("example_storage_sample", ledger_url=ledger)
    assert first.process.returncode == 0, first.output[-4000:]
    day_one = billing_day_of(storage_facets(import_event(first, "import_storage_costs")))
    rows_after_one = ledger_rows(ledger, "SELECT count(*) AS n FROM cost_storage_costs")[0]["n"]
    second = storage_env.dags_test("example_storage_sample", ledger_url=ledger)
    assert second.process.returncode == 0, second.output[-4000:]
    event = import_event(second, "import_storage_costs")
    facets = storage_facets(event)
    day_two = billing_day_of(facets)
    assert day_two == day_one + dt.timedelta(days=1)

    # the windows overlap: the overlap is replaced, not added, and every day equals the export of
    # the last run that read it (each run writes its exports from its own window's first day, and a
    # correction lands two days after that first day, so the two runs' exports differ)
    first_window, second_window = expected_window(day_one), expected_window(day_two)
    days = first_window | second_window
    assert ledger_days(ledger) == days

    def exported(window: set[dt.date]) -> list:
        start = min(window)
        return samples.sample_charges(start, (max(window) - start).days + 1)

    charges = [c for c in exported(first_window) if c.start.date() not in second_window]
    charges += exported(second_window)
    got, counts = ledger_totals(ledger)
    assert_matches_model(got, counts, model_totals(charges))
    assert ledger_rows(ledger, "SELECT count(*) AS n FROM cost_storage_costs")[0]["n"] > rows_after_one
    # the whole bill is kept too: the jobs, with the run id of the BigQuery jobs' labels
    billed = ledger_rows(
        ledger,
        "SELECT service, count(*) AS n, count(tagged_run_id) AS tagged FROM cost_billing_costs GROUP BY service",
    )
    services = {r["service"]: r for r in billed}
    assert {"AWS Glue", "Amazon Athena", "Amazon EMR", "BigQuery"} <= set(services)
    assert services["BigQuery"]["tagged"] == services["BigQuery"]["n"] > 0

    # each bucket of the three clouds, and the allocated prefixes and Azure container
    assert {
        ("s3://acme-raw-events", "/"),
        ("s3://acme-curated", "/"),
        ("s3://acme-logs-eu", "/"),
        ("gs://acme-lake-us", "/"),
        ("gs://acme-ml-artifacts", "/"),
        ("s3://acme-raw-events", "events/clicks"),
        ("s3://acme-raw-events", "events/orders"),
        ("gs://acme-lake-us", "curated"),
        ("abfss://raw@acmelake.dfs.core.windows.net", "/"),
    } == set(facets)
    bucket = facets[("s3://acme-raw-events", "/")]
    assert (
        bucket["method"] == "metered"
        and bucket["source"] == "focus"
        and bucket["status"] in ("preliminary", "final")
    )
    assert_facet_equals_ledger(bucket, ledger, "acme-raw-events", day_two)
    assert {c["usageClass"] for c in bucket["usageClasses"]} >= {
        "storage",
        "requests",
        "retrieval",
        "transfer_egress",
        "transfer_cross_region",
        "transfer_inter_service",
    }
    clicks = facets[("s3://acme-raw-events", "events/clicks")]
    storage = next(c for c in bucket["usageClasses"] if c["usageClass"] == "storage")
    assert clicks["method"] == "allocated" and clicks["bytesStored"] == 600 * 10**9
    assert clicks["share"] == pytest.approx(600 * 10**9 / bucket["bytesStored"], rel=1e-6)
    assert clicks["totals"][0]["amount"] == pytest.approx(storage["amount"] * clicks["share"], abs=1e-9)
    container = facets[("abfss://raw@acmelake.dfs.core.windows.net", "/")]
    assert container["totals"][0]["currency"] == "EUR" and container["provider"] == "azure"


# ---------------------------------------------------------------------------------------- AWS


@pytest.fixture(scope="module")
def aws():
    with fake_aws.moto_server() as url:
        yield url


def put_cur(s3, scratch, key: str, charges) -> None:
    path = samples.write_cur(charges, scratch / key.replace("/", "_"))
    s3.put_object(Bucket="billing-exports", Key=key, Body=path.read_bytes())


def test_aws_dag_imports_the_latest_data_export_delivery_from_s3(storage_env, aws, tmp_path):
    s3 = fake_aws.client("s3", aws)
    s3.create_bucket(Bucket="billing-exports")
    v1 = samples.sample_charges(DATA_START, DATA_DAYS, providers=("aws",))
    v2 = samples.sample_charges(DATA_START, DATA_DAYS, version=2, providers=("aws",))
    root = "cur2/storage-costs"
    by_month = lambda charges, year, month: [c for c in charges if (c.day.year, c.day.month) == (year, month)]  # noqa: E731
    # November and December: an export that overwrites; January: one that keeps every delivery
    put_cur(
        s3,
        tmp_path,
        f"{root}/data/BILLING_PERIOD=2025-11/storage-costs-00001.snappy.parquet",
        by_month(v2, 2025, 11),
    )
    put_cur(
        s3,
        tmp_path,
        f"{root}/data/BILLING_PERIOD=2025-12/storage-costs-00001.snappy.parquet",
        by_month(v2, 2025, 12),
    )
    put_cur(
        s3,
        tmp_path,
        f"{root}/data/BILLING_PERIOD=2026-01/20260110T0600Z/storage-costs-00001.snappy.parquet",
        by_month(v1, 2026, 1),
    )
    put_cur(
        s3,
        tmp_path,
        f"{root}/data/BILLING_PERIOD=2026-01/20260111T0600Z/storage-costs-00001.snappy.parquet",
        by_month(v2, 2026, 1),
    )
    s3.put_object(
        Bucket="billing-exports",
        Key=f"{root}/metadata/BILLING_PERIOD=2026-01/storage-costs-Manifest.json",
        Body=b"{}",
    )
    # objects under a prefix whose storage cost is allocated by bytes, as listed through S3
    s3.create_bucket(Bucket="acme-raw-events")
    for name, size in (("a.json", 4000), ("b.json", 6000)):
        s3.put_object(Bucket="acme-raw-events", Key=f"events/clicks/{name}", Body=b"x" * size)

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = storage_env.dags_test(
        "example_storage_aws",
        ledger_url=ledger,
        logical_date=DATA_LOGICAL_DATE,
        env={
            **fake_aws.airflow_env(aws),
            "AIRFLOW_VAR_COST_AWS_DATA_EXPORT_PATH": f"s3://billing-exports/{root}/",
            "AIRFLOW__COST_PROVIDER__STORAGE_ALLOCATION": json.dumps(
                {"s3://acme-raw-events/events/clicks/": None}
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    facets = storage_facets(import_event(run, "import_s3_costs"))
    billing_day = billing_day_of(facets)
    days = expected_window(billing_day)
    assert ledger_days(ledger) == days
    got, counts = ledger_totals(ledger)
    assert_matches_model(got, counts, model_totals(v2, days=days))  # the latest January delivery
    assert {("s3://acme-raw-events", "/"), ("s3://acme-curated", "/"), ("s3://acme-logs-eu", "/")} <= set(
        facets
    )
    assert_facet_equals_ledger(facets[("s3://acme-raw-events", "/")], ledger, "acme-raw-events", billing_day)
    clicks = facets[("s3://acme-raw-events", "events/clicks")]
    assert clicks["method"] == "allocated" and clicks["bytesStored"] == 10_000
    assert facets[("s3://acme-raw-events", "/")]["source"] == "aws-cur"
    imports = ledger_rows(ledger, "SELECT files, rows_skipped FROM cost_storage_imports")
    files = json.loads(imports[0]["files"]) if isinstance(imports[0]["files"], str) else imports[0]["files"]
    assert all("20260110T0600Z" not in f and "Manifest" not in f for f in files)


def test_cost_explorer_dag_pages_and_groups_by_the_bucket_tag(storage_env, aws, tmp_path):
    charges = [c for c in samples.sample_charges(DATA_START, DATA_DAYS, providers=("aws",)) if c.is_storage]
    sums: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for c in charges:
        sums[(c.day, c.resource_id, c.usage_type)][0] += c.billed()
        sums[(c.day, c.resource_id, c.usage_type)][1] += c.quantity
    results = []
    for day in sorted({c.day for c in charges}):
        results.append(
            {
                "TimePeriod": {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()},
                "Total": {},
                "Groups": [
                    {
                        "Keys": [f"bucket${bucket}", usage_type],
                        "Metrics": {
                            "UnblendedCost": {"Amount": str(cost), "Unit": "USD"},
                            "UsageQuantity": {"Amount": str(quantity), "Unit": "N/A"},
                        },
                    }
                    for (d, bucket, usage_type), (cost, quantity) in sorted(sums.items())
                    if d == day
                ],
                "Estimated": False,
            }
        )
    half = len(results) // 2
    reset_moto(aws)  # moto's backends are the process's: no answers left from another test
    queue_cost_and_usage(
        aws,
        [
            {"ResultsByTime": results[:half], "NextPageToken": "p2", "DimensionValueAttributes": []},
            {"ResultsByTime": results[half:], "DimensionValueAttributes": []},
        ],
    )
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = storage_env.dags_test(
        "cost_storage_cost_explorer",
        ledger_url=ledger,
        logical_date=DATA_LOGICAL_DATE,
        env=fake_aws.airflow_env(aws),
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "Cost Explorer: 2 paid requests" in run.output
    facets = storage_facets(import_event(run, "import_s3_costs"))
    billing_day = billing_day_of(facets)
    days = expected_window(billing_day)
    got: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in ledger_rows(
        ledger,
        "SELECT resource_id, day, sum(amount_nanos) AS n FROM cost_storage_costs GROUP BY resource_id, day",
    ):
        got[(row["resource_id"], dt.date.fromisoformat(str(row["day"])))] = Decimal(int(row["n"])).scaleb(-9)
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in charges:
        if c.day in days:
            expected[(c.resource_id, c.day)] += c.billed()
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-7"), key
    assert facets[("s3://acme-raw-events", "/")]["source"] == "aws-cost-explorer"


# ---------------------------------------------------------------------------------------- GCP

GCP_TABLE = "billing-admin.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"


def test_gcp_dag_queries_the_billing_export_through_bigquery(storage_env, tmp_path):
    charges = samples.sample_charges(DATA_START, DATA_DAYS, providers=("gcp",))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with fake_bigquery_billing(page_size=20) as bigquery:
        bigquery.load_table(
            GCP_TABLE,
            samples.gcp_export_records(charges),
            ("usage_start_time", "usage_end_time", "export_time"),
        )
        run = storage_env.dags_test(
            "example_storage_gcp",
            ledger_url=ledger,
            logical_date=DATA_LOGICAL_DATE,
            env={
                "BIGQUERY_EMULATOR_HOST": bigquery.url,
                "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                    {
                        "conn_type": "google_cloud_platform",
                        "extra": {"is_anonymous": True, "project": "billing-admin"},
                    }
                ),
                "AIRFLOW_VAR_COST_GCP_BILLING_EXPORT_TABLE": GCP_TABLE,
            },
        )
        assert run.process.returncode == 0, run.output[-4000:]
        (job,) = bigquery.inserted()
    event = import_event(run, "import_gcs_costs")
    facets = storage_facets(event)
    billing_day = billing_day_of(facets)
    days = expected_window(billing_day)
    assert ledger_days(ledger) == days
    got, counts = ledger_totals(ledger)
    expected = model_totals(charges, days=days)
    # BigQuery NUMERIC rounds each export row to 9 decimals before the sum
    assert set(got) == set(expected)
    for key, amount in expected.items():
        assert abs(got[key] - amount) < Decimal("1e-8"), key
    assert set(facets) == {("gs://acme-lake-us", "/"), ("gs://acme-ml-artifacts", "/")}
    assert_facet_equals_ledger(
        facets[("gs://acme-lake-us", "/")], ledger, "projects/_/buckets/acme-lake-us", billing_day
    )
    # the import's own query carries the task's labels, so its cost is on the task's own cost facet
    labels = job["configuration"]["labels"]
    assert labels["airflow_task_id"] == "import_gcs_costs"
    # the DAG imports the whole bill: every service, with the resources' labels
    query = job["configuration"]["query"]
    assert "WHERE TRUE" in query["query"] and "TO_JSON_STRING(labels)" in query["query"]
    assert [p["name"] for p in query["queryParameters"]] == ["window_start", "window_end"]
    billed = ledger_rows(ledger, "SELECT service, count(*) AS n FROM cost_billing_costs GROUP BY service")
    assert {r["service"] for r in billed} == {c.service_name for c in charges}
    assert "costProvider_cost" in event["run"]["facets"]


# ---------------------------------------------------------------------------------------- Azure

SCOPE = f"/subscriptions/{samples.AZURE_SUBSCRIPTION}"


def test_azure_dag_follows_paging_and_throttling_and_fills_the_mapped_container(storage_env, tmp_path):
    charges = samples.sample_charges(DATA_START, DATA_DAYS, providers=("azure",))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with fake_cost_management(page_size=15) as azure:
        azure.records += records_of(charges)
        azure.throttle_next = 1
        run = storage_env.dags_test(
            "example_storage_azure",
            ledger_url=ledger,
            logical_date=DATA_LOGICAL_DATE,
            env={
                "AIRFLOW_CONN_AZURE_DEFAULT": azure_connection(azure),
                **identity_environment(azure),
                "AIRFLOW_VAR_COST_AZURE_SCOPE": SCOPE,
                "AIRFLOW__COST_PROVIDER__STORAGE_ALLOCATION": json.dumps(
                    {"abfss://raw@acmelake.dfs.core.windows.net": 3 * 10**12}
                ),
            },
        )
        assert run.process.returncode == 0, run.output[-4000:]
        queries = azure.queries()
    facets = storage_facets(import_event(run, "import_storage_account_costs"))
    assert set(facets) == {("abfss://raw@acmelake.dfs.core.windows.net", "/")}
    container = facets[("abfss://raw@acmelake.dfs.core.windows.net", "/")]
    billing_day = billing_day_of(facets)
    days = expected_window(billing_day)
    assert container["method"] == "allocated" and container["totals"][0]["currency"] == "EUR"
    assert ledger_days(ledger) == days
    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for c in charges:
        if c.is_storage and c.day in days:
            usage_class = "transfer_egress" if c.meter_category == "Bandwidth" else "storage"
            expected[("azure", c.resource_id.lower(), c.day, usage_class, "EUR")] += c.billed()
    got, counts = ledger_totals(ledger)
    assert_matches_model(got, counts, dict(expected))
    # one 429 answered by waiting, then every page through nextLink
    assert len(queries) >= 3 and queries[1].body == queries[0].body
    assert any(q.query.get("$skiptoken") for q in queries)
