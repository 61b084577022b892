"""Tests for build.sh and the ramalama.pyz zipapp it produces."""
from __future__ import annotations

import ast
import json
import re
import os
import shutil
import sys
import time
import zipfile
from datetime import datetime, timezone

import pytest

from conftest import EXPECTED_VERSION_LINE, ROOT, build, find_python, require, run, sha256


def expected_epoch():
    proc = None
    if shutil.which("git"):
        proc = run(["git", "log", "-1", "--format=%ct"], cwd=ROOT)
    if proc is not None and proc.returncode == 0 and proc.stdout.strip():
        return int(proc.stdout.strip())
    return 315532800


def test_build_is_reproducible(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    first = build(tmp_path / "a" / "ramalama.pyz", cwd=tmp_path, env=env)
    old_umask = os.umask(0o077)  # second build under a strict umask, relative OUT
    try:
        build("b/ramalama.pyz", cwd=tmp_path, env=env)
    finally:
        os.umask(old_umask)
    a, b = tmp_path / "a" / "ramalama.pyz", tmp_path / "b" / "ramalama.pyz"
    assert sha256(a) == sha256(b)
    assert a.read_bytes() == b.read_bytes()
    # build.sh reports "<sha256>  <path>" for what it wrote.
    assert first.stdout.strip().splitlines()[-1].split() == [sha256(a), str(a)]
    # Timestamps come from the last commit (or 1980-01-01 outside git).
    epoch = expected_epoch()
    with zipfile.ZipFile(a) as zf:
        built_at = json.loads(zf.read("environment.json"))["built_at"]
        date_times = {info.date_time for info in zf.infolist()}
    utc = datetime.fromtimestamp(epoch, timezone.utc)
    assert built_at == utc.strftime("%Y-%m-%d %H:%M:%S")
    dt = time.gmtime(epoch)[:6]
    assert date_times == {dt[:5] + (dt[5] // 2 * 2,)}


def test_archive_layout(pyz):
    assert os.stat(pyz).st_mode & 0o777 == 0o755
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        assert not [n for n in names if n.startswith("_bootstrap/")]
        assert names == sorted(names)
        assert {
            "__main__.py",
            "environment.json",
            "site-packages/ramalama.py",
            "site-packages/ramalama.%s.pyc" % sys.implementation.cache_tag,
            "site-packages/vendor/tomli/__init__.py",
            "site-packages/vendor/tomli/_parser.py",
            "site-packages/vendor/tomli/LICENSE",
        } <= set(names)
        assert not [n for n in names if "__pycache__" in n]
        assert {info.external_attr for info in infos} == {0o100644 << 16}
        pycs = {n for n in names if n.endswith(".pyc")}
        assert pycs == {n for n in pycs if re.fullmatch(r"site-packages/ramalama\.cpython-3\d+\.pyc", n)}
        assert {i.filename for i in infos if i.compress_type == zipfile.ZIP_STORED} == pycs | {"__main__.py"}
        assert {i.compress_type for i in infos
                if i.compress_type != zipfile.ZIP_STORED} == {zipfile.ZIP_DEFLATED}
        assert zf.read("site-packages/ramalama.py") == (ROOT / "ramalama.py").read_bytes()
        env = json.loads(zf.read("environment.json"))
        assert env["shiv_version"] == "1.0.8"
        assert env["build_id"] and env["built_at"]
        launcher = zf.read("__main__.py").decode("ascii")
    assert "_bootstrap" not in launcher and "shiv" not in launcher
    assert len(launcher.splitlines()) <= 30


def test_runs_with_clean_env_from_other_cwd(pyz, tmp_path):
    home = tmp_path / "home"
    proc = run([sys.executable, pyz, "--version"], cwd=tmp_path, env={"HOME": str(home)})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, EXPECTED_VERSION_LINE + "\n", "")
    assert not home.exists()  # nothing extracted (shiv would create ~/.shiv)
    proc = run([sys.executable, pyz, "--version"], cwd=tmp_path, env={})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, EXPECTED_VERSION_LINE + "\n", "")


def test_runs_via_shebang(pyz, tmp_path):
    # "/usr/bin/env python3" resolved on a minimal PATH whose python3 is the test interpreter.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = {"PATH": os.pathsep.join([str(bindir), "/usr/bin", "/bin"])}
    proc = run([pyz, "--version"], cwd="/", env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, EXPECTED_VERSION_LINE + "\n", "")


def test_runs_isolated(pyz, tmp_path):
    proc = run([sys.executable, "-I", pyz, "--version"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, EXPECTED_VERSION_LINE + "\n")


def test_no_shiv_at_runtime(pyz, tmp_path):
    proc = run([sys.executable, "-X", "importtime", pyz, "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert proc.stdout == EXPECTED_VERSION_LINE + "\n"
    assert not [m for m in imported if "shiv" in m or m.split(".")[0] == "_bootstrap"]



@pytest.mark.parametrize("version", ["3.9", "3.10", "3.11", "3.12", "3.13", "system"])
def test_every_python_here_runs_code_compiled_for_it(pyz, tmp_path, version):
    """The build compiles ramalama.py with every CPython 3.9+ on the machine; each loads its own."""
    python = require("Python " + version, "/usr/bin/python3" if version == "system" else find_python(version))
    tag = run([python, "-c", "import sys; print(sys.implementation.cache_tag)"]).stdout.strip()
    proc = run([python, pyz, "info"], cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["python"]["code"] == str(pyz / "site-packages" / ("ramalama.%s.pyc" % tag))


@pytest.mark.parametrize("version", ["3.8", "2.7"])
def test_old_python_gets_one_clear_line(pyz, tmp_path, version):
    python = find_python(version)
    if version == "2.7" and not python:
        pytest.skip("Python 2.7 not found (optional)")
    require("Python " + version, python)
    info = run([python, "-c", "import sys; sys.stdout.write('%d.%d.%d|%s' % "
                "(sys.version_info[:3] + (sys.executable,)))"])
    full_version, executable = info.stdout.split("|", 1)
    proc = run([python, pyz, "--version"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == ("ramalama.pyz needs Python 3.9 or newer; this is Python %s (%s)\n"
                           % (full_version, executable))


def test_python39_works(pyz, tmp_path):
    python = require("Python 3.9", find_python("3.9"))
    proc = run([python, pyz, "--version"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, EXPECTED_VERSION_LINE + "\n", "")


def test_vermin_minimum_version():
    vermin = shutil.which("vermin")
    if vermin:
        cmd = [vermin]
    else:
        has_module = run([sys.executable, "-c", "import vermin"]).returncode == 0
        cmd = [sys.executable, "-m", "vermin"] if has_module else None
    require("vermin", cmd)
    proc = run(cmd + ["-t=3.9-", "--violations", "--no-tips", "ramalama.py"], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _store_flow(python, pyz, tmp_path, model):
    """pull file:// -> list -> inspect -> rm with the built archive, isolated (-I)."""
    store = tmp_path / "store"
    base = [python, "-I", pyz, "--store", store]
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PATH": "/usr/bin:/bin"}
    proc = run(base + ["pull", "file://%s" % model], env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run(base + ["list", "--json"], env=env)
    assert [m["name"] for m in json.loads(proc.stdout)] == ["file://%s" % model]
    proc = run(base + ["inspect", "--json", "file://%s" % model], env=env)
    assert json.loads(proc.stdout)["architecture"] == "llama"
    proc = run(base + ["rm", "file://%s" % model], env=env)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(store / "blobs" / "sha256") == []
    proc = run(base + ["inspect", "file://%s" % model], env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: file://%s is not in the store" % model)
    return env


def test_built_archive_pulls_lists_and_removes(pyz, tmp_path, model_file):
    _store_flow(sys.executable, pyz, tmp_path, model_file)


def test_python39_runs_the_store_flow_with_vendored_tomli(pyz, tmp_path, model_file):
    """Python 3.9 has no tomllib: a config file makes the archive import its vendored tomli."""
    python = require("Python 3.9", find_python("3.9"))
    assert run([python, "-c", "import tomli"]).returncode != 0, "3.9 must not have tomli installed"
    conf = tmp_path / "xdg" / "ramalama" / "ramalama.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[ramalama]\nngl = -1  # inline comment\nimage = 'quay.io/x/y'\n")
    env = _store_flow(python, pyz, tmp_path, model_file)
    proc = run([python, "-I", pyz, "--store", tmp_path / "store", "info"], env=env)
    info = json.loads(proc.stdout)
    assert info["python"]["version"].startswith("3.9.") and info["image"] == "quay.io/x/y"
    assert info["config"]["files"] == [str(conf)]


def test_ramalama_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "ramalama.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    assert "argparse" in names and "json" in names          # the walk sees function-level imports
    assert names - set(sys.stdlib_module_names) == {"tomli"}


def test_lint_passes():
    """ruff with the configuration in pyproject.toml, over the module, the tests and the benchmarks."""
    require("ruff (pip install ruff)", run([sys.executable, "-m", "ruff", "--version"]).returncode == 0)
    proc = run([sys.executable, "-m", "ruff", "check", "ramalama.py", "tests", "bench"], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_our_named_tuples_behave_as_the_standard_library_s():
    import ramalama
    """ramalama.namedtuple skips collections.namedtuple's compile step (start-up); what the module
    uses of it must behave the same."""
    import collections
    import pickle
    ours = ramalama.namedtuple("Point", "x y z", defaults=(0,))
    std = collections.namedtuple("Point", "x y z", defaults=(0,))
    for args, kwargs in (((1, 2, 3), {}), ((1, 2), {}), ((1,), {"y": 2}), ((), {"x": 1, "y": 2, "z": 3})):
        a, b = ours(*args, **kwargs), std(*args, **kwargs)
        assert a == b == tuple(b) and repr(a) == repr(b) and a._asdict() == dict(b._asdict())
        assert (a.x, a.y, a.z) == (b.x, b.y, b.z) and a._fields == b._fields
        assert a._replace(y=9) == b._replace(y=9) and type(a._replace(y=9)) is ours
        with pytest.raises(ValueError):
            a._replace(w=1)
    for args, kwargs in (((1,), {}), ((1, 2, 3, 4), {}), ((1, 2), {"w": 1}), ((1, 2), {"x": 5})):
        with pytest.raises(TypeError):
            std(*args, **kwargs)
        with pytest.raises(TypeError):
            ours(*args, **kwargs)
    model = ramalama.Model("ollama://tiny:latest", "/s/m", {"files": []})
    assert pickle.loads(pickle.dumps(model)) == model
    with pytest.raises(AttributeError):
        model.ref = "x"                               # immutable, as a tuple is
