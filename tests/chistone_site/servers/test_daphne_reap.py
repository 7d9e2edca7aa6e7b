"""daphne forgets a request's application instance as soon as it returns (issue 18's faster
path): a real daphne Server with the worker's reaping, in a fresh interpreter (a reactor is
installed once per process), real HTTP requests over one keep-alive connection.

daphne's own once-a-second sweep (`application_checker`) is switched off in the probe, so
whatever is still in `Server.connections` after the responses is what the reaping left."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = textwrap.dedent("""
    import http.client, json, sys, threading, time
    from chistone_site.servers import daphne
    daphne.install_reactor()
    from daphne.server import Server
    from twisted.internet import reactor

    async def app(scope, receive, send):
        await receive()
        if scope["path"] == "/raise":
            raise RuntimeError("the application failed")
        if scope["path"] == "/unfinished":  # returns with its response still open
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"o", "more_body": True})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = Server(app, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False,
                    verbosity=0)
    server.application_checker = lambda: None  # daphne's sweep: off, to see ours alone
    daphne._reap_finished_applications(server)
    result = {}

    def report():
        result["entries"] = len(server.connections)
        result["instances"] = sorted(
            "done" if details["application_instance"].done() else "running"
            for details in server.connections.values() if "application_instance" in details)
        reactor.stop()

    def client(port):
        statuses = set()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(int(sys.argv[1])):
            conn.request("GET", "/")
            response = conn.getresponse()
            statuses.add((response.status, response.read().decode()))
        if sys.argv[2] != "ok":
            conn.request("GET", "/" + sys.argv[2])  # no complete answer comes
            time.sleep(0.1)
        conn.close()
        result["statuses"] = sorted(statuses)
        reactor.callFromThread(reactor.callLater, 0.2, report)

    def start():
        if not server.listening_addresses:
            reactor.callLater(0.05, start)
            return
        port = server.listening_addresses[0][1]
        threading.Thread(target=client, args=(port,), daemon=True).start()

    reactor.callLater(0.05, start)
    reactor.callLater(30, reactor.stop)  # never hang the test run
    server.run()
    print(json.dumps(result))
""")


def run_probe(requests: int, last: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(requests), last], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_finished_requests_leave_nothing_behind_in_daphnes_connections() -> None:
    result = run_probe(20, "ok")
    assert result["statuses"] == [[200, "ok"]]
    # Without the reaping each of the 20 finished requests stays in `Server.connections` with
    # its done application instance until daphne's next sweep.
    assert result["instances"] == []
    assert result["entries"] == 0


def test_an_application_that_raised_is_left_to_daphnes_sweep() -> None:
    # daphne's checker logs the exception and answers the client: the reaping must not take
    # that instance away from it.
    result = run_probe(3, "raise")
    assert result["statuses"] == [[200, "ok"]]
    assert result["instances"] == ["done"]
    assert result["entries"] == 1


def test_an_application_that_returned_before_its_response_ended_is_left_to_daphnes_sweep():
    # Its entry keeps its instance until daphne's checker (daphne's shutdown reads the
    # instance of every entry).
    result = run_probe(3, "unfinished")
    assert result["statuses"] == [[200, "ok"]]
    assert result["instances"] == ["done"]
    assert result["entries"] == 1
