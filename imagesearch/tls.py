"""TLS for the services and their callers, from PEM files; a CA on the server side makes it mutual TLS."""

import ssl
from pathlib import Path

import grpc


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _file(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{name} {path} cannot be read: {error.strerror}") from None


def _pair(cert: str, key: str, cert_name: str, key_name: str) -> tuple[bytes, bytes]:
    """The PEM bytes of a certificate chain and of its private key, checked here: gRPC takes any bytes and
    fails only when it listens (which reads as a port in use) or connects (as a service out of reach)."""
    pems = _file(cert, cert_name), _file(key, key_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cert)
    except ssl.SSLError:
        raise ValueError(f"{cert_name} {cert} holds no PEM certificate") from None
    try:
        context.load_cert_chain(cert, key, password=b"")  # an encrypted key fails instead of prompting
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{key_name} does not match {cert_name} ({key} is not {cert}'s key)") from None
        raise ValueError(f"{key_name} {key} is no unencrypted PEM private key") from None
    return pems


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials | None:
    """None for plaintext; with `client_ca`, callers must present a certificate that CA signed."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-ca (client certificates) needs --tls-cert and --tls-key too")
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")
    cert_pem, key_pem = _pair(cert, key, "--tls-cert", "--tls-key")
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=_read(client_ca),
        require_client_auth=bool(client_ca),
    )


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS: `ca` verifies the server (empty: the system's roots), `cert`/`key` identify us (mutual TLS)."""
    if bool(cert) != bool(key):
        raise ValueError("a client certificate and its key go together")
    cert_pem, key_pem = _pair(cert, key, "the client certificate", "the client key") if cert else (None, None)
    return grpc.ssl_channel_credentials(_read(ca), key_pem, cert_pem)


def channel_credentials_if_any(ca: str, cert: str, key: str) -> grpc.ChannelCredentials | None:
    """A service's calls to another: TLS when any of the files is named, plaintext (None) otherwise."""
    return channel_credentials(ca, cert, key) if (ca or cert or key) else None
