"""Local Docker for the tests, with no registry: daemon, debootstrapped base image, cached images.

``python docker/hashplug_docker.py up [milvus|hashplug ...]`` starts ``dockerd`` (host network only:
``--bridge=none --iptables=false``) when no daemon answers, builds ``hashplug/debian:bookworm`` by
``debootstrap --variant=minbase`` + ``docker import``, then each named image from it (``hashplug``
over ``hashplug-deps``), tagged by a hash of its build script and inputs (a second run reuses it). ``down`` stops the daemon if this module started it.
Stdlib only; the pytest fixtures load this file by path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
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
    # The third-party dependencies of hashplug and its three adapters (from their pyproject files; the
    # checkout comes in as a tar on stdin), pytest, and setuptools + wheel to install the source offline.
    "hashplug-deps": """set -e
apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates
python3 -m venv /opt/venv
mkdir -p /tmp/src && tar -C /tmp/src -x && cd /tmp/src
/opt/venv/bin/pip install -q . adapters/lancedb adapters/milvus adapters/qdrant \\
  pytest 'numpy<2' 'pyarrow<23' 'setuptools<81' wheel
/opt/venv/bin/pip uninstall -y -q hashplug hashplug-lancedb hashplug-milvus hashplug-qdrant
cd / && rm -rf /tmp/src /root/.cache/pip && apt-get clean && rm -rf /var/lib/apt/lists/*
""",
    # hashplug and the adapters from the checkout (tar on stdin) over hashplug-deps: no network needed.
    "hashplug": """set -e
mkdir -p /opt/hashplug && tar -C /opt/hashplug -x && cd /opt/hashplug
/opt/venv/bin/pip install -q --no-index --no-deps --no-build-isolation \\
  . adapters/lancedb adapters/milvus adapters/qdrant
/opt/venv/bin/pip check
rm -rf build ./*.egg-info adapters/*/build adapters/*/*.egg-info
# the installed copies keep the tar's content-derived mtimes: Numba's cache (a volume) stays valid
SP=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
find hashplug -name '*.py' -exec sh -c 'for f; do touch -r "$f" "$0/$f"; done' "$SP" {} +
""",
}
_CMDS = {
    "milvus": '["/opt/venv/bin/python", "/opt/serve.py"]',
    "hashplug-deps": '["/opt/venv/bin/python"]',
    "hashplug": '["/opt/venv/bin/python", "/opt/hashplug/docker/hashplug_suites.py"]',
}
#: The hashplug image's Numba cache, kept between runs (compose mounts it at /numba-cache).
NUMBA_VOLUME = "hashplug-numba-cache"
#: Images built over another of these images (the others over the debootstrapped base).
_BUILT_ON = {"hashplug": "hashplug-deps"}
_SKIP_PARTS = {"__pycache__", ".pytest_cache", "build", "dist"}
_SKIP_SUFFIXES = (".pyc", ".nbi", ".nbc", ".egg-info")


def _source_files() -> list[Path]:
    """What the hashplug image installs and runs: the package, the adapters and their tests, docker/."""
    out: list[Path] = []
    for top in ("pyproject.toml", "README.md", "hashplug", "adapters", "docker"):
        p = REPO / top
        for f in [p] if p.is_file() else sorted(p.rglob("*")):
            rel = f.relative_to(REPO)
            if f.is_file() and not _SKIP_PARTS & set(rel.parts) \
                    and not any(part.endswith(_SKIP_SUFFIXES) for part in rel.parts):
                out.append(rel)
    return out


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(str(rel).encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    return h.hexdigest()


def _source_tar() -> bytes:
    """Return the files of :func:`_source_files` as an uncompressed tar, owned by root.

    Each has an mtime derived from its content (Numba's cache checks source mtimes; a fresh
    clone's are new).
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in _source_files():
            data = (REPO / rel).read_bytes()
            info = tar.gettarinfo(str(REPO / rel), arcname=str(rel))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 10**9 + int.from_bytes(hashlib.sha256(data).digest()[:4], "big") % 10**9
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


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


def _dependency_digest() -> str:
    """Hash the dependency tables of the four pyproject files (build system, dependencies, extras).

    A change to a tool's settings (ruff, mypy, pytest) leaves the dependency image as it is.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10: hash the whole files
        files = [REPO / "pyproject.toml", *sorted(REPO.glob("adapters/*/pyproject.toml"))]
        return _digest([p.relative_to(REPO) for p in files])
    deps = []
    for path in [REPO / "pyproject.toml", *sorted(REPO.glob("adapters/*/pyproject.toml"))]:
        doc = tomllib.loads(path.read_text())
        project = doc.get("project", {})
        deps.append(
            [
                str(path.relative_to(REPO)),
                doc.get("build-system", {}),
                project.get("dependencies", []),
                project.get("optional-dependencies", {}),
                project.get("requires-python", ""),
            ]
        )
    return hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()


