"""`airflow-cost reconcile` on a ledger of known tries and a bill of known rows: each basis (tags,
quantity, list cost), keep and spread, idle named, untouched kept apart, the sums exact to the
nano-unit, re-runs and restated days, and bad input refused with nothing written."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider import conf
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import line_reconciliations, lines, reconciliations
from tests.support.billing_rows import add_billed, nanos, priced_line, set_billed_amount, store_try

DAY = dt.date(2026, 11, 20)
T0 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
BQ_RUN = "0193a1b2-0000-7000-8000-000000000001"
WORKERS = [
    {"name": "workers", "source": "airflow_worker", "match": {"tags": {"airflow-component": "worker"}}}
]


def fill(ledger_url: str) -> None:
    """The tries and the bill every test reconciles (see the README's worked example)."""
    engine = store.get_engine(ledger_url)
    store.ensure_schema(engine)
    for task, (source, quantity, unit, amount, resource), run_id in [
        # two queries on one warehouse: 50 of the 100 credits it billed that day
        ("load", ("snowflake", "30", "credit", "90", "WH_ETL"), None),
        ("merge", ("snowflake", "20", "credit", "60", "WH_ETL"), None),
        # a BigQuery job whose labels carry the try's run id: billed at a discount
        ("report", ("bigquery", "1099511627776", "byte", "6.25", "p/US"), BQ_RUN),
        # worker time: $12 at list price against $48 of worker instances
        ("extract", ("airflow_worker", "28800", "vCPU-second", "9", None), None),
        ("clean", ("airflow_worker", "9600", "vCPU-second", "3", None), None),
        # a Glue job: 2 of the 4 DPU-hours billed for the job that day
        ("transform", ("glue", "7200", "DPU-second", "0.88", "nightly_etl"), None),
    ]:
        line = priced_line(source, quantity, unit, amount, resource, T0, external_id=f"q-{task}")
        store_try(engine, "sales", task, [line], ol_run_id=run_id, start=T0, tags=("finance",))
    add_billed(engine, DAY, "WH_ETL", "300", provider="snowflake", quantity="100", unit="Credits")
    add_billed(
        engine, DAY, "proj-1", "5", provider="gcp", service="BigQuery", tags={"openlineage_run_id": BQ_RUN}
    )
    for instance in ("i-0a", "i-0b"):
        add_billed(
            engine,
            DAY,
            f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}",
            "24",
            list_cost="24",
            service="Amazon Elastic Compute Cloud",
            tags={"airflow-component": "worker", "team": "data"},
        )
    add_billed(
        engine,
        DAY,
        "arn:aws:glue:us-east-1:123456789012:job/nightly_etl",
        "1.76",
        quantity="4",
        unit="DPU-Hour",
        service="AWS Glue",
    )
    add_billed(engine, DAY, "arn:aws:s3:::raw-landing", "7", service="Amazon S3")


@pytest.fixture
def rules(monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", json.dumps(WORKERS))
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", raising=False)
    conf.clear_cache()
    yield
    conf.clear_cache()


@pytest.fixture
def ledger(ledger_url, rules):
    fill(ledger_url)
    return ledger_url


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


PERIOD = ("--since", "2026-11-20", "--until", "2026-11-21")


def reconcile(ledger: str, *args: str) -> dict:
    code, out, err = cli("reconcile", "--ledger", ledger, *PERIOD, "-o", "json", *args)
    assert code == 0, err
    return json.loads(out)


def reconciled_lines(ledger: str) -> dict[str, tuple]:
    """task id -> (status, estimate, reconciled amount, currency) of its line."""
    from airflow_cost_provider.ledger.schema import task_runs

    engine = store.get_engine(ledger)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                task_runs.c.task_id,
                lines.c.status,
                lines.c.amount_nanos,
                lines.c.reconciled_nanos,
                lines.c.reconciled_currency,
            ).join(task_runs, task_runs.c.id == lines.c.task_run_id)
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def pools(ledger: str) -> dict[str, dict]:
    engine = store.get_engine(ledger)
    with engine.connect() as conn:
        return {row.pool: dict(row._mapping) for row in conn.execute(sa.select(reconciliations))}


