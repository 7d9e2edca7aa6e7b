"""`manage.py serve`: run the data plane and the control plane.

The listening sockets are opened once here and handed to N worker processes (daphne by
default, uvicorn with `--server uvicorn`): one SO_REUSEPORT socket per worker by default, or
one socket shared by all with `--listen shared` (chistone_site.workers.listeners).
chistone_site.planes sends each connection to its plane by the port it arrived on, so tenant
traffic can never reach the admin or the API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chistone_site.conf import get_conf, variable
from chistone_site.workers.listeners import MODES, default_mode, open_listener
from chistone_site.workers.supervisor import Supervisor


def _mark_faulty(tenant: str, version_id: int, pid: int) -> None:
    from luascripts.services import mark_version_faulty
    from tenants.audit import Actor

    mark_version_faulty(
        actor=Actor.system("watchdog"),
        version_id=version_id,
        reason=f"blocked worker pid {pid} past the watchdog bound (tenant {tenant})",
    )


class Command(BaseCommand):
    help = "Serve tenant traffic (data plane) and the admin/API (control plane)."

    def add_arguments(self, parser):
        conf = get_conf()
        parser.add_argument("--host", default=conf.host,
                            help="Interface to bind both listeners to (env CHISTONE_HOST).")
        parser.add_argument("--data-port", type=int, default=conf.data_port,
                            help="Port for tenant traffic (env CHISTONE_DATA_PORT).")
        parser.add_argument("--control-port", type=int, default=conf.control_port,
                            help="Port for the admin and API (env CHISTONE_CONTROL_PORT).")
        parser.add_argument("--workers", type=int, default=conf.workers,
                            help="Worker processes sharing the listeners (env CHISTONE_WORKERS).")
        parser.add_argument("--server", choices=("daphne", "uvicorn"), default=conf.server,
                            help="ASGI server run by each worker (env CHISTONE_SERVER).")
        parser.add_argument("--listen", choices=MODES, default=conf.listen or default_mode(),
                            help="reuseport: one SO_REUSEPORT socket per worker, so the kernel "
                                 "spreads connections evenly; shared: one socket for all "
                                 "workers (env CHISTONE_LISTEN).")
        parser.add_argument("--hang-timeout", type=float, default=conf.watchdog_seconds,
                            help="Seconds a worker's event loop may stop answering before the "
                                 "watchdog replaces it (env CHISTONE_WATCHDOG_SECONDS).")
        parser.add_argument("--demo-backends", action="store_true",
                            help="Also start the demo backends used by `manage.py load_demo`.")

    def handle(self, *args, host, data_port, control_port, workers, server, listen,
               hang_timeout, demo_backends, **options):
        if data_port == control_port:
            raise CommandError("--data-port and --control-port must differ.")
        for port in (data_port, control_port):
            if not 0 < port < 65536:
                raise CommandError(f"Port {port} is out of range (1-65535).")
        if not 1 <= workers <= 64:
            raise CommandError("--workers must be between 1 and 64.")
        if hang_timeout <= 0:
            raise CommandError("--hang-timeout must be positive.")
        if listen not in MODES:  # a default from CHISTONE_LISTEN skips argparse's choices
            raise CommandError(f"--listen (CHISTONE_LISTEN) must be one of {', '.join(MODES)}, "
                               f"not {listen!r}.")
        try:
            # Collected static files go here (optional); its absence makes WhiteNoise warn.
            Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.stderr.write(f"Cannot create {settings.STATIC_ROOT} ({exc.strerror}); static "
                              "files are served from the installed apps anyway.")
        try:
            listeners = [open_listener(host, port, slots=workers, mode=listen)
                         for port in (data_port, control_port)]
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}: {exc.strerror or exc}.") from exc
        # The workers' plane router tells the planes apart by these ports.
        metrics_dir = tempfile.mkdtemp(prefix="chistone-metrics-")
        env = {
            variable("DATA_PORT"): str(data_port),
            variable("CONTROL_PORT"): str(control_port),
            variable("HOST"): host,
            # Every worker of this run reports its counters here; /metrics merges them.
            variable("METRICS_DIR"): metrics_dir,
        }
        demo = None
        if demo_backends:
            demo = subprocess.Popen([sys.executable, "-m", "chistone_site.demo.backends"])
        self.stdout.write(
            f"chistone: {workers} {server} worker(s), {listen} listeners\n"
            f"  data plane    http://{host}:{data_port}/\n"
            f"  control plane http://{host}:{control_port}/admin/  (API: /api/v1/)"
        )
        self.stdout.flush()
        supervisor = Supervisor(listeners=listeners, workers=workers, server=server,
                                hang_timeout=hang_timeout, on_fault=_mark_faulty,
                                env={**env, "PYTHONUNBUFFERED": "1",
                                     "DJANGO_SETTINGS_MODULE": os.environ.get(
                                         "DJANGO_SETTINGS_MODULE", "chistone_site.settings")})
        try:
            supervisor.run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            if demo is not None:
                demo.terminate()
                demo.wait(timeout=5)
