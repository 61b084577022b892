"""Hugging Face transport against a fake Hub that redirects LFS downloads to a second server."""
import hashlib
import json
import os

import pytest

from conftest import blobs
from hub import FakeHub, Repo



def gguf_bytes(tiny_gguf, tag: bytes) -> bytes:
    """Distinct but valid GGUF files: the tiny model with a few bytes appended."""
    return tiny_gguf.read_bytes() + tag


@pytest.fixture
def hub(env):
    with FakeHub() as h:
        env["HF_ENDPOINT"] = h.url
        yield h


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_quant_choice_commit_pin_and_cdn_without_token(cli, store, hub, tiny_gguf, env):
    q4, q8 = gguf_bytes(tiny_gguf, b"q4"), gguf_bytes(tiny_gguf, b"q8")
    repo = hub.add("org/tiny-GGUF",
                   Repo({"tiny.Q4_K_M.gguf": q4, "tiny.Q8_0.gguf": q8, "README.md": b"# tiny\n",
                                         "tiny-imatrix.gguf": b"imatrix" * 300}))
    env["HF_TOKEN"] = hub.token
    r = cli("pull", "hf://org/tiny-GGUF:q8_0")               # quant is case-insensitive
    assert r.code == 0, r
    assert blobs(store) == [sha(q8)]
    r = cli("pull", "hf.co/org/tiny-GGUF")                   # default: Q4_K_M
    assert r.code == 0 and sha(q4) in blobs(store)
    info = json.loads(cli("inspect", "--json", "hf://org/tiny-GGUF:Q8_0").out)
    assert info["commit"] == repo.commit and info["revision"] == "main"
    assert [f["name"] for f in info["files"]] == ["tiny.Q8_0.gguf"]
    assert "Commit:" in cli("inspect", "hf://org/tiny-GGUF:Q8_0").out
    # the token went to the Hub, never to the CDN
    assert all(r["authorization"] == "Bearer " + hub.token for r in hub.requests)
    assert hub.cdn.requests and all("authorization" not in r["headers"] for r in hub.cdn.requests)


def test_split_gguf_and_mmproj(cli, store, hub, tiny_gguf):
    parts = {"m-Q8_0-0000%d-of-00003.gguf" % i: gguf_bytes(tiny_gguf, b"part%d" % i) for i in (1, 2, 3)}
    projs = {"mmproj-model-f16.gguf": gguf_bytes(tiny_gguf, b"mmf16"),
             "mmproj-model-Q8_0.gguf": gguf_bytes(tiny_gguf, b"mmq8")}
    hub.add("org/vision", Repo(dict(parts, **projs)))
    r = cli("pull", "hf://org/vision:Q8_0")
    assert r.code == 0, r
    files = json.loads(cli("inspect", "--json", "hf://org/vision:Q8_0").out)["files"]
    assert [(f["name"], f["role"]) for f in files] == [
        ("m-Q8_0-00001-of-00003.gguf", "model"), ("m-Q8_0-00002-of-00003.gguf", "shard"),
        ("m-Q8_0-00003-of-00003.gguf", "shard"), ("mmproj-model-Q8_0.gguf", "mmproj")]
    assert json.loads(cli("inspect", "--json", "hf://org/vision:Q8_0").out)["model_file"].endswith(
        "m-Q8_0-00001-of-00003.gguf")                        # what run will load


def test_explicit_file_revision_and_all_files(cli, store, hub, tiny_gguf):
    main = gguf_bytes(tiny_gguf, b"main")
    repo = hub.add("org/multi", Repo({"sub/a.gguf": main, "config.json": b'{"x": 1}', "README.md": b"hi"},
                                     branches={"v1": "1" * 40}))
    repo.branches["v1"] = repo.commit
    r = cli("pull", "hf://org/multi/sub/a.gguf@v1")
    assert r.code == 0, r
    meta = json.loads(cli("inspect", "--json", "hf://org/multi/sub/a.gguf@v1").out)
    assert meta["revision"] == "v1" and [f["name"] for f in meta["files"]] == ["sub/a.gguf"]
    r = cli("pull", "--all-files", "hf://org/multi")
    assert r.code == 0, r
    files = {f["name"]: f for f in json.loads(cli("inspect", "--json", "hf://org/multi").out)["files"]}
    assert sorted(files) == ["README.md", "config.json", "sub/a.gguf"]
    assert files["config.json"]["digest"] == "sha256:" + sha(b'{"x": 1}')    # small files hashed locally
    tree_pages = [r for r in hub.requests if "/tree/" in r["path"]]
    assert any("cursor=" in r["query"] for r in tree_pages)                  # pagination followed


