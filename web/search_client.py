"""The web tier's client of the search service, made again when its --search-tls-* files change (a renewed
client certificate, as cert-manager writes one): no restart. New requests take the new client; the previous
one closes once the requests that began on it have ended (closing it at once would cancel their calls)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc

from client import AsyncSearchClient
from imagesearch.tls import WatchedFiles


class RenewingSearchClient:
    """`make` makes a client with the credentials given (None: plaintext); `tls` watches their files. Used
    from one event loop, so its counts need no lock."""

    def __init__(
        self,
        make: Callable[[grpc.ChannelCredentials | None], AsyncSearchClient],
        tls: WatchedFiles[grpc.ChannelCredentials] | None,
    ) -> None:
        self._make, self._tls = make, tls
        self._current = make(tls.first if tls else None)
        self._requests: dict[AsyncSearchClient, int] = {self._current: 0}  # open clients: requests on each

    @asynccontextmanager
    async def using(self) -> AsyncIterator[AsyncSearchClient]:
        """The current client, for one request's calls."""
        credentials = self._tls.changed() if self._tls else None
        if credentials is not None:
            retired, self._current = self._current, self._make(credentials)
            self._requests[self._current] = 0
            if self._requests[retired] == 0:
                await self._close(retired)
        client = self._current
        self._requests[client] += 1
        try:
            yield client
        finally:
            self._requests[client] -= 1
            if client is not self._current and self._requests[client] == 0:
                await self._close(client)

    async def _close(self, client: AsyncSearchClient) -> None:
        del self._requests[client]
        await client.close()

    async def close(self) -> None:
        """Closes the current client; a previous one still open closes as its last request ends."""
        await self._current.close()
