"""Raw HTTP/1.1 over a socket, for requests no client library will send."""

from __future__ import annotations

import socket


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `data` and read until the server closes or goes quiet; returns the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                chunks.append(piece)
                if _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
