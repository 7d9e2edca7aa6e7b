"""Test doubles for in-process unit tests of the data plane's pieces (never for e2e)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from luascripts.engine.types import Limits, Outcome, ScriptRequest
from routing.snapshot import BackendEntry, Snapshot, TenantEntry, compile_snapshot
from routing.upstream import Broken, UpstreamError


def backend(name: str, *, tenant: str = "acme", port: int = 9001, weight: int = 1,
            enabled: bool = True, base: str = "", health: str = "", bid: int = 0,
            read_ms: int = 30000) -> BackendEntry:
    return BackendEntry.from_url(id=bid or hash(name) % 10_000, tenant=tenant, name=name,
                                 url=f"http://127.0.0.1:{port}{base}", weight=weight,
                                 enabled=enabled, health_check_path=health,
                                 read_timeout_ms=read_ms)


def tenant(slug: str = "acme", *, backends: list[BackendEntry] | None = None,
           domains: tuple[str, ...] = (), prefix: str = "", script: Any = None,
           unavailable: str = "", selector: bool = False) -> TenantEntry:
    backends = backends if backends is not None else [backend("api", tenant=slug)]
    return TenantEntry(
        id=abs(hash(slug)) % 10_000, slug=slug, name=slug.title(), prefix=prefix,
        domains=domains, backends={b.name: b for b in backends},
        default_pool=tuple(b for b in backends if b.enabled and b.weight > 0),
        script=script, version_id=1 if script else None, version_number=1 if script else None,
        is_selector=selector, unavailable=unavailable)


def snapshot(*tenants: TenantEntry, generation: int = 1) -> Snapshot:
    return compile_snapshot(generation, list(tenants))


@dataclass
class FakeScript:
    """A stand-in for a LoadedScript: returns what `decide` returns for the request."""

    decide: Callable[[ScriptRequest], Outcome]
    seen: list[ScriptRequest] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)

    def start(self, req: ScriptRequest) -> Outcome:
        self.seen.append(req)
        return self.decide(req)

    handle = start


class FakeResponse:
    def __init__(self, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None,
                 chunks: list[bytes | Exception] | None = None) -> None:
        self.status = status
        self.raw_headers = tuple(headers or [(b"Content-Type", b"text/plain")])
        self.chunks = list(chunks if chunks is not None else [b"ok"])
        self.released = False
        self.closed = False

    def ready(self) -> bool:
        return True

    def at_eof(self) -> bool:
        return not self.chunks

    async def read_chunk(self) -> bytes:
        if not self.chunks:
            return b""
        item = self.chunks.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


@dataclass
class Call:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: Any
    timeouts: tuple[float, float, float]


class FakeTransport:
    """Answers each send with the next scripted reply: a FakeResponse or an UpstreamError."""

    def __init__(self, *replies: FakeResponse | UpstreamError | Callable[[Call], Any]) -> None:
        self.replies = list(replies)
        self.calls: list[Call] = []
        self.probes: list[str] = []
        self.probe_result = True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, method, url, headers, body, *, connect, read, total):
        if body is not None and not isinstance(body, bytes):
            body = b"".join([piece async for piece in body])
        call = Call(method, url, headers, body, (connect, read, total))
        self.calls.append(call)
        reply = self.replies.pop(0) if self.replies else FakeResponse()
        if callable(reply) and not isinstance(reply, (FakeResponse, UpstreamError)):
            reply = await reply(call)
        if isinstance(reply, UpstreamError):
            raise reply
        return reply

    async def probe(self, url: str, host: str, limit_s: float) -> bool:
        self.probes.append(url)
        return self.probe_result


def broken() -> Broken:
    return Broken("reset")
