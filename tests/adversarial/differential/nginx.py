"""nginx as the reference proxy: a plain `proxy_pass` to the recording backend.

The configuration is nginx's defaults plus what a keep-alive upstream needs (the same as
bench/anchors/proxy.nginx.conf): a differential run compares chistone with nginx as people
deploy it, not with a hardened nginx.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

INSTALL = "apt-get install -y nginx libnginx-mod-http-lua"
CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/client;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream recorder {{
        server 127.0.0.1:{backend};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://recorder;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
        None)


def require() -> str:
    """The nginx binary; without one the suite fails in CI (with the command that installs
    it) and is skipped, loudly, elsewhere (as the browser tests treat a missing Chromium)."""
    path = binary()
    if path is not None:
        return path
    reason = f"nginx is not installed; install it with: {INSTALL}"
    if os.environ.get("CI") or os.environ.get("CHISTONE_REQUIRE_NGINX") == "1":
        pytest.fail(f"NGINX DIFFERENTIAL SUITE CANNOT RUN: {reason}")
    pytest.skip(reason)


@dataclass
class Nginx:
    process: subprocess.Popen
    port: int
    prefix: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start(path: str, prefix: Path, port: int, backend_port: int) -> Nginx:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(CONF.format(prefix=prefix, port=port, backend=backend_port))
    argv = [path, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t refused the configuration:\n{checked.stderr}")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    running = Nginx(process, port, prefix)
    deadline = time.monotonic() + 15
    with httpx.Client(trust_env=False, timeout=1) as client:
        while True:
            try:
                client.get(f"http://127.0.0.1:{port}/", headers={"Host": "diff.test"})
                return running
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                running.stop()
                raise RuntimeError(f"nginx did not start:\n{running.error_log()}")
            time.sleep(0.05)