def test_each_basis_splits_the_bill_and_names_the_idle_rest(ledger):
    document = reconcile(ledger)
    found = reconciled_lines(ledger)
    # quantity: 50 of 100 credits used; at list price the reconciled amounts are the estimates
    assert found["load"] == ("reconciled", nanos("90"), nanos("90"), "USD")
    assert found["merge"] == ("reconciled", nanos("60"), nanos("60"), "USD")
    # tags: the bill names the try; all of it is the job's
    assert found["report"] == ("reconciled", nanos("6.25"), nanos("5"), "USD")
    # list cost: $12 of $48 at list price; each line its share of the $12 by estimate
    assert found["extract"][2] == nanos("9") and found["clean"][2] == nanos("3")
    # quantity in another unit of the same dimension: 2 DPU-hours of 4
    assert found["transform"] == ("reconciled", nanos("0.88"), nanos("0.88"), "USD")

    by_pool = pools(ledger)
    warehouse = by_pool["WH_ETL"]
    assert (warehouse["basis"], warehouse["mode"], warehouse["pool_kind"]) == ("quantity", "keep", "resource")
    assert (warehouse["attributed_nanos"], warehouse["unattributed_nanos"]) == (nanos("150"), nanos("150"))
    assert Decimal(warehouse["used_share"]) == Decimal("0.5")
    workers = by_pool["rule:workers"]
    assert (workers["basis"], workers["billed_nanos"], workers["unattributed_nanos"]) == (
        "list_cost",
        nanos("48"),
        nanos("36"),
    )
    assert len(workers["billing_cost_ids"]) == 2
    assert by_pool[BQ_RUN]["basis"] == "tags" and by_pool[BQ_RUN]["unattributed_nanos"] == 0
    bucket = by_pool["arn:aws:s3:::raw-landing"]
    assert (bucket["pool_kind"], bucket["lines"], bucket["attributed_nanos"]) == ("untouched", 0, 0)

    # coverage: billed = attributed + unattributed to the nano-unit; untouched apart
    rows = {row["provider"]: row for row in document["rows"]}
    assert Decimal(rows["aws"]["billed"]) == Decimal("49.76") and Decimal(rows["aws"]["untouched"]) == 7
    assert Decimal(rows["aws"]["attributed"]) + Decimal(rows["aws"]["unattributed"]) == Decimal("49.76")
    assert Decimal(rows["snowflake"]["coverage"]) == Decimal("0.5")
    assert {row["source"]: row["ratio"] for row in document["accuracy"]}["bigquery"] == "0.8000"
    assert {"pool": "WH_ETL", "currency": "USD", "idle": "150", "billed": "300"} in document["idle"]


def test_a_mariadb_ledger_reconciles_the_same(mariadb_server, rules):
    admin = sa.create_engine(f"mysql+pymysql://tester:tester@127.0.0.1:{mariadb_server.port}/shop")
    with admin.begin() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS ledger_reconcile"))
        conn.execute(sa.text("CREATE DATABASE ledger_reconcile"))
    admin.dispose()
    url = f"mysql+pymysql://tester:tester@127.0.0.1:{mariadb_server.port}/ledger_reconcile"
    fill(url)
    reconcile(url)
    reconcile(url)  # the second run replaces the first
    found = reconciled_lines(url)
    assert [found[task][2] for task in ("load", "merge", "report", "extract", "clean", "transform")] == [
        nanos(amount) for amount in ("90", "60", "5", "9", "3", "0.88")
    ]
    assert pools(url)["rule:workers"]["unattributed_nanos"] == nanos("36")
    # Snowflake's attributed credits kept and read in MariaDB's JSON as well
    assert attribute(url, {"q-load": "40"}) == 1
    reconcile(url)
    found = reconciled_lines(url)
    assert (found["load"][2], found["merge"][2]) == (nanos("120"), nanos("60"))


def test_every_pools_lines_add_up_to_what_it_attributed(ledger):
    reconcile(ledger)
    engine = store.get_engine(ledger)
    with engine.connect() as conn:
        sums = dict(
            conn.execute(
                sa.select(
                    line_reconciliations.c.reconciliation_id, sa.func.sum(line_reconciliations.c.amount_nanos)
                ).group_by(line_reconciliations.c.reconciliation_id)
            ).all()
        )
        for pool in conn.execute(sa.select(reconciliations)):
            assert pool.attributed_nanos + pool.unattributed_nanos == pool.billed_nanos
            assert sums.get(pool.id, 0) == pool.attributed_nanos


