#!/usr/bin/env python3
"""Startup cost of the built zipapp, as CPU-time ratios measured side by side in one run.

  --help          dist/ramalama.pyz --help  vs  python3 -c pass      (target <= 1.30)
  list x1000      ramalama.pyz list over 1,000 models  vs  --help    (target <= 2.00)
  anchor          ramalama 0.25 from PyPI --help vs python3 -c pass  (when it can be installed)

Commands run round-robin, so machine noise hits all of them alike; each figure is the median of
the per-round CPU times (user + sys of the child). Usage: bench/startup.py [--rounds N]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import ramalama  # noqa: E402
from gguf_maker import write_tiny_llama  # noqa: E402
from anchor import anchor_command  # noqa: E402



def cpu_time(cmd: list, env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit("bench: %s failed: %s" % (" ".join(cmd), proc.stderr.decode()[-500:]))
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_store(root: str, count: int) -> None:
    """`count` models sharing one generated GGUF, published through the store's own code."""
    model = os.path.join(root, "tiny.gguf")
    write_tiny_llama(model)
    store = ramalama.Store(os.path.join(root, "store")).ensure()
    digest, size = store.import_file(model)
    spec = [ramalama.FileSpec("model.gguf", "sha256:" + digest, size, "model", "")]
    for i in range(count):
        store.publish_model(ramalama.parse_ref("ollama://bench/model-%04d:latest" % i), spec, {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--no-anchor", action="store_true", help="skip ramalama 0.25 from PyPI")
    opts = ap.parse_args()
    py = sys.executable
    work = tempfile.mkdtemp(prefix="ramalama-bench-")
    try:
        pyz = os.path.join(work, "ramalama.pyz")
        subprocess.run(["bash", os.path.join(ROOT, "build.sh"), pyz], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHON=py))
        make_store(work, 1000)
        env = {"HOME": os.path.join(work, "home"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        cmds = {
            "python": [py, "-c", "pass"],
            "help": [py, pyz, "--help"],
            "list": [py, pyz, "--store", os.path.join(work, "store"), "list"],
        }
        if not opts.no_anchor:
            anchor = anchor_command()
            if anchor:
                cmds["anchor"] = anchor + ["--help"]
        listed = subprocess.run(cmds["list"], capture_output=True, text=True, env=env).stdout
        assert len(listed.splitlines()) == 1001, "list did not show 1,000 models"
        times = {k: [] for k in cmds}
        for _ in range(opts.rounds):
            for name, cmd in cmds.items():
                times[name].append(cpu_time(cmd, env))
        med = {k: statistics.median(v) for k, v in times.items()}
        print("startup --help: ours %.1f ms, python3 -c pass %.1f ms, ratio %.2f (target <= 1.30)"
              % (med["help"] * 1e3, med["python"] * 1e3, med["help"] / med["python"]))
        print("list 1000 models: ours %.1f ms, --help %.1f ms, ratio %.2f (target <= 2.00)"
              % (med["list"] * 1e3, med["help"] * 1e3, med["list"] / med["help"]))
        if "anchor" in med:
            print("anchor ramalama 0.25 --help: %.1f ms, python3 -c pass %.1f ms, ratio %.2f"
                  % (med["anchor"] * 1e3, med["python"] * 1e3, med["anchor"] / med["python"]))
        else:
            print("anchor ramalama 0.25 --help: not measured (not installable here or --no-anchor)")
        print("CPU time (user+sys), median of %d interleaved rounds, Python %s" % (opts.rounds, sys.version.split()[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
