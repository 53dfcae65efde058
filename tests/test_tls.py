"""TLS to both services, and mutual TLS between the search service and the encoder."""

import asyncio
import logging
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from certificates import CertificateAuthority, Identity
from conftest import running_encoder, running_search
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from test_search import folder, picture
from test_web_api import get, running_web

from client import AsyncSearchClient, ImageSearchError, SearchClient
from client.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from client.local import free_port
from encoder_service.batcher import DynamicBatcher
from encoder_service.config import EncoderConfig
from encoder_service.server import EncoderServer
from imagesearch import tls
from imagesearch.serving import GrpcServer, ServerSettings, reported_startup
from imagesearch.tls import WatchedFiles, channel_credentials, watched_channel_credentials
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from search_service.server import SearchServer
from web.search_client import RenewingSearchClient


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"))


def encoder_of_clients_signed_by(
    ca: str, identity: Identity, tiny_path: Path, port: int = 0
) -> AbstractContextManager[EncoderServer]:
    """An encoder on TLS as `identity` that takes only callers whose certificate `ca` signed."""
    return running_encoder(tiny_path, port=port, tls_cert=identity.cert, tls_key=identity.key, tls_ca=ca)


def search_showing_encoders(
    encoder: str, folder: Path, ca: str, identity: Identity, **settings: object
) -> AbstractContextManager[SearchServer]:
    """A search service that verifies the encoders with `ca` and shows them `identity`'s certificate,
    written to files in `folder` that a renewal can replace."""
    cert, key = folder / "client.crt", folder / "client.key"
    _replace(identity.cert, cert)
    _replace(identity.key, key)
    return running_search(
        encoder,
        folder / "milvus.db",
        encoder_tls_ca=ca,
        encoder_tls_cert=str(cert),
        encoder_tls_key=str(key),
        **settings,
    )


@pytest.fixture(scope="module")
def secured(authority, tiny_path, tmp_path_factory):
    """An encoder that demands client certificates, and a search service on TLS that presents one."""
    encoder_id = authority.issue("encoder", server=True)
    search_id = authority.issue("search", server=True)
    search_as_client = authority.issue("search-client", server=False)
    with (
        encoder_of_clients_signed_by(authority.ca_file, encoder_id, tiny_path) as enc,
        search_showing_encoders(
            enc.grpc.address,
            tmp_path_factory.mktemp("tls"),
            authority.ca_file,
            search_as_client,
            tls_cert=search_id.cert,
            tls_key=search_id.key,
        ) as search,
    ):
        yield enc, search


def test_search_over_tls_reaches_the_encoder_over_mutual_tls(secured, authority, tmp_path) -> None:
    _, search = secured
    (tmp_path / "a.png").write_bytes(folder(1, 990)[0][1])
    assert search.check_health() is True
    with SearchClient(search.grpc.address, credentials=channel_credentials(authority.ca_file)) as client:
        assert client.ingest([tmp_path]).stored == 1
        assert len(client.search_text("a dog")) == 1


def test_a_plaintext_caller_is_refused(secured) -> None:
    _, search = secured
    with SearchClient(search.grpc.address, timeout=5) as client, pytest.raises(ImageSearchError) as refused:
        client.stats()
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_an_encoder_caller_without_a_client_certificate_is_refused(secured, authority, tmp_path) -> None:
    encoder, _ = secured
    with running_search(
        encoder.grpc.address, tmp_path / "milvus.db", encoder_tls_ca=authority.ca_file, encoder_timeout_s=5
    ) as no_client_cert:
        assert no_client_cert.check_health() is False


def test_cli_over_tls(secured, authority, capsys) -> None:
    _, search = secured
    code = main(["--server", search.grpc.address, "--tls", "--tls-ca", authority.ca_file, "search", "a dog"])
    assert code == EXIT_OK and capsys.readouterr().out.splitlines()[0].split() == ["rank", "score", "path"]


