"""Real runtimes for tests: llama-server built from the llama.cpp source (tests/build-llama-server.sh,
cached), podman configured the way it works on these machines, an image holding llama-server,
and a fake `vllm` that serves the OpenAI API shape."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def build_llama_server() -> str:
    """Path of llama-server, building it on first use (about 9 minutes on 2 cores)."""
    proc = subprocess.run(["bash", str(HERE / "build-llama-server.sh")], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError("building llama-server failed: " + proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1]


def podman_env(tmp: Path, registry_host: str = None) -> dict:
    """CONTAINERS_CONF (runc, cgroupfs, file events, lower ulimits) and, for a local plain-HTTP
    registry, a registries.conf marking it insecure."""
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {"CONTAINERS_CONF": str(conf)}
    if registry_host:
        reg = tmp / "registries.conf"
        reg.write_text('[[registry]]\nlocation = "%s"\ninsecure = true\n' % registry_host)
        env["CONTAINERS_REGISTRIES_CONF"] = str(reg)
    return env


LLAMA_TOOLS = ("llama-server", "llama-bench", "llama-perplexity", "ggml-rpc-server")


def llama_rootfs_tar(llama_server: str, out: Path) -> Path:
    """A root filesystem holding llama-server, the tools built beside it (llama-bench,
    llama-perplexity, the RPC worker) and every library ldd names for them, each at its own
    absolute path (the binaries' RUNPATH points at their build directory)."""
    bindir = os.path.dirname(llama_server)
    tools = [os.path.join(bindir, t) for t in LLAMA_TOOLS]
    libs = set()
    for tool in tools:
        ldd = subprocess.run(["ldd", tool], capture_output=True, text=True, check=True).stdout
        libs |= set(re.findall(r"=>\s+(/\S+)", ldd)) | set(re.findall(r"^\s*(/\S*ld-linux\S*)", ldd, re.M))
    with tarfile.open(out, "w") as tar:
        for tool in tools:
            tar.add(tool, arcname="usr/local/bin/" + os.path.basename(tool))
        for lib in sorted(libs):
            tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
    return out


def build_llama_image(llama_server: str, tmp: Path, env: dict, tag: str) -> None:
    """`podman import` the rootfs as `tag`, with the PATH an image's config carries (kube play
    and compose take it from there)."""
    tar = llama_rootfs_tar(llama_server, tmp / "rootfs.tar")
    subprocess.run(["podman", "import", "--quiet", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                    str(tar), tag],
                   check=True, capture_output=True,
                   env=dict(os.environ, **env), timeout=300)


FAKE_VLLM = r'''#!/usr/bin/env python3
"""A stand-in for `vllm serve MODEL --host H --port P --served-model-name NAME ...`: the OpenAI
API shape vLLM serves (/health, /v1/models, streamed /v1/chat/completions; with VLLM_API_KEY
set, chat requests without that bearer key get 401)."""
import json, sys, http.server
args = sys.argv[1:]
assert args[0] == "serve", args
model = args[1]
opt = dict(zip(args[2::2], args[3::2]))
name = opt.get("--served-model-name", model)
import os
if os.environ.get("FAKE_VLLM_LOG"):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
        f.write(json.dumps(sys.argv) + "\n")

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _send(self, status, body, ctype="application/json"):
        self.send_response(status); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health": return self._send(200, b"")
        if self.path == "/v1/models": return self._send(200, json.dumps({"data": [{"id": name}]}).encode())
        self._send(404, b"{}")
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = os.environ.get("VLLM_API_KEY")       # as vLLM: /v1 routes then need the key
        if key and self.headers.get("Authorization") != "Bearer " + key:
            return self._send(401, b'{"error": "Unauthorized"}')
        assert req["model"] == name, req
        if os.environ.get("FAKE_VLLM_LOG"):
            with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
                f.write(json.dumps({"messages": req["messages"]}) + "\n")
        words = ["vllm", "says:"] + req["messages"][-1]["content"].split()
        chunks = b"".join(b"data: " + json.dumps({"choices": [{"delta": {"content": w + " "}}]}).encode()
                          + b"\n\n"
                          for w in words) + b"data: [DONE]\n\n"
        self._send(200, chunks, "text/event-stream")

http.server.ThreadingHTTPServer((opt["--host"], int(opt["--port"])), H).serve_forever()
'''


def install_fake_vllm(bindir: Path) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / "vllm"
    exe.write_text(FAKE_VLLM)
    exe.chmod(0o755)
    return exe


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
