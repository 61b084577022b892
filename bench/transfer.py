#!/usr/bin/env python3
"""Transfer figures, each measured side by side in one run:

  throttled   a CDN that allows 20 MB/s per connection serves a 400 MB blob:
              ours (default connections) vs ours --parallel 1 vs curl       (target >= 6x)
  resume      the pull is killed at ~50% and rerun: bytes the rerun moved / blob size (<= 0.55)
  re-pull     pulling a present model again: blob bytes moved                (target 0)
  peak RSS    of a 1 GiB pull from the same server, unthrottled              (target <= 64 MiB)
  anchor      ramalama 0.25 from PyPI (in a venv, when it installs) on the same throttled URL

Usage: bench/transfer.py [--rounds N] [--size-mb N]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import FileServer  # noqa: E402
from anchor import anchor_command  # noqa: E402



def payload(n: int) -> bytes:
    block = os.urandom(1 << 20)
    return (block * (n // len(block) + 1))[:n]


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--no-anchor", action="store_true")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ramalama-bench-transfer-"))
    py = sys.executable
    try:
        pyz = work / "ramalama.pyz"
        subprocess.run(["bash", str(ROOT / "build.sh"), str(pyz)], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHON=py))
        env = {"HOME": str(work / "home"), "PATH": os.environ["PATH"]}
        size = opts.size_mb * 10**6
        data = payload(size)
        with FileServer() as srv:
            srv.add("/blob.gguf", data)
            srv.add("/big.gguf", payload(1 << 30))
            url = srv.url + "/blob.gguf"

            def ours(*flags, store="s"):
                return [py, str(pyz), "--store", str(work / store), "-q", "pull"] + list(flags) + [url]

            # throttled: 20 MB/s per connection
            srv.rate = 20e6
            found = None if opts.no_anchor else anchor_command()
            anchor = found[1:] if found else None       # the ramalama script itself
            times = {"ours": [], "one": [], "curl": [], "anchor": []}
            for _ in range(opts.rounds):
                for key, cmd in (("ours", ours()), ("one", ours("--parallel", "1")),
                                 ("curl", ["curl", "-sf", "-o", str(work / "curl.bin"), url])):
                    shutil.rmtree(work / "s", ignore_errors=True)
                    times[key].append(timed(cmd, env))
                if anchor:
                    shutil.rmtree(work / "anchor-store", ignore_errors=True)
                    try:
                        times["anchor"].append(timed(anchor
                                                     + ["--store", str(work / "anchor-store"), "pull", url],
                                                     dict(env, PATH="%s:%s"
                                                          % (Path(anchor[0]).parent, env["PATH"]))))
                    except subprocess.CalledProcessError:
                        anchor = None
            med = {k: statistics.median(v) for k, v in times.items() if v}
            mb = size / 1e6
            print("throttled 20 MB/s per connection, %d MB: ours %.0f MB/s, ours --parallel 1 %.0f MB/s, "
                  "curl %.0f MB/s, speedup %.1fx over one connection (target >= 6x)"
                  % (opts.size_mb, mb / med["ours"], mb / med["one"], mb / med["curl"],
                     med["one"] / med["ours"]))
            if "anchor" in med:
                print("anchor ramalama 0.25 on the same URL: %.0f MB/s, ours %.1fx faster"
                      % (mb / med["anchor"], med["anchor"] / med["ours"]))
            else:
                print("anchor ramalama 0.25 on the same URL: not measured (not installable or failed here)")

            # resume: kill at ~50%, rerun, count what the rerun moved
            shutil.rmtree(work / "s", ignore_errors=True)
            proc = subprocess.Popen(ours(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            while True:
                states = list((work / "s" / "tmp").glob("*.json")) if (work / "s" / "tmp").exists() else []
                try:
                    state = json.loads(states[0].read_text()) if states else None
                except ValueError:
                    state = None
                if state and sum(p[2] for p in state.get("parts", [])) >= size // 2:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(0.5)                        # the killed connections drain
            before = srv.bytes_sent
            subprocess.run(ours(), check=True, env=env)
            resumed = (srv.bytes_sent - before) / size
            print("resume after a kill at ~50%%: the rerun moved %.2f of the blob (target <= 0.55)" % resumed)

            before = srv.bytes_sent
            subprocess.run(ours(), check=True, env=env)
            print("re-pull of a present model: %d blob bytes moved (target 0)" % (srv.bytes_sent - before))

            # peak RSS of an unthrottled 1 GiB pull, in a process of its own
            srv.rate = None
            probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            out = subprocess.run([py, "-c", probe, py, str(pyz), "--store", str(work / "rss"), "-q", "pull",
                                  srv.url + "/big.gguf"], check=True, capture_output=True, text=True,
                                 env=env).stdout
            print("peak RSS of a 1 GiB pull: %.1f MiB (target <= 64 MiB)" % (int(out.split()[-1]) / 1024))
        print("medians of %d interleaved rounds; CDN played by tests/servers.py with a per-connection token "
              "bucket"
              % opts.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
