"""Sending one case's raw bytes to a proxy and summing up what happened on both sides."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

from tests.adversarial.differential.recorder import Received, Recorder, Unparseable

# What each proxy adds or recomputes by design, left out of the comparison of what the
# backend received: the hop's own headers and the framing (bodies are compared de-framed).
PROXY_HEADERS = frozenset({
    b"host", b"connection", b"keep-alive", b"te", b"transfer-encoding", b"content-length",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
    b"x-real-ip", b"x-request-id",
})
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")
GRACE_S = 0.05  # after the expected answers: how long extra bytes (a desync) may take
HANG_S = 3.0


@dataclass(frozen=True)
class Outcome:
    """One proxy's handling of one case."""

    statuses: tuple[int, ...]  # the answers the client got, in order
    ended: str  # "closed", "open" (keep-alive) or "hang" (no answer at all)
    forwarded: tuple[Received, ...]  # what the backend parsed
    unparseable: tuple[Unparseable, ...]  # what the backend could not parse

    @property
    def refused(self) -> bool:
        return not self.forwarded and all(400 <= s < 500 for s in self.statuses) \
            and bool(self.statuses)

    def view(self) -> tuple:
        """What the backend received, minus what each proxy adds by design."""
        return tuple((r.method, r.target,
                      tuple((n.lower(), v) for n, v in r.headers
                            if n.lower() not in PROXY_HEADERS), r.body)
                     for r in self.forwarded)

    def describe(self) -> str:
        if self.ended == "hang":
            return "hang"
        answers = ",".join(str(s) for s in self.statuses) or "no answer"
        if not self.forwarded:
            return f"answers {answers}"
        return f"forwards {len(self.forwarded)} ({answers})"


def _responses(data: bytes) -> tuple[list[int], bool]:
    """The statuses of the complete responses in `data`, and whether the last is complete."""
    statuses: list[int] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        match = _STATUS.match(head)
        if not sep or match is None:
            return statuses, False
        status = int(match.group(1))
        lines = head.split(b"\r\n")[1:]
        fields = {n.strip().lower(): v.strip() for n, _, v in (ln.partition(b":") for ln in lines)}
        if b"transfer-encoding" in fields:
            end = rest.find(b"\r\n0\r\n\r\n")
            if not rest.startswith(b"0\r\n\r\n") and end < 0:
                return statuses, False
            cut = 5 if rest.startswith(b"0\r\n\r\n") else end + 7
            data = rest[cut:]
        else:
            length = int(fields.get(b"content-length", b"0") or 0)
            if len(rest) < length:
                return statuses, False
            data = rest[length:]
        statuses.append(status)
    return statuses, True


def send(port: int, payload: bytes, *, expect: int = 1) -> tuple[list[int], str]:
    """Send `payload`; read until the server closes, or `expect` answers came and nothing
    follows within GRACE_S, or nothing at all came within HANG_S."""
    data = b""
    ended = "hang"
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        sock.sendall(payload)
        deadline = time.monotonic() + HANG_S
        while True:
            statuses, complete = _responses(data)
            if complete and len(statuses) >= expect:
                sock.settimeout(GRACE_S)
            else:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                ended = "open" if statuses else "hang"
                break
            except ConnectionResetError:
                ended = "closed"
                break
            if not piece:
                ended = "closed"
                break
            data += piece
    statuses, _ = _responses(data)
    return statuses, ended


def run_case(port: int, recorder: Recorder, payload: bytes, *, expect: int = 1) -> Outcome:
    before = len(recorder.received)
    statuses, ended = send(port, payload, expect=expect)
    time.sleep(0.005)  # what the backend answered, it has recorded; let its loop settle
    got = recorder.received[before:]
    return Outcome(
        statuses=tuple(statuses),
        ended=ended,
        forwarded=tuple(r for r in got if isinstance(r, Received)),
        unparseable=tuple(r for r in got if isinstance(r, Unparseable)),
    )


def classify(nginx: Outcome, chistone: Outcome) -> str | None:
    """None when both proxies did the same; else the kind of difference.

    - `stricter`: nginx forwards, chistone refuses with a 4xx;
    - `laxer`: chistone forwards what nginx refuses;
    - `rewritten`: both forward, but the backend received something different;
    - `answers`: neither forwards, but one answers and the other refuses.
    """
    if nginx.forwarded and chistone.refused:
        return "stricter"
    if chistone.forwarded and not nginx.forwarded:
        return "laxer"
    if nginx.forwarded and chistone.forwarded:
        return None if nginx.view() == chistone.view() else "rewritten"
    if not nginx.forwarded and not chistone.forwarded:
        # Both refuse: the same for the backend (never reached) and for the client (an
        # error answer); nginx says 501 or 505 where chistone says 400.
        if nginx.statuses == chistone.statuses or (
                _errors(nginx.statuses) and _errors(chistone.statuses)):
            return None
        return "answers"
    return "other"


def _errors(statuses: tuple[int, ...]) -> bool:
    return bool(statuses) and all(status >= 400 for status in statuses)