def test_spread_shares_the_whole_bill(ledger, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", '{"snowflake": "spread"}')
    conf.clear_cache()
    reconcile(ledger)
    found = reconciled_lines(ledger)
    assert (found["load"][2], found["merge"][2]) == (nanos("180"), nanos("120"))
    assert pools(ledger)["WH_ETL"]["unattributed_nanos"] == 0
    assert pools(ledger)["rule:workers"]["mode"] == "keep"


def attribute(ledger: str, credits: dict[str, str]) -> int:
    """Snowflake's attributed credits per query id, kept as the metering import keeps them."""
    from airflow_cost_provider.billing.scan import DateWindow

    engine = store.get_engine(ledger)
    with engine.begin() as conn:
        return store.write_query_credits(
            conn,
            "snowflake",
            {k: Decimal(v) for k, v in credits.items()},
            DateWindow(DAY, DAY + dt.timedelta(1)),
        )


def test_query_attribution_weighs_a_warehouses_lines(ledger, monkeypatch):
    """`load` was attributed 40 credits (its estimate said 30); `merge` has no attribution row (a
    query of ~100 ms or less) and keeps its estimated 20: 60 of WH_ETL's 100 credits used."""
    assert attribute(ledger, {"q-load": "40", "q-elsewhere": "7"}) == 1
    reconcile(ledger)
    warehouse = pools(ledger)["WH_ETL"]
    assert (warehouse["basis"], Decimal(warehouse["used_share"])) == ("attribution", Decimal("0.6"))
    assert (warehouse["attributed_nanos"], warehouse["unattributed_nanos"]) == (nanos("180"), nanos("120"))
    found = reconciled_lines(ledger)
    assert (found["load"][2], found["merge"][2]) == (nanos("120"), nanos("60"))
    # the same credits imported again change nothing
    assert attribute(ledger, {"q-load": "40"}) == 1
    reconcile(ledger)
    assert reconciled_lines(ledger) == found
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", '{"snowflake": "spread"}')
    conf.clear_cache()
    reconcile(ledger)
    found = reconciled_lines(ledger)
    assert (found["load"][2], found["merge"][2]) == (nanos("200"), nanos("100"))
    assert pools(ledger)["WH_ETL"]["unattributed_nanos"] == 0


def test_attributed_shares_add_up_to_the_nano_unit(ledger):
    """Credits that do not divide the bill evenly: the lines still add up to what the pool attributed."""
    attribute(ledger, {"q-load": "0.000000001", "q-merge": "33.333333333"})
    reconcile(ledger)
    warehouse = pools(ledger)["WH_ETL"]
    found = reconciled_lines(ledger)
    assert warehouse["basis"] == "attribution"
    assert found["load"][2] + found["merge"][2] == warehouse["attributed_nanos"]
    assert warehouse["attributed_nanos"] + warehouse["unattributed_nanos"] == nanos("300")
    assert warehouse["attributed_nanos"] == round(nanos("300") * Decimal("33.333333334") / 100)


def test_a_rerun_changes_nothing_and_a_restated_day_replaces(ledger):
    reconcile(ledger)
    first = (
        reconciled_lines(ledger),
        {k: {**v, "id": 0, "reconciled_at": 0} for k, v in pools(ledger).items()},
    )
    reconcile(ledger)
    again = (
        reconciled_lines(ledger),
        {k: {**v, "id": 0, "reconciled_at": 0} for k, v in pools(ledger).items()},
    )
    assert again == first
    set_billed_amount(store.get_engine(ledger), "WH_ETL", DAY, "150")
    reconcile(ledger)
    assert pools(ledger)["WH_ETL"]["unattributed_nanos"] == nanos("75")
    assert reconciled_lines(ledger)["load"][2] == nanos("45")


def test_report_coverage_groups_and_agrees_with_reconcile(ledger):
    reconcile(ledger)
    code, out, err = cli("report", "coverage", "--ledger", ledger, *PERIOD, "--by", "resource", "-o", "json")
    assert code == 0, err
    rows = {row["resource"]: row for row in json.loads(out)["rows"]}
    assert rows["rule:workers"]["coverage"] == "0.2500"
    bucket = rows["arn:aws:s3:::raw-landing"]
    assert (Decimal(bucket["billed"]), Decimal(bucket["untouched"]), bucket["coverage"]) == (0, 7, None)
    code, out, err = cli("report", "coverage", "--ledger", ledger, *PERIOD)
    assert code == 0 and "coverage" in out and "WH_ETL was idle or unattributed for 150.00 USD" in out
    # the untouched bucket has no source: shown as reports show a missing group, never blank
    code, out, err = cli("report", "coverage", "--ledger", ledger, *PERIOD, "--by", "source", "-o", "json")
    by_source = {row["source"]: row for row in json.loads(out)["rows"]}
    assert "" not in by_source and Decimal(by_source["(none)"]["untouched"]) == 7


def _unchanged(ledger) -> None:
    engine = store.get_engine(ledger)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(reconciliations)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).where(lines.c.status == "reconciled")).scalar() == 0


