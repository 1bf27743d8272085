"""AWS Glue's deferrable path without aiobotocore.

The Amazon provider's `GlueJobCompleteTrigger` polls GetJobRun with an aiobotocore client, and this
environment does not install aiobotocore (the provider's optional `aiobotocore` extra). The trigger
below is the provider's own trigger with the same fields and the same event, polling the same
GetJobRun with the synchronous client in a thread instead. `GlueJobOperatorWithoutAiobotocore` is the
provider's `GlueJobOperator` deferring to it; everything else the operator does is its own. Where
aiobotocore is installed the test DAG uses the provider's operator and trigger unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.triggers.glue import GlueJobCompleteTrigger
from airflow.triggers.base import TriggerEvent

SUCCEEDED = ("SUCCEEDED",)
ENDED_OTHERWISE = ("STOPPED", "FAILED", "TIMEOUT", "ERROR", "EXPIRED")


class GlueJobCompleteTriggerWithoutAiobotocore(GlueJobCompleteTrigger):
    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook()
        for _ in range(self.attempts):
            state = await asyncio.to_thread(hook.get_job_state, self.job_name, self.run_id)
            if state in SUCCEEDED:
                yield TriggerEvent({"status": "success", self.return_key: self.return_value})
                return
            if state in ENDED_OTHERWISE:
                message = f"{self.failure_message} {self.status_message}: {state}"
                yield TriggerEvent(
                    {"status": "error", "message": message, self.return_key: self.return_value}
                )
                return
            await asyncio.sleep(self.waiter_delay)
        yield TriggerEvent(
            {"status": "error", "message": "max attempts reached", self.return_key: self.return_value}
        )


class GlueJobOperatorWithoutAiobotocore(GlueJobOperator):
    def defer(self, *, trigger: Any, **kwargs: Any):
        _, fields = trigger.serialize()
        return super().defer(trigger=GlueJobCompleteTriggerWithoutAiobotocore(**fields), **kwargs)
