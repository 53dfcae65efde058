"""A service that cannot start says why in one line, and exits non-zero: never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from client.local import free_port
from search_service.__main__ import first_version_setting
from search_service.config import parse_args as search_flags
from search_service.store import Store


def start_encoder(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "encoder_service", "--port", "0", "--metrics-port", "-1", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_a_model_that_cannot_be_downloaded_says_to_pass_a_checkpoint(tmp_path: Path) -> None:
    # Every download goes to a proxy that is not there: the quickest way to be offline.
    offline = {**os.environ, "https_proxy": "http://127.0.0.1:1", "HTTPS_PROXY": "http://127.0.0.1:1"}
    done = start_encoder("--model", "ViT-B/32", "--model-cache", str(tmp_path), env=offline)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "encoder_service: cannot download ViT-B/32" in done.stderr
    assert "offline, pass --model PATH to a checkpoint file" in done.stderr


def test_a_model_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    done = start_encoder("--model", str(tmp_path / "missing.pt"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pkg_resources" not in done.stderr  # clip's import of it warned, a line of the log not JSON
    assert f"--model '{tmp_path / 'missing.pt'}' is neither a checkpoint file nor one of" in done.stderr


def test_a_model_file_that_is_no_clip_checkpoint_is_named(tiny_path: Path, tmp_path: Path) -> None:
    truncated, not_clip, text = tmp_path / "truncated.pt", tmp_path / "not_clip.pt", tmp_path / "notes.txt"
    truncated.write_bytes(tiny_path.read_bytes()[:3000])
    torch.save({"weight": torch.zeros(2)}, not_clip)
    text.write_text("not a model")
    for path in (truncated, not_clip, text):
        done = start_encoder("--model", str(path))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"encoder_service: --model {path}: not a CLIP checkpoint" in done.stderr
    # torch's own words advised loading it again with weights_only off, which runs any code the file holds
    assert "(neither a TorchScript archive nor a state dict of tensors)" in done.stderr
    assert "weights_only" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the CUDA device the test asks for")
def test_a_device_that_is_not_there_is_named(tiny_path: Path) -> None:
    done = start_encoder("--model", str(tiny_path), "--device", "cuda")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "encoder_service: --device cuda was asked for, but torch sees no CUDA device" in done.stderr


def start_search(*flags: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "search_service", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("uri", ["/data/milvus.db", "./milvus.db", "localhost:19530", "http://milvus:99999"])
def test_a_milvus_uri_that_pymilvus_cannot_read_is_named(uri: str) -> None:
    # pymilvus parses MILVUS_URI on import and raised a traceback before any of the service's code ran.
    done = start_search("--help", env={**os.environ, "MILVUS_URI": uri})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"search_service: MILVUS_URI={uri}: pymilvus reads MILVUS_URI itself and takes only a URL "
        "(http://host:19530); name a Milvus Lite file with --milvus-uri or SEARCH_MILVUS_URI\n"
    )


def test_a_first_version_milvus_variable_that_says_otherwise_stops_the_start(tmp_path: Path) -> None:
    """The first version read MILVUS_URI, MILVUS_TOKEN and MILVUS_TIMEOUT_S; its deployments still set them.
    Ignored, the service started on a new, empty Milvus Lite file and said it was healthy."""
    first_version = {
        **{name: value for name, value in os.environ.items() if not name.startswith("SEARCH_")},
        "MILVUS_URI": "http://milvus.internal:19530",
    }
    command = [sys.executable, "-m", "search_service", "--port", "0", "--metrics-port", "-1"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=first_version, cwd=tmp_path
    )
    assert done.returncode == 2 and done.stderr == (
        "search_service: MILVUS_URI=http://milvus.internal:19530 is the first version's name for "
        "--milvus-uri, which this version reads as --milvus-uri or SEARCH_MILVUS_URI (left at its default "
        "here): set one of those (or unset MILVUS_URI)\n"
    )
    assert list(tmp_path.iterdir()) == []  # no Milvus Lite file begun


def test_a_first_version_milvus_variable_is_left_to_pymilvus_once_its_new_setting_is_given() -> None:
    """`imgsearch up` passes --milvus-uri whatever the shell exports; pymilvus reads MILVUS_URI itself."""
    old = {"MILVUS_URI": "http://milvus:19530", "MILVUS_TOKEN": "root:s3cret", "MILVUS_TIMEOUT_S": "5"}
    given = ["--milvus-uri", "/tmp/a.db", "--milvus-token", "root:other", "--milvus-timeout-s", "3"]
    assert first_version_setting(search_flags(given), old) == ""
    token = first_version_setting(search_flags([]), {"MILVUS_TOKEN": "root:s3cret"})
    assert (
        token.startswith("MILVUS_TOKEN=*** is the first version's name for --milvus-token")
        and "s3cret" not in token
    )
    assert first_version_setting(
        search_flags(["--milvus-uri", "/tmp/a.db"]), {"MILVUS_TIMEOUT_S": "5"}
    ).startswith("MILVUS_TIMEOUT_S=5 is the first version's name for --milvus-timeout-s")


def test_a_password_in_a_milvus_uri_is_never_shown() -> None:
    unreadable = start_search("--help", env={**os.environ, "MILVUS_URI": "http://root:s3cret@milvus:99999"})
    assert unreadable.returncode == 2 and "s3cret" not in unreadable.stderr
    assert unreadable.stderr.startswith("search_service: MILVUS_URI=http://root:***@milvus:99999: ")

    unreachable_uri = f"http://root:s3cret@127.0.0.1:{free_port()}"
    flags = ["--port", "0", "--metrics-port", "-1", "--milvus-timeout-s", "1", "--encoder", "127.0.0.1:9"]
    unreachable = start_search(*flags, "--milvus-uri", unreachable_uri, env=dict(os.environ))
    assert unreachable.returncode == 1 and "s3cret" not in unreachable.stderr
    assert "pkg_resources" not in unreachable.stderr  # milvus_lite's import of it warned, a line not JSON
    assert "search_service: cannot reach Milvus at http://root:***@127.0.0.1:" in unreachable.stderr


def test_a_milvus_uri_pymilvus_reads_leaves_the_start_alone() -> None:
    done = start_search("--help", env={**os.environ, "MILVUS_URI": "http://milvus:19530"})
    assert done.returncode == 0 and "SEARCH_MILVUS_URI" in done.stdout


def test_a_dotenv_file_does_not_reach_the_service(tmp_path: Path) -> None:
    # pymilvus loads the nearest .env above its own folder (a checkout's, for docker compose, when the virtual
    # environment lies inside it); run as `python -c`, it looks in the working folder instead.
    (tmp_path / ".env").write_text("MILVUS_URI=/data/milvus.db\n")
    run_main = (
        "import runpy, sys; sys.argv[1:] = ['--help']; "
        "runpy.run_module('search_service', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", run_main], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_milvus_lite_may_take_longer_to_start_than_one_milvus_call(tmp_path: Path) -> None:
    """Its start had one call's deadline (--milvus-timeout-s): on a busy machine the first, cold start of
    Lite's process overran 10 s, and the service did not start ("Fail connecting to server on unix:...")."""
    Store(str(tmp_path / "milvus.db"), "", 0.001, "AUTOINDEX", {}).close()  # it raised ServiceError


def test_the_web_tier_that_cannot_start_names_the_flag(tmp_path: Path) -> None:
    """Both were uvicorn's startup traceback, or Python's, and the TLS one only once the server had begun."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for flags, said in (
            (["--port", str(port)], f"web: cannot listen on 127.0.0.1:{port} (--port): another process"),
            (["--search-tls-ca", str(tmp_path / "missing.pem")], "web: --search-tls-ca "),
        ):
            command = [sys.executable, "-m", "web", "--port", "0", *flags]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.startswith(said), done.stderr
