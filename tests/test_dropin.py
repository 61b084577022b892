"""Drop-in on a host that already runs ramalama 0.25 (from PyPI, in its own venv): its packaged
ramalama.conf (not strict TOML: it declares [ramalama.user] twice) and shortnames.conf in
/usr/share/ramalama, a user config written the way its docs show, its environment variables
and GPU selection variables. The packaged files are read from the installed package."""
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require, run

sys.path.insert(0, str(ROOT / "bench"))
from anchor import anchor_command  # noqa: E402

from test_launch import DIGEST, pin  # noqa: E402

SYSTEM = Path("/usr/share/ramalama")


@pytest.fixture(scope="session")
def anchor():
    """[python, ramalama] of ramalama 0.25 and its share/ramalama directory."""
    cmd = require("ramalama 0.25 from PyPI (bench/anchor.py installs it)", anchor_command())
    share = Path(cmd[0]).parent.parent / "share" / "ramalama"
    assert (share / "ramalama.conf").exists() and (share / "shortnames.conf").exists()
    return cmd, share


@pytest.fixture
def packaged_system_config(anchor):
    """ramalama's packaged ramalama.conf and shortnames.conf in /usr/share/ramalama, as its RPM
    puts them; whatever was there before is put back afterwards."""
    _cmd, share = anchor
    saved = None
    if SYSTEM.exists():
        saved = SYSTEM.with_name("ramalama.test-saved")
        SYSTEM.rename(saved)
    SYSTEM.mkdir(parents=True)
    try:
        for name in ("ramalama.conf", "shortnames.conf"):
            shutil.copy(share / name, SYSTEM / name)
        yield SYSTEM
    finally:
        shutil.rmtree(SYSTEM, ignore_errors=True)
        if saved:
            saved.rename(SYSTEM)


USER_CONF = """\
[ramalama]
port = "8085"
ctx_size = 4096
container = "false"

[ramalama.runtimes.llama_cpp]
ngl = 20
threads = 3
temp = "0.5"
"""


def dryrun_argv(r):
    assert r.code == 0, r
    return shlex.split(r.out.strip().splitlines()[-1])


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_ramalamas_own_config_files_work_and_take_effect(cli, env, tmp_path, model_file,
                                                         packaged_system_config):
    user = Path(env["XDG_CONFIG_HOME"]) / "ramalama" / "ramalama.conf"
    user.parent.mkdir(parents=True)
    user.write_text(USER_CONF)
    ref = "file://%s" % model_file
    for argv in (["version"], ["info"], ["list"], ["pull", ref], ["list", "--json"], ["inspect", ref]):
        assert cli(*argv).code == 0, (argv, cli(*argv))
    argv = dryrun_argv(cli("--dryrun", "serve", ref))
    assert argv[0] == "llama-server"                        # container = "false" took effect
    assert (flag(argv, "--port"), flag(argv, "--ctx-size"), flag(argv, "--n-gpu-layers"),
            flag(argv, "--threads"), flag(argv, "--temp")) == ("8085", "4096", "20", "3", "0.5")
    debug = cli("--debug", "version")
    assert "ramalama.conf: not strict TOML" in debug.err and "read with its tables merged" in debug.err
    assert "not strict TOML" not in cli("version").err       # only under --debug
    assert cli("rm", "--all").code == 0


def test_environment_variables_as_ramalama_defines_them(cli, env, model_file, store):
    ref = "file://%s" % model_file
    assert cli("pull", ref).code == 0
    argv = dryrun_argv(cli("--dryrun", "serve", ref, env_extra={
        "RAMALAMA_IN_CONTAINER": "false", "RAMALAMA_PORT": "9001", "RAMALAMA_CTX_SIZE": "2048",
        "RAMALAMA_RUNTIMES__LLAMA_CPP__NGL": "7", "RAMALAMA_RUNTIMES__LLAMA_CPP__TEMP": "0.25"}))
    assert (argv[0], flag(argv, "--port"), flag(argv, "--ctx-size"), flag(argv, "--n-gpu-layers"),
            flag(argv, "--temp")) == ("llama-server", "9001", "2048", "7", "0.25")
    # a flag still beats them; ngl takes ramalama's all / auto
    argv = dryrun_argv(cli("--dryrun", "--nocontainer", "serve", "--ngl", "all", "--port", "9002", ref,
                           env_extra={"RAMALAMA_PORT": "9001"}))
    assert (flag(argv, "--port"), flag(argv, "--n-gpu-layers")) == ("9002", "999")
    r = cli("version", env_extra={"RAMALAMA_PORT": "eighty"})
    assert r.code == 2 and r.err.strip() == (
        "Error: environment variable RAMALAMA_PORT must be an integer, not 'eighty'")


