"""The Costs page in a headless Chromium (Debian's chromium and chromedriver, driven by Selenium),
served by a real `airflow api-server` whose ledger a real `airflow dags test` run filled: what the
page shows is what `airflow-cost report -o json` prints, it opens inside Airflow's own UI, and a task
instance's Cost tab lists its try's lines. Screenshots go to the test's temporary folder, and to
$COST_ARTIFACTS_DIR when it is set."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LOAD_TIMEOUT = 60


def _period() -> tuple[str, str]:
    today = dt.datetime.now(dt.timezone.utc).date()
    return (today - dt.timedelta(days=2)).isoformat(), (today + dt.timedelta(days=2)).isoformat()


def _cli(env: dict[str, str], *args: str) -> dict:
    binary = Path(sys.executable).with_name("airflow-cost")
    done = subprocess.run(
        [str(binary), *args, "-o", "json"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def browser(api_server):
    """Chromium signed in to Airflow as admin: the UI's own `_token` cookie, holding a JWT from
    Airflow's /auth/token, as a user who signed in through the login page has."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), f"{path} missing: run scripts/setup.sh --test-servers"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for or download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(f"{api_server.base}/api/v2/monitor/health")
        driver.add_cookie({"name": "_token", "value": api_server.token("admin"), "path": "/"})
        yield driver
    finally:
        driver.quit()


def _loaded(driver) -> str:
    WebDriverWait(driver, LOAD_TIMEOUT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "loading"
    )
    state = driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    error = driver.find_element(By.ID, "error").text
    assert state == "ready", error
    return state


def _budgets_shown(driver) -> None:
    WebDriverWait(driver, LOAD_TIMEOUT).until(
        lambda d: d.find_element(By.ID, "budgets-section").get_attribute("data-state") != "loading"
    )


def _cells(driver, rows: str) -> list[list]:
    return [row.find_elements(By.TAG_NAME, "td") for row in driver.find_elements(By.CSS_SELECTOR, rows)]


