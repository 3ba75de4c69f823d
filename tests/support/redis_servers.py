"""Throwaway redis-server processes on loopback, for what the shared test server cannot show:
TLS with AUTH, a restart on the same port, a replica promoted in a failover.

Each server gets a config file in the test's folder (so a password is never on a command line)
and is stopped by its own pid. ``tls_material`` makes a throwaway CA and a server certificate
for ``localhost`` and 127.0.0.1 with ``openssl``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    cert: Path
    key: Path


def tls_material(folder: Path) -> TlsMaterial:
    """A CA and a certificate it signed for ``localhost`` and 127.0.0.1 (not 127.0.0.2)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1"]
        + ["-subj", "/CN=shop test CA", "-addext", "basicConstraints=critical,CA:TRUE"]
        + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-out", cert, "-days", "1", "-extfile", extensions],
    ]
    for step in steps:
        subprocess.run([str(part) for part in step], check=True, capture_output=True, timeout=30)
    return TlsMaterial(ca=ca, cert=cert, key=key)


@dataclass
class RedisServer:
    """One redis-server; ``tls`` makes it TLS-only (no plain port), like ElastiCache with
    in-transit encryption; ``password`` is its ``requirepass`` (the AUTH token)."""

    folder: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    tls: TlsMaterial | None = None
    bind: tuple[str, ...] = ("127.0.0.1",)
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def config(self) -> str:
        lines = [
            f"bind {' '.join(self.bind)}",
            f"dir {self.folder}",
            'save ""',
            "appendonly no",
            f"logfile {self.folder / 'redis.log'}",
            # A replica syncs at once, and a primary stops without waiting for its replicas.
            "repl-diskless-sync-delay 0",
            "shutdown-timeout 0",
        ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.cert}",
                f"tls-key-file {self.tls.key}",
                f"tls-ca-cert-file {self.tls.ca}",
                "tls-auth-clients no",  # ElastiCache asks no client certificate either
                "tls-replication yes",
            ]
        if self.password is not None:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 5.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen(
            [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.folder / "redis.log"
                raise RuntimeError(
                    f"redis-server exited ({self.process.returncode}): "
                    f"{error or (log.read_text() if log.exists() else '')}"
                )
            with contextlib.suppress(redis.RedisError, OSError), self.admin() as client:
                if client.ping():
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer in time")
            time.sleep(0.02)

    def admin(self) -> redis.Redis:
        """A plain redis-py client for the test's own commands (not the shop's)."""
        kwargs: dict = {"socket_timeout": 1, "password": self.password, "decode_responses": True}
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()
