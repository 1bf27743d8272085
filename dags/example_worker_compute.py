"""Worker compute: what the Airflow worker itself spends on a small Python pipeline.

Cost: each task's CPU seconds (user + system) priced per vCPU-hour, and its peak resident memory held
for its wall time priced per GiB-hour ([cost_provider] worker_vcpu_hour_rate and
worker_memory_gib_hour_rate; defaults are AWS Fargate us-east-1 list prices). Measured by the cost
listener from the task process's own counters; method `runtime_rate`. Needs no cloud account.
"""

from __future__ import annotations

import hashlib

import pendulum
from airflow.sdk import dag, task


def _burn_cpu(seconds_of_hashing: int) -> str:
    digest = b"airflow"
    for _ in range(seconds_of_hashing * 400_000):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "example", "local"],
)
def example_worker_compute():
    @task
    def list_partitions() -> list[str]:
        return ["eu", "us", "apac"]

    @task
    def transform_partition(partition: str) -> int:
        return len(_burn_cpu(1)) + len(partition)

    @task
    def build_report(sizes: list[int]) -> int:
        return sum(sizes)

    build_report(transform_partition.expand(partition=list_partitions()))


example_worker_compute()
