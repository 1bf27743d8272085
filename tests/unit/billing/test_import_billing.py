"""`import-billing`: the whole bill of each file format, every service with its tags, written in one
transaction next to the storage costs, which stay as a storage import gives them."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.billing import samples
from airflow_cost_provider.billing.errors import BillingDataError
from airflow_cost_provider.billing.files import fetched
from airflow_cost_provider.billing.importer import read_files, save
from airflow_cost_provider.billing.registry import file_format
from airflow_cost_provider.billing.scan import BillingRows, row_key
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.operators.storage import ImportBillingCostsOperator
from tests.support.airflow_env import ledger_rows

START = dt.date(2026, 2, 26)
DAYS = 3
NANO = Decimal("1e-9")


def _to_nanos(charge: samples.Charge) -> samples.Charge:
    """Amounts of at most nine decimal places: the ledger's rows must then add up to them exactly."""
    return replace(
        charge,
        cost=charge.cost.quantize(NANO),
        credits=tuple((name, amount.quantize(NANO)) for name, amount in charge.credits),
    )


CHARGES = [_to_nanos(c) for c in samples.sample_charges(START, DAYS)]

# format, file type, writer, providers the file holds
CASES = [
    ("focus", "csv", samples.write_focus, {"aws", "gcp", "azure"}),
    ("focus", "parquet", samples.write_focus, {"aws", "gcp", "azure"}),  # Tags as a MAP
    ("aws-cur", "parquet", samples.write_cur, {"aws"}),  # resource_tags as a MAP
    ("aws-cur", "csv.gz", samples.write_cur, {"aws"}),  # resource_tags as JSON text
    ("azure-export", "csv", samples.write_azure_focus, {"azure"}),  # Tags without braces
    ("gcp-billing-export", "jsonl", samples.write_gcp_export, {"gcp"}),  # labels: [{key, value}]
    ("gcp-billing-export", "parquet", samples.write_gcp_export, {"gcp"}),
]


def read(path, name, all_services=True, window=None):
    fmt = file_format(name)
    with fetched([str(path)], fmt.accepts) as files:
        return read_files(fmt, files, window=window, all_services=all_services)


def tag_key(name: str, key: str) -> str:
    return f"user_{key}" if name == "aws-cur" else key  # CUR 2.0 prefixes user tags


@pytest.mark.parametrize(
    ("name", "kind", "writer", "providers"), CASES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_service_is_kept_with_its_tags_and_adds_up_to_the_file(tmp_path, name, kind, writer, providers):
    path = writer(CHARGES, tmp_path / f"export.{kind}", kind)
    collected = read(path, name)
    charges = [c for c in CHARGES if c.provider in providers]
    # nothing skipped, and the totals per currency are the file's to the nano-unit
    assert collected.skipped == {}
    assert collected.rows_imported == collected.rows_read
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for charge in charges:
        expected[charge.currency] += charge.billed()
    got: dict[str, int] = defaultdict(int)
    for cost in collected.billing_costs:
        got[cost.currency] += cost.amount_nanos
    assert {currency: Decimal(n).scaleb(-9) for currency, n in got.items()} == dict(expected)
    # every service of the file is there
    services = {c.service for c in collected.billing_costs}
    assert len(services) >= len({c.service_code for c in charges if c.category == "Usage"}) - 1
    # tagged resources carry their tags; a job's run id is found in them
    by_resource = defaultdict(list)
    for cost in collected.billing_costs:
        by_resource[cost.resource_id].append(cost)
    for charge in charges:
        if not charge.tags:
            continue
        resource = charge.resource_id.lower() if charge.provider == "azure" else charge.resource_id
        rows = [c for c in by_resource[resource] if c.day == charge.day]
        assert rows, (resource, charge.day)
        for row in rows:
            tags = json.loads(row.tags)
            for key, value in charge.tags:
                assert tags[tag_key(name, key)] == value
            assert list(tags) == sorted(tags)  # canonical: keys sorted
            run_ids = [v for k, v in charge.tags if k == "openlineage_run_id"]
            assert row.tagged_run_id == (run_ids[0] if run_ids else None)
            assert row.row_key == row_key(
                row.day,
                row.provider,
                row.billing_account,
                row.service,
                row.resource_id,
                row.sku,
                row.usage_class,
                row.currency,
                row.tags,
                row.usage_hour,
            )
    assert len({c.row_key for c in collected.billing_costs}) == len(collected.billing_costs)
    # the storage rows are exactly what a storage import gives
    assert sorted(collected.costs) == sorted(read(path, name, all_services=False).costs)


def test_the_sample_bill_has_the_jobs_and_workers_a_reconciliation_needs(tmp_path):
    collected = read(samples.write_focus(CHARGES, tmp_path / "focus.csv"), "focus")
    resources = {c.resource_id: c for c in collected.billing_costs}
    for arn in (
        "arn:aws:glue:us-east-1:123456789012:job/orders_etl",
        "arn:aws:athena:us-east-1:123456789012:workgroup/analytics",
        "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-2AXXXXXXGAPLF",
    ):
        assert resources[arn].amount_nanos > 0
    workers = {
        c.resource_id for c in collected.billing_costs if '"airflow-component":"worker"' in (c.tags or "")
    }
    assert "i-0a1b2c3d4e5f60718" in workers and "i-0f9e8d7c6b5a49382" not in workers
    bigquery = [c for c in collected.billing_costs if c.service == "BigQuery"]
    assert {c.tagged_run_id for c in bigquery} == {
        samples.sample_run_id("bigquery", START + dt.timedelta(days=n)) for n in range(DAYS)
    }


def _without_column(source, target, column: str) -> None:
    with open(source, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [name for name in rows[0] if name != column])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k != column} for row in rows)


