"""What one process owns, a second never silently shares: ports of the services, and of `imgsearch up`."""

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import running_encoder, running_search

from client import SearchClient
from client.cli import main
from client.local import StartFailed, chosen_port, free_port, local_services
from imagesearch.defaults import (
    ENCODER_METRICS_PORT,
    ENCODER_PORT,
    SEARCH_METRICS_PORT,
    SEARCH_PORT,
    WEB_PORT,
)


def test_a_second_server_on_a_taken_port_fails_and_names_the_flag(tiny_encoder, tmp_path) -> None:
    port = int(tiny_encoder.grpc.address.rsplit(":", 1)[1])
    taken = rf"cannot listen on 127.0.0.1:{port} \(--port\): another process"
    with pytest.raises(OSError, match=taken), running_encoder(Path(tiny_encoder.config.model), port=port):
        pass
    held = free_port()
    with running_search(tiny_encoder.grpc.address, tmp_path / "a.db", metrics_port=held) as first:
        assert first.grpc.metrics is not None
        taken = rf"cannot listen on 127.0.0.1:{held} \(--metrics-port\): another process holds that port"
        with (
            pytest.raises(OSError, match=taken),
            running_search(tiny_encoder.grpc.address, tmp_path / "b.db", metrics_port=held),
        ):
            pass


def test_a_host_that_is_not_this_machines_is_named_not_the_port(tiny_path) -> None:
    """It was blamed on --port: "another process holds that port, or the address is not one of this
    machine's"."""
    for host, problem in (
        ("no-such-host.invalid", "'no-such-host.invalid' does not resolve"),
        ("192.0.2.1", "'192.0.2.1' is not an address of this machine"),  # TEST-NET-1: nobody's
    ):
        with pytest.raises(OSError) as refused, running_encoder(tiny_path, host=host):
            pass
        assert str(refused.value).startswith(f"cannot listen on {host}:0 (--host): {problem}")


class _Unprivileged(socket.socket):
    """A socket as a process without privileges has one: ports below 1024 are not its to bind."""

    def bind(self, address) -> None:  # type: ignore[no-untyped-def]
        if address[1] < 1024:
            raise PermissionError(errno.EACCES, "Permission denied")
        super().bind(address)


def test_a_privileged_port_is_named_as_one_not_as_a_host_of_another_machine(monkeypatch) -> None:
    """`imgsearch up --web-port 80` run by a user said "(--host): '127.0.0.1' is not an address of this
    machine"; `up` has no --host. Only the bind is stood in for: this test may run with privileges."""
    monkeypatch.setattr(socket, "socket", _Unprivileged)
    with pytest.raises(StartFailed) as refused:
        chosen_port(80, "--web-port")
    said = "cannot listen on 127.0.0.1:80 (--web-port): a port below 1024 needs privileges this process lacks"
    assert str(refused.value) == said


