"""A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
plain, with htpasswd Basic auth, or with TLS from a CA made here by openssl."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(d: Path) -> tuple:
    """(ca.crt, server.crt, server.key) for 127.0.0.1, localhost and registry.test (the name a
    test proxy resolves)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "ext.cnf"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=ramalama test CA",
        "-keyout", str(ca_key), "-out", str(ca_crt))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return ca_crt, crt, key


class RegistryServer:
    """docker-registry serving from `root`; .host is 127.0.0.1:PORT."""

    def __init__(self, root: Path, users: dict = None, tls: bool = False):
        self.root, self.users, self.tls = Path(root), users or {}, tls
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.ca = None
        self.proc = None

    def start(self) -> "RegistryServer":
        exe = shutil.which("docker-registry")
        if not exe:
            raise FileNotFoundError("docker-registry")
        self.root.mkdir(parents=True, exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
                 "    rootdirectory: %s" % (self.root / "data"), "  delete:", "    enabled: true",
                 "http:", "  addr: %s" % self.host]
        if self.tls:
            self.ca, crt, key = make_ca(self.root / "pki")
            lines += ["  tls:", "    certificate: %s" % crt, "    key: %s" % key]
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(
                subprocess.run(["htpasswd", "-Bbn", u, p], check=True, capture_output=True, text=True).stdout
                for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: test-registry", "    path: %s" % htpasswd]
        config = self.root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        self.log = open(self.root / "registry.log", "wb")
        self.proc = subprocess.Popen([exe, "serve", str(config)], stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, OTEL_TRACES_EXPORTER="none"))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                assert self.proc.poll() is None, (self.root / "registry.log").read_text()
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc:
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def manifest(self, name: str, ref: str) -> bytes:
        """Raw manifest bytes straight from the registry (plain HTTP only)."""
        req = urllib.request.Request("http://%s/v2/%s/manifests/%s" % (self.host, name, ref), headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
                      "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req) as r:
            return r.read()
