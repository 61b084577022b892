"""Shared test fixtures: the CLI in-process, the built zipapp, a generated GGUF, fake servers.

Real components the suite needs (other Pythons, vermin, later a registry, podman and
llama-server) go through require(): missing ones skip on a developer machine and FAIL
under RAMALAMA_TEST_STRICT=1, which CI sets.
"""
from __future__ import annotations

import ast
import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SH = ROOT / "build.sh"
TIMEOUT = 300
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ramalama  # noqa: E402
from gguf_maker import write_tiny_llama  # noqa: E402


def require(what, found):
    """Return `found`; if it is falsy, fail under RAMALAMA_TEST_STRICT=1, else skip."""
    if not found:
        if os.environ.get("RAMALAMA_TEST_STRICT") == "1":
            pytest.fail(what + " is required (RAMALAMA_TEST_STRICT=1) but was not found")
        pytest.skip(what + " not found")
    return found


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", TIMEOUT)
    return subprocess.run([str(c) for c in cmd], **kw)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_version():
    tree = ast.parse((ROOT / "ramalama.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("ramalama.py defines no __version__")


EXPECTED_VERSION_LINE = "ramalama version " + source_version()


def find_python(version):
    """Path of a working Python `version` ("3.8", "2.7"), or None.

    Candidates that exist but do not run (e.g. pyenv shims for a version that is
    not activated) are skipped.
    """
    roots = {os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv"}
    candidates = [shutil.which("python" + version)]
    for root in sorted(r for r in roots if r):
        for name in ("python" + version, "python" + version.split(".")[0]):
            candidates += sorted(glob.glob(os.path.join(root, "versions", version + "*", "bin", name)))
    probe = "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"
    for cand in candidates:
        if not cand:
            continue
        try:
            proc = run([cand, "-c", probe], timeout=60)
        except OSError:
            continue
        if proc.returncode == 0 and proc.stdout.strip() == version:
            return cand
    return None


def build(out, cwd=ROOT, env=None):
    """Run build.sh OUT with the test interpreter, so ramalama.pyc matches it."""
    env = dict(os.environ if env is None else env)
    env["PYTHON"] = sys.executable
    proc = run(["bash", BUILD_SH, out], cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="session")
def pyz(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "ramalama.pyz"
    build(out)
    return out




class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return "Result(code=%r, out=%r, err=%r)" % (self.code, self.out[-2000:], self.err[-2000:])


def cli_env(tmp_path: Path) -> dict:
    """An environment with its own HOME and config dir, so the developer's files never leak in."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PATH": os.environ.get("PATH", "")}


@pytest.fixture
def env(tmp_path):
    return cli_env(tmp_path)


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def cli(env, store):
    """Run ramalama.main in-process against a private store: cli("list", "--json")."""
    def call(*argv, env_extra=None):
        out, err = io.StringIO(), io.StringIO()
        code = ramalama.main(["--store", str(store)] + [str(a) for a in argv],
                             env=dict(env, **(env_extra or {})), stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())
    return call


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_tiny_llama(str(path))
    return path


@pytest.fixture
def model_file(tmp_path, tiny_gguf) -> Path:
    """A private copy of the tiny model (file:// pulls hardlink it and make it read-only)."""
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir(exist_ok=True)
    shutil.copyfile(tiny_gguf, path)
    return path


def blobs(store: Path) -> list:
    d = store / "blobs" / "sha256"
    return sorted(os.listdir(d)) if d.exists() else []


@pytest.fixture(scope="session")
def llama_server():
    """llama-server built from the llama.cpp source (cached in ~/.cache after the first build)."""
    from runtime import build_llama_server
    try:
        path = build_llama_server()
    except Exception as e:             # noqa: BLE001 - reported through require()
        path = None
        print("llama-server unavailable: %s" % e)
    return require("llama-server (tests/build-llama-server.sh)", path)


# -- model servers: a pulled model, llama-server on PATH, an image holding it, both engines

@pytest.fixture
def model(cli, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    return "file://%s" % model_file


@pytest.fixture
def path_env(env, llama_server):
    return dict(env, PATH=os.path.dirname(llama_server) + os.pathsep + env["PATH"])


@pytest.fixture(scope="session")
def podman_image(tmp_path_factory, llama_server):
    """An image holding llama-server and llama.cpp's tools, pushed by tag to a local registry."""
    from registry import RegistryServer
    from runtime import build_llama_image, have, podman_env
    require("podman (apt-get install podman runc)", have("podman") and have("runc"))
    require("docker-registry", have("docker-registry"))
    tmp = tmp_path_factory.mktemp("podman")
    reg = RegistryServer(tmp / "registry").start()
    penv = podman_env(tmp, reg.host)
    tag = "%s/ramalama/llama:latest" % reg.host
    build_llama_image(llama_server, tmp, penv, tag)
    subprocess.run(["podman", "push", "--quiet", "--tls-verify=false", tag], check=True, capture_output=True,
                   env=dict(os.environ, **penv), timeout=300)
    yield tag, penv
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, env=dict(os.environ, **penv))
    reg.stop()


@pytest.fixture(params=["native", "podman"])
def engine(request, path_env, env):
    """(flags, environment) for running natively or in podman."""
    if request.param == "native":
        return ["--nocontainer"], path_env
    tag, penv = request.getfixturevalue("podman_image")
    return ["--engine", "podman", "--image", tag], dict(env, **penv)



# -- figures the reliability suites report at the end of the run (CI prints them)

FIGURES: dict = {}


def record(name: str, tried: int, bad: int, detail: str = "") -> None:
    """Add to a suite's count of cases tried and bad outcomes."""
    entry = FIGURES.setdefault(name, {"tried": 0, "bad": 0, "detail": set()})
    entry["tried"] += tried
    entry["bad"] += bad
    if detail:
        entry["detail"].add(detail)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.write_sep("-", "reliability figures")
        for name, e in sorted(FIGURES.items()):
            extra = " (%s)" % ", ".join(sorted(e["detail"])) if e["detail"] else ""
            terminalreporter.write_line("%s: %d tried, %d bad%s" % (name, e["tried"], e["bad"], extra))
