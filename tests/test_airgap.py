"""Air-gapped flow: export to an OCI layout (directory or .tar), import into a fresh store on a
host without network, run; skopeo reads what we export; mirrors; shell completion."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, blobs, cli_env, require
from registry import RegistryServer

import ramalama


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    require("docker-registry", shutil.which("docker-registry"))
    with RegistryServer(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def other_host(tmp_path, name):
    """A second machine: its own HOME, config and store; no network settings at all."""
    env = cli_env(tmp_path / name)
    store = tmp_path / name / "store"

    def call(*argv, env_extra=None):
        return subprocess.run([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store)]
                              + [str(a) for a in argv],
                              capture_output=True, text=True, env=dict(env, **(env_extra or {})))
    return call, store


@pytest.mark.parametrize("target", ["layout", "model.tar"])
def test_export_import_round_trip_and_run_offline(cli, store, model_file, tmp_path, llama_server, target):
    assert cli("pull", "file://%s" % model_file).code == 0
    out = tmp_path / "usb" / target
    r = cli("export", "file://%s" % model_file, out)
    assert r.code == 0 and r.out.strip().startswith("sha256:"), r
    (tmp_path / "other").mkdir()
    offline, other_store = other_host(tmp_path, "other")
    r = offline("import", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "file://%s" % model_file          # the exported model's own name
    assert blobs(other_store) == blobs(store)
    r = offline("--nocontainer", "run", "--temp", "0", "--seed", "1", "file://%s" % model_file, "hello there",
                env_extra={"PATH": os.path.dirname(llama_server) + ":/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_directory_import_hardlinks_and_pull_forms(cli, store, model_file, tmp_path):
    assert cli("pull", "file://%s" % model_file).code == 0
    layout = tmp_path / "layout"
    assert cli("export", "--tag", "v1", "file://%s" % model_file, layout).code == 0
    assert cli("export", "file://%s" % model_file, tmp_path / "m.tar").code == 0
    other = tmp_path / "store2"
    r = cli("--store", other, "pull", "oci-layout:%s:v1" % layout)
    assert r.code == 0, r
    hexd = blobs(store)[0]
    assert os.path.samefile(other / "blobs" / "sha256" / hexd, layout / "blobs" / "sha256" / hexd)
    r = cli("--store", other, "pull", "oci-archive:%s" % (tmp_path / "m.tar"))
    assert r.code == 0, r
    names = [m["name"] for m in json.loads(cli("--store", other, "list", "--json").out)]
    assert names == sorted(["oci-layout:%s:v1" % layout, "oci-archive:%s:latest" % (tmp_path / "m.tar")])
    r = cli("--store", other, "pull", "oci-layout:%s:nope" % layout)
    assert r.code == 1 and "has no tag nope (it has: v1)" in r.err


def test_a_corrupted_export_is_refused(cli, store, model_file, tmp_path):
    assert cli("pull", "file://%s" % model_file).code == 0
    layout = tmp_path / "layout"
    assert cli("export", "file://%s" % model_file, layout).code == 0
    blob = layout / "blobs" / "sha256" / blobs(store)[0]
    blob.unlink()                                  # the export hardlinked it; write a bad copy instead
    blob.write_bytes(model_file.read_bytes()[:-1] + b"X")
    r = cli("--store", tmp_path / "store2", "import", layout)
    assert r.code == 1 and "hashes to sha256:" in r.err
    assert blobs(tmp_path / "store2") == []           # nothing that failed its digest was published
    assert cli("--store", tmp_path / "store2", "list", "--json").out.strip() == "[]"


def test_skopeo_reads_our_export_and_we_read_skopeos(cli, store, model_file, tmp_path, registry):
    skopeo = require("skopeo", shutil.which("skopeo"))
    assert cli("pull", "file://%s" % model_file).code == 0
    layout = tmp_path / "layout"
    exported = cli("export", "file://%s" % model_file, layout).out.strip()
    subprocess.run([skopeo, "copy", "--quiet", "--dest-tls-verify=false", "oci:%s:latest" % layout,
                    "docker://%s/airgap/tiny:1" % registry.host], check=True, capture_output=True)
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", "docker://%s/airgap/tiny:1"
                          % registry.host],
                         check=True, capture_output=True).stdout
    assert ramalama._sha256_bytes(raw) == exported              # the same manifest, byte for byte
    other = tmp_path / "store2"
    assert cli("--store", other, "pull", "oci://%s/airgap/tiny:1" % registry.host).code == 0
    assert blobs(other) == blobs(store)
    copied = tmp_path / "skopeo-layout"
    subprocess.run([skopeo, "copy", "--quiet", "--src-tls-verify=false", "docker://%s/airgap/tiny:1"
                    % registry.host,
                    "oci:%s:t" % copied], check=True, capture_output=True)
    r = cli("--store", tmp_path / "store3", "pull", "oci-layout:%s:t" % copied)
    assert r.code == 0 and blobs(tmp_path / "store3") == blobs(store), r


def test_mirrors(cli, store, model_file, tmp_path, registry, env):
    assert cli("pull", "file://%s" % model_file).code == 0
    assert cli("push", "file://%s" % model_file, "oci://%s/mirrored/tiny:1" % registry.host).code == 0
    conf = tmp_path / "home" / ".config" / "ramalama" / "ramalama.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[ramalama.mirrors]\n"upstream.invalid" = "%s"\n"%s" = ["127.0.0.1:9"]\n'
                    % (registry.host, registry.host))
    r = cli("--debug", "pull", "oci://upstream.invalid/mirrored/tiny:1")
    assert r.code == 0, r                            # the upstream does not even resolve
    assert "upstream.invalid" not in [line.split("/")[2] for line in r.err.splitlines()
                                      if line.startswith("debug: GET")]
    r = cli("pull", "oci://%s/mirrored/tiny:1" % registry.host)     # a dead mirror: the upstream is used
    assert r.code == 0 and "mirror 127.0.0.1:9" in r.err
    info = json.loads(cli("info").out)
    assert info["mirrors"]["upstream.invalid"] == registry.host


@pytest.fixture
def ramalama_on_path(tmp_path, store):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "ramalama"
    exe.write_text('#!/bin/sh\nexec %s %s --store %s "$@"\n' % (sys.executable, ROOT / "ramalama.py", store))
    exe.chmod(0o755)
    return bindir


def complete(bindir, words):
    script = ('source <(ramalama completion bash); COMP_WORDS=(%s); COMP_CWORD=%d; _ramalama; '
              'printf "%%s\\n" "${COMPREPLY[@]}"' % (" ".join("'%s'" % w for w in words), len(words) - 1))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"])))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completion(cli, model_file, ramalama_on_path):
    out = subprocess.run(["bash", "-c", "source <(ramalama completion bash); complete -p ramalama"],
                         capture_output=True, text=True,
                         env=dict(os.environ, PATH="%s:%s" % (ramalama_on_path, os.environ["PATH"])))
    assert out.stdout.strip() == "complete -F _ramalama ramalama"
    assert complete(ramalama_on_path, ["ramalama", "pu"]) == ["pull", "push"]
    assert "--parallel" in complete(ramalama_on_path, ["ramalama", "pull", "--par"])
    assert cli("pull", "file://%s" % model_file).code == 0
    assert complete(ramalama_on_path,
                    ["ramalama", "--store", "x", "inspect", "file"]) == ["file://%s" % model_file]


def test_zsh_and_fish_completion(cli):
    zsh = cli("completion", "zsh").out
    assert zsh.startswith("#compdef ramalama") and "bashcompinit" in zsh
    assert "complete -F _ramalama ramalama" in zsh
    fish = cli("completion", "fish").out.splitlines()
    assert "complete -c ramalama -n __fish_use_subcommand -a pull -d 'pull models into the store'" in fish
    assert "complete -c ramalama -n '__fish_seen_subcommand_from pull' -l parallel" in fish
    if shutil.which("fish"):
        out = subprocess.run(["fish", "-n"], input="\n".join(fish), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