def test_cli_tls_is_never_plaintext_in_silence(search, authority, capsys, monkeypatch) -> None:
    """`search` serves plaintext: a client that asked for TLS must fail there, not fall back."""
    plain = ["--server", search.grpc.address, "--timeout", "5", "--collection", "none_yet", "stats"]
    answered = "says: NOT_FOUND: collection 'none_yet' does not exist"
    with_tls = f"is the search service running at {search.grpc.address}, with TLS, as --tls asks?"
    assert main([*plain[:-1], "--tls", "stats"]) == EXIT_FAILED  # the system's roots: no handshake
    assert with_tls in capsys.readouterr().err
    monkeypatch.setenv("IMGSEARCH_TLS", "1")
    assert main(plain) == EXIT_FAILED and with_tls in capsys.readouterr().err
    monkeypatch.setenv("IMGSEARCH_TLS", "0")
    assert main(plain) == EXIT_FAILED and answered in capsys.readouterr().err
    for flags, message in (
        (["--tls-ca", authority.ca_file], "--tls-ca is given but TLS is off: add --tls"),
        (["--tls", "--tls-cert", authority.ca_file], "--tls-cert and --tls-key go together"),
    ):
        with pytest.raises(SystemExit) as usage:
            main([*flags, *plain])
        assert usage.value.code == EXIT_USAGE and message in capsys.readouterr().err
    monkeypatch.setenv("IMGSEARCH_TLS", "maybe")
    with pytest.raises(SystemExit) as usage:
        main(plain)
    assert usage.value.code == EXIT_USAGE and "IMGSEARCH_TLS='maybe': use 1, true" in capsys.readouterr().err


def test_a_failed_handshake_is_the_cli_s_one_message_not_grpc_s_log_lines(search) -> None:
    """With GRPC_VERBOSITY unset, gRPC's core logged each failed handshake on stderr ("I1129 ...
    ssl_transport_security.cc ... Handshake failed"), before the one message; it reads the variable once,
    when grpc is imported, so only a new process shows it."""
    environment = {name: value for name, value in os.environ.items() if name != "GRPC_VERBOSITY"}
    command = [sys.executable, "-m", "client.cli", "--server", search.grpc.address, "--tls", "--timeout", "5"]
    done = subprocess.run([*command, "stats"], capture_output=True, text=True, timeout=60, env=environment)
    assert done.returncode == EXIT_FAILED
    assert [line.split(" ")[0] for line in done.stderr.splitlines()] == ["imgsearch:", ""], done.stderr


def probe(address: str) -> tuple[int, str]:
    """What a container's HEALTHCHECK runs: the exit code and the status it printed."""
    check = [sys.executable, "-m", "imagesearch.healthcheck", address]
    result = subprocess.run(check, capture_output=True, text=True, timeout=60)
    return result.returncode, (result.stdout or result.stderr).strip()


