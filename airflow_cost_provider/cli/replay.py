"""`airflow-cost replay`: write the captures that wait in this machine's spool to the ledger."""

from __future__ import annotations

import argparse
import time

from airflow_cost_provider.cli import CliError
from airflow_cost_provider.cli.common import add_ledger_option, add_output_options, emit, ledger_url
from airflow_cost_provider.cli.output import Document

# A task try replays a few captures at a time; waiting this long for it is enough.
BUSY_WAIT_SECONDS = 10.0
WRITE_TIMEOUT_SECONDS = 30.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser(
        "replay",
        help="write the captures spooled on this machine while the ledger was unreachable",
        description="Write every capture in the spool (captures the ledger did not take within "
        "finalize_timeout) to the ledger, oldest first, removing each once written. A capture already "
        "in the ledger is not written twice. Says how many were written and how many remain; exit "
        "status 1 when some could not be written.",
    )
    replay.add_argument(
        "--spool",
        metavar="DIR",
        help="the spool folder (default: [cost_provider] spool_dir, else $AIRFLOW_HOME/cost_spool)",
    )
    add_ledger_option(replay)
    add_output_options(replay)
    replay.set_defaults(handler=run)


def spool_for(explicit: str | None):
    from airflow_cost_provider import conf
    from airflow_cost_provider.capture.spool import Spool

    try:
        return Spool(explicit or conf.spool_dir(), conf.spool_max_mb() * 1024 * 1024)
    except conf.ConfigError as error:
        raise CliError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    from airflow_cost_provider.capture.spool import writer_for
    from airflow_cost_provider.ledger.store import get_engine, safe_url

    spool = spool_for(args.spool)
    waiting = spool.count()
    url = ledger_url(args.ledger)
    shown_url = safe_url(url)
    if waiting:
        try:
            engine = get_engine(url, timeout=WRITE_TIMEOUT_SECONDS)
        except Exception as error:
            reason = " ".join(str(getattr(error, "orig", None) or error).split())
            raise CliError(
                f"ledger {shown_url} cannot be written: {type(error).__name__}: {reason}; "
                f"{waiting} capture(s) remain in {spool.directory}",
                status=1,
            ) from None

        write = writer_for(engine)

        waited_until = time.monotonic() + BUSY_WAIT_SECONDS
        while (outcome := spool.replay(write)).busy and time.monotonic() < waited_until:
            time.sleep(0.2)
        if outcome.busy:
            raise CliError(
                f"another process is writing the spool {spool.directory} now: try again in a moment",
                status=1,
            )
    else:
        from airflow_cost_provider.capture.spool import ReplayOutcome

        outcome = ReplayOutcome()
    summary = f"wrote {outcome.written} capture(s), {outcome.remaining} remain"
    if outcome.failed:
        summary += f" ({len(outcome.failed)} failed: {outcome.failed[0][1]})"
    doc = Document(
        meta={"spool": str(spool.directory), "ledger": shown_url},
        head={"spool": str(spool.directory), "ledger": shown_url},
        columns=["file", "why not written"],
        rows=[[name, why] for name, why in outcome.failed],
        notes=[summary],
        extra={"written": outcome.written, "remaining": outcome.remaining, "failed": len(outcome.failed)},
        empty="(every spooled capture written)" if waiting else "(the spool is empty)",
    )
    emit(doc, args, summary)  # the summary on stderr too where the output is data
    return 1 if outcome.failed else 0