def image_ref(name: str) -> str:
    """``hashplug/NAME:CONTENT-HASH`` for a known image name (the hash of its build inputs)."""
    if name not in _SCRIPTS:
        raise ValueError(f"unknown image {name!r}; known: {sorted(_SCRIPTS)}")
    if name == "hashplug":  # every installed or run source file, and the deps image below it
        extra = _digest(_source_files()) + image_ref(_BUILT_ON[name])
    elif name == "hashplug-deps":  # the dependency lists (not the tools' settings)
        extra = _dependency_digest()
    else:  # the Milvus image runs the adapter's EmbeddedMilvus (own etcd ports on the host network)
        extra = hashlib.sha256((REPO / "adapters/milvus/hashplug_milvus/server.py").read_bytes()).hexdigest()
    inputs = _SCRIPTS[name] + _CMDS[name] + extra
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    return f"hashplug/{name}:{digest}"


def _errors(out: str) -> str:
    """Return apt's and pip's error lines of a build's output (else its tail), at most 800 characters."""
    keys = ("E: ", "ERROR:", "error:", "Could not", "No matching", "Temporary failure", "Failed to")
    lines = [ln.strip() for ln in out.splitlines() if ln.lstrip().startswith(keys) or "Errno" in ln]
    text = " | ".join(dict.fromkeys(lines)) if lines else out
    return text[-800:]


def build(name: str) -> str:
    """Build (or reuse) image ``name``: run its script in a container over its base, commit it."""
    ref = image_ref(name)
    if name == "hashplug":
        _run(["docker", "volume", "create", NUMBA_VOLUME], timeout=60)
    if _exists(ref):
        return ref
    base = build(_BUILT_ON[name]) if name in _BUILT_ON else base_image()
    mounts = [a for p in _HOST_CONF if Path(p).exists() for a in ("-v", f"{p}:{p}:ro")]
    stdin: bytes | None = None
    if name == "milvus":
        mounts += ["-v", f"{REPO}:/src:ro"]
    else:
        stdin = _source_tar()
    cname = f"hashplug-build-{name}-{os.getpid()}"
    user_pip = Path.home() / ".config" / "pip"
    if user_pip.is_dir():
        mounts += ["-v", f"{user_pip}:/root/.config/pip:ro"]
    env = [a for k, v in os.environ.items() if k.startswith("PIP_") for a in ("-e", f"{k}={v}")]
    if Path(_HOST_CA).exists():
        mounts += ["-v", f"{_HOST_CA}:/host-ca.crt:ro"]
        env += ["-e", "PIP_CERT=/host-ca.crt"]
    why = ("the checkout's source did not install" if name in _BUILT_ON
           else "no network to the Debian mirror / PyPI?")
    try:
        res = subprocess.run(["docker", "run", "-i", "--name", cname, "--network", "host", *mounts, *env,
                              base, "sh", "-c", _SCRIPTS[name]], input=stdin or b"",
                             capture_output=True, timeout=1800)
        if res.returncode != 0:
            out = (res.stderr + res.stdout).decode(errors="replace")
            raise RuntimeError(f"building {ref} failed ({why}): {_errors(out)}")
        com = _run(["docker", "commit", "--change", f"CMD {_CMDS[name]}", cname, ref], timeout=600)
        if com.returncode != 0:
            raise RuntimeError(f"docker commit failed: {com.stderr[-400:]}")
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"building {ref} took over {e.timeout:.0f} s ({why})") from None
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
