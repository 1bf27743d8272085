"""What the task process itself used: CPU seconds, wall seconds and peak resident memory.

Samples are taken by process id, so a forked child (the OpenLineage listener emits from one) measures
its parent, which is blocked waiting for it, rather than its own fresh counters.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import socket
import time
from dataclasses import dataclass
from decimal import Decimal

import psutil

from airflow_cost_provider.pricing.estimate import METHOD_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

SOURCE = "airflow_worker"
_GIB = Decimal(2) ** 30


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    cpu_seconds: float  # user + system, of the process and of the children it has waited for
    peak_rss_bytes: int | None
    monotonic: float
    at: dt.datetime


def _peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water resident set size (VmHWM on Linux)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if pid == os.getpid():
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def sample(pid: int | None = None) -> ProcessSample:
    pid = pid or os.getpid()
    if pid == os.getpid():
        times = os.times()  # the same counters as psutil's, without opening /proc
        cpu = times.user + times.system + times.children_user + times.children_system
    else:
        other = psutil.Process(pid).cpu_times()
        cpu = other.user + other.system + other.children_user + other.children_system
    return ProcessSample(pid, cpu, _peak_rss_bytes(pid), time.monotonic(), dt.datetime.now(dt.timezone.utc))


def _seconds(value: float) -> Decimal:
    return Decimal(str(round(max(value, 0.0), 6)))


def usage_between(start: ProcessSample, end: ProcessSample) -> list[Usage]:
    """CPU time as vCPU-seconds; memory as peak GiB held for the wall time, in GiB-seconds."""
    wall = _seconds(end.monotonic - start.monotonic)
    cpu = _seconds(end.cpu_seconds - start.cpu_seconds)
    host = socket.gethostname()
    common = {"start_time": start.at, "end_time": end.at, "resource": host}
    method = {METHOD_ATTRIBUTE: "runtime_rate"}
    usages = [
        Usage(
            SOURCE,
            "cpu_time",
            cpu,
            "vCPU-second",
            attributes={"wall_seconds": str(wall), "pid": start.pid, **method},
            **common,
        )
    ]
    if end.peak_rss_bytes is not None:
        peak_gib = Decimal(end.peak_rss_bytes) / _GIB
        usages.append(
            Usage(
                SOURCE,
                "memory_time",
                (peak_gib * wall).quantize(Decimal("1e-9")),
                "GiB-second",
                attributes={"peak_rss_bytes": end.peak_rss_bytes, "wall_seconds": str(wall), **method},
                **common,
            )
        )
    return usages
