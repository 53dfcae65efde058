"""Where each part listens unless told otherwise, the model it serves, its limits, a picture's id, and how
many cores its processes may use: the one place these are written."""

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "ViT-B/32"  # what the encoder serves unless told otherwise (OpenAI's, downloaded once)

ENCODER_PORT = 50051
SEARCH_PORT = 50052
WEB_PORT = 8080
ENCODER_METRICS_PORT = 9151
SEARCH_METRICS_PORT = 9152

ENCODER_ADDRESS = f"localhost:{ENCODER_PORT}"
SEARCH_ADDRESS = f"localhost:{SEARCH_PORT}"

# The largest request a search service accepts by default: one picture and its metadata.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024  # a picture's metadata, as `metadata_bytes` measures it
MAX_IMAGE_PIXELS = 64_000_000  # the largest width x height decoded (decompression bombs)
GRPC_LARGEST_MESSAGE = 2**31 - 1  # gRPC's ceiling on any one message
# The longest timeout a flag or a client takes (about 31 years): past about 9e9 s gRPC's deadline overflows,
# and the call failed DEADLINE_EXCEEDED at once.
LONGEST_SECONDS = 1e9

PICTURE_ID = re.compile(r"[0-9a-f]{64}")  # a picture's id: the sha256 of its bytes, in lowercase hex


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """A picture's metadata as Milvus is sent it: compact UTF-8 JSON, not json.dumps's \\uXXXX for every
    non-ASCII character."""
    return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())


def is_port(number: int, none: int | None = None) -> bool:
    """Whether `number` is a port to listen on (0: any free one), or `none` if given (the flag's "none")."""
    return 0 <= number <= 65535 or number == none


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
