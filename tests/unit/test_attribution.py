"""Who a task try's cost belongs to: owner, team (params, then DAG tags, then team_mapping), DAG tags and
cost labels, read from real Airflow DAG objects; and the tags they add to what platforms receive."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from airflow_cost_provider import checks, conf
from airflow_cost_provider.capture.attribution import Attribution, attribution_of, fit, resolve
from airflow_cost_provider.capture.identity import TaskTry, task_try_from_ti
from airflow_cost_provider.tagging import bigquery_labels, format_comment, snowflake_query_tag
from tests.support.fake_ti import FakeTaskInstance

MAPPING = (("marketing_*", "marketing"), ("*_daily", "data-eng"))


def test_the_teams_come_from_params_then_dag_tags_then_the_mapping_then_none():
    tags = ["pii", "team:web", "cost_center:cc-42"]
    assert (
        resolve("marketing_daily", params={"cost_team": "growth"}, dag_tags=tags, team_mapping=MAPPING).team
        == "growth"
    )
    assert resolve("marketing_daily", dag_tags=tags, team_mapping=MAPPING).team == "web"
    # the first of team:/cost_center: in the DAG's own order
    assert resolve("x", dag_tags=["cost_center:cc-42", "team:web"]).team == "cc-42"
    assert resolve("marketing_daily", dag_tags=["pii"], team_mapping=MAPPING).team == "marketing"
    # globs in the order written: the first match wins even when a later one matches too
    assert resolve("sales_daily", team_mapping=MAPPING).team == "data-eng"
    assert resolve("sales_hourly", dag_tags=["pii"], team_mapping=MAPPING).team is None
    # glob matching is case-sensitive, as DAG ids are
    assert resolve("Marketing_x", team_mapping=MAPPING).team is None


def test_blank_or_non_text_teams_fall_through_to_the_next_source(caplog):
    with caplog.at_level(logging.DEBUG, logger="airflow_cost_provider.capture.attribution"):
        attribution = resolve(
            "marketing_x", params={"cost_team": 42}, dag_tags=["team:", "team:  "], team_mapping=MAPPING
        )
    assert attribution.team == "marketing"
    assert "params['cost_team'] = 42 is not text; ignored" in caplog.text
    assert resolve("x", params={"cost_team": "  ops  "}).team == "ops"


def test_labels_owner_and_tags():
    attribution = resolve(
        "d",
        params={
            "cost_labels": {"product": "crm", "env": "prod", "bad": 3, "": "x", "none": None, " pad ": " v "}
        },
        dag_tags=["team:marketing", "pii", "pii"],
        owner="ana",
    )
    assert attribution == Attribution(
        owner="ana",
        team="marketing",
        dag_tags=("pii", "team:marketing"),
        labels=(("env", "prod"), ("pad", "v"), ("product", "crm")),
    )
    assert resolve("d", params={"cost_labels": ["product", "crm"]}).labels == ()
    assert resolve("d", owner="  ").owner is None
    assert resolve("d") == Attribution()


def test_over_long_names_fit_the_ledger_and_stay_distinct():
    long_a, long_b = "a" * 300 + "1", "a" * 300 + "2"
    assert len(fit(long_a)) == 250 and fit(long_a) != fit(long_b)
    assert fit(long_a).startswith("a" * 200)
    attribution = resolve("d", params={"cost_team": long_a, "cost_labels": {long_a: long_b}}, owner=long_b)
    assert attribution.team == fit(long_a) and attribution.owner == fit(long_b)
    assert attribution.labels == ((fit(long_a), fit(long_b)),)


def real_dag_tasks():
    """A DAG as its file declares it: tags, DAG params, default owner; a task overriding params."""
    from airflow.sdk import DAG, BaseOperator

    with DAG(
        "marketing_daily",
        schedule=None,
        tags=["pii", "team:marketing"],
        params={"cost_labels": {"product": "crm"}},
        default_args={"owner": "ana"},
    ):
        extract = BaseOperator(task_id="extract")
        load = BaseOperator(
            task_id="load", owner="bob", params={"cost_team": "finance", "cost_labels": {"product": "erp"}}
        )
    return extract, load


def ti_of(task) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id=task.dag_id, task_id=task.task_id, run_id="r", map_index=-1, try_number=1, task=task
    )


def test_a_real_dags_task_params_override_the_dags_and_tags_name_the_team(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "True")
    extract, load = real_dag_tasks()
    assert attribution_of(ti_of(extract)) == Attribution(
        owner="ana", team="marketing", dag_tags=("pii", "team:marketing"), labels=(("product", "crm"),)
    )
    task_try = task_try_from_ti(ti_of(load))
    assert (task_try.owner, task_try.team, task_try.dag_tags, task_try.labels) == (
        "bob",
        "finance",
        ("pii", "team:marketing"),
        (("product", "erp"),),
    )


def test_the_configured_mapping_is_used_and_a_bad_one_never_fails_the_task(monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__TEAM_MAPPING", json.dumps({"sales_*": "sales-team"}))
    conf.clear_cache()
    assert attribution_of(FakeTaskInstance(dag_id="sales_daily")).team == "sales-team"
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__TEAM_MAPPING", "{not json")
    conf.clear_cache()
    assert attribution_of(FakeTaskInstance(dag_id="sales_daily")) == Attribution()


def test_a_task_whose_attribution_cannot_be_read_is_recorded_without_one():
    class Exploding:
        dag_id = "d"

        @property
        def task(self):
            raise RuntimeError("boom")

    assert attribution_of(Exploding()) == Attribution()

    class RequiredParam(dict):
        def __getitem__(self, name):
            raise ValueError("param has no value")

    ti = ti_of(
        SimpleNamespace(dag_id="d", task_id="t", owner="ana", params=RequiredParam(cost_team=1), dag=None)
    )
    assert attribution_of(ti) == Attribution(owner="ana")


def test_team_and_labels_ride_on_the_tags_platforms_receive():
    task_try = TaskTry(
        "sales", "load", "r1", 1, -1, "ol-1", owner="ana", team="Marketing EU", labels=(("product", "CRM/x"),)
    )
    tags = task_try.tags()
    assert tags["airflow_team"] == "Marketing EU" and tags["cost_label_product"] == "CRM/x"
    assert "owner" not in "".join(tags)
    # the existing sanitisers apply; the comment still starts with the identity the SQL capture looks for
    assert bigquery_labels(tags)["airflow_team"] == "marketing_eu"
    assert bigquery_labels(tags)["cost_label_product"] == "crm_x"
    assert format_comment(tags).startswith("/*airflow_dag_id='sales'")
    assert "cost_label_product='CRM%2Fx'" in format_comment(tags)
    assert json.loads(snowflake_query_tag(tags))["airflow_team"] == "Marketing EU"
    # a try without attribution carries exactly the identity it carried before
    assert set(TaskTry("sales", "load", "r1", 1, -1).tags()) == {
        "airflow_dag_id",
        "airflow_task_id",
        "airflow_run_id",
        "airflow_try_number",
        "airflow_map_index",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1]", "[cost_provider] team_mapping must be a JSON object, got list"),
        ('{"a_*": 3}', "[cost_provider] team_mapping['a_*'] = 3 is not a team name: use text of 1 to 250"),
        ('{"a_*": " "}', "[cost_provider] team_mapping['a_*'] = ' ' is not a team name"),
        ('{" ": "ops"}', "[cost_provider] team_mapping has an empty DAG id glob"),
    ],
)
def test_a_bad_team_mapping_is_one_clear_problem(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__TEAM_MAPPING", value)
    conf.clear_cache()
    with pytest.raises(conf.ConfigError, match="team_mapping"):
        conf.team_mapping()
    problems = checks.configuration_problems()
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_team_mapping_keeps_its_order(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__TEAM_MAPPING", '{"z_*": "last-written-first", "a_*": " ops "}'
    )
    conf.clear_cache()
    assert conf.team_mapping() == (("z_*", "last-written-first"), ("a_*", "ops"))
