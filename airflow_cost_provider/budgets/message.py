"""What a budget alert says: one JSON-able payload per crossed threshold, its text, subject and HTML.

The payload is what a webhook receives and what the ledger keeps: a Slack-compatible `text` and the
structured fields (money as exact decimal strings, dates as ISO text). Links go to the Airflow UI
(`[api] base_url`, which Airflow also reads from a `[webserver] base_url`) and, when the try that
crossed the threshold has an OpenLineage run id and the lineage backend's URL is known, to that run
in Marquez's API.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_cost_provider.cli.output import decimals_for

DEFAULT_AIRFLOW_URL = "http://localhost:8080"  # what Airflow links to when no base_url is set
TOP_CONTRIBUTORS = 3


@dataclass(frozen=True)
class Crossing:
    """A threshold a budget crossed in its period: its canonical key (the ledger's `threshold`), its
    kind, and what it means in words."""

    key: str
    kind: str  # actual | forecast | anomaly
    description: str


def compose(status: Any, crossing: Crossing, now: dt.datetime, task_try: Any = None) -> dict[str, Any]:
    """The alert for one crossing of `status` (a BudgetStatus), as sent and kept."""
    budget = status.budget
    currency = budget.currency
    spent = amount_in(status.spent, currency) or Decimal(0)
    forecast = amount_in(status.forecast, currency)
    percent = status.percent if status.percent is not None else spent * 100 / budget.amount
    contributors = [(str(name), amount_in(value, currency)) for name, value in status.top_contributors]
    contributors = contributors[:TOP_CONTRIBUTORS]
    period_start, period_end = day_of(status.period_start), day_of(status.period_end)
    alert: dict[str, Any] = {
        "budget": budget.name,
        "scope": budget.scope.as_dict(),
        "scope_text": budget.scope.describe(),
        "period": str(budget.period),
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),  # exclusive
        "timezone": budget.timezone,
        "threshold": crossing.key,
        "kind": crossing.kind,
        "crossed": crossing.description,
        "spent": plain(spent),
        "forecast": plain(forecast),
        "amount": plain(budget.amount),
        "currency": currency,
        "percent": percent_text(percent),
        "top_contributors": [{"name": name, "amount": plain(value)} for name, value in contributors],
        "links": links(budget, task_try),
        "task_try": _task_try_fields(task_try),
        "evaluated_at": now.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    alert["text"] = text(alert)
    return alert


# ------------------------------------------------------------------------------------ the wording


def text(alert: dict[str, Any]) -> str:
    """The alert in a few lines: Slack shows it as is (its `text`), mail and logs too."""
    money = _money_formatter(alert)
    last_day = dt.date.fromisoformat(alert["period_end"]) - dt.timedelta(days=1)
    lines = [
        f":warning: Budget {alert['budget']} ({alert['scope_text']}): {alert['crossed']}",
        f"{alert['period'].capitalize()} period {alert['period_start']} to {last_day.isoformat()} "
        f"({alert['timezone']})",
        f"Spent {money(alert['spent'])} of {money(alert['amount'])} ({alert['percent']}%)"
        + (f"; forecast {money(alert['forecast'])} by the period's end" if alert["forecast"] else ""),
    ]
    if alert["top_contributors"]:
        lines.append(
            "Top contributors: "
            + ", ".join(f"{c['name']} {money(c['amount'])}" for c in alert["top_contributors"])
        )
    for label, key in (("Airflow", "airflow"), ("Task", "task"), ("Marquez run", "marquez_run")):
        if alert["links"].get(key):
            lines.append(f"{label}: {alert['links'][key]}")
    return "\n".join(lines)


def subject(alert: dict[str, Any]) -> str:
    money = _money_formatter(alert)
    return (
        f"Budget {alert['budget']}: {alert['threshold']} crossed, {money(alert['spent'])} of "
        f"{money(alert['amount'])} ({alert['percent']}%)"
    )


def html_body(alert: dict[str, Any]) -> str:
    """The alert as a small HTML table for mail notifiers; every value escaped."""
    money = _money_formatter(alert)
    last_day = dt.date.fromisoformat(alert["period_end"]) - dt.timedelta(days=1)
    rows = [
        ("Budget", alert["budget"]),
        ("Scope", alert["scope_text"]),
        ("Period", f"{alert['period']} {alert['period_start']} to {last_day} ({alert['timezone']})"),
        ("Threshold crossed", f"{alert['threshold']}: {alert['crossed']}"),
        ("Spent", f"{money(alert['spent'])} of {money(alert['amount'])} ({alert['percent']}%)"),
        ("Forecast", money(alert["forecast"]) if alert["forecast"] else "none yet"),
    ]
    rows += [
        (f"Top contributor {i}", f"{c['name']} {money(c['amount'])}")
        for i, c in enumerate(alert["top_contributors"], 1)
    ]
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    anchors = "".join(
        f'<tr><td>{label}</td><td><a href="{html.escape(url)}">{html.escape(url)}</a></td></tr>'
        for label, url in (
            ("Airflow", alert["links"].get("airflow")),
            ("Task", alert["links"].get("task")),
            ("Marquez run", alert["links"].get("marquez_run")),
        )
        if url
    )
    return f'<html><body><table role="presentation">{cells}{anchors}</table></body></html>'


def _money_formatter(alert: dict[str, Any]):
    currency = alert["currency"]

    def money(value: str | None) -> str:
        """1,012.40 USD, 0.000012 USD: two decimals, more when the amount has them, exact."""
        if value is None:
            return "unpriced"
        amount = Decimal(value)
        return f"{amount:,.{decimals_for([amount])}f} {currency}"

    return money


# ------------------------------------------------------------------------------------ the fields


def amount_in(value: Any, currency: str) -> Decimal | None:
    """A money value of the status in the budget's currency (a Decimal, or a {currency: Decimal})."""
    if value is None:
        return None
    if isinstance(value, dict):
        found = value.get(currency)
        return None if found is None else Decimal(found)
    return Decimal(value)


def plain(value: Decimal | None) -> str | None:
    """Exact fixed-point money text, never an exponent: at least two decimals, more when the amount
    has them (to the nano-unit): 90.00, 1200.00, 0.000012."""
    if value is None:
        return None
    exponent = Decimal(value).normalize().as_tuple().exponent
    decimals = min(9, max(2, -exponent)) if isinstance(exponent, int) else 2
    return f"{Decimal(value):.{decimals}f}"


def percent_text(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.1')):f}"


def day_of(value: dt.date | dt.datetime) -> dt.date:
    """A period bound as a date: a datetime (aware, in the budget's time zone) gives its own date."""
    return value.date() if isinstance(value, dt.datetime) else value


def _task_try_fields(task_try: Any) -> dict[str, Any] | None:
    if task_try is None:
        return None
    return {
        "dag_id": task_try.dag_id,
        "task_id": task_try.task_id,
        "run_id": task_try.run_id,
        "map_index": task_try.map_index,
        "try_number": task_try.try_number,
        "openlineage_run_id": task_try.ol_run_id,
    }


# ------------------------------------------------------------------------------------ the links


def links(budget: Any, task_try: Any = None) -> dict[str, str]:
    """The Airflow UI (the DAG's page when the scope is one DAG), the task try that crossed the
    threshold, and its run in Marquez."""
    base = airflow_base_url()
    found = {"airflow": base}
    dag_id = getattr(budget.scope, "dag_id", None)
    if dag_id:
        found["airflow"] = f"{base}/dags/{urllib.parse.quote(dag_id, safe='')}"
    if task_try is not None:
        quote = urllib.parse.quote
        mapped = f"/mapped/{task_try.map_index}" if task_try.map_index >= 0 else ""
        found["task"] = (
            f"{base}/dags/{quote(task_try.dag_id, safe='')}/runs/{quote(task_try.run_id, safe='')}"
            f"/tasks/{quote(task_try.task_id, safe='')}{mapped}?try_number={task_try.try_number}"
        )
        marquez = marquez_url()
        if task_try.ol_run_id and marquez:
            found["marquez_run"] = f"{marquez}/api/v1/jobs/runs/{task_try.ol_run_id}"
    return found


def airflow_base_url() -> str:
    """Airflow's own setting for the links it makes: `[api] base_url` (Airflow reads a `[webserver]
    base_url` left from Airflow 2 as this one)."""
    try:
        from airflow.providers.common.compat.sdk import conf

        url = conf.get("api", "base_url", fallback=None)
    except Exception:
        url = None
    return _without_credentials(url or DEFAULT_AIRFLOW_URL)


def marquez_url() -> str | None:
    """The OpenLineage HTTP backend (Marquez) the events go to: `[openlineage] transport` of type
    http, else OPENLINEAGE_URL. None when there is none."""
    url = None
    try:
        from airflow.providers.openlineage import conf as openlineage_conf

        transport = openlineage_conf.transport()
        if transport.get("type") == "http":
            url = transport.get("url")
    except Exception:  # OpenLineage's settings unreadable: no link, nothing else lost
        url = None
    url = url or os.environ.get("OPENLINEAGE_URL")
    return _without_credentials(url) if url else None


def _without_credentials(url: str) -> str:
    """scheme://host[:port][/path] of a URL: no user, password, query or fragment."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
