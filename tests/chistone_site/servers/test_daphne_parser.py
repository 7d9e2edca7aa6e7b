"""chistone_site.servers.daphne_parser on Twisted's real HTTP parser, in a child process (the
hooks replace Twisted's and daphne's methods process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

from chistone_site.servers import daphne_parser
from tests.serving import ROOT

CHILD = r"""
import json, sys
import daphne.server  # noqa: F401  (the asyncio reactor daphne runs on)
from twisted.internet.testing import StringTransport
from twisted.web import http
from chistone_site.servers import daphne_parser

class Request(http.Request):
    def process(self):
        self.setResponseCode(200)
        self.write(b"ok")
        self.finish()

daphne_parser.install()
results = {}
for name, data in json.loads(sys.stdin.read()).items():
    channel = http.HTTPChannel()
    channel.requestFactory = Request
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data.encode("latin-1"))
    results[name] = [transport.value().decode("latin-1"), transport.disconnecting]
print(json.dumps(results))
"""

CASES = {
    "ok": "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare-lf-head": "GET / HTTP/1.1\nHost: a\n\n",
    "bare-lf-end": "GET / HTTP/1.1\r\nHost: a\r\n\n",
    "obs-fold": "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "huge-length": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\nZ",
    "huge-chunk": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "10000000000000001\r\nZ\r\n",
    "cl-and-te": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


def test_every_hook_is_where_the_adapter_expects_it():
    """Fails when an upgrade of Twisted or daphne moves one: the worker would not start."""
    assert daphne_parser.missing_hooks() == []


def test_what_twisted_left_waiting_or_answered_bare_is_a_json_400():
    done = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(CASES), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    answer, closing = results["ok"]
    assert answer.startswith("HTTP/1.1 200") and not closing
    for name in CASES.keys() - {"ok"}:
        answer, closing = results[name]
        head, _, body = answer.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 400 Bad Request"), (name, answer)
        assert "content-type: application/json" in head and "connection: close" in head, name
        payload = json.loads(body)
        assert payload["error"] == "bad_request" and len(payload["request_id"]) == 32, name
        assert f"x-request-id: {payload['request_id']}" in head
        assert closing, name
