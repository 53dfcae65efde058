"""The `imgsearch` command line as a separate process, as a user runs it, with file permissions in force."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# As root, permission bits do not stop a reader; these capabilities are what lets it past them. Without
# them, root reads and lists exactly what an ordinary user may (CI runs as root).
_WITHOUT_ROOTS_READ_PASS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def run_cli(
    *args: str, cwd: Path | None = None, stdin: int | None = subprocess.DEVNULL, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`imgsearch ARGS...` with file permissions applied as to an ordinary user."""
    command: Sequence[str] = [sys.executable, "-m", "client.cli", *args]
    if os.geteuid() == 0:
        command = [*_WITHOUT_ROOTS_READ_PASS, *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, stdin=stdin, timeout=timeout)
