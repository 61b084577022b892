#!/usr/bin/env python3
"""One GGUF through every way in, one copy on disk: pulled via ollama:// (a local
docker-registry holding an Ollama manifest), hf:// (the fake Hub from tests/), oci://, file://,
and imported from a real-layout ollama store and Hugging Face cache, all into one store.

Prints store bytes / file bytes (target 1.00) and the metadata that is not blobs (target < 1 MiB).
Usage: bench/dedup.py [--size-mib N]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gguf_maker import write_tiny_llama  # noqa: E402
from hub import FakeHub, Repo  # noqa: E402
from oci_layout import descriptor, http_push  # noqa: E402
from registry import RegistryServer  # noqa: E402


def du(path: Path) -> int:
    """Allocated bytes, each inode once."""
    seen, total = set(), 0
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=64)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ramalama-bench-dedup-"))
    try:
        model = work / "model.gguf"
        write_tiny_llama(str(model), pad_to=opts.size_mib << 20)
        data = model.read_bytes()
        hexd = hashlib.sha256(data).hexdigest()
        home = work / "home"
        # a real-layout ollama store and Hugging Face cache holding the same file under other names
        ollama = work / "ollama" / "blobs"
        ollama.mkdir(parents=True)
        shutil.copyfile(model, ollama / ("sha256-" + hexd))
        hf_blob = work / "hf" / "models--org--cached" / "blobs" / hexd
        hf_blob.parent.mkdir(parents=True)
        shutil.copyfile(model, hf_blob)
        with RegistryServer(work / "registry") as reg, FakeHub() as hub:
            config = b'{"model_format":"gguf"}'
            http_push(reg.host, "library/same", "latest", {
                "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                "layers": [descriptor("application/vnd.ollama.image.model", data)]}, [config, data])
            hub.add("org/same", Repo({"same.Q4_K_M.gguf": data}))
            hub.add("org/cached", Repo({"cached.Q4_K_M.gguf": data}))
            env = {"HOME": str(home), "PATH": os.environ["PATH"], "HF_ENDPOINT": hub.url,
                   "RAMALAMA_OLLAMA_REGISTRY": reg.host, "OLLAMA_MODELS": str(work / "ollama"),
                   "HF_HUB_CACHE": str(work / "hf")}
            ram = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(work / "store"), "-q"]
            # ollama:// first: its blob is adopted from the local ollama store, no download
            steps = [["pull", "ollama://same"], ["pull", "file://%s" % model], ["pull", "hf://org/same"],
                     ["pull", "hf://org/cached"], ["push", "ollama://same", "oci://%s/same/m:1" % reg.host],
                     ["pull", "oci://%s/same/m:1" % reg.host]]
            for step in steps:
                subprocess.run(ram + step, check=True, env=env, stdout=subprocess.DEVNULL)
            listed = json.loads(subprocess.run(ram + ["list", "--json"], check=True, env=env,
                                               capture_output=True).stdout)
        store = du(work / "store")
        blobs = du(work / "store" / "blobs")
        print("dedup %d models (ollama://, file://, hf:// x2, oci://; blob adopted from an ollama store): "
              "store %.2f MiB / file %.2f MiB = %.3f (target 1.00); "
              "metadata %.0f KiB (target < 1024 KiB)"
              % (len(listed), store / 2**20, len(data) / 2**20, store / len(data), (store - blobs) / 1024))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
