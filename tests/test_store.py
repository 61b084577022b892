"""The content-addressed store through the CLI: dedup across transports, rm, fsck, prune."""
import json
import os
import stat

import pytest

from conftest import blobs
from servers import FileServer

import ramalama


def du_blobs(store):
    d = store / "blobs" / "sha256"
    return sum(os.stat(d / n).st_size for n in os.listdir(d))


def test_file_pull_hardlinks_the_users_file(cli, store, model_file):
    r = cli("pull", "file://%s" % model_file)
    assert r.code == 0, r
    digest = ramalama.sha256_file(str(model_file))
    blob = store / "blobs" / "sha256" / digest
    folder = store / "repos" / "file" / model_file.relative_to("/")
    linked = folder / "tiny.gguf"
    assert os.path.samefile(blob, model_file) and os.path.samefile(blob, linked)   # no copy
    assert stat.S_IMODE(os.stat(blob).st_mode) == 0o444
    ref = json.loads((folder / ".ref.json").read_text())
    assert ref["version"] == 1 and ref["ref"] == "file://%s" % model_file
    assert ref["files"] == [{"name": "tiny.gguf", "digest": "sha256:" + digest,
                             "size": model_file.stat().st_size,
                             "role": "model", "media_type": ""}]
    assert os.listdir(store / "tmp") == []


def test_same_gguf_via_file_and_http_costs_its_size_once(cli, store, model_file):
    data = model_file.read_bytes()
    with FileServer() as srv:
        srv.add("/models/tiny.gguf", data)
        url = srv.url + "/models/tiny.gguf"
        assert cli("pull", "file://%s" % model_file).code == 0
        size_after_one = du_blobs(store)
        r = cli("pull", url)
        assert r.code == 0, r
    assert size_after_one == du_blobs(store) == len(data)
    assert len(blobs(store)) == 1
    names = [m["name"] for m in json.loads(cli("list", "--json").out)]
    assert names == sorted(["file://%s" % model_file, url])

    # rm of one keeps the other working; rm of both frees the blob.
    assert cli("rm", "file://%s" % model_file).code == 0
    assert len(blobs(store)) == 1
    r = cli("inspect", "--json", url)
    assert r.code == 0 and json.loads(r.out)["architecture"] == "llama"
    r = cli("rm", url)
    assert r.code == 0 and "freed" not in r.err   # the user's own file still holds the bytes
    assert blobs(store) == []
    assert os.listdir(store / "repos") == []     # empty parents are cleaned up


def test_rm_frees_a_downloaded_blob(cli, store, tiny_gguf):
    with FileServer() as srv:
        srv.add("/m.gguf", tiny_gguf.read_bytes())
        url = srv.url + "/m.gguf"
        assert cli("pull", url).code == 0
    r = cli("rm", url)
    assert r.code == 0 and "(freed %s)" % ramalama.human_size(tiny_gguf.stat().st_size) in r.err
    assert blobs(store) == []


def test_rm_errors_and_flags(cli, store, model_file):
    r = cli("rm", "ollama://nothing")
    assert r.code == 1 and r.err.startswith("Error: ollama://nothing:latest is not in the store")
    assert cli("rm", "--ignore", "ollama://nothing").code == 0
    assert cli("rm").code == 2
    assert cli("pull", "file://%s" % model_file).code == 0
    assert cli("rm", "--all").code == 0
    assert cli("list", "--json").out.strip() == "[]"


def test_fsck_catches_and_repairs_a_corrupt_blob(cli, store, tiny_gguf):
    srv = FileServer().start()
    srv.add("/m.gguf", tiny_gguf.read_bytes())
    url = srv.url + "/m.gguf"
    assert cli("pull", url).code == 0
    assert cli("fsck").code == 0
    blob = store / "blobs" / "sha256" / blobs(store)[0]
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:            # flip one byte in place
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    r = cli("fsck")
    assert r.code == 1
    assert ("blob sha256:%s is corrupt" % blobs(store)[0]) in r.out
    assert "m.gguf has a corrupt blob" in r.out
    r = cli("fsck", "--repair")
    assert r.code == 1 and "quarantined" in r.err
    assert blobs(store) == [] and len(os.listdir(store / "quarantine")) == 1
    listed = json.loads(cli("list", "--json").out)
    assert listed[0]["damaged"] == ["m.gguf"]
    assert "(damaged)" in cli("list").out
    # a re-pull heals it: the blob comes back and the model is whole again
    r = cli("pull", url)
    srv.stop()
    assert r.code == 0, r
    assert json.loads(cli("list", "--json").out)[0]["damaged"] == []
    assert cli("fsck").code == 0


