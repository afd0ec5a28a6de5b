"""A real Milvus standalone server on loopback, from the ``milvus`` PyPI package ("Embedded Milvus").

For tests, benchmarks and trying hashplug-milvus on one machine without Docker::

    from hashplug_milvus.server import EmbeddedMilvus

    with EmbeddedMilvus("/tmp/milvus-data") as srv:        # starts in ~10 s
        store = MilvusStore.from_uri(srv.store_uri("docs"))  # milvus://127.0.0.1:PORT/docs

``pip install "milvus==2.3.5" "setuptools<81"`` (the package imports ``pkg_resources``). The server
runs the real Milvus 2.3.5 binary (embedded etcd, local storage, RocksMQ) as a child process; all of
its data lives under ``base_dir``, so a later :meth:`EmbeddedMilvus.start` on the same directory finds
the collections again. Every port is chosen free on 127.0.0.1 the first time and kept across restarts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedMilvus", "free_port", "DEFAULT_SETTINGS"]

#: milvus.yaml entries (dotted keys) that EmbeddedMilvus changes from Milvus' defaults.
DEFAULT_SETTINGS: dict[str, Any] = {
    "common.gracefulStopTimeout": 10,  # seconds; Milvus' default is 1800
    "queryCoord.checkInterval": 100,  # ms; 1000 by default: loads wait for the next check
    "queryCoord.distPullInterval": 100,  # ms; 500 by default
    "queryCoord.checkHandoffInterval": 1000,  # ms; 5000 by default
    # seconds; 30 by default. After a kill, the restarted server waits for the dead process'
    # etcd sessions to expire before it serves (loads) collections again.
    "common.session.ttl": 5,
}
#: Settings that milvus.yaml's template lacks (so they are added under their section): how often
#: the query coordinator looks for newly sealed segments (10 s by default) and for segments whose
#: index is built (10 s by default): freshly flushed data is served from them that much sooner.
EXTRA_SETTINGS: dict[str, Any] = {
    "queryCoord.UpdateNextTargetInterval": 1,  # seconds
    "queryCoord.checkIndexInterval": 1000,  # ms
}


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_classes() -> tuple[Any, Any]:
    try:
        from milvus import MilvusServer, MilvusServerConfig
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EmbeddedMilvus needs the 'milvus' package (the Milvus standalone server binary) and "
            f"setuptools<81 for pkg_resources: pip install 'milvus==2.3.5' 'setuptools<81' ({e})"
        ) from e

    class _ReuseAddrConfig(MilvusServerConfig):
        """Probe ports with SO_REUSEADDR, as the Go server binds them.

        Without it a port that the killed server left in TIME_WAIT looks busy, and a restart
        would silently move the server to another port.
        """

        def try_bind_port(self, port: int) -> socket.socket | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
                return sock
            except (OSError, OverflowError, ValueError):
                sock.close()
                return None

        def write_config(self) -> None:
            """Also give the embedded etcd its own client and peer ports.

            Milvus 2.3's embedded etcd otherwise listens on etcd's defaults (2379 and 2380)
            whatever ``etcd.endpoints`` says, so a second server on the machine cannot start.
            """
            super().write_config()
            base = Path(self.base_data_dir)
            client_port = int(self.get("etcd_port"))
            peer_file = base / "configs" / "etcd-peer-port"
            peer_port = int(peer_file.read_text()) if peer_file.exists() else free_port()
            peer_file.write_text(str(peer_port))
            embed = base / "configs" / "embedEtcd.yaml"
            embed.write_text(
                f"name: default\n"
                f"listen-client-urls: http://127.0.0.1:{client_port}\n"
                f"advertise-client-urls: http://127.0.0.1:{client_port}\n"
                f"listen-peer-urls: http://127.0.0.1:{peer_port}\n"
                f"initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
                f"initial-cluster: default=http://127.0.0.1:{peer_port}\n"
            )
            cfg = base / "configs" / "milvus.yaml"
            text = cfg.read_text(encoding="utf-8")
            text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {embed}\n", 1)
            for dotted, value in EXTRA_SETTINGS.items():
                section, key = dotted.split(".", 1)
                if f"\n{section}:\n" in text and f"\n  {key}:" not in text:
                    text = text.replace(f"\n{section}:\n", f"\n{section}:\n  {key}: {value}\n", 1)
            cfg.write_text(text, encoding="utf-8")

    return MilvusServer, _ReuseAddrConfig


class EmbeddedMilvus:
    """Start, stop, kill and restart one Milvus standalone server whose data lives in ``base_dir``.

    ``port`` pins the gRPC port (default: 19530 if free, else the next free one). ``settings``
    overrides entries of milvus.yaml by dotted key; the defaults in :data:`DEFAULT_SETTINGS` make a
    restart after a kill serve again in seconds (Milvus' default session TTL makes it wait 30 s)
    and shorten the load checks. Other options go to ``milvus.MilvusServerConfig``
    (e.g. ``debug=True``).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        port: int | None = None,
        settings: dict[str, Any] | None = None,
        **config: Any,
    ):
        server_cls, config_cls = _server_classes()
        self.base_dir = Path(base_dir).absolute()
        cfg = config_cls(**config)
        if port is not None:
            cfg.update(proxy_port=int(port))
        for key, value in {**DEFAULT_SETTINGS, **(settings or {})}.items():
            cfg.set(key, value)
        self._server = server_cls(cfg)
        self._server.set_base_dir(str(self.base_dir))
        self._pinned = False

    # -- addresses --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.listen_port)

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:PORT``, for pymilvus' MilvusClient."""
        return f"http://127.0.0.1:{self.port}"

    def store_uri(self, collection: str) -> str:
        """``milvus://127.0.0.1:PORT/collection``, for ``hashplug.open_store``."""
        return f"milvus://127.0.0.1:{self.port}/{collection}"

    @property
    def pid(self) -> int | None:
        """The server process id, or None when it is not started."""
        proc = self._server.server_proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        proc = self._server.server_proc
        return proc is not None and proc.poll() is None

    @property
    def log_dir(self) -> Path:
        """The folder of the server's log files."""
        return self.base_dir / "logs"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> EmbeddedMilvus:
        """Start the server and wait until it answers health checks (about 7-10 s)."""
        if self.running:
            return self
        if self._pinned:
            # Keep every port of the first start: clients reconnect to the same address.
            for key, item in self._server.config.configurable_items.items():
                if key.endswith("_port"):
                    self._server.config.configs[key] = item[1]
        try:
            self._server.start()
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        self._pinned = True
        return self

    def _wait_ready(self, timeout: float) -> None:
        # ``MilvusServer.start`` already waited for /healthz; also wait for the gRPC port itself.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"Milvus exited while starting; see {self.log_dir}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"Milvus did not open 127.0.0.1:{self.port} in {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Milvus 2.3 standalone stops its coordinators within a second of SIGTERM, then its worker
        nodes can hang retrying them.
        """
        proc = self._server.server_proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._server.stop()  # closes log files, forgets the process

    def kill(self) -> None:
        """Stop at once (SIGKILL): what a crash or a power cut looks like to clients."""
        proc = self._server.server_proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._server.stop()

    def restart(self, timeout: float = 120.0, stop_timeout: float = 5.0) -> EmbeddedMilvus:
        """Stop the server, then start it again on the same data; return ``self``."""
        self.stop(stop_timeout)
        return self.start(timeout)

    def __enter__(self) -> EmbeddedMilvus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedMilvus({str(self.base_dir)!r}, port={self.port}, {state})"
