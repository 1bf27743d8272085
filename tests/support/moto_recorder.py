"""What the moto server of this process answered, faults it is told to inject, and a clean start.

The moto server runs in the test process (`tests.support.fake_aws.moto_server`), so wrapping moto's
`BaseResponse.call_action` here sees every request `airflow dags test` sends it: the service, the
action, the request body or path, and the client's user agent (the cost provider's own look-ups say
`airflow-cost-provider/<version>` in theirs). A fault answers a matching request with an HTTP error in
the service's own error shape, or holds it before answering.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

COST_PROVIDER_AGENT = "airflow-cost-provider/"


def reset_moto(url: str) -> None:
    """Forget every resource: moto keeps its state per process, across servers and test modules."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass(frozen=True)
class Call:
    service: str
    action: str
    body: dict[str, Any]
    path: str
    user_agent: str

    @property
    def by_cost_provider(self) -> bool:
        return COST_PROVIDER_AGENT in self.user_agent

    def mentions(self, text: str) -> bool:
        return text in self.path or text in json.dumps(self.body)


@dataclass(frozen=True)
class Fault:
    action: str
    when: Callable[[Call], bool]
    status: int = 500
    delay_seconds: float = 0.0


@dataclass
class MotoRecorder:
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, action: str, when: Callable[[Call], bool], status: int = 500) -> None:
        """Answer matching `action` requests with `status` and an InternalServerException."""
        self.faults.append(Fault(action, when, status=status))

    def stall(self, action: str, when: Callable[[Call], bool], seconds: float) -> None:
        """Hold matching `action` requests for `seconds` before answering them."""
        self.faults.append(Fault(action, when, status=0, delay_seconds=seconds))

    def calls_of(
        self, action: str, service: str | None = None, by_cost_provider: bool | None = None
    ) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.action == action
                and (service is None or c.service == service)
                and (by_cost_provider is None or c.by_cost_provider == by_cost_provider)
            ]

    def cost_provider_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.by_cost_provider]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    @contextmanager
    def installed(self) -> Iterator[MotoRecorder]:
        from moto.core.responses import BaseResponse

        recorder = self
        original = BaseResponse.call_action

        def call_action(response: Any):
            call = recorder._call_of(response)
            if call is not None:
                with recorder._lock:
                    recorder.calls.append(call)
                for fault in recorder.faults:
                    if fault.action == call.action and fault.when(call):
                        if fault.delay_seconds:
                            time.sleep(fault.delay_seconds)
                        if fault.status:
                            return _error(fault.status)
            return original(response)

        BaseResponse.call_action = call_action
        try:
            yield self
        finally:
            BaseResponse.call_action = original

    @staticmethod
    def _call_of(response: Any) -> Call | None:
        try:
            action = response._get_action()
        except Exception:
            return None
        body: Any = getattr(response, "body", None) or "{}"
        try:
            parsed = json.loads(body if isinstance(body, str) else body.decode())
        except (ValueError, UnicodeDecodeError, AttributeError):
            parsed = {
                k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in response.querystring.items()
            }
        return Call(
            service=str(response.service_name or ""),
            action=str(action or ""),
            body=parsed if isinstance(parsed, dict) else {},
            path=str(getattr(response, "path", "")),
            user_agent=str(response.headers.get("User-Agent", "")),
        )


def _error(status: int) -> tuple[int, dict[str, str], str]:
    body = json.dumps({"__type": "InternalServerException", "message": "injected by the test"})
    return status, {"x-amzn-ErrorType": "InternalServerException", "content-type": "application/json"}, body