def test_probes_that_cannot_speak_tls_reach_health_alone_on_the_health_port(authority, tiny_path) -> None:
    identity = authority.issue("probed-encoder", server=True)
    config = EncoderConfig(
        model=str(tiny_path),
        device="cpu",
        port=0,
        metrics_port=-1,
        health_port=0,
        tls_cert=identity.cert,
        tls_key=identity.key,
    )
    server = EncoderServer(config)
    server.start()
    try:
        assert server.grpc is not None and server.grpc.health_address is not None
        health_address = server.grpc.health_address
        assert probe(health_address) == (1, f"{health_address}: NOT_SERVING")
        server.load()
        assert probe(health_address) == (0, f"{health_address}: SERVING")
        code, said = probe(server.grpc.address)  # the TLS port itself refuses a plaintext probe
        assert code == 1 and "UNAVAILABLE" in said
        with grpc.insecure_channel(health_address) as channel, pytest.raises(grpc.RpcError) as refused:
            encoder_pb2_grpc.EncoderServiceStub(channel).EncodeText(
                encoder_pb2.EncodeTextRequest(texts=["a dog"]), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()
    assert probe(health_address)[0] == 1


@pytest.mark.parametrize(
    ("key", "refusal"),
    [
        ("another's", "encoder: --tls-key does not match --tls-cert"),
        ("garbage", "is no unencrypted PEM private key"),
        ("missing", "cannot be read"),
    ],
)
def test_a_key_not_the_certificates_stops_the_start_naming_it(authority, tmp_path, key, refusal) -> None:
    """gRPC takes any bytes and fails only when it listens, which read as another process holding the port."""
    identity = authority.issue("keyed-server", server=True)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    keys = {
        "another's": authority.issue("another-server", server=True).key,
        "garbage": str(garbage),
        "missing": str(tmp_path / "missing.key"),
    }
    settings = ServerSettings(port=0, metrics_port=-1, tls_cert=identity.cert, tls_key=keys[key])
    with pytest.raises(SystemExit) as stopped, reported_startup("encoder"):
        GrpcServer(settings, "x.Svc", lambda server: None, 4 << 20, CollectorRegistry())
    assert str(stopped.value.code).startswith("encoder: --tls-key ") and refusal in str(stopped.value.code)


def test_a_key_is_checked_against_the_certificate_even_where_its_file_holds_a_key_too(
    authority, tmp_path
) -> None:
    """A certificate file may hold its key after it (a combined PEM): the check that read both from one file
    took that key, and passed another --tls-key, which gRPC was then given."""
    identity, other = (authority.issue(stem, server=True) for stem in ("combined-server", "other-server"))
    combined = tmp_path / "combined.pem"
    combined.write_bytes(Path(identity.cert).read_bytes() + Path(identity.key).read_bytes())
    with pytest.raises(ValueError, match="--tls-key does not match --tls-cert"):
        tls.server_credentials(str(combined), other.key, "")
    assert tls.server_credentials(str(combined), identity.key, "") is not None


def test_renewed_files_that_cannot_be_checked_now_are_read_again_at_the_next_look(tmp_path) -> None:
    """A check that failed for want of its own files (a full /tmp) left the renewal unread until the files
    changed again: their new stamps counted as seen."""
    served = tmp_path / "served.pem"
    served.write_text("first")
    attempts: list[str] = []

    def read() -> str:
        attempts.append(served.read_text())
        if len(attempts) == 2:
            raise OSError(28, "No space left on device")
        return attempts[-1]

    files = WatchedFiles([str(served)], read, "serving them")
    served.write_text("renewed")
    assert (files.first, files.changed(), files.changed()) == ("first", None, "renewed")
    assert files.changed() is None  # read once it could be


def test_renewed_files_that_cannot_be_used_are_warned_of_once_and_read_when_they_change(
    tmp_path, caplog
) -> None:
    """The previous files stay in use; the warning is not repeated at every look (each health check)."""
    served = tmp_path / "served.pem"
    served.write_text("first")

    def read() -> str:
        if (text := served.read_text()) == "half-renewed":
            raise ValueError("the key does not match the certificate")
        return text

    files = WatchedFiles([str(served)], read, "serving them")
    served.write_text("half-renewed")
    with caplog.at_level(logging.WARNING, logger="imagesearch.tls"):
        assert (files.changed(), files.changed(), files.changed()) == (None, None, None)
    assert [r.getMessage() for r in caplog.records] == [
        "TLS files changed but cannot be used, the previous ones still are: the key does not match the "
        "certificate"
    ]
    served.write_text("renewed")
    assert files.changed() == "renewed"


def test_cli_refuses_a_client_key_that_is_not_the_certificates(authority, capsys) -> None:
    """gRPC would take them and fail each connection as if the service were out of reach."""
    identity, other = (authority.issue(stem, server=False) for stem in ("keyed-client", "another-client"))
    tls = ["--tls", "--tls-cert", identity.cert, "--tls-key", other.key]
    with pytest.raises(SystemExit) as usage:
        main(["--server", "127.0.0.1:1", "--timeout", "5", *tls, "stats"])
    said = capsys.readouterr().err
    assert usage.value.code == EXIT_USAGE and "--tls-key does not match --tls-cert" in said


def test_cli_refuses_a_ca_file_that_is_missing_or_holds_no_certificate(authority, tmp_path, capsys) -> None:
    """A CA that gRPC cannot load failed every handshake as a service out of reach ("is it running?")."""
    notes, binary = tmp_path / "notes.txt", tmp_path / "ca.der"
    notes.write_text("not a certificate")
    binary.write_bytes(ssl.PEM_cert_to_DER_cert(Path(authority.ca_file).read_text()))  # was a traceback
    for ca, refusal in (
        (notes, "holds no PEM certificate"),
        (binary, "holds no PEM certificate (binary data: a DER certificate becomes PEM with `openssl x509"),
        (tmp_path / "missing.pem", "cannot be read"),
    ):
        with pytest.raises(SystemExit) as usage:
            main(["--server", "127.0.0.1:1", "--tls", "--tls-ca", str(ca), "stats"])
        said = capsys.readouterr().err
        assert usage.value.code == EXIT_USAGE and f"error: --tls-ca {ca} {refusal}" in said


def _replace(source: str, target: Path) -> None:
    """As a certificate renewer writes a file: whole, under a new name, then moved over the old one."""
    shutil.copy(source, target.with_suffix(".new"))
    os.replace(target.with_suffix(".new"), target)


def test_the_pair_checked_is_the_pair_read_though_a_renewal_lands_between_the_reads(
    authority, tmp_path, monkeypatch
) -> None:
    """The key was checked against the certificate file read again: a renewal that replaced both files after
    the certificate was read passed the check, and gRPC got the old certificate with the new key."""
    first, renewed = (authority.issue(stem, server=True) for stem in ("before-renewal", "after-renewal"))
    cert, key = tmp_path / "served.crt", tmp_path / "served.key"
    _replace(first.cert, cert)
    _replace(first.key, key)
    read_certificates = tls._certificates

    def renewed_after_reading(path: str, name: str) -> bytes:
        pem = read_certificates(path, name)
        _replace(renewed.cert, cert)
        _replace(renewed.key, key)
        return pem

    monkeypatch.setattr(tls, "_certificates", renewed_after_reading)
    with pytest.raises(ValueError, match="--tls-key does not match --tls-cert"):
        tls.server_credentials(str(cert), str(key), "")


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    authority, tmp_path, caplog
) -> None:
    renewing = CertificateAuthority(tmp_path, "renewing CA")
    first, renewed = authority.issue("rotated-server", server=True), renewing.issue("renewed", server=True)
    cert, key = tmp_path / "served.crt", tmp_path / "served.key"
    _replace(first.cert, cert)
    _replace(first.key, key)
    settings = ServerSettings(port=0, metrics_port=-1, tls_cert=str(cert), tls_key=str(key))
    server = GrpcServer(settings, "x.Svc", lambda server: None, 4 << 20, CollectorRegistry())

    def trusted_by(ca: str) -> bool:
        """Whether a new connection verifies the served certificate with `ca`."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(server.address, channel_credentials(ca), options) as channel:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                return False
            return True

    try:
        assert trusted_by(authority.ca_file) and not trusted_by(renewing.ca_file)
        with caplog.at_level(logging.WARNING, logger="imagesearch.tls"):
            _replace(renewed.cert, cert)  # renewed before its key: a pair that does not match yet
            assert trusted_by(authority.ca_file)
        assert "--tls-key does not match --tls-cert" in caplog.text
        _replace(renewed.key, key)
        assert trusted_by(renewing.ca_file) and not trusted_by(authority.ca_file)
    finally:
        server.stop(0)


@contextmanager
def renewing_the_client_certificate(
    authority: CertificateAuthority,
    callee_of_clients_of: Callable[[str], AbstractContextManager[object]],
    reached: Callable[[], bool],
    caller_files: Path,
    flags: str,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[None]:
    """A caller that shows a certificate `authority` signed, from `caller_files` (.crt and .key), reaches
    a callee that takes `authority`'s clients; then a new one, which takes only a renewing CA's clients (so
    every connection to it is new). Its certificate renewed before its key leaves the first pair shown, with
    a warning naming the `flags`; once the key is renewed too, it reaches the callee, which serves the
    block."""
    renewing = CertificateAuthority(caller_files.parent, "renewing CA")
    renewed = renewing.issue(f"renewed-{caller_files.name}", server=False)
    with callee_of_clients_of(authority.ca_file):
        assert reached()
    with callee_of_clients_of(renewing.ca_file):
        with caplog.at_level(logging.WARNING, logger="imagesearch.tls"):
            _replace(renewed.cert, caller_files.with_suffix(".crt"))
            assert not reached()
        assert f"{flags}-key does not match {flags}-cert" in caplog.text
        _replace(renewed.key, caller_files.with_suffix(".key"))
        assert reached()
        yield


def test_a_renewed_client_certificate_reaches_the_encoders_without_a_restart(
    authority, tiny_path, tmp_path, caplog
) -> None:
    """The search service read its --encoder-tls-* files once: once the encoders took only a renewed CA's
    clients, it could not reach them until it was restarted."""
    encoder_id = authority.issue("encoder-of-renewed-clients", server=True)
    port = free_port()
    first = authority.issue("first", server=False)
    with (
        search_showing_encoders(f"127.0.0.1:{port}", tmp_path, authority.ca_file, first) as search,
        renewing_the_client_certificate(
            authority,
            lambda ca: encoder_of_clients_signed_by(ca, encoder_id, tiny_path, port),
            search.check_health,
            tmp_path / "client",
            "--encoder-tls",
            caplog,
        ),
    ):
        assert search.encoder.encode_text("a dog")[1].shape == (512,)


def holding_the_forward_passes(
    tower: DynamicBatcher, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """`entered` is set when one of `tower`'s forward passes begins; each waits for `release`."""
    entered, release, forward = threading.Event(), threading.Event(), tower._run_batch

    def held(batch: list) -> Sequence:
        entered.set()
        release.wait(60)
        return forward(batch)

    monkeypatch.setattr(tower, "_run_batch", held)
    return entered, release