def test_repull_transfers_no_blob_bytes(cli, store, hub, tiny_gguf):
    hub.add("org/tiny", Repo({"tiny.Q4_K_M.gguf": gguf_bytes(tiny_gguf, b"x")}))
    assert cli("pull", "hf://org/tiny").code == 0
    sent, resolves = hub.cdn.bytes_sent, len([r for r in hub.requests if "/resolve/" in r["path"]])
    r = cli("pull", "hf://org/tiny")
    assert r.code == 0 and "up to date" in r.err
    assert hub.cdn.bytes_sent == sent
    assert len([r for r in hub.requests if "/resolve/" in r["path"]]) == resolves


@pytest.mark.parametrize("setup, ref, message", [
    (lambda hub: None, "hf://org/missing",
     "Error: hf://org/missing: repository not found (a private repository needs HF_TOKEN)"),
    (lambda hub: hub.add("org/private", Repo({"a.gguf": b"GGUF"}, private=True)), "hf://org/private",
     "Error: hf://org/private: repository not found (a private repository needs HF_TOKEN)"),
    (lambda hub: hub.add("org/gated", Repo({"a.gguf": b"GGUF"}, gated=True)), "hf://org/gated",
     "Error: hf://org/gated is gated: accept its terms at https://huggingface.co/org/gated, then set "
     "HF_TOKEN"),
    (lambda hub: hub.add("org/r", Repo({"a.gguf": b"GGUF"})), "hf://org/r@nope",
     "Error: hf://org/r: revision nope not found"),
    (lambda hub: hub.add("org/r", Repo({"a.gguf": b"GGUF"})), "hf://org/r/b.gguf",
     "Error: no file b.gguf in the repository"),
    (lambda hub: hub.add("org/r", Repo({"a.Q8_0.gguf": b"GGUF"})), "hf://org/r:Q2_K",
     "Error: no Q2_K GGUF file in the repository (it has: a.Q8_0.gguf)"),
])
def test_hub_errors_are_one_line(cli, store, hub, setup, ref, message):
    setup(hub)
    r = cli(ref and "pull", ref)
    assert r.code in (1, 2) and r.err == message + "\n", r
    assert not (store / "repos" / "huggingface").exists()


def test_gated_repo_with_a_token_file(cli, store, hub, tiny_gguf, tmp_path, env):
    hub.add("org/gated", Repo({"m.Q4_K_M.gguf": gguf_bytes(tiny_gguf, b"g")}, gated=True))
    token_file = tmp_path / "tok"
    token_file.write_text(hub.token + "\n")
    assert cli("pull", "hf://org/gated", env_extra={"HF_TOKEN_PATH": str(token_file)}).code == 0
    hf_home = tmp_path / "hfhome"
    hf_home.mkdir()
    (hf_home / "token").write_text(hub.token)
    assert cli("rm", "hf://org/gated").code == 0
    assert cli("pull", "hf://org/gated", env_extra={"HF_HOME": str(hf_home)}).code == 0


def test_rate_limit_is_retried(cli, store, hub, tiny_gguf):
    hub.add("org/tiny", Repo({"tiny.Q4_K_M.gguf": gguf_bytes(tiny_gguf, b"x")}))
    hub.fail_next = [429, 429]
    r = cli("pull", "hf://org/tiny")
    assert r.code == 0, r
    assert [r["path"] for r in hub.requests[:3]] == ["/api/models/org/tiny/revision/main"] * 3


def test_reuses_the_huggingface_cache(cli, store, hub, tiny_gguf, tmp_path):
    data = gguf_bytes(tiny_gguf, b"cached")
    repo = hub.add("org/cached", Repo({"c.Q4_K_M.gguf": data}))
    cache = tmp_path / "hfcache"
    blob = cache / "models--org--cached" / "blobs" / sha(data)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snap = cache / "models--org--cached" / "snapshots" / repo.commit
    snap.mkdir(parents=True)
    (snap / "c.Q4_K_M.gguf").symlink_to(os.path.relpath(blob, snap))
    r = cli("pull", "hf://org/cached", env_extra={"HF_HUB_CACHE": str(cache)})
    assert r.code == 0 and "reused from" in r.err, r
    assert hub.cdn.bytes_sent == 0
    assert os.path.samefile(store / "blobs" / "sha256" / sha(data), blob)       # hardlinked, not copied


def test_blobs_of_one_model_download_side_by_side(cli, store, hub, tiny_gguf):
    parts = {"m-Q8_0-0000%d-of-00003.gguf" % i: gguf_bytes(tiny_gguf, b"p%d" % i) * 4 for i in (1, 2, 3)}
    hub.add("org/split", Repo(parts))
    hub.cdn.delay_per_chunk = 0.01                  # slow enough for the downloads to overlap
    r = cli("pull", "--parallel", "3", "hf://org/split:Q8_0")
    assert r.code == 0, r
    assert hub.cdn.max_active == 3                  # three files at once, one connection each
    assert sorted(blobs(store)) == sorted(sha(d) for d in parts.values())
