"""The ASGI entry point: `application` routes each request to its plane by listener port.

Composition (see chistone_site/planes.py): Django's ASGI app for the control port, the raw
ASGI gateway (routing.gateway) for everything else, health endpoints on both; outermost the
server adapter (chistone_site/servers), which gives the data plane back-pressure and abort
on whichever server runs it. Worker processes wrap `router` themselves (with their in-flight
counter inside the adapter).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chistone_site.settings")
django_app = get_asgi_application()

from chistone_site import servers  # noqa: E402
from chistone_site.conf import get_conf  # noqa: E402
from chistone_site.planes import DataPlane, PlaneRouter  # noqa: E402
from chistone_site.workers import heartbeat  # noqa: E402
from routing.snapshot import holder  # noqa: E402

# The watchdog learns which tenant script a blocked worker was running from these marks.
_guard = (heartbeat.enter_script, heartbeat.leave_script) if heartbeat.current() else None

data_plane = DataPlane(holder=holder, script_guard=_guard)
router = PlaneRouter(
    control_app=django_app,
    data_plane=data_plane,
    control_port=get_conf().control_port,
)
application = servers.adapt(router)

# daphne has no lifespan events: start the runtime as soon as its reactor runs.
servers.start_when_serving(data_plane.start)