def test_a_call_under_way_ends_on_its_channel_when_the_client_certificate_is_renewed(
    authority, tiny_path, tmp_path, monkeypatch, caplog
) -> None:
    """New calls go on a new channel; closing the old one at once would cancel the calls still on it."""
    encoder_id = authority.issue("encoder-mid-call", server=True)
    first, renewed = authority.issue("first", server=False), authority.issue("next", server=False)
    with (
        encoder_of_clients_signed_by(authority.ca_file, encoder_id, tiny_path) as encoder,
        search_showing_encoders(encoder.grpc.address, tmp_path, authority.ca_file, first) as search,
        ThreadPoolExecutor(1) as caller,
        caplog.at_level(logging.INFO, logger="imagesearch.tls"),
    ):
        assert encoder.servicer.runtime is not None
        entered, release = holding_the_forward_passes(encoder.servicer.runtime.images, monkeypatch)
        under_way = caller.submit(search.encoder.encode_images, [folder(1, 993)[0][1]])
        assert entered.wait(60)
        _replace(renewed.cert, tmp_path / "client.crt")
        _replace(renewed.key, tmp_path / "client.key")
        assert search.check_health() is True
        assert (
            f"TLS files changed: calling the encoders with the files now in {authority.ca_file}"
            in caplog.text
        )
        release.set()
        _, [vector] = under_way.result(timeout=60)
    assert isinstance(vector, np.ndarray) and vector.shape == (512,)


