#!/usr/bin/env python3
"""Wrapper overhead of `serve`: time from command start to a healthy /health, for
`ramalama.pyz --nocontainer serve MODEL` and for the same llama-server command run directly,
side by side, round-robin, median of --rounds. Target: overhead <= 150 ms.
Usage: bench/serve.py [--rounds N]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gguf_maker import write_tiny_llama  # noqa: E402
from runtime import build_llama_server  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_healthy(argv: list, port: int, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit("bench: %s exited early" % argv[0])
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    opts = ap.parse_args()
    llama = build_llama_server()
    work = Path(tempfile.mkdtemp(prefix="ramalama-bench-serve-"))
    try:
        pyz = work / "ramalama.pyz"
        subprocess.run(["bash", str(ROOT / "build.sh"), str(pyz)], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHON=sys.executable))
        model = work / "tiny.gguf"
        write_tiny_llama(str(model))
        env = {"HOME": str(work / "home"), "PATH": os.path.dirname(llama) + os.pathsep + os.environ["PATH"]}
        base = [sys.executable, str(pyz), "--store", str(work / "store"), "--nocontainer"]
        subprocess.run(base + ["-q", "pull", "file://%s" % model], check=True, env=env)
        stored = str(work / "store" / "repos" / "file") + str(model) + "/tiny.gguf"
        ours, direct = [], []
        for _ in range(opts.rounds):
            port = free_port()
            ours.append(time_to_healthy(base + ["serve", "--host", "127.0.0.1", "--port", str(port),
                                                "file://%s" % model], port, env))
            port = free_port()
            direct.append(time_to_healthy([llama, "--host", "127.0.0.1", "--port", str(port), "--model",
                                           stored,
                                           "--alias", "file://%s" % model, "--n-gpu-layers", "0"], port, env))
        o, d = statistics.median(ours), statistics.median(direct)
        print("serve to healthy: ours %.0f ms, llama-server direct %.0f ms, overhead %.0f ms (target <= 150 "
              "ms), ratio %.2f" % (o * 1e3, d * 1e3, (o - d) * 1e3, o / d))
        print("wall-clock medians of %d interleaved rounds" % opts.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
