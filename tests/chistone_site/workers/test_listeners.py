"""The listening sockets: per-slot SO_REUSEPORT sockets spread connections; a taken port fails."""

from __future__ import annotations

import errno
import select
import socket

import pytest

from chistone_site.workers.listeners import open_listener


def _accepted_per_socket(listener, connections: int) -> list[int]:
    clients = [socket.create_connection(("127.0.0.1", listener.port), timeout=5)
               for _ in range(connections)]
    counts = [0] * len(listener.sockets)
    try:
        pending = connections
        while pending:
            ready, _, _ = select.select(listener.sockets, [], [], 5)
            assert ready, f"only {connections - pending} of {connections} connections arrived"
            for sock in ready:
                conn, _ = sock.accept()
                conn.close()
                counts[listener.sockets.index(sock)] += 1
                pending -= 1
    finally:
        for client in clients:
            client.close()
    return counts


def test_reuseport_gives_each_slot_its_own_socket_and_spreads_a_burst():
    listener = open_listener("127.0.0.1", 0, slots=2, mode="reuseport")
    try:
        assert len(listener.sockets) == 2 and listener.port > 0
        assert {s.getsockname()[1] for s in listener.sockets} == {listener.port}
        assert listener.for_slot(0) is not listener.for_slot(1)
        assert listener.for_slot(2) is listener.for_slot(0)
        # A burst of new connections (what a client pool opens at start) lands on both
        # sockets: the kernel hashes each connection, no worker can grab them all.
        counts = _accepted_per_socket(listener, 200)
        assert sum(counts) == 200
        assert min(counts) >= 50, counts
    finally:
        listener.close()


def test_shared_mode_hands_every_slot_the_same_socket():
    listener = open_listener("127.0.0.1", 0, slots=3, mode="shared")
    try:
        assert len(listener.sockets) == 1
        assert listener.for_slot(0) is listener.for_slot(2)
        assert _accepted_per_socket(listener, 5) == [5]
    finally:
        listener.close()


@pytest.mark.parametrize("mode", ["reuseport", "shared"])
def test_a_port_already_served_is_refused_not_joined(mode):
    # A second `serve` on the same port must fail loudly: silently joining the first one's
    # SO_REUSEPORT group would split its traffic between two gateways.
    first = open_listener("127.0.0.1", 0, slots=2, mode="reuseport")
    try:
        with pytest.raises(OSError) as caught:
            open_listener("127.0.0.1", first.port, slots=2, mode=mode)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        first.close()


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown listener mode 'fair'"):
        open_listener("127.0.0.1", 0, slots=2, mode="fair")