def web_showing(search: str, folder: Path, ca: str, identity: Identity) -> AbstractContextManager[str]:
    """The web tier (its URL) in front of `search`, which it verifies with `ca` and shows `identity`'s
    certificate, written to files in `folder` that a renewal can replace."""
    cert, key = folder / "web.crt", folder / "web.key"
    _replace(identity.cert, cert)
    _replace(identity.key, key)
    return running_web(search, search_tls_ca=ca, search_tls_cert=str(cert), search_tls_key=str(key))


def test_the_page_takes_a_renewed_client_certificate_without_a_restart(
    authority, tiny_encoder, tmp_path, caplog
) -> None:
    """The web tier read its --search-tls-* files once: once the search service took only a renewed CA's
    clients, every request failed until the web tier was restarted."""
    search_id = authority.issue("search-of-renewed-clients", server=True)
    port = free_port()

    def search_of_clients_signed_by(ca: str) -> AbstractContextManager[SearchServer]:
        tls = {"tls_cert": search_id.cert, "tls_key": search_id.key, "tls_ca": ca}
        return running_search(tiny_encoder.grpc.address, tmp_path / "milvus.db", port=port, **tls)

    def answered(url: str) -> bool:
        """Whether the search service answered the page's call: its collection is not made yet (404)."""
        status = get(url, "/api/status").status
        assert status in (404, 503)
        return status == 404

    first = authority.issue("web-first", server=False)
    with (
        web_showing(f"127.0.0.1:{port}", tmp_path, authority.ca_file, first) as url,
        renewing_the_client_certificate(
            authority,
            search_of_clients_signed_by,
            lambda: answered(url),
            tmp_path / "web",
            "--search-tls",
            caplog,
        ),
    ):
        assert "does not exist" in get(url, "/api/search", q="a dog").json()["error"]  # searches reach it too


