"""Helpers for tests that run model servers: the CLI as a process, free ports, chat requests,
what is left running afterwards."""
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from conftest import ROOT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ramalama(store, *argv, env=None, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)] + list(argv),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def post_json(port: int, path: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def chat_completion(port, model):
    return post_json(port, "/v1/chat/completions",
                     {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})


def llama_processes(marker: str) -> list:
    out = subprocess.run(["pgrep", "-af", "llama-server"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line]


def podman(penv, *argv):
    return subprocess.run(["podman"] + list(argv), capture_output=True, text=True,
                          env=dict(os.environ, **penv))


def start_serving(store, model, engine_flags, env, *extra, port=None):
    """`serve` in the foreground until it announces the endpoint; (process, port). No model
    (None) serves the whole store."""
    port = port or free_port()
    proc = ramalama(store, *engine_flags, "serve", "--port", str(port), *extra, *[model] if model else [],
                    env=env)
    seen = []
    for line in proc.stderr:                   # e.g. "pinned <image> to <digest>" comes first
        seen.append(line)
        if line.startswith("Serving "):
            return proc, port
    raise AssertionError("serve ended without serving: " + "".join(seen))


def http_status(port, headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/models" % port, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def leftovers(store, run_env) -> list:
    """Model servers still running: our llama-server processes and labelled containers."""
    left = llama_processes(str(store))
    if "CONTAINERS_CONF" in run_env:
        names = subprocess.run(["podman", "ps", "-a", "--filter", "label=ai.ramalama", "--format",
                                "{{.Names}}"],
                               capture_output=True, text=True, env=run_env).stdout.split()
        left += names
    return left
