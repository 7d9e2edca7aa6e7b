"""Driving an ASGI app in-process: build a scope, collect what it sends."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


def http_scope(path: str = "/", *, method: str = "GET", host: str | None = "acme.example.com",
               headers: list[tuple[str, str]] | None = None, query: str = "",
               raw_path: str | None = None, client: str = "203.0.113.9",
               server: tuple[str, int] = ("127.0.0.1", 8000)) -> dict[str, Any]:
    raw = [(b"host", host.encode())] if host is not None else []
    raw += [(k.lower().encode(), v.encode()) for k, v in headers or []]
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": (raw_path or path).encode(), "root_path": "",
            "query_string": query.encode(), "headers": raw, "client": (client, 50000),
            "server": server}


@dataclass
class Result:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers_all(name)
        return values[0] if values else None

    def headers_all(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k.decode().lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)


async def call(app, scope: dict[str, Any], body: bytes | list[bytes] = b"",
               disconnect_after: float | None = None) -> Result:
    chunks = body if isinstance(body, list) else [body]
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for index, chunk in enumerate(chunks):
        inbox.put_nowait({"type": "http.request", "body": chunk,
                          "more_body": index < len(chunks) - 1})
    if disconnect_after is not None:
        asyncio.get_running_loop().call_later(
            disconnect_after, inbox.put_nowait, {"type": "http.disconnect"})
    result = Result()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        result.messages.append(message)
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")

    await app(scope, receive, send)
    return result