def test_a_search_service_on_a_taken_port_exits_with_one_line(tiny_encoder, tmp_path) -> None:
    port = tiny_encoder.grpc.address.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "search_service", "--port", port, "--metrics-port", "-1"]
    done = subprocess.run(
        [*command, "--milvus-uri", str(tmp_path / "m.db")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    # gRPC's own "E1129 ... add_port.cc ... Failed to add port" line came first: the port is probed before
    assert done.stderr.startswith(f"search_service: cannot listen on 127.0.0.1:{port} (--port): another")


@contextmanager
def up(model: Path, folder: Path) -> Iterator[tuple[subprocess.Popen, dict[str, str]]]:
    """`imgsearch up` on any free ports until it says it is ready: the process, and what it printed."""
    command = [sys.executable, "-m", "client.cli", "up", "--model", str(model), "--device", "cpu"]
    ports = ["--encoder-port", "0", "--server-port", "0", "--encoder-metrics-port", "0"]
    ports += ["--search-metrics-port", "0", "--web-port", "0", "--milvus-uri", str(folder / "milvus.db")]
    with (folder / "up.log").open("w") as log:  # its own words and its children's logs
        process = subprocess.Popen(
            [*command, *ports], stdout=subprocess.PIPE, stderr=log, text=True, cwd=folder
        )
    try:
        assert process.stdout is not None
        said = {}
        for line in process.stdout:
            if ":" in line:
                name, _, value = line.partition(":")
                said[name.strip()] = value.strip()
            if line.startswith("ready"):
                break
        yield process, said
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: up stops its services before it exits
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_two_ups_run_side_by_side_and_a_child_that_dies_stops_its_up(tiny_path, tmp_path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        up(tiny_path, tmp_path / "one") as (first, said_first),
        up(tiny_path, tmp_path / "two") as (second, said),
    ):
        assert said_first["search service"] != said["search service"]
        assert said_first["metrics (encoder)"] != said["metrics (encoder)"]
        for address in (said_first["search service"], said["search service"]):
            with SearchClient(address) as client:
                assert client.limits().max_top_k == 1000
        encoder, *_ = children(first.pid)  # started first: the search service and the page follow
        os.kill(encoder, signal.SIGKILL)
        assert first.wait(timeout=120) == 1
        assert (
            "imgsearch: the encoder service exited with code -9; stopped the rest"
            in (tmp_path / "one" / "up.log").read_text()
        )
        with SearchClient(said["search service"]) as client:
            assert client.limits().max_offset == 10000  # the other one serves on
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=120) == 0


def test_ctrl_c_while_up_starts_ends_it_at_once_and_its_services_with_it(tiny_path, tmp_path) -> None:
    """Up took Ctrl-C only to stop its services once they were up: with them out of the terminal's reach,
    a start (a model downloading for minutes) went on to the end before it stopped."""
    # Ctrl-C raises, as in a terminal (a background job's shell starts it ignored, and so would up).
    as_at_a_terminal = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)"
    command = [sys.executable, "-c", f"{as_at_a_terminal}; from client.cli import main; sys.exit(main())"]
    command += ["up", "--model", str(tiny_path), "--device", "cpu", "--milvus-uri", str(tmp_path / "m.db")]
    command += ["--encoder-port", "0", "--server-port", "0", "--web-port", "0"]
    command += ["--encoder-metrics-port", "-1", "--search-metrics-port", "-1"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert process.stdout is not None and process.stdout.readline().startswith("starting the encoder")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "imgsearch: interrupted (Ctrl-C)" in err
    assert "ready" not in out


def test_up_on_a_taken_port_says_which_before_starting_anything(tiny_encoder, tiny_path, tmp_path) -> None:
    """Otherwise whoever holds the port would answer `up`'s questions, and it would report ready."""
    held = tiny_encoder.grpc.address.rsplit(":", 1)[1]
    for flag in ("--encoder-port", "--server-port", "--web-port", "--search-metrics-port"):
        done = subprocess.run(
            [sys.executable, "-m", "client.cli", "up", "--model", str(tiny_path), flag, held],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 1 and "ready" not in done.stdout, done.stdout
        taken = f"imgsearch: cannot listen on 127.0.0.1:{held} ({flag}): another process holds that port"
        assert taken in done.stderr


def test_a_port_only_a_closed_connection_waits_on_is_not_taken() -> None:
    """`up` said such a port was taken, which the services bind all the same: in CI, a default port that an
    earlier test's connection had used as its own made `up` name it instead of the one its test held."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with listener, socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = listener.accept()
        accepted.close()  # this side closes first: its end of the connection waits on `port` (TIME_WAIT)
        assert client.recv(1) == b""
    assert chosen_port(port, "--server-port") == port


def test_the_services_of_an_up_that_is_killed_stop_too(tiny_path, tmp_path) -> None:
    with up(tiny_path, tmp_path) as (process, _):
        started = children(process.pid)
        process.kill()  # no chance to stop them itself
        process.wait()
    for pid in started:
        while _running(pid):
            threading.Event().wait(0.05)  # a bounded poll of a condition: pytest's timeout bounds it


def test_up_starts_its_services_without_forking_itself(tmp_path) -> None:
    """A fork copies `up` with its gRPC threads and runs gRPC's fork handlers, which can hang
    (grpc/grpc#37259): `up` has asked the encoder about its health when it starts the search service."""
    script = (
        "import os\n"
        "from client.local import _child\n"
        "os.register_at_fork(after_in_child=lambda: os.write(2, b'a copy of up ran\\n'))\n"
        "with _child(['-c', 'print(\"the service ran\")'], None) as service:\n"
        "    service.wait()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the service ran\n" and "a copy of up ran" not in done.stderr


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, awaiting its new parent's reaping, has ended)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@contextmanager
def held(port: int) -> Iterator[None]:
    """`port` taken for the block, as an `imgsearch up` beside would take it (if another process has it
    already, it stays taken all the same)."""
    with socket.socket() as taker:
        with contextlib.suppress(OSError):
            taker.bind(("127.0.0.1", port))
            taker.listen()
        yield


def test_the_demo_runs_beside_what_holds_the_default_ports(tmp_path, capsys) -> None:
    """The demo's services used to take the default metrics ports, so it failed beside an `imgsearch up`."""
    defaults = (ENCODER_PORT, SEARCH_PORT, WEB_PORT, ENCODER_METRICS_PORT, SEARCH_METRICS_PORT)
    with contextlib.ExitStack() as stack:
        for port in defaults:
            stack.enter_context(held(port))
        code = main(["demo", "--workdir", str(tmp_path), "--per-class", "1", "--no-progress"])
    assert code == 0 and "services stopped" in capsys.readouterr().out


def test_local_services_are_out_of_reach_of_a_ctrl_c_at_the_terminal(tiny_path, tmp_path) -> None:
    """Ctrl-C reaches every process of the terminal's foreground group: each service (and its Milvus Lite)
    ended at once, where `up` stops them itself, in order, the search service draining its calls."""
    with (
        (tmp_path / "services.log").open("w") as log,
        local_services(
            str(tiny_path), str(tmp_path / "m.db"), "cpu", 0, 0, log, metrics_ports=(-1, -1)
        ) as services,
    ):
        groups = {name: os.getpgid(child.pid) for name, child in services.children.items()}
        pids = {name: child.pid for name, child in services.children.items()}
    assert groups == pids  # each leads a group (and a session) of its own
    assert os.getpgid(0) not in groups.values()


def test_a_local_service_that_cannot_start_says_why_in_its_own_words(
    tiny_path, tmp_path, monkeypatch
) -> None:
    """`imgsearch demo` logs the services to a file: its one line used to point there, not say why."""
    monkeypatch.setenv(
        "MILVUS_URI", "./milvus.db"
    )  # which pymilvus refuses: the search service stops at once
    with (tmp_path / "services.log").open("w") as log, pytest.raises(StartFailed) as failed:
        services = local_services(
            str(tiny_path), str(tmp_path / "m.db"), "cpu", 0, 0, log, metrics_ports=(-1, -1)
        )
        with services:
            pass
    assert str(failed.value).endswith(
        "exited with code 2 while starting: MILVUS_URI=./milvus.db: pymilvus reads MILVUS_URI itself and "
        "takes only a URL (http://host:19530); name a Milvus Lite file with --milvus-uri or SEARCH_MILVUS_URI"
    )
