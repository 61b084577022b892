"""A second host for reachability tests: a network namespace joined to this one by a veth
pair. From inside it, this host is at `host_address` (an address on the host's end of the
pair, not loopback), so "can another machine reach this port?" is a real connection attempt.

    with PeerHost() as peer:
        assert not peer.can_connect(port)
"""
from __future__ import annotations

import os
import subprocess
import sys


class PeerHost:
    def __init__(self):
        n = os.getpid() % 250 + 1
        self.name, self.host_if, self.peer_if = "rlpeer%d" % n, "rlh%d" % n, "rlp%d" % n
        self.host_address, self.peer_address = "10.213.%d.1" % n, "10.213.%d.2" % n

    def _ip(self, *argv, netns: bool = False):
        cmd = (["ip", "netns", "exec", self.name] if netns else []) + ["ip"] + list(argv)
        subprocess.run(cmd, check=True, capture_output=True)

    def __enter__(self) -> "PeerHost":
        self.__exit__()
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            self._ip("link", "set", self.peer_if, "netns", self.name)
            self._ip("addr", "add", self.host_address + "/30", "dev", self.host_if)
            self._ip("link", "set", self.host_if, "up")
            self._ip("addr", "add", self.peer_address + "/30", "dev", self.peer_if, netns=True)
            self._ip("link", "set", self.peer_if, "up", netns=True)
            self._ip("link", "set", "lo", "up", netns=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def can_connect(self, port: int) -> bool:
        """Whether a TCP connection from the peer to this host's address and `port` succeeds."""
        probe = ("import socket,sys\ntry:\n socket.create_connection((%r, %d), timeout=3).close()\n"
                 "except OSError:\n sys.exit(1)" % (self.host_address, port))
        return subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", probe],
                              capture_output=True).returncode == 0
