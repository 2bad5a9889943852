"""Servers for the fault tests beyond ``tests/redis_servers.py``: TLS with ACL users, Sentinel.

Everything runs on loopback, on free ports, with no persistence, and is stopped by pid.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence

from tests.redis_servers import RedisServer, free_port, require_redis_server

__all__ = ["SentinelSet", "TLSRedis", "make_certs"]


def make_certs(directory: str) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 / localhost (openssl CLI), in ``directory``."""
    p = {k: os.path.join(directory, f"{k}.pem") for k in ("ca", "ca_key", "cert", "key")}
    csr = os.path.join(directory, "server.csr")
    ext = os.path.join(directory, "ext.cnf")
    with open(ext, "w") as f:
        # Python 3.13's default context verifies strictly (VERIFY_X509_STRICT): the server
        # certificate needs an authority key identifier besides its names, the CA a key usage.
        f.write(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        p["ca_key"],
        "-out",
        p["ca"],
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        p["key"],
        "-out",
        csr,
    )
    run(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        p["ca"],
        "-CAkey",
        p["ca_key"],
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        ext,
        "-out",
        p["cert"],
    )
    return p


class TLSRedis:
    """A redis-server that only speaks TLS, with ACL user ``user``/``password``."""

    def __init__(self, user: str, password: str) -> None:
        self.binary = require_redis_server()
        self.dir = tempfile.mkdtemp(prefix="redis-tls-")
        self.certs = make_certs(self.dir)
        self.port = free_port()
        self.user, self.password = user, password
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        u = self.user if user is None else user
        pw = self.password if password is None else password
        return f"rediss://{u}:{pw}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> TLSRedis:
        args = [
            self.binary,
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            self.certs["cert"],
            "--tls-key-file",
            self.certs["key"],
            "--tls-ca-cert-file",
            self.certs["ca"],
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.dir,
            "--logfile",
            os.path.join(self.dir, "redis.log"),
            "--user",
            "default",
            "off",
            "--user",
            self.user,
            "on",
            f">{self.password}",
            "~*",
            "&*",
            "+@all",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=self.certs["ca"])
        deadline = time.monotonic() + timeout
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
                ):
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"TLS redis-server on {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> TLSRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelSet:
    """A master, a replica and three sentinels (quorum 2) monitoring ``service``."""

    def __init__(self, service: str = "mymaster", down_after_ms: int = 1000) -> None:
        self.service = service
        self.master = RedisServer()
        self.master.start()
        self.replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.replica.start()
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.down_after_ms = down_after_ms

    def start(self, timeout: float = 30.0) -> SentinelSet:
        binary = require_redis_server()
        for _ in range(3):
            port = free_port()
            d = tempfile.mkdtemp(prefix=f"sentinel-{port}-")
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(
                    f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.service} 5000\n"
                    f"sentinel parallel-syncs {self.service} 1\n"
                )
            proc = subprocess.Popen(
                [binary, conf, "--sentinel", "--logfile", os.path.join(d, "s.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.sentinels.append(proc)
            self.ports.append(port)
        deadline = time.monotonic() + timeout
        while not all(self._sees_replica(p) for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sentinels did not discover the replica")
            time.sleep(0.1)
        return self

    def _sees_replica(self, port: int) -> bool:
        out = self.cli(port, "SENTINEL", "REPLICAS", self.service)
        return str(self.replica.port) in out and "slave" in out

    @staticmethod
    def cli(port: int, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5
        ).stdout

    def master_port(self) -> int:
        out = self.cli(self.ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service).split()
        return int(out[1]) if len(out) >= 2 else -1

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def addresses(self) -> Sequence[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    def stop(self) -> None:
        for p in self.sentinels:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        self.sentinels = []
        self.replica.stop()
        self.master.stop()
