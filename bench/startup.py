#!/usr/bin/env python3
"""Startup cost of the built zipapp, as CPU-time ratios measured side by side in one run, on every
CPython 3.9+ this machine has (pyenv's and the system's):

  --help          ramalama.pyz --help  vs  python -c pass, and vs a trivial argparse zipapp's --help
                  (python -m zipapp: the floor; target <= 1.25x it)
  list x1000      ramalama.pyz list over 1,000 models  vs  --help    (target <= 2.00), as a
                  user who lists again sees it; then the first list after one model was pulled
                  again, and a list without listing.json (removed before each such run: every
                  folder is read, and the listing written)
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
import time

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


def make_store(root: str, count: int):
    """`count` models sharing one generated GGUF, published through the store's own code.
    Returns a function that publishes the first one again, as a pull of it would."""
    model = os.path.join(root, "tiny.gguf")
    write_tiny_llama(model)
    store = ramalama.Store(os.path.join(root, "store")).ensure()
    digest, size = store.import_file(model)
    spec = [ramalama.FileSpec("model.gguf", "sha256:" + digest, size, "model", "")]
    refs = [ramalama.parse_ref("ollama://bench/model-%04d:latest" % i) for i in range(count)]
    for ref in refs:
        store.publish_model(ref, spec, {})
    return lambda: store.publish_model(refs[0], spec, {})


TRIVIAL = "import argparse\nargparse.ArgumentParser(description='trivial').parse_args()\n"


def interpreters() -> list:
    """Every CPython 3.9+ here: pyenv's and the system's, one per version."""
    import glob
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which(
        "pyenv") else os.path.expanduser("~/.pyenv")
    found = {}
    for py in sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin",
                                            "python3"))) + ["/usr/bin/python3"]:
        proc = subprocess.run([py, "-c",
                               "import sys; print(sys.version.split()[0], sys.version_info >= (3, 9))"],
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.split()[1] == "True":
            found.setdefault(proc.stdout.split()[0], py)
    return sorted(found.items(), key=lambda kv: [int(n) for n in kv[0].split(".")])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-anchor", action="store_true", help="skip ramalama 0.25 from PyPI")
    opts = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ramalama-bench-")
    try:
        pyz = os.path.join(work, "ramalama.pyz")
        subprocess.run(["bash", os.path.join(ROOT, "build.sh"), pyz], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHON=sys.executable))
        trivial_dir = os.path.join(work, "trivial")
        os.makedirs(trivial_dir)
        with open(os.path.join(trivial_dir, "__main__.py"), "w") as f:
            f.write(TRIVIAL)
        trivial = os.path.join(work, "trivial.pyz")
        subprocess.run([sys.executable, "-m", "zipapp", trivial_dir, "-o", trivial], check=True)
        pull_again = make_store(work, 1000)
        listing = os.path.join(work, "store", "listing.json")
        before = {"pulled": pull_again, "unlisted": lambda: os.unlink(listing)}
        env = {"HOME": os.path.join(work, "home"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for version, py in interpreters():
            cmds = {
                "pass": [py, "-c", "pass"],
                "trivial": [py, trivial, "--help"],
                "help": [py, pyz, "--help"],
                "list": [py, pyz, "--store", os.path.join(work, "store"), "list"],
                "pulled": [py, pyz, "--store", os.path.join(work, "store"), "list"],
                "unlisted": [py, pyz, "--store", os.path.join(work, "store"), "list"],
            }
            listed = subprocess.run(cmds["list"], capture_output=True, text=True, env=env).stdout
            assert len(listed.splitlines()) == 1001, "list did not show 1,000 models"

            def settle(cmd=cmds["list"]):
                """As a user who lists again: the last change is settled (0.1 s) and listed once."""
                time.sleep(0.15)
                subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True)
            before["list"] = settle
            times = {k: [] for k in cmds}
            for _ in range(opts.rounds):
                for name, cmd in cmds.items():
                    if name in before:
                        before[name]()
                    times[name].append(cpu_time(cmd, env))
            med = {k: statistics.median(v) for k, v in times.items()}
            print("Python %-7s --help %.1f ms: %.2fx -c pass, %.2fx a trivial argparse zipapp (target <= "
                  "1.25); list 1000 models %.2fx --help (target <= 2.00), after one pull %.2fx, without "
                  "listing.json %.2fx"
                  % (version, med["help"] * 1e3, med["help"] / med["pass"], med["help"] / med["trivial"],
                     med["list"] / med["help"], med["pulled"] / med["help"], med["unlisted"] / med["help"]))
        if not opts.no_anchor:
            anchor = anchor_command()
            if anchor:
                py = sys.executable
                times = {"pass": [], "anchor": []}
                for _ in range(opts.rounds):
                    times["pass"].append(cpu_time([py, "-c", "pass"], env))
                    times["anchor"].append(cpu_time(anchor + ["--help"], env))
                print("anchor ramalama 0.25 --help: %.2fx python3 -c pass"
                      % (statistics.median(times["anchor"]) / statistics.median(times["pass"])))
        print("CPU time (user+sys), median of %d interleaved rounds per interpreter" % opts.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
