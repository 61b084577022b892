"""Squid as a real forward proxy for tests: a child process on 127.0.0.1 with its own config,
logs and shared-memory name. Its hosts_file maps test-only names (registry.test, hub.test,
cdn.test, files.test, auth.test) to 127.0.0.1, so those names resolve ONLY through it: a
request that bypasses the proxy fails to resolve. With users={name: password} it demands
Basic proxy authentication (basic_ncsa_auth over an htpasswd file).

    with Squid() as proxy:
        env["HTTPS_PROXY"] = proxy.url
        ...
        assert "CONNECT registry.test:" in proxy.access_log()
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

NAMES = ("registry.test", "hub.test", "cdn.test", "files.test", "auth.test")
NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Squid:
    def __init__(self, users: dict = None):
        self.users = users or {}
        self.port = free_port()
        self.name = "ramalamatest%d" % self.port
        self.proc = None
        # squid drops root to the `proxy` user: its directory must be reachable by that user,
        # which pytest's private tmp_path is not
        self.dir = tempfile.mkdtemp(prefix="squid-")
        os.chmod(self.dir, 0o755)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def url_with(self, user: str, password: str) -> str:
        return "http://%s:%s@127.0.0.1:%d" % (user, password, self.port)

    def start(self) -> "Squid":
        exe = shutil.which("squid") or "/usr/sbin/squid"
        if not os.path.exists(exe):
            raise FileNotFoundError("squid")
        d = self.dir
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("".join("127.0.0.1 %s\n" % n for n in NAMES))
        lines = ["http_port 127.0.0.1:%d" % self.port, "pid_filename %s/squid.pid" % d,
                 "access_log stdio:%s/access.log" % d, "cache_log %s/cache.log" % d, "cache_store_log none",
                 "cache deny all", "hosts_file %s/hosts" % d, "visible_hostname %s" % self.name,
                 "coredump_dir %s" % d, "shutdown_lifetime 0 seconds", "dns_v4_first on",
                 "acl localnet src 127.0.0.0/8"]
        if self.users:
            passwd = os.path.join(d, "passwd")
            with open(passwd, "w") as f:
                f.write("".join(subprocess.run(["htpasswd", "-bn", u, p], check=True, capture_output=True,
                                               text=True).stdout.strip() + "\n" for u,
                                p in self.users.items()))
            lines += ["auth_param basic program %s %s" % (NCSA_AUTH, passwd), "auth_param basic realm test",
                      "acl authed proxy_auth REQUIRED", "http_access deny !authed"]
        lines += ["http_access allow localnet", "http_access deny all"]
        conf = os.path.join(d, "squid.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        for name in ("access.log", "cache.log"):
            open(os.path.join(d, name), "a").close()
            shutil.chown(os.path.join(d, name), "proxy", "proxy")
        shutil.chown(d, "proxy", "proxy")
        self.proc = subprocess.Popen([exe, "-N", "-n", self.name, "-f", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "stderr"), "wb"))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("squid exited: %s" % self._logs())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("squid did not start: %s" % self._logs())

    def _logs(self) -> str:
        text = ""
        for name in ("stderr", "cache.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()[-2000:]
            except OSError:
                pass
        return text

    def access_log(self) -> str:
        """Squid writes a line when a request (or a CONNECT tunnel) ends; give it a moment."""
        time.sleep(0.3)
        with open(os.path.join(self.dir, "access.log"), errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in glob.glob("/dev/shm/%s-*" % self.name):
            os.unlink(path)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Squid":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
