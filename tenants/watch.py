"""Watching the cluster-wide configuration generation from a gateway process.

`GenerationWatcher.wait_for_change()` returns when the generation in the database differs from
the one last seen: at once on PostgreSQL (LISTEN on the channel `config_changed` notifies),
otherwise at the next cheap poll (`SELECT generation`, every `interval` seconds; SQLite
included). Database errors never escape: `reachable` turns False and polling continues, so
the caller keeps serving its last good snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection

from tenants.events import NOTIFY_CHANNEL, current_generation

log = logging.getLogger(__name__)


def read_generation() -> int:
    """The generation, read on a fresh connection state (safe to call from any thread)."""
    close_old_connections()
    try:
        return current_generation()
    finally:
        connection.close()


class GenerationWatcher:
    def __init__(self, *, interval: float = 0.5,
                 on_reachability: Callable[[bool], None] | None = None) -> None:
        self.interval = interval
        self.on_reachability = on_reachability
        self.reachable = True
        self.last_error: str = ""
        self._listen_conn = None

    async def read(self) -> int | None:
        try:
            generation = await sync_to_async(read_generation, thread_sensitive=False)()
        except Exception as exc:  # the database is down or refusing: keep serving
            if self.reachable:
                log.warning("configuration database unreachable: %s", exc)
            self._set_reachable(False)
            self.last_error = str(exc)
            return None
        if not self.reachable:
            log.info("configuration database reachable again")
        self._set_reachable(True)
        self.last_error = ""
        return generation

    def _set_reachable(self, reachable: bool) -> None:
        self.reachable = reachable
        if self.on_reachability is not None:
            self.on_reachability(reachable)

    async def _listen(self) -> None:
        """Open a LISTEN connection on PostgreSQL; best effort, polling covers failures."""
        if connection.vendor != "postgresql" or self._listen_conn is not None:
            return
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        try:
            conn = await psycopg.AsyncConnection.connect(autocommit=True, **params)
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listen_conn = conn
        except Exception as exc:
            log.debug("LISTEN unavailable, polling only: %s", exc)

    async def _notified(self, wait: float) -> bool:
        conn = self._listen_conn
        if conn is None:
            await asyncio.sleep(wait)
            return False
        try:
            async for _ in conn.notifies(timeout=wait, stop_after=1):
                return True
        except Exception:
            self._listen_conn = None
            try:
                await conn.close()
            except Exception:
                pass
        return False

    async def wait_for_change(self, seen: int) -> int:
        """Block until the generation differs from `seen`; returns the new generation."""
        while True:
            await self._listen()
            generation = await self.read()
            if generation is not None and generation != seen:
                return generation
            await self._notified(self.interval)

    async def close(self) -> None:
        if self._listen_conn is not None:
            await self._listen_conn.close()
            self._listen_conn = None
