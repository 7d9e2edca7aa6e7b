"""Small real HTTP backends for the demo: each answers JSON naming itself and echoing the request.

Run with `python -m chistone_site.demo.backends` (`manage.py serve --demo-backends` does it).
Ports come from DEMO_BACKENDS below; `manage.py load_demo` registers the same addresses.
"""

from __future__ import annotations

import asyncio
import json

from chistone_site.conf import process_environment

DEMO_HOST = process_environment().demo_host
DEMO_BACKENDS: dict[str, int] = {
    "users-v1": 9101,
    "users-v2": 9102,
    "stable": 9103,
    "canary": 9104,
    "legacy": 9105,
}


def demo_url(name: str) -> str:
    return f"http://{DEMO_HOST}:{DEMO_BACKENDS[name]}"


async def _serve_one(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            payload = json.dumps({
                "backend": name,
                "method": method,
                "path": target,
                "headers": headers,
                "body_bytes": len(body),
            }, indent=2).encode() + b"\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\nX-Demo-Backend: {name}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    servers = []
    for name, port in DEMO_BACKENDS.items():
        servers.append(await asyncio.start_server(
            lambda r, w, n=name: _serve_one(n, r, w), DEMO_HOST, port))
        print(f"demo backend {name:9} {demo_url(name)}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
