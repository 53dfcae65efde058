"""Where each part listens unless told otherwise, and how many cores its processes may use: the one place
these are written."""

import os

ENCODER_PORT = 50051
SEARCH_PORT = 50052
WEB_PORT = 8080
ENCODER_METRICS_PORT = 9151
SEARCH_METRICS_PORT = 9152

ENCODER_ADDRESS = f"localhost:{ENCODER_PORT}"
SEARCH_ADDRESS = f"localhost:{SEARCH_PORT}"

# The largest request a search service accepts by default: one picture and its metadata.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's limits narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
