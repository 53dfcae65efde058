"""What a port may be, and whether a server can listen on a host and port, asked before it tries, so that a
refusal names the flag."""

import errno
import socket


def is_port(number: int, none: int | None = None) -> bool:
    """Whether `number` is a port to listen on (0: any free one), or `none` if given (the flag's "none")."""
    return 0 <= number <= 65535 or number == none


def bare_host(host: str) -> str:
    """`host` as socket functions take it: an IPv6 address without the brackets a URL writes (`[::1]`)."""
    return host.strip("[]")


def require_listenable(host: str, port: int, flag: str) -> None:
    """OSError naming the flag to change (`--host`, or the port's `flag`) when nothing can listen on
    host:port. Probed as gRPC and uvicorn bind (SO_REUSEADDR; some address of the host's will do), before
    they try: gRPC's own failure is a raw line of its log ahead of ours, Python's names no flag."""
    cannot = f"cannot listen on {host}:{port}"
    try:
        addresses = socket.getaddrinfo(bare_host(host), port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"{cannot} (--host): {host!r} does not resolve ({error.strerror})") from None
    refusals: set[int | None] = set()
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:  # no IPv6 here: that family fails
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as error:
            refusals.add(error.errno)
            continue
        return
    if errno.EADDRINUSE in refusals:
        raise OSError(f"{cannot} ({flag}): another process holds that port")
    if errno.EACCES in refusals:
        raise OSError(f"{cannot} ({flag}): a port below 1024 needs privileges this process lacks")
    raise OSError(f"{cannot} (--host): {host!r} is not an address of this machine")
