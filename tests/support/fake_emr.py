"""Amazon EMR on the moto server, with what moto 5.2 does not model added in the API's own shapes.

Moto keeps every EMR step RUNNING (or PENDING) with no start or end time, reports every EMR Serverless
job run as SUCCESS with zero `billedResourceUtilization`, and keeps every EMR on EKS job run RUNNING
with no `finishedAt`. Installed into the moto server of this process, this module gives the work a test
plans for (matched by its step or job run name) the outcome the service would report:

- an EMR step: its final state, and a timeline that ended `ended_ago` seconds before the step was
  added, after running `seconds`;
- an EMR Serverless job run: its final state, billed vCPU-hours, memory and storage GB-hours, and
  execution seconds;
- an EMR on EKS job run: its final state, and a `createdAt` `seconds` before its `finishedAt`.

Work the test did not plan for keeps moto's own behaviour. `age_cluster` moves a cluster's instance
groups back in time (and ends some), as if it had been up for a while.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass(frozen=True)
class StepPlan:
    seconds: float
    state: str = "COMPLETED"
    ended_ago: float = 30.0


@dataclass(frozen=True)
class ServerlessPlan:
    vcpu_hours: float
    memory_gb_hours: float
    storage_gb_hours: float
    seconds: int
    state: str = "SUCCESS"


@dataclass(frozen=True)
class EksPlan:
    seconds: float
    state: str = "COMPLETED"


def _now() -> dt.datetime:
    from moto.core.utils import utcnow

    return utcnow()


@dataclass
class FakeEmr:
    steps: dict[str, StepPlan] = field(default_factory=dict)
    serverless: dict[str, ServerlessPlan] = field(default_factory=dict)
    eks: dict[str, EksPlan] = field(default_factory=dict)

    @contextmanager
    def installed(self) -> Iterator[FakeEmr]:
        from moto.emr.models import Cluster
        from moto.emrcontainers.models import EMRContainersBackend
        from moto.emrserverless.models import EMRServerlessBackend

        fake = self
        add_steps = Cluster.add_steps
        start_serverless = EMRServerlessBackend.start_job_run
        start_eks = EMRContainersBackend.start_job_run

        def planned_steps(cluster: Any, steps: list[dict[str, Any]]) -> list[Any]:
            added = add_steps(cluster, steps)
            for step in added:
                plan = fake.steps.get(step.name)
                if plan is not None:
                    step.state = plan.state
                    step.end_date_time = _now() - dt.timedelta(seconds=plan.ended_ago)
                    step.start_date_time = step.end_date_time - dt.timedelta(seconds=plan.seconds)
            return added

        def planned_serverless_run(backend: Any, *args: Any, **kwargs: Any) -> Any:
            job_run = start_serverless(backend, *args, **kwargs)
            plan = fake.serverless.get(job_run.name)
            if plan is not None:
                job_run.state = plan.state
                job_run.total_execution_duration_seconds = plan.seconds
                job_run.billed_resource_utilization = {
                    "vCPUHour": plan.vcpu_hours,
                    "memoryGBHour": plan.memory_gb_hours,
                    "storageGBHour": plan.storage_gb_hours,
                }
            return job_run

        def planned_eks_run(backend: Any, *args: Any, **kwargs: Any) -> Any:
            job_run = start_eks(backend, *args, **kwargs)
            plan = fake.eks.get(job_run.name)
            if plan is not None:
                job_run.state = plan.state
                job_run.finished_at = _now()
                job_run.created_at = job_run.finished_at - dt.timedelta(seconds=plan.seconds)
            return job_run

        Cluster.add_steps = planned_steps
        EMRServerlessBackend.start_job_run = planned_serverless_run
        EMRContainersBackend.start_job_run = planned_eks_run
        try:
            yield self
        finally:
            Cluster.add_steps = add_steps
            EMRServerlessBackend.start_job_run = start_serverless
            EMRContainersBackend.start_job_run = start_eks


def age_cluster(cluster_id: str, up_for_seconds: float, ended_ago: dict[str, float] | None = None) -> None:
    """Make the cluster's instance groups `up_for_seconds` old; the groups of the roles in `ended_ago`
    (e.g. {"TASK": 600}) ended that many seconds ago (scaled in), as ListInstances then reports."""
    from moto.emr.models import emr_backends

    backend = emr_backends[ACCOUNT][REGION]
    now = _now()
    for group in backend.clusters[cluster_id].instance_groups:
        group.creation_date_time = group.ready_date_time = now - dt.timedelta(seconds=up_for_seconds)
        if ended_ago and group.role in ended_ago:
            group.end_date_time = now - dt.timedelta(seconds=ended_ago[group.role])
            group.state = "ENDED"