def _keep(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if artifacts := os.environ.get("COST_ARTIFACTS_DIR"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)
    return shot


def test_the_page_shows_the_dags_and_totals_the_cli_reports(api_server, browser, tmp_path):
    since, until = _period()
    browser.get(f"{api_server.base}/cost/?since={since}&until={until}")
    _loaded(browser)

    by_dag = _cli(api_server.env, "report", "--by", "dag", "--since", since, "--until", until)
    shown = [
        (
            row.get_attribute("data-dag"),
            cell.get_attribute("data-amount"),
            cell.get_attribute("data-currency"),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#top-dags tbody tr")
        for cell in row.find_elements(By.CSS_SELECTOR, "td.amount")
    ]
    assert shown == [(row["dag_id"], row["amount"], row["currency"]) for row in by_dag["rows"]]
    assert "cost_attribution" in browser.find_element(By.ID, "top-dags").text
    totals = [
        (box.get_attribute("data-amount"), box.get_attribute("data-currency"))
        for box in browser.find_elements(By.CSS_SELECTOR, "#total .amount")
    ]
    assert totals == [(row["amount"], row["currency"]) for row in by_dag["total"] if row["currency"]]
    assert Decimal(totals[0][0]) > 0

    by_task = _cli(
        api_server.env, "report", "--by", "task", "--since", since, "--until", until, "--top", "10"
    )
    tasks = [
        (
            row.get_attribute("data-task"),
            row.find_element(By.CSS_SELECTOR, "td.amount").get_attribute("data-amount"),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#top-tasks tbody tr")
    ]
    assert tasks == [(row["task_id"], row["amount"]) for row in by_task["rows"]]

    # drawn by plotly.js (its SVG), the DAG view on the costliest DAG, the period in the form
    for chart in ("daily-chart", "runs-chart", "team-chart", "owner-chart", "source-chart"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} .main-svg"), chart
    assert browser.find_element(By.ID, "dag-name").text == by_dag["rows"][0]["dag_id"]
    assert browser.find_element(By.NAME, "since").get_attribute("value") == since
    # budgets come after the rest (evaluating them takes longest): here the API's 404, no budgets file
    _budgets_shown(browser)
    assert "no budgets file" in browser.find_element(By.ID, "budgets-note").text
    # no bill imported for this ledger: the reconciled bill's section says what to run
    assert "nothing reconciled" in browser.find_element(By.ID, "coverage-note").text
    _keep(browser, tmp_path, "costs-page.png")


def test_a_filter_in_the_url_narrows_the_page(api_server, browser):
    since, until = _period()
    browser.get(f"{api_server.base}/cost/?since={since}&until={until}&source=airflow_worker&stack=team")
    _loaded(browser)
    only_worker = _cli(
        api_server.env,
        "report",
        "--by",
        "dag",
        "--since",
        since,
        "--until",
        until,
        "--source",
        "airflow_worker",
    )
    totals = [
        box.get_attribute("data-amount") for box in browser.find_elements(By.CSS_SELECTOR, "#total .amount")
    ]
    assert totals == [row["amount"] for row in only_worker["total"] if row["currency"]]
    assert browser.find_element(By.ID, "stack-name").text == "team"
    assert browser.find_element(By.NAME, "source").get_attribute("value") == "airflow_worker"


def test_bad_input_in_the_url_shows_the_apis_message(api_server, browser):
    browser.get(f"{api_server.base}/cost/?since=2026-12-01&until=2026-11-01")
    WebDriverWait(browser, LOAD_TIMEOUT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error"
    )
    assert "since 2026-12-01 is not before until 2026-11-01" in browser.find_element(By.ID, "error").text


def test_the_page_opens_inside_airflows_ui(api_server, browser, tmp_path):
    """Through the navigation's address, with a view's period: Airflow's UI keeps the page's own
    path and query after /plugin/costs, so a view inside the UI can be shared too."""
    since, until = _period()
    browser.get(f"{api_server.base}/plugin/costs/cost/?since={since}&until={until}")
    frame = WebDriverWait(browser, LOAD_TIMEOUT).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Costs']"))
    )
    browser.switch_to.frame(frame)
    try:
        _loaded(browser)
        assert "cost_attribution" in browser.find_element(By.ID, "top-dags").text
        assert browser.find_element(By.NAME, "since").get_attribute("value") == since
        _budgets_shown(browser)
    finally:
        browser.switch_to.default_content()
    _keep(browser, tmp_path, "costs-in-airflow-ui.png")


def test_the_cost_tab_of_a_task_instance_lists_its_lines(api_server, browser, tmp_path):
    since, until = _period()
    tries = _cli(api_server.env, "report", "--by", "try", "--since", since, "--until", until)["rows"]
    extract = next(row for row in tries if row["task_id"] == "extract")
    # the tab's URL as Airflow's UI fills it in (ids URL-encoded; {MAP_INDEX} left as is, not mapped)
    browser.get(
        f"{api_server.base}/cost/task-instance?dag_id=cost_attribution&run_id={quote(extract['run_id'], safe='')}"
        "&task_id=extract&map_index={MAP_INDEX}"
    )
    _loaded(browser)
    sources = {
        row.get_attribute("data-source") for row in browser.find_elements(By.CSS_SELECTOR, "#lines tbody tr")
    }
    assert sources == {"airflow_worker"}
    (total,) = browser.find_elements(By.CSS_SELECTOR, "#total .amount")
    # the same amount; the report writes it at its column's precision (trailing zeros may differ)
    assert (Decimal(total.get_attribute("data-amount")), total.get_attribute("data-currency")) == (
        Decimal(extract["amount"]),
        extract["currency"],
    )
    lines = api_server.get(
        "/cost/api/task-instance",
        token=api_server.token("admin"),
        dag_id="cost_attribution",
        task_id="extract",
        run_id=extract["run_id"],
    ).json()["lines"]
    usage = [cells[1].text for cells in _cells(browser, "#lines tbody tr")]
    assert usage == [f"{line['quantity']} {line['unit']} ({line['metric']})" for line in lines]
    _keep(browser, tmp_path, "cost-tab.png")


def _ledger_total_of_run(env: dict[str, str], dag_id: str, run_id: str) -> dict[str, Decimal]:
    """The run's money per currency read straight from the ledger's tables (nano-units summed)."""
    import sqlalchemy as sa

    engine = sa.create_engine(env["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT l.currency, SUM(l.amount_nanos) FROM cost_lines l JOIN cost_task_runs t "
                    "ON t.id = l.task_run_id WHERE t.dag_id = :dag AND t.run_id = :run "
                    "AND l.amount_nanos IS NOT NULL GROUP BY l.currency"
                ),
                {"dag": dag_id, "run": run_id},
            ).all()
    finally:
        engine.dispose()
    return {currency: Decimal(nanos) / 10**9 for currency, nanos in rows}


def test_the_cost_tab_of_a_dag_run_shows_its_tasks_lines_and_total(api_server, browser, tmp_path):
    since, until = _period()
    (run,) = _cli(
        api_server.env,
        "report",
        "--by",
        "run",
        "--dag",
        "cost_attribution",
        "--since",
        since,
        "--until",
        until,
    )["rows"]
    run_id = run["run_id"]
    # the tab's URL as Airflow's UI fills it in (ids URL-encoded)
    browser.get(f"{api_server.base}/cost/dag-run?dag_id=cost_attribution&run_id={quote(run_id, safe='')}")
    _loaded(browser)
    (total,) = browser.find_elements(By.CSS_SELECTOR, "#total .amount")
    shown_total = (Decimal(total.get_attribute("data-amount")), total.get_attribute("data-currency"))
    # the ledger's own sum of the run's lines, and the CLI's report of the run
    assert shown_total == (_ledger_total_of_run(api_server.env, "cost_attribution", run_id)["USD"], "USD")
    by_task = _cli(
        api_server.env,
        "report", "--by", "task", "--dag", "cost_attribution", "--run", run_id, "--since", since, "--until", until,
    )  # fmt: skip
    assert [(row["currency"], Decimal(row["amount"])) for row in by_task["total"] if row["currency"]] == [
        ("USD", shown_total[0])
    ]
    tasks = [
        (
            row.get_attribute("data-task"),
            row.find_element(By.CSS_SELECTOR, "td.amount").get_attribute("data-amount"),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")
    ]
    assert tasks == [(row["task_id"], row["amount"]) for row in by_task["rows"]]
    assert {task for task, _ in tasks} >= {"extract"}
    # every try's lines, each with its usage in its unit, as the API lists them
    tries = api_server.get(
        "/cost/api/dag-run", token=api_server.token("admin"), dag_id="cost_attribution", run_id=run_id
    ).json()["tries"]
    expected = [
        (found["task_id"], f"{line['quantity']} {line['unit']} ({line['metric']})")
        for found in tries
        for line in found["lines"]
    ]
    shown = [(cells[0].text, cells[3].text) for cells in _cells(browser, "#lines tbody tr")]
    assert shown == expected and len(shown) >= 2
    _keep(browser, tmp_path, "run-cost-tab.png")

    # and inside Airflow's UI: the run's "Cost" tab, in its frame
    browser.get(f"{api_server.base}/dags/cost_attribution/runs/{quote(run_id, safe='')}/plugin/run_cost")
    frame = WebDriverWait(browser, LOAD_TIMEOUT).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Cost']"))
    )
    browser.switch_to.frame(frame)
    try:
        _loaded(browser)
        (framed,) = browser.find_elements(By.CSS_SELECTOR, "#total .amount")
        assert Decimal(framed.get_attribute("data-amount")) == shown_total[0]
    finally:
        browser.switch_to.default_content()
