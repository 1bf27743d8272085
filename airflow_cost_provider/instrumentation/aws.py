"""What the AWS instrumentations share: bounded calls for their statistics look-ups."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from airflow_cost_provider.version import __version__

USER_AGENT = f"airflow-cost-provider/{__version__}"


def as_utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class AwsCalls:
    """Calls to one AWS service within a deadline: no retries, and each call's connect and read
    timeouts fit in the time left (the client is rebuilt with shorter ones when they no longer do).
    The user agent names the provider, so its look-ups are told apart from the task's own calls
    (CloudTrail's userAgent)."""

    MAX_TIMEOUT_SECONDS = 3.0

    def __init__(self, create_client: Callable[[Any], Any], deadline: float) -> None:
        self._create_client = create_client
        self._deadline = deadline
        self._client: Any = None
        self._timeout = 0.0

    def __call__(self, operation: str, **parameters: Any) -> dict[str, Any]:
        remaining = self._deadline - time.monotonic()
        if remaining < 0.05:
            raise TimeoutError("no time left within [cost_provider] finalize_timeout")
        if self._client is None or 2 * self._timeout > remaining:
            from botocore.config import Config

            # a third of what is left: the next calls fit too, before a shorter one is needed
            self._timeout = min(self.MAX_TIMEOUT_SECONDS, remaining / 3)
            self._client = self._create_client(
                Config(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"total_max_attempts": 1},
                    user_agent_extra=USER_AGENT,
                )
            )
        return getattr(self._client, operation)(**parameters)

    @property
    def region(self) -> str | None:
        """The region the calls went to (their client's), once a call was made."""
        region = getattr(getattr(self._client, "meta", None), "region_name", None)
        return region if isinstance(region, str) and region else None


def with_region(usages: list[Any], calls: AwsCalls) -> list[Any]:
    """The usages with the region their service answered from in their attributes (what the
    console's address of a query or run needs), when known and not already there."""
    import dataclasses

    region = calls.region
    if region is None:
        return usages
    return [
        usage
        if "region" in usage.attributes
        else dataclasses.replace(usage, attributes={**usage.attributes, "region": region})
        for usage in usages
    ]


def error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
