"""Delivering one budget alert to one notify target: a plain webhook, or any Airflow notifier.

A webhook gets the alert as JSON (a Slack-compatible `text` plus the structured fields). A notifier is
an Airflow `BaseNotifier` subclass named by import path, built with the target's args and called the
way Airflow calls notifiers, `notifier(context)`, with the alert in the context for its templates.

Every delivery runs on a thread of its own and is waited for at most `timeout` seconds: a hanging
notifier or a server that drips its answer never holds the caller longer. A failed delivery raises
DeliveryError, whose message carries no URL path, query or credentials.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from airflow_cost_provider.version import __version__

# One delivery at most; at task end the caller gives less when less of finalize_timeout is left.
NOTIFY_TIMEOUT_SECONDS = 10.0
MAX_ERROR_LENGTH = 500
CHANNEL_LENGTH = 250  # cost_budget_alerts.channel

# A notifier parameter the user left out that carries the message gets the alert's own text, as a
# template of the context (the notifier renders its template fields; the alert's text is never
# parsed as Jinja itself). Only for parameters the notifier templates.
MESSAGE_ARGS = {
    "subject": "{{ alert_subject }}",  # SmtpNotifier
    "title": "{{ alert_subject }}",
    "html_content": "{{ alert_html }}",  # SmtpNotifier
    "text": "{{ alert_text }}",  # Slack notifiers
    "message": "{{ alert_text }}",
    "body": "{{ alert_text }}",
}


class DeliveryError(RuntimeError):
    """A delivery that failed or did not finish in time; the message is safe to log and keep."""


def channel(target: Any) -> str:
    """The target as the ledger names it: `webhook:<host>` or the notifier's import path, with a short
    digest of the URL or args so two targets on one host (two Slack channels) are told apart. Never
    the URL's path or the args themselves: a webhook's path is often its secret."""
    if target.kind == "webhook":
        host = urllib.parse.urlsplit(target.url or "").hostname or "?"
        name, identity = f"webhook:{host}", target.url or ""
    else:
        name, identity = target.path or "?", json.dumps(target.args or {}, sort_keys=True, default=str)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    return f"{name[: CHANNEL_LENGTH - 9]}#{digest}"


def deliver(target: Any, alert: dict[str, Any], timeout: float) -> None:
    """Send `alert` (the payload, see budgets.message) to `target` within `timeout` seconds.
    Raises DeliveryError."""
    secrets = _secrets(target)
    if target.kind == "webhook":
        work: Callable[[], None] = lambda: _post(target.url or "", alert, timeout)  # noqa: E731
    elif target.kind == "notifier":
        # importing it counts towards the bound too: a notifier's module may pull in a heavy SDK
        work = lambda: _notify(resolve_notifier(target.path or ""), dict(target.args or {}), alert)  # noqa: E731
    else:
        raise DeliveryError(f"unknown notify target kind {target.kind!r}")
    _run_bounded(work, timeout, secrets)


def resolve_notifier(path: str) -> type:
    """The BaseNotifier subclass at `path` (package.module.ClassName). Raises DeliveryError saying what
    is wrong: not a path, not importable, no such name, not a notifier."""
    module_name, _, name = path.rpartition(".")
    if not module_name or not name:
        raise DeliveryError(f"notifier {path!r} is not an import path like package.module.NotifierClass")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = f"no module named {error.name!r}" if error.name else str(error)
        raise DeliveryError(f"notifier {path!r} cannot be imported: {missing}") from None
    except Exception as error:  # the module itself fails on import
        raise DeliveryError(
            f"notifier {path!r} cannot be imported: {type(error).__name__}: {redacted(str(error), [])}"
        ) from None
    notifier_class = getattr(module, name, None)
    if notifier_class is None:
        raise DeliveryError(f"notifier {path!r} cannot be imported: module {module_name} has no {name!r}")
    from airflow.providers.common.compat.notifier import BaseNotifier

    if not (isinstance(notifier_class, type) and issubclass(notifier_class, BaseNotifier)):
        raise DeliveryError(f"notifier {path!r} is not an Airflow BaseNotifier subclass")
    return notifier_class


def unusable_notifiers(budgets: Iterable[Any]) -> list[str]:
    """A message per notify target whose notifier cannot be resolved here, naming the budget and the
    target (`notify #N.notifier`): its alerts could never be delivered."""
    problems = []
    for budget in budgets:
        for index, target in enumerate(budget.notify, start=1):
            if target.kind != "notifier":
                continue
            try:
                resolve_notifier(target.path or "")
            except DeliveryError as error:
                problems.append(f"{budget.origin}: notify #{index}.notifier: {error}")
    return problems


def notifier_context(alert: dict[str, Any]) -> dict[str, Any]:
    """What a notifier's templates can use: every field of the alert by name (`{{ budget }}`,
    `{{ spent }}`, ...), the whole alert as `alert`, and its text as `alert_text`, `alert_subject` and
    `alert_html`."""
    from airflow_cost_provider.budgets import message

    context = dict(alert)
    context.update(
        alert=alert,
        alert_text=alert["text"],
        alert_subject=message.subject(alert),
        alert_html=message.html_body(alert),
    )
    return context


# ------------------------------------------------------------------------------------- the channels


def _post(url: str, alert: dict[str, Any], timeout: float) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DeliveryError(f"webhook URL scheme {scheme!r} is not http or https")
    request = urllib.request.Request(
        url,
        data=json.dumps(alert).encode(),
        headers={"Content-Type": "application/json", "User-Agent": f"airflow-cost-provider/{__version__}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            response.read(65536)
    except urllib.error.HTTPError as error:
        raise DeliveryError(f"webhook answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DeliveryError(f"webhook unreachable: {error.reason}") from None
    except TimeoutError:
        raise DeliveryError(f"webhook did not answer within {timeout:.1f}s") from None
    except OSError as error:
        raise DeliveryError(f"webhook failed: {type(error).__name__}: {error}") from None


def _notify(notifier_class: type, args: dict[str, Any], alert: dict[str, Any]) -> None:
    # a new notifier per delivery: rendering its template fields replaces them in place
    notifier = notifier_class(**{**_message_defaults(notifier_class, args), **args})
    notifier(notifier_context(alert))


def _message_defaults(notifier_class: type, args: dict[str, Any]) -> dict[str, str]:
    try:
        parameters = inspect.signature(notifier_class.__init__).parameters
    except (TypeError, ValueError):
        return {}
    templated = set(getattr(notifier_class, "template_fields", ()))
    return {
        name: template
        for name, template in MESSAGE_ARGS.items()
        if name in parameters and name in templated and name not in args
    }


def _run_bounded(work: Callable[[], None], timeout: float, secrets: list[str]) -> None:
    """Run `work` on a daemon thread and wait at most `timeout`; a thread still running after it is
    left behind (it cannot be stopped) and the delivery counts as failed."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # handed to the waiting caller
            failure.append(error)

    thread = threading.Thread(target=run, name="cost-budget-alert", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        raise DeliveryError(f"not done within {timeout:.1f}s")
    if failure:
        error = failure[0]
        if isinstance(error, DeliveryError):
            raise DeliveryError(redacted(str(error), secrets)) from None
        raise DeliveryError(redacted(f"{type(error).__name__}: {error}", secrets)) from None


# ------------------------------------------------------------------------------------------ secrets

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_SECRET_ARG = re.compile(r"pass|secret|token|key|auth|webhook|url", re.IGNORECASE)


def _secrets(target: Any) -> list[str]:
    """Values that must not appear in a kept error: the webhook URL, and the args that look secret."""
    values = [target.url or ""]
    for name, value in (target.args or {}).items():
        if isinstance(value, str) and _SECRET_ARG.search(name):
            values.append(value)
    return [v for v in values if len(v) >= 4]


def redacted(text: str, secrets: list[str]) -> str:
    """`text` without the given secrets, with every URL cut to its scheme and host, on one line and
    at most MAX_ERROR_LENGTH characters."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL.sub(lambda match: _origin(match.group(0)), text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = (parts.netloc.rpartition("@")[2]) or "?"
    return (
        f"{parts.scheme}://{host}/…" if parts.path.strip("/") or parts.query else f"{parts.scheme}://{host}"
    )