def test_gpu_selection_variables_pick_the_image_and_reach_the_container(cli, store, model_file):
    ref = "file://%s" % model_file
    assert cli("pull", ref).code == 0
    pin(store, "quay.io/ramalama/cuda:latest")
    pin(store, "quay.io/ramalama/rocm:latest")
    argv = dryrun_argv(cli("--engine", "podman", "--dryrun", "serve", ref,
                           env_extra={"CUDA_VISIBLE_DEVICES": "2,3", "RAMALAMA_GPU": ""}))
    assert "quay.io/ramalama/cuda@" + DIGEST in argv
    assert [argv[i + 1] for i, a in enumerate(argv)
            if a == "--device"] == ["nvidia.com/gpu=2", "nvidia.com/gpu=3"]
    assert "CUDA_VISIBLE_DEVICES=0,1" in argv                # numbered from zero inside
    argv = dryrun_argv(cli("--engine", "docker", "--dryrun", "serve", ref,
                           env_extra={"CUDA_VISIBLE_DEVICES": "1"}))
    assert flag(argv, "--gpus") == "device=1"
    argv = dryrun_argv(cli("--engine", "podman", "--dryrun", "serve", ref,
                           env_extra={"HIP_VISIBLE_DEVICES": "0", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"}))
    assert "quay.io/ramalama/rocm@" + DIGEST in argv
    assert "HIP_VISIBLE_DEVICES=0" in argv and "HSA_OVERRIDE_GFX_VERSION=10.3.0" in argv


RESOLVE = r"""
import json, sys
from ramalama.shortnames import Shortnames
from ramalama.transports import transport_factory as tf
names = Shortnames()
out = {"shortnames": {n: names.resolve(n) for n in names.shortnames}, "files": names.paths, "bare": {}}
class Args:
    store, engine, container = "/nonexistent", None, False
for text in sys.argv[1:]:
    f = tf.TransportFactory(text, Args())
    out["bare"][text] = [f.model_cls.__name__, f.pruned_model]
print(json.dumps(out))
"""


def test_every_shortname_resolves_to_the_model_ramalama_resolves_it_to(anchor, env, tmp_path):
    import json
    import ramalama
    cmd, share = anchor
    bare = ["ibm-granite/granite-3.3-8b-instruct-GGUF", "bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0"]
    proc = run([cmd[0], "-c", RESOLVE] + bare, env=dict(env, HOME=str(tmp_path)),
               cwd=tmp_path)   # not our ramalama.py
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    assert theirs["files"] == [str(share / "shortnames.conf")] and len(theirs["shortnames"]) >= 180
    ours = ramalama.load_config(dict(env, HOME=str(tmp_path)), system_dirs=())
    differ = []
    for name, target in theirs["shortnames"].items():
        try:
            mine = ramalama.parse_ref(name, ours.shortnames)
            expected = ramalama.parse_ref(target)
        except ramalama.UsageError as e:            # openai:// names are served by OpenAI, not pulled
            mine = expected = None
            assert target.startswith("openai://") and "OpenAI" in str(e)
        if mine != expected:
            differ.append((name, target, mine))
    assert differ == []
    print("\nshortnames: %d of ramalama 0.25's resolve to the same model" % len(theirs["shortnames"]))
    for text, (kind, pruned) in theirs["bare"].items():
        ref = ramalama.parse_ref(text, ours.shortnames)
        assert kind == "Huggingface" and ref.transport == "huggingface" and text.startswith(ref.name)


def test_command_lines_scripts_use_give_what_scripts_read(anchor, env, tmp_path, model_file):
    """The same command lines through ramalama 0.25 and through us: both accept them, and what
    scripts read (names, JSON keys and value types, metadata values) agrees."""
    import json
    from datetime import datetime
    cmd, _share = anchor
    ref = "file://%s" % model_file
    theirs_store, ours_store = tmp_path / "theirs", tmp_path / "ours"
    run_env = dict(env, HOME=str(tmp_path / "home"))

    def both(*argv):
        a = run(cmd + ["--store", theirs_store] + list(argv), env=run_env, cwd=tmp_path)
        b = run([sys.executable, ROOT / "ramalama.py", "--store", ours_store] + list(argv), env=run_env)
        assert a.returncode != 2 and b.returncode == 0, (argv, a.stderr[-500:], b.stderr[-500:])
        return a, b
    both("pull", ref)
    a, b = both("--nocontainer", "-q", "list")              # the store only: not whatever podman holds
    assert a.stdout == b.stdout == ref + "\n"
    a, b = both("--nocontainer", "list", "--json")
    theirs, ours = json.loads(a.stdout)[0], json.loads(b.stdout)[0]
    assert set(theirs) <= set(ours)
    assert {k: type(v) for k, v in theirs.items()} == {k: type(ours[k]) for k in theirs}
    assert (theirs["name"], theirs["shortname"]) == (ours["name"], ours["shortname"])
    # ramalama adds a chat template it extracts
    assert ours["size"] == model_file.stat().st_size <= theirs["size"]
    assert datetime.fromisoformat(ours["modified"]).tzinfo is not None
    a, b = both("info")
    assert set(json.loads(a.stdout)) <= set(json.loads(b.stdout))
    a, b = both("inspect", "--get", "general.architecture", ref)
    assert a.stdout.strip() == b.stdout.strip() == "llama"
    for argv in (["list", "--order", "asc"], ["list", "--all"], ["list", "--sort", "size", "--order", "desc"],
                 ["--dryrun", "--nocontainer", "serve", "--max-tokens", "5", "--ngl", "all", "--env", "A=1",
                  "--network", "host", "--privileged", "--selinux", "true", "--keep-groups", "--oci-runtime",
                  "runc", "--device", "none", ref],
                 ["--dryrun", "--nocontainer", "run", "--ngl", "auto", "--max-tokens", "3", ref, "hi"],
                 ["help"]):
        both(*argv)
    served = both("--dryrun", "--nocontainer", "serve", "--max-tokens", "5", ref)[1].stdout
    assert shlex.split(served)[-2:] == ["--n-predict", "5"]
    # ours alone: push with ramalama's --type words and without a target
    for argv in (["--dryrun", "push", "--type", "raw", ref, "oci://registry.example.com/m:1"],
                 ["--dryrun", "push", "--type", "artifact", ref, "oci://registry.example.com/m:1"],
                 ["--dryrun", "push", "oci://registry.example.com/m:1"]):
        r = run([sys.executable, ROOT / "ramalama.py", "--store", ours_store] + argv, env=run_env)
        assert r.returncode == 0, (argv, r.stderr)


def test_ps_takes_engine_templates_and_all(cli, env):
    require("podman", shutil.which("podman"))
    r = cli("--engine", "podman", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
    assert r.code == 0, r
    r = cli("--engine", "podman", "ps", "-a", "--format", "{{.Names}} {{.URL}}")     # our fields
    assert r.code == 0, r


def test_container_flags_ramalama_accepts_reach_the_engine(cli, store, model_file):
    ref = "file://%s" % model_file
    assert cli("pull", ref).code == 0
    pin(store, "quay.io/ramalama/cuda:latest")
    argv = dryrun_argv(cli("--engine", "podman", "--dryrun", "serve", "--env", "A=1", "--network", "host",
                           "--privileged", "--selinux", "false", "--keep-groups", "--oci-runtime", "runc",
                           "--device", "none", "--max-tokens", "9", ref,
                           env_extra={"RAMALAMA_GPU": "nvidia"}))
    image = argv.index("quay.io/ramalama/cuda@" + DIGEST)
    engine_part = argv[:image]
    for expected in ("--env=A=1", "--network=host", "--privileged", "--security-opt=label=disable",
                     "--group-add=keep-groups", "--runtime=runc"):
        assert expected in engine_part, expected
    assert "--device" not in engine_part                     # none: not even the GPU
    assert flag(argv, "--n-predict") == "9"
    run_argv = dryrun_argv(cli("--engine", "podman", "--dryrun", "run", "--network", "bridge", ref, "hi",
                               env_extra={"RAMALAMA_GPU": "nvidia"}))
    assert "--network=bridge" in run_argv and "--network=none" not in run_argv


def tree_state(root: Path) -> dict:
    """path -> (sha256, mode, link target) of everything below root: what 'unchanged' means."""
    import hashlib
    state = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        state[str(p.relative_to(root))] = (digest, st.st_mode, os.readlink(p) if p.is_symlink() else None)
    return state


def test_models_ramalama_pulled_are_used_adopted_and_never_changed(anchor, env, tmp_path, model_file,
                                                                   tiny_gguf,
                                                                   llama_server):
    import json
    from hub import FakeHub, Repo
    from conftest import sha256
    cmd, _share = anchor
    store = tmp_path / "shared-store"          # the directory both tools default to
    with FakeHub() as hub:
        hub.add("org/tiny-GGUF", Repo({"tiny-Q8_0.gguf": tiny_gguf.read_bytes()}))
        run_env = dict(env, HF_ENDPOINT=hub.url, HOME=str(tmp_path / "home"),
                       PATH=os.path.dirname(llama_server) + os.pathsep + env["PATH"])
        for ref in ("file://%s" % model_file, "hf://org/tiny-GGUF"):
            r = run(cmd + ["--store", store, "pull", ref], env=run_env, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        before = tree_state(store / "store")
        cdn_before = len(hub.cdn.requests)

        def ours(*argv):
            return run([sys.executable, ROOT / "ramalama.py", "--store", store] + list(argv), env=run_env)
        listed = ours("list").stdout
        assert "hf://org/tiny-GGUF (ramalama)" in listed and "file://%s (ramalama)" % model_file in listed
        rows = {m["name"]: m for m in json.loads(ours("list", "--json").stdout)}
        assert rows["hf://org/tiny-GGUF"]["store"] == "ramalama"
        facts = json.loads(ours("inspect", "--json", "hf://org/tiny-GGUF").stdout)
        assert facts["architecture"] == "llama" and facts["path"].startswith(str(store / "store"))
        r = ours("--nocontainer", "run", "--temp", "0", "--seed", "1", "hf://org/tiny-GGUF", "hello there")
        assert r.returncode == 0 and r.stdout.strip(), r.stderr       # llama-server ran ramalama's file
        r = ours("pull",
                 "hf://org/tiny-GGUF")                        # adopted: hash verified, nothing fetched
        assert r.returncode == 0 and "reused from" in r.stderr, r.stderr
        assert len(hub.cdn.requests) == cdn_before
        assert sha256(tiny_gguf) in os.listdir(store / "blobs" / "sha256")
        r = ours("export", "file://%s" % model_file, str(tmp_path / "out.tar"))
        assert r.returncode == 0 and "adopted from ramalama's store" in r.stderr, r.stderr
        for argv in (["rm", "--all"], ["prune"], ["fsck", "--repair"]):
            r = ours(*argv)
            assert r.returncode == 0 and "left alone" in r.stderr, (argv, r.stderr)
        r = ours("rm", "hf://org/tiny-GGUF")
        assert r.returncode == 1 and "ramalama's store" in r.stderr
    assert tree_state(store / "store") == before               # not a byte, mode or link changed
    theirs = run(cmd + ["--store", store, "-q", "list"], env=run_env, cwd=tmp_path).stdout.split()
    assert sorted(theirs) == sorted(["file://%s" % model_file, "hf://org/tiny-GGUF"])


PODMAN_BUILD_WRAPPER = """#!/bin/sh
# podman 4.3's build refuses --security-opt=no-new-privileges, which ramalama always passes
if [ "$1" = build ]; then
    for a in "$@"; do shift; [ "$a" = "--security-opt=no-new-privileges" ] || set -- "$@" "$a"; done
fi
exec /usr/bin/podman "$@"
"""


def test_models_ramalama_keeps_as_podman_images(anchor, env, tmp_path, model_file, llama_server):
    """ramalama 0.25 pushes a model as an image (on a base image made here) to a real TLS
    registry and pulls it into podman: we list, inspect and run it from the image, and our own
    pull of the same reference takes it from the image instead of downloading a layer."""
    import json
    from registry import RegistryServer
    from runtime import podman_env
    from conftest import sha256
    cmd, _share = anchor
    require("podman", shutil.which("podman"))
    penv = podman_env(tmp_path / "podman")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "podman").write_text(PODMAN_BUILD_WRAPPER)
    (bindir / "podman").chmod(0o755)
    os.symlink(cmd[1], bindir / "ramalama")              # ramalama installed, as on such a host
    base = busybox_base(tmp_path / "base.tar")
    images = []
    with RegistryServer(tmp_path / "reg", tls=True) as reg:
        run_env = dict(env, **penv, HOME=str(tmp_path / "home"), SSL_CERT_FILE=str(reg.ca),
                       RAMALAMA_CARIMAGE="localhost/ramalama-test-base:1",
                       PATH="%s:%s:%s" % (bindir, os.path.dirname(llama_server), env["PATH"]))
        target = "oci://%s/dropin/tiny:1" % reg.host
        images = ["localhost/ramalama-test-base:1", target[len("oci://"):]]
        try:
            assert run(["podman", "import", "-q", base, images[0]], env=run_env).returncode == 0
            ref = "file://%s" % model_file
            for argv in (["pull", ref], ["push", "--tls-verify=false", "--type", "raw", ref, target],
                         ["rm", ref], ["pull", "--tls-verify=false", target]):
                r = run(cmd + ["--store", tmp_path / "theirs"] + argv, env=run_env, cwd=tmp_path)
                assert r.returncode == 0, (argv, r.stderr[-2000:])
            store = tmp_path / "ours"

            def ours(*argv):
                return run([sys.executable, ROOT / "ramalama.py", "--store", store, "--engine", "podman"]
                           + list(argv),
                           env=run_env)
            assert "%s (ramalama, podman image)" % target in ours("list").stdout
            facts = json.loads(ours("inspect", "--json", target).stdout)
            assert facts["architecture"] == "llama"
            r = ours("--nocontainer", "run", "--temp", "0", "--seed", "1", target, "hello there")
            assert r.returncode == 0 and r.stdout.strip(), r.stderr       # llama-server ran the image's file
            r = ours("--dryrun", "serve", "--image", "quay.io/x/y@" + DIGEST, target)
            assert r.returncode == 0, r.stderr
            argv = shlex.split(r.stdout.strip().splitlines()[-1])
            assert any(a.startswith("--mount=type=image,source=") and a.endswith(",destination=/mnt/image")
                       for a in argv)
            assert flag(argv, "--model") == "/mnt/image/models/model.file"
            r = ours("pull", "--tls-verify=false", target)
            assert r.returncode == 0 and "no layer downloaded" in r.stderr, r.stderr
            assert sha256(model_file) in os.listdir(store / "blobs" / "sha256")
            assert "%s (ramalama" % target not in ours("list").stdout              # ours now: listed once
        finally:
            run(["podman", "rmi", "-f"] + images, env=run_env)
            dangling = run(["podman", "images", "-q", "--filter", "dangling=true"],
                           env=run_env).stdout.split()
            run(["podman", "rmi", "-f"] + dangling, env=run_env)


def busybox_base(path: Path) -> Path:
    """A tiny base image's root filesystem: busybox with sh and ln."""
    import tarfile
    busybox = require("busybox (apt-get install busybox-static)", shutil.which("busybox"))
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for tool in ("sh", "ln"):
            link = tarfile.TarInfo("bin/" + tool)
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return path


def test_images_we_write_are_what_ramalama_pulls(anchor, env, tmp_path, model_file):
    """raw and car images that push --type and convert write, with no `podman build`: ramalama
    0.25 pulls each from a real TLS registry into podman, where /models/model.file is the GGUF;
    our own pull gets the same sha256 as one blob; skopeo inspects them; the car keeps its
    base's layers under the model's."""
    import json
    from conftest import sha256
    from registry import RegistryServer
    from runtime import podman_env
    cmd, _share = anchor
    require("podman", shutil.which("podman"))
    require("skopeo", shutil.which("skopeo"))
    penv = podman_env(tmp_path / "podman")
    want = sha256(model_file)
    with RegistryServer(tmp_path / "reg", tls=True) as reg:
        run_env = dict(env, **penv, HOME=str(tmp_path / "home"), SSL_CERT_FILE=str(reg.ca))
        certs = tmp_path / "certs"                 # skopeo and podman: a directory of CA certificates only
        certs.mkdir()
        shutil.copy(reg.ca, certs / "ca.crt")
        base = "%s/base/busybox:1" % reg.host
        local_base = "localhost/ramalama-test-base:2"
        images = [local_base]
        store = tmp_path / "ours"

        def ours(*argv):
            return run([sys.executable, ROOT / "ramalama.py", "--store", store, "--engine", "podman"]
                       + list(argv),
                       env=run_env)

        def theirs(*argv):
            return run(cmd + ["--store", tmp_path / "theirs", "--engine", "podman"] + list(argv), env=run_env,
                       cwd=tmp_path)

        def podman(*argv):
            return run(["podman"] + list(argv), env=run_env)
        try:
            assert podman("import", "-q", busybox_base(tmp_path / "base.tar"), local_base).returncode == 0
            r = run(["skopeo", "copy", "--dest-cert-dir", str(certs), "containers-storage:" + local_base,
                     "docker://" + base], env=run_env)
            assert r.returncode == 0, r.stderr
            assert podman("rmi", local_base).returncode == 0       # the registry's copy serves the first car
            ref = "file://%s" % model_file
            targets = {"raw": "%s/models/tiny:raw" % reg.host, "car": "%s/models/tiny:car" % reg.host}
            for kind, target in targets.items():
                r = ours("push", "--type", kind, "--carimage", base, ref, "oci://" + target)
                assert r.returncode == 0, r.stderr
            # convert into podman's storage, with the base now taken from there
            assert podman("import", "-q", tmp_path / "base.tar", local_base).returncode == 0
            converted = "localhost/models/tiny:converted"
            images += [converted]
            r = ours("convert", "--type", "car", "--carimage", local_base, ref, converted)
            assert r.returncode == 0, r.stderr
            assert podman("images", "--format",
                          "{{.Repository}}:{{.Tag}}").stdout.split().count(converted) == 1
            r = podman("push", "--cert-dir", str(certs), converted, "%s/models/tiny:converted" % reg.host)
            assert r.returncode == 0, r.stderr
            targets["converted"] = "%s/models/tiny:converted" % reg.host
            images += list(targets.values())
            for kind, target in targets.items():
                info = json.loads(run(["skopeo", "inspect", "--cert-dir", str(certs), "docker://" + target],
                                      env=run_env).stdout)
                assert info["Labels"]["org.containers.type"] == ("ai.image.model.raw" if kind == "raw"
                                                                 else "ai.image.model.car")
                assert len(info["Layers"]) == (1 if kind == "raw" else 2)
                r = theirs("pull", "oci://" + target)
                assert r.returncode == 0, (kind, r.stderr[-2000:])
                mounted = podman("image", "mount", target).stdout.strip()
                try:
                    assert sha256(os.path.join(mounted, "models", "model.file")) == want, kind
                    if kind != "raw":
                        assert os.path.exists(os.path.join(mounted, "bin", "busybox"))
                finally:
                    podman("image", "unmount", target)
                r = ours("--nocontainer", "pull", "oci://" + target)
                assert r.returncode == 0, r.stderr
                facts = json.loads(ours("inspect", "--json", "oci://" + target).stdout)
                assert [f["digest"] for f in facts["files"] if f["role"] == "model"] == ["sha256:" + want]
            assert os.listdir(store / "blobs" / "sha256").count(want) == 1
            listed = theirs("list", "--json")
            assert all("oci://" + t in listed.stdout for t in targets.values()), listed.stdout
            # an OCI archive of the raw image: skopeo reads it, we pull it back to the same blob
            archive = tmp_path / "tiny-raw.tar"
            r = ours("convert", "--type", "raw", ref, "oci-archive:%s:v1" % archive)
            assert r.returncode == 0, r.stderr
            info = json.loads(run(["skopeo", "inspect", "oci-archive:%s:v1" % archive], env=run_env).stdout)
            assert info["Labels"]["org.containers.type"] == "ai.image.model.raw"
            assert ours("pull", "oci-archive:%s:v1" % archive).returncode == 0
            assert os.listdir(store / "blobs" / "sha256").count(want) == 1
        finally:
            podman("rmi", "-f", *images)
            left = podman("images", "-q", "--filter", "label=org.containers.type").stdout.split()
            left += podman("images", "-q", "--filter", "dangling=true").stdout.split()
            podman("rmi", "-f", *left)
