"""The content-addressed store through the CLI: dedup across transports, rm, fsck, prune."""
import collections
import json
import os
import stat
import time

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


# -- list remembers what it read (listing.json), and still sees every change

def _publish(st, name, digest, size, files=("m.gguf",)):
    specs = [ramalama.FileSpec(f, "sha256:" + digest, size, "model", "") for f in files]
    return st.publish_model(ramalama.parse_ref(name), specs, {})


def _truth(st):
    """What a walk that remembers nothing finds."""
    return sorted((m.path, json.dumps(m.meta, sort_keys=True)) for m in st.models())


def _listed(st):
    return sorted((m.path, json.dumps(m.meta, sort_keys=True)) for m in st.models(remember=True))


def test_list_remembers_unchanged_folders_and_sees_every_change(tmp_path, model_file):
    later = lambda: time.time() + 10                      # noqa: E731  every stamp is old enough to keep
    st = ramalama.Store(str(tmp_path / "s"), clock=later).ensure()
    digest, size = st.import_file(str(model_file))
    for name in ("ollama://a/one:1", "ollama://a/two:1", "oci://r.test/x/y/z:t"):
        _publish(st, name, digest, size)
    assert _listed(st) == _truth(st) and len(_truth(st)) == 3
    saved = json.loads(open(st.listing).read())
    one = "/ollama/registry.ollama.ai/a/one/1"
    assert saved["entries"][one][1]["ref"] == "ollama://a/one:1"

    # An entry whose stamp matches is what list shows (the .ref.json is not read again) ...
    saved["entries"][one][1]["pulled"] = 12345
    with open(st.listing, "w") as f:
        json.dump(saved, f)
    shown = {m.ref: m for m in st.models(remember=True)}
    assert shown["ollama://a/one:1"].meta["pulled"] == 12345

    # ... and each kind of change is seen: a replaced folder, an in-place rewrite that keeps the
    # size and sets the old mtime back (ctime still moves), a new model, a removed one.
    _publish(st, "ollama://a/one:1", digest, size, files=("other.gguf",))
    ref_two = os.path.join(st.repos, "ollama/registry.ollama.ai/a/two/1", ramalama.REF_FILE)
    before = os.stat(ref_two)
    text = open(ref_two).read()
    with open(ref_two, "r+") as f:
        f.write(text.replace('"role": "model"', '"role": "other"'))
    os.utime(ref_two, ns=(before.st_atime_ns, before.st_mtime_ns))
    _publish(st, "ollama://a/three:1", digest, size)
    st.remove(st.get(ramalama.parse_ref("oci://r.test/x/y/z:t")))
    listed = _listed(st)
    assert listed == _truth(st)
    assert [json.loads(meta)["files"][0]["name"] for path, meta in listed if path.endswith("/one/1")] == [
        "other.gguf"]
    assert [json.loads(meta)["files"][0]["role"] for path, meta in listed if path.endswith("/two/1")] == [
        "other"]
    assert sorted(json.loads(meta)["ref"] for _, meta in listed) == [
        "ollama://a/one:1", "ollama://a/three:1", "ollama://a/two:1"]

    # Nothing changed since: the listing is not written again.
    mtime = os.stat(st.listing).st_mtime_ns
    assert _listed(st) == _truth(st) and os.stat(st.listing).st_mtime_ns == mtime


def test_list_keeps_only_settled_stamps(tmp_path, model_file):
    st = ramalama.Store(str(tmp_path / "s")).ensure()
    digest, size = st.import_file(str(model_file))
    _publish(st, "ollama://a/one:1", digest, size)
    ctimes = [os.stat(os.path.join(top, name)).st_ctime_ns
              for top, dirs, files in os.walk(st.repos) for name in dirs + files]
    unsettled = ramalama.Store(st.root, clock=lambda: (min(ctimes) + 50_000_000) / 1e9)
    assert len(_listed(unsettled)) == 1
    entries = json.loads(open(st.listing).read())["entries"] if os.path.exists(st.listing) else {}
    assert entries == {}
    settled = ramalama.Store(st.root, clock=lambda: (max(ctimes) + 200_000_000) / 1e9)
    assert len(_listed(settled)) == 1
    assert "/ollama/registry.ollama.ai/a/one/1" in json.loads(open(st.listing).read())["entries"]


def test_a_list_that_read_only_unsettled_changes_leaves_the_listing_alone(tmp_path, model_file):
    st = ramalama.Store(str(tmp_path / "s"), clock=lambda: time.time() + 10).ensure()
    digest, size = st.import_file(str(model_file))
    _publish(st, "ollama://a/one:1", digest, size)
    _publish(st, "ollama://a/two:1", digest, size)
    _listed(st)
    written = os.stat(st.listing).st_ino
    model = _publish(st, "ollama://a/one:1", digest, size, files=("other.gguf",))
    changed = os.stat(os.path.join(model.path, ramalama.REF_FILE)).st_ctime_ns
    just_after = ramalama.Store(st.root, clock=lambda: (changed + 50_000_000) / 1e9)
    assert _listed(just_after) == _truth(st)                    # the new folder is read and shown
    assert os.stat(st.listing).st_ino == written                # but not kept: nothing to write
    assert _listed(st) == _truth(st) and os.stat(st.listing).st_ino != written    # settled: kept


def test_a_stamp_settles_after_a_tick_of_its_filesystems_clock():
    stamp = collections.namedtuple("stamp", "st_ctime_ns")
    fine, whole = stamp(10 ** 18 + 123_456_789), stamp(10 ** 18)          # ns times; whole seconds
    assert not ramalama._settled(fine, fine.st_ctime_ns + 50_000_000)
    assert ramalama._settled(fine, fine.st_ctime_ns + 150_000_000)
    assert not ramalama._settled(whole, whole.st_ctime_ns + 1_500_000_000)
    assert ramalama._settled(whole, whole.st_ctime_ns + 2_500_000_000)


@pytest.mark.parametrize("listing", [
    "not json", "[]", '{"layout": 99, "entries": {}}', '{"layout": 1, "entries": []}',
    '{"layout": 1}', "BAD_ENTRIES", "DIRECTORY"])
def test_a_damaged_or_foreign_listing_changes_nothing(tmp_path, model_file, listing):
    st = ramalama.Store(str(tmp_path / "s"), clock=lambda: time.time() + 10).ensure()
    digest, size = st.import_file(str(model_file))
    _publish(st, "ollama://a/one:1", digest, size)
    _publish(st, "ollama://a/two:1", digest, size)
    truth = _truth(st)
    if listing == "DIRECTORY":                           # cannot be read nor replaced
        os.mkdir(st.listing)
    elif listing == "BAD_ENTRIES":                       # right stamps, contents no walk may follow
        _listed(st)
        saved = json.loads(open(st.listing).read())
        for rel, (stamp, content) in saved["entries"].items():
            saved["entries"][rel] = [stamp, {"ref": 3, "files": "x"} if isinstance(content, dict)
                                     else ["..", "/etc"]]
        saved["entries"]["/ollama"] = "junk"
        with open(st.listing, "w") as f:
            json.dump(saved, f)
    else:
        with open(st.listing, "w") as f:
            f.write(listing)
    assert _listed(st) == truth
    assert _listed(st) == truth
    assert [n for n in os.listdir(st.root) if n.endswith(".tmp")] == []
