"""ASGI type aliases for the data plane. A leaf module: it imports nothing from the project."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RawHeaders = list[tuple[bytes, bytes]]
"""Headers as ASGI carries them: (name, value) byte pairs, names lower-case, order kept."""
