"""The scan: smuggler's payloads and verdicts, plus the status of every answer.

Port of smuggler.py's `Desyncr` (defparam/smuggler, MIT, commit 2be871e). Differences, each to
make a CI run bounded and stricter, never more lenient:
- probes run in parallel threads (smuggler runs them one after another);
- every answer's status line is kept and judged (smuggler only prints it);
- `encoding`: smuggler sends `str(payload).encode()`, UTF-8, so its "bytes" 0x80-0xFF go out
  as two-byte sequences; `encoding="latin-1"` sends them as the single bytes the
  configurations name. The scan runs both.
"""

from __future__ import annotations

import importlib.util
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent / "upstream"
CONFIGS = ("default", "doubles", "exhaustive")

# Desyncr._test's return codes.
NORMAL, TIMEOUT, DISCONNECTED, ERROR = 0, 1, 2, -1


def _payload_module():
    spec = importlib.util.spec_from_file_location("smuggler_payload", UPSTREAM / "Payload.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAYLOAD = _payload_module()


def load_mutations(config: str) -> dict[str, object]:
    """The mutations of one configuration, as smuggler's `Desyncr.run` builds them: the
    configuration's source executed with `Payload` and an empty `mutations` dict in scope."""
    source = (UPSTREAM / "configs" / f"{config}.py").read_text()
    namespace = {"Payload": PAYLOAD.Payload, "mutations": {}}
    exec(compile(source, f"smuggler/configs/{config}.py", "exec"), namespace)
    return namespace["mutations"]


@dataclass
class Probe:
    """One request and what came back (Desyncr._test's tuple, plus the status line)."""

    code: int
    response: bytes | None
    payload: bytes

    @property
    def json(self) -> bool:
        """The answer is one of the gateway's JSON bodies (not a server's own page)."""
        head, _, body = (self.response or b"").partition(b"\r\n\r\n")
        return b"content-type: application/json" in head.lower() and body.startswith(b"{")

    @property
    def status(self) -> int | None:
        if not self.response or not self.response.startswith(b"HTTP/"):
            return None
        try:
            return int(self.response.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None


@dataclass
class Verdict:
    name: str
    finding: str | None  # "CLTE" or "TECL": smuggler's "Potential ... Issue Found"
    note: str  # smuggler's line for the mutation: OK, DISCONNECTED, TIMEOUT ON BOTH, ...
    probes: list[Probe] = field(default_factory=list)


@dataclass
class Report:
    config: str
    encoding: str
    verdicts: list[Verdict]
    seconds: float

    @property
    def findings(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.finding]

    def probes(self) -> list[tuple[str, Probe]]:
        return [(v.name, p) for v in self.verdicts for p in v.probes]

    def statuses(self) -> Counter:
        return Counter((p.status, "json" if p.json else "other") if p.code == NORMAL
                       else {TIMEOUT: "timeout",
                       DISCONNECTED: "disconnected", ERROR: "error"}[p.code]
                       for _, p in self.probes())

    def summary(self) -> str:
        notes = Counter(v.note for v in self.verdicts)
        return (f"{self.config}/{self.encoding}: {len(self.verdicts)} mutations in "
                f"{self.seconds:.1f} s, findings {len(self.findings)}, verdicts {dict(notes)}, "
                f"answers {dict(self.statuses())}")


class Desyncr:
    """smuggler's Desyncr for one target, without its console and payload files."""

    def __init__(self, host: str, port: int, *, vhost: str, method: str = "POST",
                 endpoint: str = "/", timeout: float = 5.0, encoding: str = "utf-8") -> None:
        self.host, self.port = host, port
        self.vhost = vhost
        self.method, self.endpoint = method, endpoint
        self.timeout = timeout
        self.encoding = encoding
        self.cookies: list[str] = []

    def _test(self, payload_obj) -> Probe:
        data = str(payload_obj).encode(self.encoding)
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as web:
                web.sendall(data)
                start_time = time.monotonic()
                try:
                    web.settimeout(self.timeout)
                    res = web.recv(8192)  # EasySSL.recv_nb: one recv, None on any exception
                except OSError:
                    res = None
                elapsed = time.monotonic() - start_time
        except OSError:
            return Probe(ERROR, None, data)
        if res is None:
            if elapsed < self.timeout - 1:
                return Probe(DISCONNECTED, None, data)  # disconnected before the timeout
            return Probe(TIMEOUT, None, data)
        return Probe(NORMAL, res, data)

    def _get_cookies(self) -> Probe:
        rn = "\r\n"
        p = PAYLOAD.Payload()
        p.host = self.vhost
        p.method = "GET"
        p.endpoint = self.endpoint
        p.header = "__METHOD__ __ENDPOINT__?cb=__RANDOM__ HTTP/1.1" + rn
        p.header += "Host: __HOST__" + rn
        p.header += ("User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                     "(KHTML, like Gecko) Chrome/78.0.3904.87 Safari/537.36" + rn)
        p.header += "Content-type: application/x-www-form-urlencoded; charset=UTF-8" + rn
        p.header += "Content-Length: 0" + rn
        p.body = ""
        probe = self._test(p)
        for line in (probe.response or b"").decode("latin-1").split("\r\n"):
            if len(line) > 11 and line[0:11].lower().replace(" ", "") == "set-cookie:":
                self.cookies.append(line.lower().replace("set-cookie:", "").split(";")[0] + ";")
        return probe

    def _prepare(self, payload):
        te_payload = deepcopy(payload)
        te_payload.host = self.vhost
        te_payload.method = self.method
        te_payload.endpoint = self.endpoint
        if self.cookies:
            te_payload.header += "Cookie: " + "".join(self.cookies) + "\r\n"
        return te_payload

    def check_tecl(self, payload, ptype: int = 0) -> Probe:
        te_payload = self._prepare(payload)
        te_payload.cl = 5 if ptype else 6  # timeout value 6, good value 5
        te_payload.body = PAYLOAD.EndChunk + "X"
        return self._test(te_payload)

    def check_clte(self, payload, ptype: int = 0) -> Probe:
        te_payload = self._prepare(payload)
        te_payload.cl = 11 if ptype else 4  # timeout value 4, good value 11
        te_payload.body = PAYLOAD.Chunked("Z") + PAYLOAD.EndChunk
        return self._test(te_payload)

    def exec_test(self, name: str, te_payload, attempts: int = 0) -> Verdict:
        """`_create_exec_test`: TECL then CLTE; a timeout confirmed by the edge case three
        times over is a finding."""
        tecl = self.check_tecl(te_payload, 0)
        clte = self.check_clte(te_payload, 0)
        probes = [tecl, clte]
        if clte.code == TIMEOUT:
            edge = self.check_clte(te_payload, 1)
            probes.append(edge)
            if edge.code == NORMAL:
                if attempts + 1 < 3:
                    again = self.exec_test(name, te_payload, attempts + 1)
                    again.probes[:0] = probes
                    return again
                return Verdict(name, "CLTE", "Potential CLTE Issue Found", probes)
            return Verdict(name, None, "CLTE TIMEOUT ON BOTH LENGTH 4 AND 11", probes)
        if tecl.code == TIMEOUT:
            edge = self.check_tecl(te_payload, 1)
            probes.append(edge)
            if edge.code == NORMAL:
                if attempts + 1 < 3:
                    again = self.exec_test(name, te_payload, attempts + 1)
                    again.probes[:0] = probes
                    return again
                return Verdict(name, "TECL", "Potential TECL Issue Found", probes)
            return Verdict(name, None, "TECL TIMEOUT ON BOTH LENGTH 6 AND 5", probes)
        if tecl.code == ERROR or clte.code == ERROR:
            return Verdict(name, None, "SOCKET ERROR", probes)
        if tecl.code == NORMAL and clte.code == NORMAL:
            return Verdict(name, None, "OK", probes)
        return Verdict(name, None, "DISCONNECTED", probes)


def scan(config: str, *, host: str, port: int, vhost: str, encoding: str = "utf-8",
         timeout: float = 5.0, workers: int = 8, method: str = "POST",
         endpoint: str = "/") -> Report:
    started = time.monotonic()
    desyncr = Desyncr(host, port, vhost=vhost, method=method, endpoint=endpoint,
                      timeout=timeout, encoding=encoding)
    cookies = desyncr._get_cookies()
    mutations = load_mutations(config)
    with ThreadPoolExecutor(workers) as pool:
        verdicts = list(pool.map(lambda item: desyncr.exec_test(*item), mutations.items()))
    verdicts.insert(0, Verdict("(cookies)", None, "OK" if cookies.code == NORMAL else "ERROR",
                               [cookies]))
    return Report(config, encoding, verdicts, time.monotonic() - started)
