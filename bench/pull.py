#!/usr/bin/env python3
"""A 1 GiB single-layer pull from a local docker-registry, side by side in one run:

  ours     ramalama.pyz pull oci://127.0.0.1:P/bench/big:1   (download + sha256 + publish)
  curl     curl -o f <blob URL> && sha256sum f               (target: ours <= 1.0x)
  skopeo   skopeo copy docker://... oci:DIR                   (target: skopeo >= 2x ours)

Wall-clock medians of --rounds interleaved rounds; each round starts from an empty
destination. Usage: bench/pull.py [--rounds N] [--size-mib N]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from registry import RegistryServer  # noqa: E402


def timed(cmd, **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    opts = ap.parse_args()
    for tool in ("docker-registry", "skopeo", "curl", "sha256sum"):
        if not shutil.which(tool):
            sys.exit("bench: %s is needed (tests/run.sh installs the registry tools)" % tool)
    work = Path(tempfile.mkdtemp(prefix="ramalama-bench-pull-"))
    py = sys.executable
    try:
        pyz = work / "ramalama.pyz"
        subprocess.run(["bash", str(ROOT / "build.sh"), str(pyz)], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHON=py))
        blob = work / "big.bin"
        with open(blob, "wb") as f:
            for _ in range(opts.size_mib):
                f.write(os.urandom(1 << 20))
        with RegistryServer(work / "registry") as reg:
            ref = "oci://%s/bench/big:1" % reg.host
            seed = [py, str(pyz), "--store", str(work / "seed"), "-q"]
            digest = subprocess.run(seed + ["push", "file://%s" % blob, ref], check=True, capture_output=True,
                                    text=True).stdout.strip()
            layer = "sha256:" + subprocess.run(["sha256sum", str(blob)], check=True, capture_output=True,
                                               text=True).stdout.split()[0]
            shutil.rmtree(work / "seed")
            assert digest.startswith("sha256:")
            url = "http://%s/v2/bench/big/blobs/%s" % (reg.host, layer)
            times = {"ours": [], "curl": [], "skopeo": []}
            for _ in range(opts.rounds):
                shutil.rmtree(work / "store", ignore_errors=True)
                times["ours"].append(timed([py, str(pyz), "--store", str(work / "store"), "-q", "pull", ref]))
                shutil.rmtree(work / "store", ignore_errors=True)
                out = work / "curl.bin"
                t = timed(["curl", "-sf", "-o", str(out), url]) + timed(["sha256sum", str(out)])
                times["curl"].append(t)
                out.unlink()
                shutil.rmtree(work / "oci", ignore_errors=True)
                times["skopeo"].append(timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                              "docker://%s/bench/big:1" % reg.host, "oci:%s:1"
                                              % (work / "oci")]))
                shutil.rmtree(work / "oci", ignore_errors=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        mib = opts.size_mib
        print("pull %d MiB vs curl+sha256sum: ours %.0f MiB/s, curl+sha256sum %.0f MiB/s, ratio %.2f "
              "(ours/curl time, target <= 1.00)"
              % (mib, mib / med["ours"], mib / med["curl"], med["ours"] / med["curl"]))
        print("pull %d MiB vs skopeo copy: ours %.0f MiB/s, skopeo %.0f MiB/s, ratio %.2f "
              "(skopeo/ours time, target >= 2.00)"
              % (mib, mib / med["ours"], mib / med["skopeo"], med["skopeo"] / med["ours"]))
        print("wall-clock medians of %d interleaved rounds" % opts.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
