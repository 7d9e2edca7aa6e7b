"""The uvicorn adapter leaves no reference cycle behind a request (issue 18's faster path): its
connection object holds the transport, not uvicorn's request cycle, which holds the scope
that holds the connection. Checked in a fresh interpreter running a real uvicorn with the
adapter, real HTTP requests, the cyclic collector off: what it finds afterwards, beyond what
a run of few requests leaves, is garbage the requests left."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = textwrap.dedent("""
    import asyncio, gc, json, socket
    import uvicorn
    from chistone_site.servers import adapt
    from routing.respond import server_connection

    seen = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        seen.append(type(server_connection(scope)).__name__)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(adapt(app, server="uvicorn"), loop="none", http="httptools",
                            lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    result = {}

    def client(requests):  # raw bytes on one keep-alive connection: no garbage of its own
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            for _ in range(requests):
                conn.sendall(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
                answer = b""
                while not answer.endswith(b"ok"):
                    answer += conn.recv(4096)

    async def main():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(client, 20)  # a warm-up: first requests fill caches
        await asyncio.sleep(0.2)
        for requests in (10, 60):
            gc.collect()
            gc.disable()
            await asyncio.to_thread(client, requests)
            await asyncio.sleep(0.2)
            result[f"garbage after {requests}"] = gc.collect()
            gc.enable()
        result["connections"] = sorted(set(seen))
        server.should_exit = True
        await task

    asyncio.run(main())
    print(json.dumps(result))
""")


def test_requests_through_the_uvicorn_adapter_leave_no_cyclic_garbage() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["connections"] == ["UvicornConnection"]  # the adapter was in the path
    # The thread and the connection leave a few objects whatever the count; requests add none
    # (before the fix, about ten each: their scope, uvicorn's cycle and the connection).
    assert result["garbage after 60"] - result["garbage after 10"] < 10, result
