"""`manage.py serve`: run the data plane and the control plane under daphne.

One daphne process listens on both ports; chistone_site.planes sends each connection to its
plane by the port it arrived on, so tenant traffic can never reach the admin or the API.
"""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve tenant traffic (data plane) and the admin/API (control plane) with daphne."

    def add_arguments(self, parser):
        conf = settings.CHISTONE
        parser.add_argument("--host", default=conf["HOST"],
                            help="Interface to bind both listeners to (env CHISTONE_HOST).")
        parser.add_argument("--data-port", type=int, default=conf["DATA_PORT"],
                            help="Port for tenant traffic (env CHISTONE_DATA_PORT).")
        parser.add_argument("--control-port", type=int, default=conf["CONTROL_PORT"],
                            help="Port for the admin and API (env CHISTONE_CONTROL_PORT).")
        parser.add_argument("--demo-backends", action="store_true",
                            help="Also start the demo backends used by `manage.py load_demo`.")

    def handle(self, *args, host, data_port, control_port, demo_backends, **options):
        if data_port == control_port:
            raise CommandError("--data-port and --control-port must differ.")
        for port in (data_port, control_port):
            if not 0 < port < 65536:
                raise CommandError(f"Port {port} is out of range (1-65535).")
        # The plane router reads these; set them for this process and any child.
        settings.CHISTONE["DATA_PORT"] = data_port
        settings.CHISTONE["CONTROL_PORT"] = control_port
        os.environ["CHISTONE_DATA_PORT"] = str(data_port)
        os.environ["CHISTONE_CONTROL_PORT"] = str(control_port)
        os.environ["CHISTONE_HOST"] = host

        demo = None
        if demo_backends:
            demo = subprocess.Popen([sys.executable, "-m", "chistone_site.demo.backends"])

        interface = host.strip("[]")
        iface = interface.replace(":", r"\:")
        argv = [
            "-e", f"tcp:port={data_port}:interface={iface}",
            "-e", f"tcp:port={control_port}:interface={iface}",
            # The gateway writes its own structured access log; daphne's proxy-header
            # handling stays off (it trusts the leftmost X-Forwarded-For of any peer).
            "--access-log", os.devnull,
            "--no-server-name",
            "chistone_site.asgi:application",
        ]
        self.stdout.write(f"chistone data plane    http://{host}:{data_port}/")
        self.stdout.write(f"chistone control plane http://{host}:{control_port}/admin/")
        self.stdout.flush()
        from daphne.cli import CommandLineInterface

        try:
            CommandLineInterface().run(argv)
        finally:
            if demo is not None:
                demo.terminate()
                demo.wait(timeout=5)
