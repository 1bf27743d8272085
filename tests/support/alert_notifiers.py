"""Airflow notifiers for the budget alert tests: one that records what it renders, one that raises,
one that hangs. Importable by path from a task process too (tests put the repository on PYTHONPATH)."""

from __future__ import annotations

import threading
from typing import Any

from airflow.providers.common.compat.notifier import BaseNotifier


class RecordingNotifier(BaseNotifier):
    """Keeps its rendered fields and the context it was called with."""

    template_fields = ("subject", "text", "channel")
    received: list[dict[str, Any]] = []

    def __init__(self, subject: str = "", text: str = "", channel: str = "#cost") -> None:
        super().__init__()
        self.subject = subject
        self.text = text
        self.channel = channel

    def notify(self, context: Any) -> None:
        RecordingNotifier.received.append(
            {"subject": self.subject, "text": self.text, "channel": self.channel, "context": context}
        )


class RaisingNotifier(BaseNotifier):
    """Fails the way a notifier whose service refuses the request does; the message holds a URL with
    credentials, which must not reach the ledger."""

    def __init__(self, token: str = "s3cr3t-token") -> None:
        super().__init__()
        self.token = token

    def notify(self, context: Any) -> None:
        raise RuntimeError(
            f"chat service refused {context['budget']}: https://bot:{self.token}@chat.example.com/api/post?key=abc"
        )


class HangingNotifier(BaseNotifier):
    """Never answers (until released, so a test does not leave it running for long)."""

    release = threading.Event()
    started = threading.Event()

    def notify(self, context: Any) -> None:
        HangingNotifier.started.set()
        HangingNotifier.release.wait(30)


class NotANotifier:
    """A class at a valid import path that is not a BaseNotifier."""