def test_a_search_under_way_ends_on_its_client_when_the_page_renews_its_certificate(
    authority, tiny_path, tmp_path, monkeypatch, caplog
) -> None:
    """New requests take a new client; closing the old one at once would cancel the searches still on it."""
    search_id = authority.issue("search-mid-renewal", server=True)
    first, renewed = authority.issue("web-first", server=False), authority.issue("web-next", server=False)
    tls = {"tls_cert": search_id.cert, "tls_key": search_id.key, "tls_ca": authority.ca_file}
    with (
        running_encoder(tiny_path) as encoder,
        running_search(encoder.grpc.address, tmp_path / "milvus.db", **tls) as search,
        web_showing(search.grpc.address, tmp_path, authority.ca_file, first) as url,
        ThreadPoolExecutor(1) as caller,
        caplog.at_level(logging.INFO, logger="imagesearch.tls"),
    ):
        pictures = tmp_path / "pictures"
        pictures.mkdir()
        (pictures / "noise.png").write_bytes(picture(994))
        credentials = channel_credentials(authority.ca_file, first.cert, first.key)
        with SearchClient(search.grpc.address, credentials=credentials) as client:
            assert client.ingest(pictures).stored == 1
        assert encoder.servicer.runtime is not None
        entered, release = holding_the_forward_passes(encoder.servicer.runtime.texts, monkeypatch)
        under_way = caller.submit(get, url, "/api/search", q="a dog searched while the page renews")
        assert entered.wait(60)
        _replace(renewed.cert, tmp_path / "web.crt")
        _replace(renewed.key, tmp_path / "web.key")
        assert get(url, "/api/status").status == 200
        assert "TLS files changed: calling the search service with the files now in" in caplog.text
        release.set()
        answer = under_way.result(timeout=60)
    assert [hit["name"] for hit in answer.json()["hits"]] == ["noise.png"]


def test_cli_without_tls_at_a_tls_service_is_told_to_add_it(secured, capsys) -> None:
    _, search = secured
    assert main(["--server", search.grpc.address, "--timeout", "5", "stats"]) == EXIT_FAILED
    hint = f"is the search service running at {search.grpc.address}, without TLS (else add --tls)?"
    assert hint in capsys.readouterr().err


def test_the_page_closes_its_previous_client_once_the_last_request_on_it_ends(authority, tmp_path) -> None:
    """Renewed, the page's client to the search service is replaced; the previous one must close, but only
    once no request uses it (a leak, or a cancelled search, otherwise)."""
    first, renewed = authority.issue("web-kept", server=False), authority.issue("web-renewed", server=False)
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    _replace(first.cert, cert)
    _replace(first.key, key)
    names = ("--search-tls-ca", "--search-tls-cert", "--search-tls-key")
    tls = watched_channel_credentials(authority.ca_file, str(cert), str(key), names, "search service")

    async def closed(client: AsyncSearchClient) -> bool:
        """Whether a call on `client` is refused as one on a closed client (nothing listens at its target)."""
        try:
            await client.stats()
        except ImageSearchError as error:
            return error.code == grpc.StatusCode.FAILED_PRECONDITION
        raise AssertionError("nothing listens there: the call cannot succeed")

    async def renewing_mid_request() -> None:
        clients = RenewingSearchClient(
            lambda credentials: AsyncSearchClient("127.0.0.1:1", timeout=0.5, credentials=credentials), tls
        )
        async with clients.using() as previous:
            _replace(renewed.cert, cert)
            _replace(renewed.key, key)
            async with clients.using() as current:
                assert current is not previous
            assert not await closed(previous)  # its request is still under way
        assert await closed(previous) and not await closed(current)
        await clients.close()
        assert await closed(current)

    asyncio.run(renewing_mid_request())
