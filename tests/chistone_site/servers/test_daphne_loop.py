"""daphne's worker runs Twisted's asyncio reactor over a uvloop event loop (issue 18's faster
path): checked in a fresh interpreter, since a reactor is installed once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

PROBE = textwrap.dedent("""
    import asyncio
    from chistone_site.servers import daphne
    daphne.install_reactor()
    from daphne.server import Server  # what serve() uses: it must keep our reactor
    from twisted.internet import reactor
    loop = reactor._asyncioEventloop
    ran = []

    async def upstream_like():  # a coroutine on the reactor's loop, as the gateway's are
        ran.append(type(asyncio.get_running_loop()).__module__)
        reactor.stop()

    reactor.callLater(0, lambda: loop.create_task(upstream_like()))
    reactor.run(installSignalHandlers=False)
    print(type(reactor).__name__, type(loop).__module__, ran[0])
""")


def test_the_daphne_worker_loop_is_uvloop_under_twisteds_asyncio_reactor() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AsyncioSelectorReactor", "uvloop", "uvloop"]
