"""Ollama transport: the real docker-registry holds Ollama-format manifests; a real-layout
ollama store in a temp dir plays the local cache. Also the cross-transport dedup promise."""
import hashlib
import json
import os
import shutil

import pytest

from conftest import blobs, require
from hub import FakeHub, Repo
from oci_layout import descriptor, http_push
from registry import RegistryServer

OLLAMA = "application/vnd.ollama.image."


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    require("docker-registry (apt-get install docker-registry)", shutil.which("docker-registry"))
    with RegistryServer(tmp_path_factory.mktemp("ollama-registry")) as reg:
        yield reg


def ollama_layers(gguf: bytes) -> list:
    return [(OLLAMA + "model", gguf), (OLLAMA + "template", b"{{ .Prompt }}"),
            (OLLAMA + "system", b"You are tiny."), (OLLAMA + "params", b'{"stop": ["</s>"]}'),
            (OLLAMA + "license", b"MIT"), (OLLAMA + "projector", gguf + b"proj")]


def ollama_manifest(layers: list) -> tuple:
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "F32"}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                "layers": [descriptor(t, d) for t, d in layers]}
    return manifest, config


def push_ollama(registry, name: str, tag: str, layers: list) -> str:
    manifest, config = ollama_manifest(layers)
    return http_push(registry.host, name, tag, manifest, [config] + [d for _t, d in layers])


def test_pull_names_every_layer(cli, store, registry, tiny_gguf, env):
    gguf = tiny_gguf.read_bytes()
    push_ollama(registry, "library/tiny", "latest", ollama_layers(gguf))
    env["RAMALAMA_OLLAMA_REGISTRY"] = registry.host
    r = cli("pull", "ollama://tiny")
    assert r.code == 0, r
    folder = store / "repos" / "ollama" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    assert sorted(os.listdir(folder)) == [".ref.json", "license", "mmproj.gguf", "model.gguf", "params.json",
                                          "system", "template"]
    assert (folder / "template").read_bytes() == b"{{ .Prompt }}"
    # bare names default to ollama (not "tiny": ramalama's shortname for TinyLlama on the Hub)
    info = json.loads(cli("inspect", "--json", "tiny:latest").out)
    assert info["name"] == "ollama://tiny:latest" and info["architecture"] == "llama"
    assert {f["name"]: f["role"] for f in info["files"]}["mmproj.gguf"] == "mmproj"
    r = cli("pull", "ollama://tiny")
    assert "up to date" in r.err


def real_ollama_store(root, gguf: bytes, layers: list):
    """~/.ollama/models as ollama writes it: blobs/sha256-<hex>, manifests/<host>/<ns>/<m>/<tag>."""
    manifest, config = ollama_manifest(layers)
    (root / "blobs").mkdir(parents=True)
    for data in [config] + [d for _t, d in layers]:
        (root / "blobs" / ("sha256-" + hashlib.sha256(data).hexdigest())).write_bytes(data)
    mdir = root / "manifests" / "registry.ollama.ai" / "library" / "cached"
    mdir.mkdir(parents=True)
    (mdir / "latest").write_text(json.dumps(manifest))


def test_reuses_a_local_ollama_store_and_works_offline(cli, store, registry, tiny_gguf, env, tmp_path):
    gguf = tiny_gguf.read_bytes() + b"cached"
    layers = ollama_layers(gguf)
    push_ollama(registry, "library/cached", "latest", layers)
    models = tmp_path / "ollama-models"
    real_ollama_store(models, gguf, layers)
    env["OLLAMA_MODELS"] = str(models)
    env["RAMALAMA_OLLAMA_REGISTRY"] = registry.host
    r = cli("pull", "ollama://cached")
    assert r.code == 0 and r.err.count("reused from") == len(layers), r
    model_hex = hashlib.sha256(gguf).hexdigest()
    assert os.path.samefile(store / "blobs" / "sha256" / model_hex,
                            models / "blobs" / ("sha256-" + model_hex))
    # offline: the registry is unreachable, the local manifest and blobs still make the model
    assert cli("rm", "ollama://cached").code == 0
    env["RAMALAMA_OLLAMA_REGISTRY"] = "127.0.0.1:9"
    r = cli("pull", "ollama://cached")
    assert r.code == 0, r
    assert "using the manifest from the local ollama store" in r.err
    folder = store / "repos" / "ollama" / "registry.ollama.ai" / "library" / "cached" / "latest"
    assert "model.gguf" in os.listdir(folder)


def test_a_corrupt_cache_blob_is_not_reused(cli, store, registry, tiny_gguf, env, tmp_path):
    gguf = tiny_gguf.read_bytes() + b"corrupt"
    layers = [(OLLAMA + "model", gguf)]
    push_ollama(registry, "library/corrupt", "latest", layers)
    models = tmp_path / "ollama-models"
    (models / "blobs").mkdir(parents=True)
    (models / "blobs" / ("sha256-" + hashlib.sha256(gguf).hexdigest())).write_bytes(gguf[:-1] + b"X")
    env.update(OLLAMA_MODELS=str(models), RAMALAMA_OLLAMA_REGISTRY=registry.host)
    r = cli("pull", "ollama://corrupt")
    assert r.code == 0 and "does not hash to its name; not reused" in r.err
    assert hashlib.sha256(gguf).hexdigest() in blobs(store)


def test_one_gguf_through_every_transport_is_one_blob(cli, store, registry, tiny_gguf, env, tmp_path,
                                                      model_file):
    """ollama://, hf://, oci://, file://, both caches: the store grows by the file's size once."""
    gguf = model_file.read_bytes()
    hexd = hashlib.sha256(gguf).hexdigest()
    push_ollama(registry, "library/same", "latest", [(OLLAMA + "model", gguf)])
    env["RAMALAMA_OLLAMA_REGISTRY"] = registry.host
    with FakeHub() as hub:
        hub.add("org/same", Repo({"same.Q4_K_M.gguf": gguf}))
        env["HF_ENDPOINT"] = hub.url
        for ref in ("ollama://same", "hf://org/same", "file://%s" % model_file):
            assert cli("pull", ref).code == 0, ref
        assert cli("push", "ollama://same", "oci://%s/same/m:1" % registry.host).code == 0
        assert cli("pull", "oci://%s/same/m:1" % registry.host).code == 0
        assert hub.cdn.bytes_sent == 0                   # the Hub's LFS file was already stored
    assert blobs(store) == [hexd]
    assert len(json.loads(cli("list", "--json").out)) == 4
