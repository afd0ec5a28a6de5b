"""Whether a Docker compose project can start here: engine, compose command, images present.

The compose-based fixtures (``adapters/*/docker/pytest_*.py``) skip with :func:`compose_unavailable`'s
reason instead of failing where a Docker engine runs but cannot start the project: no
``docker compose`` plugin, or an image that is not on this machine and no registry to pull it from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["compose_images", "compose_unavailable"]

_IMAGE = re.compile(r"^\s*image:\s*(\S+)\s*$", re.M)
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose_images(compose_file: str | os.PathLike[str]) -> list[str]:
    """The ``image:`` names of a compose file, ``${VAR:-default}`` expanded from the environment."""
    text = Path(compose_file).read_text()
    expand = lambda m: os.environ.get(m.group(1)) or (m.group(2) or "")  # noqa: E731
    return [_VAR.sub(expand, name) for name in _IMAGE.findall(text)]


def _run(args: list[str]) -> tuple[int, str]:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
    return r.returncode, last[0][:200]


def compose_unavailable(compose_file: str | os.PathLike[str]) -> str | None:
    """None when ``docker compose`` can start the project's images here, else why not."""
    exe = shutil.which("docker")
    if exe is None:
        return "no Docker engine: the docker command is not installed"
    rc, msg = _run([exe, "info", "--format", "{{.ServerVersion}}"])
    if rc:
        return f"no Docker engine: `docker info` failed ({msg})"
    rc, msg = _run([exe, "compose", "version"])
    if rc:
        return f"no `docker compose` (v2 plugin) here: {msg}"
    missing = [i for i in compose_images(compose_file) if _run([exe, "image", "inspect", i])[0]]
    if missing:
        return (
            f"images not on this machine and no registry to pull them from: {', '.join(missing)} "
            "(build or load them first)"
        )
    return None
