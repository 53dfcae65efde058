"""Bearer tokens: what a token setting means, and a refusal that reads nothing of the refused call."""

import logging
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import running_encoder
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from client import ImageSearchError, SearchClient
from client.cli import EXIT_USAGE, main
from encoder_service.server import EncoderServer
from imagesearch.serving import GrpcServer, ServerSettings
from search_service.config import parse_args as search_flags
from web.config import parse_args as web_flags


@pytest.fixture(scope="module")
def encoder(tiny_path) -> Iterator[EncoderServer]:
    with running_encoder(tiny_path, auth_tokens="encoder-secret") as server:
        yield server


def test_a_caller_without_a_token_is_refused_before_its_request_arrives(encoder, caplog) -> None:
    """gRPC reads a unary request whole (up to 64 images of 20 MiB here) before any handler runs: the refusal
    must not wait for it. This request never arrives, as a large one would still be on its way."""
    assert encoder.grpc is not None
    caplog.set_level(logging.INFO)
    sent = threading.Event()

    def request_on_its_way() -> Iterator[bytes]:
        sent.wait()
        yield b""

    with grpc.insecure_channel(encoder.grpc.address) as channel:
        encode = channel.stream_unary("/imagesearch.v1.EncoderService/EncodeImages")
        try:
            with pytest.raises(grpc.RpcError) as refused:
                encode(request_on_its_way(), timeout=5)
        finally:
            sent.set()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    logged = {(r.fields["method"], r.fields["code"]) for r in caplog.records if hasattr(r, "fields")}
    assert ("EncodeImages", "UNAUTHENTICATED") in logged


def serve(auth_tokens: str) -> GrpcServer:
    """A server with no service of its own: reflection, which demands the token, stands for one."""
    settings = ServerSettings(port=0, metrics_port=-1, auth_tokens=auth_tokens)
    return GrpcServer(settings, "x.Svc", lambda server: None, 4 << 20, CollectorRegistry())


def answer(server: GrpcServer, token: str | None) -> grpc.StatusCode:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        try:
            list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10))
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("setting", [" a , b ", "a,,b "])
def test_each_token_of_the_setting_lets_in_spaces_aside(setting, caplog) -> None:
    caplog.set_level(logging.INFO, logger="imagesearch.auth")
    server = serve(setting)
    try:
        answers = [answer(server, token) for token in ("a", "b", None, "c")]
    finally:
        server.stop(0)
    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    assert answers == [ok, ok, refused, refused]
    assert "authentication: 2 bearer tokens" in caplog.messages


@pytest.mark.parametrize("setting", [",", " , ", " "])
def test_a_setting_that_names_no_token_stops_the_start(setting) -> None:
    """A "," (two unset variables joined) would otherwise switch authentication off in silence."""
    with pytest.raises(ValueError, match="auth_tokens"):
        serve(setting)


def test_an_empty_setting_means_no_authentication() -> None:
    server = serve("")
    try:
        assert answer(server, None) == grpc.StatusCode.OK
    finally:
        server.stop(0)


@pytest.mark.parametrize("token", ["a\nb", "tab\there", "caf\u00e9", "\x7f"])
def test_a_token_no_header_can_carry_is_refused_everywhere_without_showing_it(token, capsys) -> None:
    """gRPC took it and failed the call INTERNAL ("Invalid metadata"), with a log line of its own."""
    said = "holds a character a gRPC header cannot carry"
    with pytest.raises(ImageSearchError) as refused:
        SearchClient("127.0.0.1:1", token=token)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and said in refused.value.message
    assert main(["--server", "127.0.0.1:1", "--token", token, "stats"]) == EXIT_USAGE
    assert said in capsys.readouterr().err
    for parse, flag in ((search_flags, "--encoder-token"), (web_flags, "--search-token")):
        with pytest.raises(SystemExit) as usage:
            parse([flag, token])
        assert usage.value.code == EXIT_USAGE
        assert said in (shown := capsys.readouterr().err) and token not in shown
    with pytest.raises(ValueError, match="auth_tokens' token 2 holds a character") as stopped:
        serve(f"fine,{token}")
    assert token not in str(stopped.value)
