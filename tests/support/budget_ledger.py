"""Budgets and spend for the alert tests: budgets from YAML text, daily totals in a real ledger, and a
real SMTP server (aiosmtpd) on 127.0.0.1 that keeps the mail it receives."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa

from airflow_cost_provider.budgets.model import Budget, parse_budgets
from airflow_cost_provider.ledger.schema import NANOS_PER_UNIT, budget_alerts, daily_totals
from tests.support.http_recorder import closed_port


def budgets(text: str) -> list[Budget]:
    return parse_budgets(textwrap.dedent(text), "budgets.yaml")


def add_spend(
    engine: sa.Engine,
    day: dt.date,
    amount: str,
    dag_id: str = "daily_sales",
    task_id: str = "load",
    currency: str = "USD",
    source: str = "airflow_worker",
) -> None:
    """Add to a day's total the way the ledger's writer keeps it (one row per day and attribution)."""
    key = {
        "day": day,
        "dag_id": dag_id,
        "task_id": task_id,
        "owner": "",
        "team": "",
        "source": source,
        "currency": currency,
    }
    nanos = int(Decimal(amount) * NANOS_PER_UNIT)
    with engine.begin() as conn:
        where = [daily_totals.c[name] == value for name, value in key.items()]
        updated = conn.execute(
            daily_totals.update()
            .where(*where)
            .values(amount_nanos=daily_totals.c.amount_nanos + nanos, lines=daily_totals.c.lines + 1)
        ).rowcount
        if not updated:
            conn.execute(daily_totals.insert().values(**key, amount_nanos=nanos, lines=1, unpriced=0))


def alert_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(budget_alerts).order_by(budget_alerts.c.id)
        return [dict(row._mapping) for row in conn.execute(query)]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    """A real SMTP server on 127.0.0.1: (its inbox, its port)."""
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=closed_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def smtp_connection(port: int) -> str:
    """An Airflow SMTP connection to the test server, as an AIRFLOW_CONN_... value (no TLS, no login)."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0},
        }
    )
