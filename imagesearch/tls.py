"""TLS for the services and their callers, from PEM files; a CA on the server side makes it mutual TLS."""

from pathlib import Path

import grpc


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _required(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials | None:
    """None for plaintext; with `client_ca`, callers must present a certificate that CA signed."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-ca (client certificates) needs --tls-cert and --tls-key too")
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")
    return grpc.ssl_server_credentials(
        [(_required(key), _required(cert))],
        root_certificates=_read(client_ca),
        require_client_auth=bool(client_ca),
    )


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """TLS: `ca` verifies the server (empty: the system's roots), `cert`/`key` identify us (mutual TLS)."""
    if bool(cert) != bool(key):
        raise ValueError("a client certificate and its key go together")
    return grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))


def channel_credentials_if_any(ca: str, cert: str, key: str) -> grpc.ChannelCredentials | None:
    """A service's calls to another: TLS when any of the files is named, plaintext (None) otherwise."""
    return channel_credentials(ca, cert, key) if (ca or cert or key) else None
