"""TLS for the services and their callers, from PEM files; a CA on the server side makes it mutual TLS.

A service reads its files again when one of them changes (a renewed certificate, as cert-manager writes one),
and serves what they then hold to every new connection: no restart. Connections already open keep theirs
until --max-connection-age-s ends them. The search service (its files for the encoders) and the web tier
(for the search service) read theirs again too, and make their new calls on a new channel.
"""

import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import grpc

log = logging.getLogger(__name__)

Read = TypeVar("Read")


def _file(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{name} {path} cannot be read: {error.strerror}") from None


def _certificates(path: str, name: str) -> bytes:
    """The PEM bytes of a file of certificates (a chain, or CAs), checked here: gRPC takes any bytes and fails
    only when it listens (which reads as a port in use) or connects (as a service out of reach)."""
    pem = _file(path, name)
    if not pem.isascii():  # PEM is text; ssl reads bytes as one binary (DER) certificate
        raise ValueError(
            f"{name} {path} holds no PEM certificate (binary data: a DER certificate becomes PEM with "
            f"`openssl x509 -inform DER -in {path} -out {path}.pem`)"
        )
    try:  # the bytes just read, not the file again: a renewal may replace it between two reads
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=pem.decode("ascii"))
    except ssl.SSLError:
        raise ValueError(f"{name} {path} holds no PEM certificate") from None
    return pem


def _pair(cert: str, key: str, cert_name: str, key_name: str) -> tuple[bytes, bytes]:
    """The PEM bytes of a certificate chain and of its private key, checked as `_certificates` checks."""
    cert_pem, key_pem = _certificates(cert, cert_name), _file(key, key_name)
    refusal = _pair_refusal(cert_pem, key_pem)
    if refusal == "KEY_VALUES_MISMATCH":
        raise ValueError(f"{key_name} does not match {cert_name} ({key} is not {cert}'s key)")
    if refusal:
        raise ValueError(f"{key_name} {key} is no unencrypted PEM private key")
    return cert_pem, key_pem


def _pair_refusal(cert_pem: bytes, key_pem: bytes) -> str | None:
    """Why ssl refuses a certificate chain with this key; None when it takes them. ssl reads a pair only from
    files: these hold the bytes just read, as gRPC gets them, where reading the two paths again could check a
    renewal that landed since."""
    with tempfile.TemporaryDirectory() as folder:  # mode 0700: it holds the key
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        try:  # an encrypted key fails instead of prompting
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=b"")
        except ssl.SSLError as error:
            return error.reason or "refused"
    return None


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials | None:
    """None for plaintext; with `client_ca`, callers must present a certificate that CA signed."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-ca (client certificates) needs --tls-cert and --tls-key too")
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")

    def configuration() -> grpc.ServerCertificateConfiguration:
        cert_pem, key_pem = _pair(cert, key, "--tls-cert", "--tls-key")
        client_ca_pem = _certificates(client_ca, "--tls-ca") if client_ca else None
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=client_ca_pem
        )

    files = WatchedFiles((cert, key, client_ca), configuration, f"serving the certificate now in {cert}")
    return grpc.dynamic_ssl_server_credentials(
        files.first,
        files.changed,  # type: ignore[arg-type]  # None is "no change" (grpc's docstring; its stub omits it)
        require_client_authentication=bool(client_ca),
    )


class WatchedFiles(Generic[Read]):
    """TLS files, as `read` checks and takes them (`first`), and read again by `changed` once one of them
    changes: None while none did. Files that fail the checks (a certificate renewed before its key, say)
    leave the current ones in use, with a warning, until the files change again."""

    def __init__(self, paths: Sequence[str], read: Callable[[], Read], taken: str) -> None:
        self._paths = [path for path in paths if path]
        self._read, self._taken = read, taken  # `taken`: what the log says the new files are now used for
        self._lock = threading.Lock()
        self.first = read()  # checked before the stamps: a missing file is named, as read() names it
        self._seen = self._stamps()

    def _stamps(self) -> list[tuple[int, int, int]]:
        return [(stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in map(os.stat, self._paths)]

    def changed(self) -> Read | None:
        with self._lock:
            try:
                stamps = self._stamps()
            except OSError:
                return None  # a file being replaced: the next look finds it
            if stamps == self._seen:
                return None
            try:
                read = self._read()
            except OSError as error:  # the check's own files (a full /tmp): the next look reads them again
                log.warning(
                    "TLS files changed but cannot be checked now; the previous ones are used: %s", error
                )
                return None
            except ValueError as error:
                self._seen = stamps
                log.warning("TLS files changed but cannot be used, the previous ones still are: %s", error)
                return None
            self._seen = stamps
            log.info("TLS files changed: %s", self._taken)
            return read


# How a caller's messages name its three files: the flags that gave them.
CallerFiles = tuple[str, str, str]
_SDK_FILES: CallerFiles = ("the CA", "the client certificate", "the client key")


def channel_credentials(
    ca: str, cert: str = "", key: str = "", named: CallerFiles = _SDK_FILES
) -> grpc.ChannelCredentials:
    """TLS: `ca` verifies the server (empty: the system's roots), `cert`/`key` identify us (mutual TLS).
    Files that are missing or hold no PEM are a ValueError naming them as `named` says."""
    ca_name, cert_name, key_name = named
    if bool(cert) != bool(key):
        raise ValueError(f"{cert_name} and {key_name} go together")
    cert_pem, key_pem = _pair(cert, key, cert_name, key_name) if cert else (None, None)
    return grpc.ssl_channel_credentials(_certificates(ca, ca_name) if ca else None, key_pem, cert_pem)


def watched_channel_credentials(
    ca: str, cert: str, key: str, named: CallerFiles, callee: str
) -> WatchedFiles[grpc.ChannelCredentials] | None:
    """A service's calls to another (`callee`): TLS when any of the files is named, read again when one of
    them changes; plaintext (None) otherwise."""
    if not (ca or cert or key):
        return None
    taken = (
        f"calling the {callee} with the files now in {', '.join(path for path in (ca, cert, key) if path)}"
    )
    return WatchedFiles((ca, cert, key), lambda: channel_credentials(ca, cert, key, named), taken)
