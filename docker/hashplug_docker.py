"""Local Docker for the tests, with no registry: daemon, debootstrapped base image, cached images.

``python docker/hashplug_docker.py up [milvus|hashplug ...]`` starts ``dockerd`` (host network only:
``--bridge=none --iptables=false``) when no daemon answers, builds ``hashplug/debian:bookworm`` by
``debootstrap --variant=minbase`` + ``docker import``, then each named image from it, tagged by a
hash of its build script (a second run reuses it). ``down`` stops the daemon if this module started it.
Stdlib only; the pytest fixtures load this file by path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASE = "hashplug/debian:bookworm"
STATE = Path(os.environ.get("HASHPLUG_DOCKER_STATE", "/tmp/hashplug-dockerd"))
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Read-only mounts while an image is built: the host's pip configuration and local wheel folders;
# the host's CA bundle goes to /host-ca.crt (PIP_CERT), not over /etc/ssl/certs (apt writes there).
_HOST_CONF = ["/etc/pip.conf", "/opt/wheels", "/opt/pypi", "/opt/pypi-more"]
_HOST_CA = "/etc/ssl/certs/ca-certificates.crt"

_SCRIPTS = {
    # Milvus 2.3.5 standalone (the PyPI package's server, run by hashplug_milvus.server); $MILVUS_PORT.
    "milvus": """set -e
apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
python3 -m venv /opt/venv
/opt/venv/bin/pip install -q 'milvus==2.3.5' 'setuptools<81'
cp /src/adapters/milvus/hashplug_milvus/server.py /opt/milvus_server.py
/opt/venv/bin/python -c "import milvus; milvus._initialize_data_files('/var/lib/milvus')"
cat > /opt/serve.py <<'PY'
import os, signal, sys, time
sys.path.insert(0, "/opt")
from milvus_server import EmbeddedMilvus
srv = EmbeddedMilvus("/var/lib/milvus", port=int(os.environ.get("MILVUS_PORT", "19530")))
srv.start(timeout=600)
print("milvus serving on 127.0.0.1:%d" % srv.port, flush=True)
signal.signal(signal.SIGTERM, lambda *a: (srv.stop(), os._exit(0)))
while srv.running:
    time.sleep(1)