def test_a_bill_in_another_currency_is_refused_naming_it(ledger):
    add_billed(store.get_engine(ledger), DAY, "WH_ETL", "80", provider="snowflake", currency="EUR", sku="eur")
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD)
    assert code == 2
    assert "WH_ETL on 2026-11-20 is in EUR" in err and "estimated in USD" in err and "\n" not in err.strip()
    _unchanged(ledger)


def test_two_rules_claiming_one_billed_row_are_refused(ledger, monkeypatch):
    rules = [*WORKERS, {"name": "team-data", "source": "airflow_worker", "match": {"tags": {"team": "data"}}}]
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", json.dumps(rules))
    conf.clear_cache()
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD)
    assert code == 2 and "'workers' and 'team-data' both claim" in err and "instance/i-0a" in err
    _unchanged(ledger)


def test_a_rule_that_matches_nothing_is_named(ledger, monkeypatch):
    rules = [
        *WORKERS,
        {"name": "db", "source": "postgres", "match": {"resource_id": "arn:aws:rds:*:db:analytics"}},
    ]
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", json.dumps(rules))
    conf.clear_cache()
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD)
    assert code == 2 and "rule 'db' matches no billed row" in err
    _unchanged(ledger)


@pytest.mark.parametrize(
    "value, message",
    [
        ('{"source": "x"}', "must be a JSON list"),
        ('[{"source": "airflow_worker"}]', 'needs a "match"'),
        ('[{"source": "airflow_worker", "match": {}}]', 'needs a "match"'),
        ('[{"source": "airflow_worker", "match": {"tags": {"a": 1}}}]', "match.tags must be an object"),
        ('[{"match": {"resource_id": "x"}}]', 'needs a "source"'),
        ('[{"source": "s", "match": {"resource_id": "x"}, "pool": 1}]', "unknown key 'pool'"),
        ("[{", "not valid JSON"),
    ],
    ids=["object", "no-match", "empty-match", "tag-number", "no-source", "unknown-key", "json"],
)
def test_bad_rules_are_named(ledger, monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", value)
    conf.clear_cache()
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD)
    assert code == 2 and message in err and "billing_resources" in err


def test_an_unknown_mode_is_named(ledger, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", '{"snowflake": "share"}')
    conf.clear_cache()
    code, _, err = cli("reconcile", "--ledger", ledger, *PERIOD)
    assert code == 2 and "reconcile_mode['snowflake'] = 'share'" in err


def test_a_period_without_a_bill_changes_nothing(ledger):
    code, out, err = cli("reconcile", "--ledger", ledger, "--since", "2026-10-01", "--until", "2026-10-02")
    assert code == 0, err
    assert "no billing rows imported" in out
    _unchanged(ledger)


def test_reports_show_estimated_and_reconciled_side_by_side(ledger):
    before = json.loads(
        cli(
            "report",
            "--ledger",
            ledger,
            "--since",
            "2026-11-20",
            "--until",
            "2026-11-21",
            "--by",
            "task",
            "-o",
            "json",
        )[1]
    )
    assert "reconciled" not in before["rows"][0] and "reconciled_until" not in before
    reconcile(ledger)
    code, out, err = cli(
        "report",
        "--ledger",
        ledger,
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-21",
        "--by",
        "task",
        "-o",
        "json",
    )
    assert code == 0, err
    document = json.loads(out)
    rows = {row["task_id"]: row for row in document["rows"]}
    assert (Decimal(rows["report"]["amount"]), Decimal(rows["report"]["reconciled"])) == (Decimal("6.25"), 5)
    assert rows["report"]["status"] == "reconciled"
    assert document["reconciled_until"] == "2026-11-20"
    assert Decimal(document["total"][0]["reconciled"]) == Decimal("90") + 60 + 5 + 12 + Decimal("0.88")
    code, out, _ = cli("report", "--ledger", ledger, "--since", "2026-11-20", "--until", "2026-11-21")
    header = next(line for line in out.splitlines() if " amount " in line)
    assert "reconciled up to: billing day 2026-11-20" in out and "amount  reconciled" in " ".join(
        header.split(" ")
    )


def test_budgets_count_reconciled_lines_at_their_reconciled_amount(ledger):
    """cost_daily_totals (what budgets read) holds each reconciled line at its reconciled amount and
    every other line at its estimate, after a run, a re-run and a restated day alike."""
    from airflow_cost_provider.ledger.schema import budget_settled, daily_totals

    engine = store.get_engine(ledger)

    def totals() -> tuple[int, int]:
        with engine.connect() as conn:
            kept = conn.execute(sa.select(sa.func.sum(daily_totals.c.amount_nanos))).scalar()
            effective = conn.execute(
                sa.select(sa.func.sum(sa.func.coalesce(lines.c.reconciled_nanos, lines.c.amount_nanos)))
            ).scalar()
        return int(kept), int(effective)

    estimated = totals()[0]
    with engine.begin() as conn:
        conn.execute(sa.insert(budget_settled).values(cache_key="k", payload="{}", updated_at=T0))
    reconcile(ledger)
    kept, effective = totals()
    assert kept == effective == estimated - nanos("1.25")  # BigQuery's 6.25 billed at 5.00
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(budget_settled)).scalar() == 0
    reconcile(ledger)
    assert totals() == (kept, effective)
    set_billed_amount(engine, "WH_ETL", DAY, "150")
    reconcile(ledger)
    kept, effective = totals()
    assert kept == effective == estimated - nanos("1.25") - nanos("75")


