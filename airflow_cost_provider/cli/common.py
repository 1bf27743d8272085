"""What the commands share: periods, the ledger they read, and the output options."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.output import FORMATS, Document, render

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

UTC = dt.timezone.utc
DEFAULT_DAYS = 30


def parse_when(value: str, option: str) -> dt.datetime:
    """A date (midnight UTC) or an ISO date and time; the whole text must parse."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise CliError(
            f"{option} {value!r} is not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise CliError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


def period(args: argparse.Namespace, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[since, until): the last 30 days up to now unless given."""
    return period_of(args.since, args.until, now)


def period_of(
    since_text: str | None,
    until_text: str | None,
    now: dt.datetime | None = None,
    names: tuple[str, str] = ("--since", "--until"),
) -> tuple[dt.datetime, dt.datetime]:
    """period() of the texts given; `names` are what the messages call them (options, parameters)."""
    now = now or dt.datetime.now(UTC)
    until = parse_when(until_text, names[1]) if until_text else now
    since = parse_when(since_text, names[0]) if since_text else until - dt.timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise CliError(
            f"{names[0]} {since_text or since.isoformat()} is not before {names[1]} {until_text or until.isoformat()}"
        )
    return since, until


def day_period(args: argparse.Namespace, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """[since, until) in billing days: the last 30 days, today included, unless given."""
    return day_period_of(args.since, args.until, today)


def day_period_of(
    since_text: str | None,
    until_text: str | None,
    today: dt.date | None = None,
    names: tuple[str, str] = ("--since", "--until"),
) -> tuple[dt.date, dt.date]:
    """day_period() of the texts given, named as period_of() names them."""
    today = today or dt.datetime.now(UTC).date()
    until = parse_day(until_text, names[1]) if until_text else today + dt.timedelta(days=1)
    since = parse_day(since_text, names[0]) if since_text else until - dt.timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise CliError(f"{names[0]} {since} is not before {names[1]} {until}")
    return since, until


def show_period(since: dt.datetime, until: dt.datetime) -> str:
    def one(moment: dt.datetime) -> str:
        moment = moment.astimezone(UTC)
        return f"{moment:%Y-%m-%d}" if moment.time() == dt.time(0) else f"{moment:%Y-%m-%d %H:%M}"

    return f"{one(since)} to {one(until)} UTC (until excluded)"


def ledger_url(explicit: str | None) -> str:
    """--ledger, else [cost_provider] ledger_conn, else the default SQLite file in AIRFLOW_HOME."""
    from airflow_cost_provider import conf
    from airflow_cost_provider.ledger.store import LedgerError, normalize_url, resolve_url

    if explicit:
        return normalize_url(explicit)
    try:
        return resolve_url(conf.ledger_conn(), conf.default_ledger_url())
    except (conf.ConfigError, LedgerError) as error:
        raise CliError(str(error)) from None


def open_ledger(explicit: str | None) -> tuple[Engine, str]:
    """The engine of an existing ledger, and its URL without the password."""
    from airflow_cost_provider.ledger.store import LedgerError, open_existing, safe_url

    url = ledger_url(explicit)
    try:
        return open_existing(url), safe_url(url)
    except LedgerError as error:
        raise CliError(str(error)) from None


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        "--format",
        dest="output",
        choices=FORMATS,
        default="table",
        help="table (default), plain (aligned, no header lines), csv, json or yaml; "
        "money in csv, json and yaml is an exact decimal string",
    )
    parser.add_argument("--wide", action="store_true", help="show long ids whole instead of shortened")


def add_ledger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="SQLAlchemy URL of the ledger, e.g. sqlite:////path/cost_ledger.db or "
        "postgresql://user:password@host:5432/db (default: [cost_provider] ledger_conn, else "
        "$AIRFLOW_HOME/cost_ledger.db)",
    )


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 or more")
    return number


def emit(doc: Document, args: argparse.Namespace, hint: str | None = None) -> None:
    """Print the document; a hint for an empty result goes to stderr where the output is data."""
    print(render(doc, args.output, wide=args.wide))
    if hint and args.output != "table":
        print(hint, file=sys.stderr)
    sys.stdout.flush()
