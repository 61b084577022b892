"""The anchor, ramalama 0.25 from PyPI, installed once into a cached venv for side-by-side runs."""
import os
import shutil
import subprocess
import sys

ANCHOR = "ramalama==0.25.0"
CACHE = os.path.expanduser("~/.cache/ramalama-pyz-bench/ramalama-0.25")


def anchor_command():
    """[python, ramalama] of the anchor's venv, or None when it cannot be installed here."""
    exe = os.path.join(CACHE, "bin", "ramalama")
    if not os.path.exists(exe):
        shutil.rmtree(CACHE, ignore_errors=True)
        if subprocess.run([sys.executable, "-m", "venv", CACHE]).returncode != 0 or subprocess.run(
                [os.path.join(CACHE, "bin", "pip"), "install", "-q", ANCHOR],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            return None
    return [os.path.join(CACHE, "bin", "python"), exe]