def test_the_focus_export_bills_a_reconciled_line_its_share_and_keeps_its_estimate(ledger, tmp_path):
    import csv

    reconcile(ledger)
    output = tmp_path / "costs.csv"
    code, _, err = cli(
        "export",
        "--format",
        "focus",
        "--ledger",
        ledger,
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-21",
        "--output",
        str(output),
    )
    assert code == 0, err
    rows = {row["x_TaskId"]: row for row in csv.DictReader(output.open())}
    report = rows["report"]
    assert (Decimal(report["BilledCost"]), Decimal(report["EffectiveCost"]), Decimal(report["ListCost"])) == (
        5,
        5,
        Decimal("6.25"),
    )
    assert (report["x_CostStatus"], Decimal(report["x_EstimatedCost"])) == ("reconciled", Decimal("6.25"))


def test_the_focus_validator_passes_an_export_of_reconciled_lines(tmp_path, rules):
    from tests.support import focus_validator

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    fill(ledger)
    reconcile(ledger)
    output = tmp_path / "costs.csv"
    code, _, err = cli("export", "--format", "focus", "--ledger", ledger, *PERIOD, "--output", str(output))
    assert code == 0, err
    verdict = focus_validator.validate(output, tmp_path / "validate")
    assert verdict.total > 500 and verdict.failed == set(), (
        f"{sorted(verdict.failed)}\n{verdict.output[-2000:]}"
    )


def test_the_api_gives_the_coverage_report_coverage_prints(ledger, monkeypatch):
    from tests.unit.test_api import client_for, get

    reconcile(ledger)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", ledger)
    conf.clear_cache()
    client = client_for()
    period = {"since": "2026-11-20", "until": "2026-11-21"}
    found = get(client, "/api/coverage", by="resource", **period)
    code, out, err = cli("report", "coverage", "--ledger", ledger, *PERIOD, "--by", "resource", "-o", "json")
    assert code == 0, err
    assert found["rows"] == json.loads(out)["rows"] and found["accuracy"] == json.loads(out)["accuracy"]
    assert client.get("/api/coverage", params={"by": "team"}).status_code == 400
    assert (
        client.get("/api/coverage", params={"since": "2026-11-21", "until": "2026-11-20"}).status_code == 400
    )
    refused = client_for(every_dag=False).get("/api/coverage", params=period)
    assert refused.status_code == 403


def test_a_tag_budget_counts_reconciled_lines_as_the_dag_budget_does(ledger):
    """A tag scope reads the label totals, which reconcile moves as it moves the daily totals: the
    tagged DAG's tries cost a tag budget what they cost a DAG budget, before and after."""
    from airflow_cost_provider.budgets import settled
    from airflow_cost_provider.budgets.evaluate import evaluate_all
    from airflow_cost_provider.budgets.model import parse_budgets

    budgets = parse_budgets(
        "budgets:\n"
        "  - {name: tag, scope: {tag: finance}, period: monthly, amount: '1000', currency: USD}\n"
        "  - {name: dag, scope: {dag_id: sales}, period: monthly, amount: '1000', currency: USD}\n",
        "b.yaml",
    )
    engine = store.get_engine(ledger)
    now = T0 + dt.timedelta(days=2)

    def spent() -> list[Decimal]:
        settled.clear()  # another process: what this one kept before the reconcile is not read
        return [status.spent_amount for status in evaluate_all(engine, budgets, now, contributors=False)]

    before = spent()
    assert before[0] == before[1] == Decimal("90") + 60 + Decimal("6.25") + 9 + 3 + Decimal("0.88")
    reconcile(ledger)
    after = spent()
    assert after[0] == after[1] == before[0] - Decimal("1.25")  # BigQuery's 6.25 billed at 5.00
