"""How many cores this process may use: its CPU affinity, within its container's CPU quota."""

import math
import os
from pathlib import Path


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def cpu_quota(cgroup: Path) -> float | None:
    """The CPUs that the cgroup mounted at `cgroup` may use in each period, where a quota is set (docker's
    --cpus, a Kubernetes CPU limit): cgroup v2's cpu.max ("200000 100000"; "max 100000" for none), or v1's
    cpu/cpu.cfs_quota_us and cpu/cpu.cfs_period_us (-1 for none). None where there is none to read."""
    v1 = cgroup / "cpu"
    words = _words(cgroup / "cpu.max") or _words(v1 / "cpu.cfs_quota_us") + _words(v1 / "cpu.cfs_period_us")
    try:
        quota, period = (int(word) for word in words)
    except ValueError:  # "max", or no such files
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity (docker's --cpuset-cpus narrows it), and no more
    than its container's CPU quota, rounded up; a quota leaves the affinity at every core of the host, and
    sizing pools by those would start many processes that the quota then starves."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))