def test_a_file_without_tags_imports_and_says_its_rows_match_by_resource_id_only(tmp_path, capsys):
    full = samples.write_focus(CHARGES, tmp_path / "full.csv")
    _without_column(full, tmp_path / "untagged.csv", "Tags")
    collected = read(tmp_path / "untagged.csv", "focus")
    assert collected.billing_costs and all(
        c.tags is None and c.tagged_run_id is None for c in collected.billing_costs
    )
    assert collected.untagged_files == [str(tmp_path / "untagged.csv")]
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = main(
        ["import-billing", "--format", "focus", "--path", str(tmp_path / "untagged.csv"), "--ledger", ledger]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "1 file without a tags column (their rows can only be matched by resource id)" in out
    rows = ledger_rows(ledger, "SELECT count(*) AS n FROM cost_billing_costs WHERE tags IS NULL")
    assert rows[0]["n"] == len(collected.billing_costs)


def test_legacy_cur_tag_columns_become_one_tag_set(tmp_path):
    rows = samples.cur_rows(CHARGES)
    for row in rows:
        tags = json.loads(row.pop("resource_tags") or "{}")
        row["resourceTags/user:airflow-component"] = tags.get("user_airflow-component", "")
    path = tmp_path / "legacy.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    collected = read(path, "aws-cur")
    tagged = {c.resource_id: c.tags for c in collected.billing_costs if c.tags}
    assert tagged == {"i-0a1b2c3d4e5f60718": '{"user:airflow-component":"worker"}'}


def test_the_summary_says_what_was_written_and_the_ledger_holds_it(tmp_path, capsys):
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = main(["import-billing", "--format", "focus", "--path", str(path), "--ledger", ledger])
    out, err = capsys.readouterr()
    assert code == 0, err
    collected = read(path, "focus")
    billing, storage = len(collected.billing_costs), len(collected.costs)
    assert f"into {billing:,} daily billing costs" in out
    assert f"(storage: {storage:,} daily storage costs" in out
    assert "skipped 0" in out
    counts = ledger_rows(
        ledger,
        "SELECT (SELECT count(*) FROM cost_billing_costs) AS billing, "
        "(SELECT count(*) FROM cost_storage_costs) AS storage",
    )[0]
    assert (counts["billing"], counts["storage"]) == (billing, storage)
    # import-storage still skips other services and writes no row of the whole bill
    other = tmp_path / "other.db"
    code = main(
        ["import-storage", "--format", "focus", "--path", str(path), "--ledger", f"sqlite:///{other}"]
    )
    assert code == 0 and "not_storage" in capsys.readouterr().out
    assert ledger_rows(f"sqlite:///{other}", "SELECT count(*) AS n FROM cost_billing_costs")[0]["n"] == 0


def _table(url) -> dict[str, tuple]:
    rows = ledger_rows(
        url,
        "SELECT row_key, day, service, resource_id, amount_nanos, tags, tagged_run_id FROM cost_billing_costs",
    )
    return {
        r["row_key"]: (
            str(r["day"]),
            r["service"],
            r["resource_id"],
            int(r["amount_nanos"]),
            None if r["tags"] is None else json.loads(r["tags"]) if isinstance(r["tags"], str) else r["tags"],
            r["tagged_run_id"],
        )
        for r in rows
    }


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_ledger(request, tmp_path) -> str:
    """A fresh ledger on each database: SQLite and PostgreSQL take the bulk path, MariaDB the portable one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    server = request.getfixturevalue("mariadb_server")
    admin = sa.create_engine(f"mysql+pymysql://tester:tester@127.0.0.1:{server.port}/shop")
    with admin.begin() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS ledger_billing_import"))
        conn.execute(sa.text("CREATE DATABASE ledger_billing_import"))
    admin.dispose()
    return f"mysql+pymysql://tester:tester@127.0.0.1:{server.port}/ledger_billing_import"


def test_reimport_is_idempotent_and_restated_days_replace(tmp_path, any_ledger):
    ledger_url = any_ledger
    engine = store.get_engine(ledger_url)
    store.ensure_schema(engine)
    first = read(samples.write_focus(CHARGES, tmp_path / "v1.csv"), "focus")
    save(engine, first, replace_days=True)
    once = _table(ledger_url)
    assert len(once) == len(first.billing_costs)
    save(engine, read(samples.write_focus(CHARGES, tmp_path / "v1.csv"), "focus"), replace_days=True)
    assert _table(ledger_url) == once
    assert sum(v[3] for v in once.values()) == sum(c.amount_nanos for c in first.billing_costs)
    # version 2 restates the second and third day: a request charge vanished, egress was revised
    restated = [_to_nanos(c) for c in samples.sample_charges(START, DAYS, version=2)]
    restated = [c for c in restated if c.day != START]  # the delivery holds the restated days only
    second = read(samples.write_focus(restated, tmp_path / "v2.csv"), "focus")
    save(engine, second, replace_days=True)
    now = _table(ledger_url)
    kept = {k: v for k, v in once.items() if v[0] == str(START)}
    assert {k: v for k, v in now.items() if v[0] == str(START)} == kept
    later = {k: v for k, v in now.items() if v[0] != str(START)}
    assert set(later) == {c.row_key for c in second.billing_costs}
    assert set(later) != {k for k, v in once.items() if v[0] != str(START)}  # the vanished charge is gone
    tagged = [v for v in now.values() if v[5]]
    assert tagged and all(v[4]["openlineage_run_id"] == v[5] for v in tagged)
    # rows without tags hold SQL NULL, not JSON null
    cur = read(samples.write_cur(CHARGES, tmp_path / "cur.csv.gz", "csv.gz"), "aws-cur")
    save(engine, cur)
    untagged = ledger_rows(ledger_url, "SELECT count(*) AS n FROM cost_billing_costs WHERE tags IS NULL")[0][
        "n"
    ]
    assert untagged == sum(1 for c in cur.billing_costs if c.tags is None) > 0


def test_the_bill_is_written_in_batches_and_a_failure_midway_leaves_the_ledger_as_it_was(
    tmp_path, any_ledger, monkeypatch
):
    engine = store.get_engine(any_ledger)
    store.ensure_schema(engine)
    save(engine, read(samples.write_focus(CHARGES, tmp_path / "v1.csv"), "focus"), replace_days=True)
    before = _table(any_ledger), _storage_table(any_ledger), _imports(any_ledger)
    restated = [_to_nanos(c) for c in samples.sample_charges(START, DAYS, version=2)]
    second = read(samples.write_focus(restated, tmp_path / "v2.csv"), "focus")
    monkeypatch.setattr(BillingRows, "BATCH", 7)
    batches = list(second.billing_costs.batches())
    assert len(batches) > 2 and {len(b) for b in batches[:-1]} == {7}
    keys = [c.row_key for batch in batches for c in batch]
    assert keys == [c.row_key for c in second.billing_costs] == sorted(keys)  # in key order, as written
    assert sum(len(b) for b in batches) == len(second.billing_costs)
    # the connection goes away after two batches were upserted, replaced days already deleted
    whole = BillingRows.batches
    written = []

    def failing(self, size=None):
        for batch in whole(self, size):
            if len(written) == 2:
                raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
            written.append(batch)
            yield batch

    monkeypatch.setattr(BillingRows, "batches", failing)
    with pytest.raises(sa.exc.OperationalError):
        save(engine, second, replace_days=True)
    assert len(written) == 2
    assert (_table(any_ledger), _storage_table(any_ledger), _imports(any_ledger)) == before
    monkeypatch.setattr(BillingRows, "batches", whole)
    summary = save(engine, second, replace_days=True)
    assert summary.billing_costs_written == len(second.billing_costs)
    assert set(_table(any_ledger)) == {c.row_key for c in second.billing_costs}  # every day restated


def _storage_table(url) -> list[tuple]:
    rows = ledger_rows(url, "SELECT day, resource_id, sku, amount_nanos, import_id FROM cost_storage_costs")
    return sorted(
        (str(r["day"]), r["resource_id"], r["sku"], int(r["amount_nanos"]), r["import_id"]) for r in rows
    )


def _imports(url) -> int:
    return ledger_rows(url, "SELECT count(*) AS n FROM cost_storage_imports")[0]["n"]


def test_a_sum_out_of_range_leaves_the_ledger_as_it_was(tmp_path, capsys):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(ledger)
    store.ensure_schema(engine)
    save(engine, read(samples.write_focus(CHARGES, tmp_path / "v1.csv"), "focus"), replace_days=True)
    before = _table(ledger), _storage_table(ledger), _imports(ledger)
    # two charges of one resource, hour and SKU, each in range, their sum not
    huge = next(c for c in CHARGES if c.service_name == "AWS Glue")
    huge = replace(huge, cost=Decimal("5000000000"), list_cost=Decimal("5000000000"))
    path = samples.write_focus([*CHARGES, huge, huge], tmp_path / "v2.csv")
    code = main(
        ["import-billing", "--format", "focus", "--path", str(path), "--ledger", ledger, "--replace-days"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "out of range" in err and "nothing was imported" in err
    assert (_table(ledger), _storage_table(ledger), _imports(ledger)) == before


def test_a_bad_row_names_file_row_and_column_and_nothing_is_written(tmp_path, capsys):
    path = samples.write_focus(CHARGES, tmp_path / "focus.csv")
    lines = path.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    rows = list(csv.reader(lines[1:]))
    # a compute row (not storage) whose tags are no JSON object
    index = next(i for i, r in enumerate(rows) if r[header.index("ServiceName")] == "AWS Glue")
    rows[index][header.index("Tags")] = '{"team": "data"'
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    with pytest.raises(BillingDataError) as raised:
        read(path, "focus")
    message = str(raised.value)
    assert "focus.csv" in message and f"row {index + 1}" in message and "Tags" in message
    assert "not a JSON object of tags" in message
    # import-storage does not read tags: the same file imports
    assert read(path, "focus", all_services=False).costs
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.ensure_schema(store.get_engine(ledger))
    code = main(["import-billing", "--format", "focus", "--path", str(path), "--ledger", ledger])
    err = capsys.readouterr().err
    assert code == 1 and "nothing was imported" in err
    assert ledger_rows(ledger, "SELECT count(*) AS n FROM cost_billing_costs")[0]["n"] == 0
    assert ledger_rows(ledger, "SELECT count(*) AS n FROM cost_storage_costs")[0]["n"] == 0


def test_the_billing_operator_takes_every_source():
    explorer = ImportBillingCostsOperator(task_id="bill", source="aws-cost-explorer")
    assert explorer.all_services and explorer.watermark_key() == "billing:aws-cost-explorer:"
    with pytest.raises(ValueError, match="needs scope="):
        ImportBillingCostsOperator(task_id="bill", source="azure-cost-management")
    operator = ImportBillingCostsOperator(task_id="bill", source="focus", path="/tmp/exports")
    assert operator.all_services and operator.watermark_key() == "billing:focus:/tmp/exports"
