"""The upstream HTTP client's seam (`Transport`), its errors, and the aiohttp transport.

The gateway talks to `Transport` only; `make_transport` gives the configured one
(`UPSTREAM_CLIENT`): chistone's own lean client, `routing.upstream_h1.H1Transport` (the
default), or `AiohttpTransport` below, the one used before; tests swap in their own. Both keep
the same contract. The aiohttp session is created once (on the serving event loop) with:
- keep-alive pools per backend (host:port), bounded in total and per backend;
- `trust_env=False` (HTTP_PROXY and friends are ignored), no redirects, no cookie jar;
- `auto_decompress=False`: bytes pass through unchanged, Content-Encoding untouched;
- none of the client's own default headers (User-Agent, Accept, Accept-Encoding,
  Content-Type) are added to proxied requests.
Timeouts per request: `connect` (pool wait plus TCP/TLS connect), `read` (time to the first
byte and between any two reads: a silent backend) and `total` (the whole exchange, body
included: a slow-drip backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
from yarl import URL

from routing.conf import GatewayConf

SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
Body = bytes | AsyncIterator[bytes] | None


class UpstreamError(Exception):
    """A failed exchange; `sent` tells whether any of the request may have reached the backend."""

    sent = True


class ConnectFailed(UpstreamError):
    sent = False


class ConnectTimedOut(UpstreamError):
    sent = False


class ReadTimedOut(UpstreamError):
    """No byte within the read timeout, or the total deadline passed."""


class Broken(UpstreamError):
    """Reset, closed early or an invalid response."""


class UpstreamResponse(Protocol):
    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]

    async def read_chunk(self) -> bytes:
        """The next piece of the body (bounded by the chunk size); b"" at the end."""
        ...

    def ready(self) -> bool:
        """True when `read_chunk()` will not wait: body bytes are buffered or the body ended."""
        ...

    def at_eof(self) -> bool:
        """True when the whole body has been read."""
        ...

    def release(self) -> None:
        """The body was read to the end: the connection can be reused."""
        ...

    def close(self) -> None:
        """Abandon the exchange: the connection is closed, never reused."""
        ...


class Transport(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: Body, *,
                   connect: float, read: float, total: float) -> UpstreamResponse:
        """Send a request and return once the response headers have arrived."""
        ...

    async def probe(self, url: str, host: str, limit_s: float) -> bool:
        """An active health check: True for a 2xx/3xx answer within `limit_s` seconds."""
        ...


class _AiohttpResponse:
    __slots__ = ("_content", "_response", "raw_headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.status = response.status
        self.raw_headers = response.raw_headers

    async def read_chunk(self) -> bytes:
        try:
            return await self._content.readany()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ReadTimedOut(str(exc) or "read timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Broken(str(exc) or type(exc).__name__) from exc

    def ready(self) -> bool:
        content = self._content
        return content.is_eof() or getattr(content, "_size", 0) > 0

    def at_eof(self) -> bool:
        return self._content.at_eof()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


def _as_sent(value: str) -> str:
    """The header value aiohttp will write as the bytes the client sent.

    Header values are held one character per byte (latin-1); aiohttp writes them as UTF-8,
    which would turn a client's UTF-8 `é` (C3 A9) into C3 83 C2 A9. A value whose bytes are
    UTF-8 (routing.request refuses client values that are not) goes as those bytes.
    """
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # set by a script: its text, as UTF-8
        return value


class AiohttpTransport:
    def __init__(self, conf: GatewayConf) -> None:
        self.conf = conf
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float, float], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.conf.upstream_pool_size,
            limit_per_host=self.conf.upstream_pool_per_backend,
            keepalive_timeout=self.conf.upstream_keepalive_s,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            read_bufsize=self.conf.chunk_bytes,
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
            requote_redirect_url=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _timeout(self, connect: float, read: float, total: float) -> aiohttp.ClientTimeout:
        key = (connect, read, total)
        timeout = self._timeouts.get(key)
        if timeout is None:
            if len(self._timeouts) > 1000:
                self._timeouts.clear()
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=total, connect=connect, sock_read=read)
        return timeout

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: Body, *,
                   connect: float, read: float, total: float) -> UpstreamResponse:
        session = self._session
        if session is None:
            await self.start()
            session = self._session
            assert session is not None
        try:
            response = await session.request(
                method,
                URL(url, encoded=True),  # the raw path and query go out byte-for-byte
                headers=[(name, _as_sent(value)) for name, value in headers],
                data=body,
                allow_redirects=False,
                timeout=self._timeout(connect, read, total),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectTimedOut(str(exc) or "connect timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(str(exc)) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ReadTimedOut(str(exc) or "no response in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Broken(str(exc) or type(exc).__name__) from exc
        return _AiohttpResponse(response)

    async def probe(self, url: str, host: str, limit_s: float) -> bool:
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.get(
                URL(url, encoded=True), headers={"Host": host}, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as response:
                await response.content.read(64 * 1024)
                return 200 <= response.status < 400
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False


def make_transport(conf: GatewayConf) -> Transport:
    """The configured upstream client (`UPSTREAM_CLIENT`: "h1", the default, or "aiohttp")."""
    if conf.upstream_client == "aiohttp":
        return AiohttpTransport(conf)
    if conf.upstream_client != "h1":
        raise ValueError(f"UPSTREAM_CLIENT must be 'h1' or 'aiohttp', not "
                         f"{conf.upstream_client!r}")
    from routing.upstream_h1 import H1Transport

    return H1Transport(conf)
