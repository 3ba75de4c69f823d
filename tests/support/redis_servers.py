"""What the tests add to the throwaway redis-server of deploy/stack/redis_server.py (one module
starts it for the tests, the benchmark and the stack): ``tls_material``, a throwaway CA and a
server certificate for ``localhost`` and 127.0.0.1, made with ``openssl``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from deploy.stack.redis_server import TlsFiles


def tls_material(folder: Path) -> TlsFiles:
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
    return TlsFiles(cert=cert, key=key, ca=ca)
