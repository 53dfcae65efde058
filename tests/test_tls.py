"""TLS to both services, and mutual TLS between the search service and the encoder."""

import grpc
import pytest
from certificates import CertificateAuthority
from conftest import running_encoder, running_search
from test_search import folder

from client import ImageSearchError, SearchClient
from client.cli import EXIT_OK, main
from imagesearch.tls import channel_credentials


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(authority, tiny_path, tmp_path_factory):
    """An encoder that demands client certificates, and a search service on TLS that presents one."""
    encoder_id = authority.issue("encoder", server=True)
    search_id = authority.issue("search", server=True)
    search_as_client = authority.issue("search-client", server=False)
    with (
        running_encoder(
            tiny_path, tls_cert=encoder_id.cert, tls_key=encoder_id.key, tls_ca=authority.ca_file
        ) as enc,
        running_search(
            enc.grpc.address,
            tmp_path_factory.mktemp("tls") / "milvus.db",
            tls_cert=search_id.cert,
            tls_key=search_id.key,
            encoder_tls_ca=authority.ca_file,
            encoder_tls_cert=search_as_client.cert,
            encoder_tls_key=search_as_client.key,
        ) as search,
    ):
        yield enc, search


def test_search_over_tls_reaches_the_encoder_over_mutual_tls(secured, authority, tmp_path) -> None:
    _, search = secured
    (tmp_path / "a.png").write_bytes(folder(1, 990)[0][1])
    assert search.check_health() is True
    with SearchClient(search.grpc.address, credentials=channel_credentials(authority.ca_file)) as client:
        assert client.ingest([tmp_path], progress=False).stored == 1
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
