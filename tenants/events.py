"""Configuration generations and after-commit notifications.

Services call `config_changed()` inside their transaction: it bumps the cluster-wide
generation in the same transaction and, once the transaction commits, tells the listeners in
this process (the data plane registers one to rebuild its snapshot). Listeners never run for a
rolled-back change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from tenants.models import ConfigState

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "chistone_config"
ConfigListener = Callable[[int, frozenset[str]], None]
_listeners: list[ConfigListener] = []


def add_listener(listener: ConfigListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: ConfigListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def current_generation() -> int:
    state = ConfigState.objects.filter(pk=1).only("generation").first()
    return state.generation if state else 0


def config_changed(tenant_slugs: Iterable[str]) -> int:
    """Bump the generation (inside the caller's transaction) and notify after commit."""
    # update() skips auto_now: "updated at" is set here so it moves with the generation.
    bump = {"generation": F("generation") + 1, "updated_at": timezone.now()}
    updated = ConfigState.objects.filter(pk=1).update(**bump)
    if not updated:
        ConfigState.objects.get_or_create(pk=1, defaults={"generation": 0})
        ConfigState.objects.filter(pk=1).update(**bump)
    generation = ConfigState.objects.only("generation").get(pk=1).generation
    slugs = frozenset(tenant_slugs)
    if connection.vendor == "postgresql":
        # Delivered by PostgreSQL only if and when the transaction commits: every gateway node
        # listening on the channel wakes up at once instead of at its next poll.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(generation)])
    transaction.on_commit(lambda: _notify(generation, slugs))
    return generation


def _notify(generation: int, slugs: frozenset[str]) -> None:
    for listener in list(_listeners):
        try:
            listener(generation, slugs)
        except Exception:  # a listener's failure must not undo a committed change
            log.exception("config listener %r failed for generation %s", listener, generation)
