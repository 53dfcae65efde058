"""How many cores the services size their process pools by: the affinity, capped by a container's quota."""

import os
from pathlib import Path

from imagesearch.cores import available_cores, cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"cpu.max": "250000 100000\n"})
    assert cpu_quota(root) == 2.5
    assert available_cores(cgroup(tmp_path / "half", {"cpu.max": "50000 100000\n"})) == 1
    assert available_cores(root) == min(AFFINITY, 3)


def test_a_cgroup_v1_quota_caps_the_cores(tmp_path: Path) -> None:
    root = cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cpu_quota(root) == 1.0
    assert available_cores(root) == 1


def test_without_a_quota_every_core_of_the_affinity_counts(tmp_path: Path) -> None:
    unlimited = {
        "v2": {"cpu.max": "max 100000\n"},
        "v1": {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
        "none": {},
        "unreadable": {"cpu.max": "garbage\n"},
    }
    for name, files in unlimited.items():
        root = cgroup(tmp_path / name, files)
        root.mkdir(exist_ok=True)
        assert cpu_quota(root) is None, name
        assert available_cores(root) == AFFINITY, name