def test_prune_removes_unreferenced_blobs_and_tmp(cli, store, model_file, tmp_path):
    assert cli("pull", "file://%s" % model_file).code == 0
    orphan = store / "blobs" / "sha256" / ("0" * 64)
    orphan.write_bytes(b"x" * 5000)
    (store / "tmp" / "url-abc.partial").write_bytes(b"y" * 3000)
    r = cli("prune")
    assert r.code == 0
    assert r.out.startswith("Freed ") and "1 unreferenced blob, 1 temporary file" in r.out
    assert not orphan.exists() and os.listdir(store / "tmp") == []
    assert len(blobs(store)) == 1                      # the referenced blob stays
    assert cli("inspect", "file://%s" % model_file).code == 0


def test_model_folders_never_nest(tmp_path, model_file):
    st = ramalama.Store(str(tmp_path / "s")).ensure()
    digest, size = st.import_file(str(model_file))
    spec = [ramalama.FileSpec("m.gguf", "sha256:" + digest, size, "model", "")]
    st.publish_model(ramalama.parse_ref("ollama://a/b:c"), spec, {})
    st.publish_model(ramalama.parse_ref("ollama://localhost/a/b:c"), spec, {})   # different host: fine
    nested = ramalama.Ref("ollama", "registry.ollama.ai", "a/b", "c/d")
    with pytest.raises(ramalama.StoreError, match="inside the folder of another model"):
        st.publish_model(nested, spec, {})
    assert sorted(m.ref for m in st.models()) == ["ollama://a/b:c", "ollama://localhost/a/b:c"]
    assert os.listdir(st.tmp) == []


def test_republish_replaces_atomically(tmp_path, model_file):
    st = ramalama.Store(str(tmp_path / "s")).ensure()
    digest, size = st.import_file(str(model_file))
    ref = ramalama.parse_ref("ollama://m:1")
    for name in ("a.gguf", "b.gguf"):
        st.publish_model(ref, [ramalama.FileSpec(name, "sha256:" + digest, size, "model", "")], {})
    folder = st.folder(ref)
    assert sorted(os.listdir(folder)) == [".ref.json", "b.gguf"]
    assert os.listdir(st.tmp) == []


def test_newer_layout_version_is_refused(cli, store, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    ref_file = store / "repos" / "file" / model_file.relative_to("/") / ".ref.json"
    meta = json.loads(ref_file.read_text())
    meta["version"] = 99
    ref_file.write_text(json.dumps(meta))
    r = cli("list")
    assert r.code == 1 and "written by a newer ramalama.pyz (layout version 99)" in r.err


@pytest.mark.parametrize("mangle", [
    lambda m: m.update(version="1"),
    lambda m: m.update(files=["x"]),
    lambda m: m["files"][0].update(name="../../etc/passwd"),
    lambda m: m["files"][0].update(digest="sha256:short"),
    lambda m: m["files"][0].update(size="big"),
])
def test_malformed_ref_json_is_one_clear_error(cli, store, model_file, mangle):
    assert cli("pull", "file://%s" % model_file).code == 0
    ref_file = store / "repos" / "file" / model_file.relative_to("/") / ".ref.json"
    meta = json.loads(ref_file.read_text())
    mangle(meta)
    ref_file.write_text(json.dumps(meta))
    for argv in (["list"], ["inspect", "file://%s" % model_file], ["prune"]):
        r = cli(*argv)
        assert r.code == 1 and r.err.count("\n") == 1 and "malformed .ref.json" in r.err, (argv, r)
    r = cli("fsck")
    assert r.code == 1 and "malformed .ref.json" in r.out
    r = cli("fsck", "--repair")                 # the folder goes to quarantine/, the store works again
    assert r.code == 1 and len(os.listdir(store / "quarantine")) == 1
    assert cli("list", "--json").out.strip() == "[]" and cli("fsck").code == 0


def test_rm_the_same_model_named_twice(cli, store, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    r = cli("rm", "file://%s" % model_file, str(model_file))
    assert r.code == 0 and r.err.count("Removed") == 1


def test_a_stray_file_in_blobs_does_not_break_commands(cli, store, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    (store / "blobs" / "sha256" / ("z" * 64)).write_bytes(b"x")
    assert cli("fsck").code == 0 and cli("prune").code == 0 and cli("info").code == 0