sys.exit("milvus exited; see /var/lib/milvus/logs")
PY
apt-get clean; rm -rf /var/lib/apt/lists/*
""",
    # hashplug + the Milvus adapter + pytest, from the checkout mounted at /src (read-only).
    "hashplug": """set -e
apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
python3 -m venv /opt/venv
mkdir -p /opt/hashplug && cd /src
tar -c --exclude=./.venv --exclude=.git --exclude='*.npz' --exclude=__pycache__ . | tar -C /opt/hashplug -x
/opt/venv/bin/pip install -q /opt/hashplug /opt/hashplug/adapters/milvus pytest 'setuptools<81'
apt-get clean; rm -rf /var/lib/apt/lists/*
""",
}
_CMDS = {
    "milvus": '["/opt/venv/bin/python", "/opt/serve.py"]',
    "hashplug": '["/opt/venv/bin/python", "-m", "hashplug", "--help"]',
}


def _source_digest() -> str:
    """Hash of the checkout's package and adapter sources (what the hashplug image installs)."""
    h = hashlib.sha256()
    files = [*REPO.glob("pyproject.toml"), *REPO.glob("hashplug/**/*.py"), *REPO.glob("adapters/*/pyproject.toml"),
             *REPO.glob("adapters/*/hashplug_*/**/*.py"), *REPO.glob("adapters/*/tests/*.py"),
             *REPO.glob("adapters/*/docker/*")]
    for f in sorted(files):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def daemon_reason() -> str | None:
    """None when a Docker daemon answers ``docker info``, else why not."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker command is not installed"
    try:
        res = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no Docker engine: `docker info` failed ({e})"
    if res.returncode != 0:
        return "no Docker engine: " + " ".join((res.stderr or res.stdout).split())[:200]
    return None


def start_daemon(timeout: float = 60.0) -> bool:
    """Start ``dockerd`` when none answers; True if this call started it. Raises with the reason."""
    if daemon_reason() is None:
        return False
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        raise RuntimeError("no Docker engine, and dockerd cannot be started here (needs root and docker.io)")
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(STATE / "dockerd.log", "ab")  # noqa: SIM115 - held by the daemon
    proc = subprocess.Popen(
        ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
         "--pidfile", str(STATE / "dockerd.pid")],
        stdout=log, stderr=log, start_new_session=True,
    )
    (STATE / "started-by-hashplug").write_text(str(proc.pid))
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            (STATE / "started-by-hashplug").unlink(missing_ok=True)
            tail = (STATE / "dockerd.log").read_text(errors="replace")[-600:]
            raise RuntimeError(f"dockerd exited with {proc.returncode}: {tail}")
        if daemon_reason() is None:
            return True
        time.sleep(0.5)
    stop_daemon()
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s (log: {STATE / 'dockerd.log'})")


def stop_daemon(timeout: float = 30.0) -> bool:
    """Stop the daemon if :func:`start_daemon` started it (its containers first); True if stopped."""
    mark = STATE / "started-by-hashplug"
    if not mark.exists():
        return False
    pid = int(mark.read_text())
    ids = _run(["docker", "ps", "-aq"], timeout=30).stdout.split()
    if ids:
        _run(["docker", "rm", "-f", *ids], timeout=120)
    try:
        os.kill(pid, 15)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            os.kill(pid, 0)
            time.sleep(0.3)
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    mark.unlink(missing_ok=True)
    return True


def _exists(ref: str) -> bool:
    return _run(["docker", "image", "inspect", ref], timeout=30).returncode == 0


def base_image() -> str:
    """``hashplug/debian:bookworm`` (debootstrap minbase + docker import), built once."""
    if _exists(BASE):
        return BASE
    if shutil.which("debootstrap") is None:
        raise RuntimeError("cannot build the base image: debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="hashplug-rootfs-") as root:
        res = _run(["debootstrap", "--variant=minbase", "bookworm", root, MIRROR], timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"debootstrap from {MIRROR} failed (no network?): {res.stderr[-600:]}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imp = _run(["docker", "import", "-", BASE], stdin=tar.stdout, timeout=600)
        tar.wait()
        if imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr[-400:]}")
    return BASE


def image_ref(name: str) -> str:
    """``hashplug/NAME:CONTENT-HASH`` for a known image name."""
    if name not in _SCRIPTS:
        raise ValueError(f"unknown image {name!r}; known: {sorted(_SCRIPTS)}")
    if name == "hashplug":
        extra = _source_digest()
    else:  # the Milvus image runs the adapter's EmbeddedMilvus (own etcd ports on the host network)
        extra = hashlib.sha256((REPO / "adapters/milvus/hashplug_milvus/server.py").read_bytes()).hexdigest()
    inputs = _SCRIPTS[name] + _CMDS[name] + extra
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    return f"hashplug/{name}:{digest}"


def build(name: str) -> str:
    """Build (or reuse) image ``name`` from the base: run its script in a container, commit it."""
    ref = image_ref(name)
    if _exists(ref):
        return ref
    base = base_image()
    mounts = [a for p in _HOST_CONF if Path(p).exists() for a in ("-v", f"{p}:{p}:ro")]
    mounts += ["-v", f"{REPO}:/src:ro"]
    cname = f"hashplug-build-{name}-{os.getpid()}"
    user_pip = Path.home() / ".config" / "pip"
    if user_pip.is_dir():
        mounts += ["-v", f"{user_pip}:/root/.config/pip:ro"]
    env = [a for k, v in os.environ.items() if k.startswith("PIP_") for a in ("-e", f"{k}={v}")]
    if Path(_HOST_CA).exists():
        mounts += ["-v", f"{_HOST_CA}:/host-ca.crt:ro"]
        env += ["-e", "PIP_CERT=/host-ca.crt"]
    try:
        res = _run(["docker", "run", "--name", cname, "--network", "host", *mounts, *env,
                    base, "sh", "-c", _SCRIPTS[name]], timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"building {ref} failed (no network to the Debian mirror / PyPI?): "
                               f"{(res.stderr or res.stdout)[-800:]}")
        com = _run(["docker", "commit", "--change", f"CMD {_CMDS[name]}", cname, ref], timeout=600)
        if com.returncode != 0:
            raise RuntimeError(f"docker commit failed: {com.stderr[-400:]}")
    finally:
        _run(["docker", "rm", "-f", cname], timeout=60)
    return ref


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down", "ref"):
        print("usage: hashplug_docker.py up [IMAGE ...] | down | ref IMAGE", file=sys.stderr)
        return 2
    if argv[0] == "ref":
        print(image_ref(argv[1]))
        return 0
    if argv[0] == "down":
        print("stopped dockerd" if stop_daemon() else "no dockerd started by hashplug")
        return 0
    started = start_daemon()
    print("started dockerd" if started else "a Docker daemon already answers")
    for name in argv[1:] or ["milvus"]:
        t0 = time.monotonic()
        ref = build(name)
        print(f"{ref} ready in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
