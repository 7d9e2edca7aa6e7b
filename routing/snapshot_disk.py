"""The last good configuration on local disk, so a worker that starts while the database is
down serves it instead of nothing.

Written atomically (temp file, fsync, rename) whenever a new generation is read from the
database; read only at a cold start that cannot reach the database. The file holds script
sources: it lives in CHISTONE_VAR_DIR with owner-only permissions.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("chistone.snapshot")
FORMAT = 1


def path() -> Path:
    """CHISTONE_SNAPSHOT_FILE, by default snapshot.json in CHISTONE_VAR_DIR (routing.conf)."""
    from routing.conf import get_conf

    return get_conf().snapshot_file or Path(tempfile.gettempdir(), "snapshot.json")


def save(config: dict[str, Any], target: Path | None = None) -> None:
    target = target or path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".snapshot-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump({"format": FORMAT, "config": config}, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except OSError as exc:  # a read-only disk must not stop the gateway
        log.warning("could not save the snapshot to %s: %s", target, exc)


def load(source: Path | None = None) -> dict[str, Any] | None:
    source = source or path()
    try:
        data = json.loads(source.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("the on-disk snapshot %s is unreadable: %s", source, exc)
        return None
    if data.get("format") != FORMAT:
        return None
    return data["config"]
