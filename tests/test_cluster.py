"""The cluster form of --generate kube: a model that lives in a registry reaches any node by digest
(an init container, or an image volume), never by hostPath. The Deployment and Service validate
against the Kubernetes API schemas of the versions named (kubernetes-validate, offline), and the
init container's fetch runs for real against a real registry."""
import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from conftest import require, sha256
from registry import RegistryServer

INIT_VERSIONS = ("1.29.0", "1.31.0", "1.33.0", "1.35.0", "1.37.0")     # any Kubernetes the schemas cover
IMAGE_VERSIONS = ("1.31.0", "1.33.0", "1.35.0", "1.37.0")    # the API field; on by default from 1.35


def validate(docs: list, versions: tuple) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    require("kubernetes-validate (pip install kubernetes-validate)", kubernetes_validate)
    for version in versions:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)     # raises on any unknown or wrong field


@pytest.fixture
def pushed(cli, model_file, tmp_path):
    """The tiny model pushed to a real registry and pulled back from it: oci://REG/models/tiny:1."""
    reg = RegistryServer(tmp_path / "registry").start()
    target = "oci://%s/models/tiny:1" % reg.host
    assert cli("push", "file://%s" % model_file, target).code == 0
    assert cli("pull", target).code == 0
    yield reg, target
    reg.stop()


def generate(cli, tmp_path, target, *flags):
    out = tmp_path / "deploy"
    r = cli("--engine", "podman", "--image", "quay.io/ramalama/ramalama@sha256:" + "ab" * 32, "serve",
            "--generate", "kube:%s" % out, "--name", "tiny", "--port", "8080", *flags, target)
    assert r.code == 0, r
    text = (out / "tiny.yaml").read_text()
    return text, list(yaml.safe_load_all(text))


def test_a_registry_model_reaches_any_node_by_digest(cli, store, pushed, model_file, tmp_path):
    reg, target = pushed
    text, docs = generate(cli, tmp_path, target)
    deployment, service = docs
    pod = deployment["spec"]["template"]["spec"]
    manifest = json.loads((store / ("repos/oci/%s/models/tiny/1/.ref.json" % reg.host)).read_text())
    digest = manifest["meta"]["manifest_digest"] if "meta" in manifest else manifest["manifest_digest"]
    assert "hostPath" not in text and "hostPort" not in text
    by_digest = "%s/models/tiny@%s" % (reg.host, digest)
    assert deployment["metadata"]["annotations"]["ai.ramalama.model"] == by_digest
    assert pod["volumes"] == [{"name": "model", "emptyDir": {"sizeLimit": "64Mi"}}]
    init, = pod["initContainers"]
    assert init["image"].endswith("@sha256:" + "ab" * 32)
    assert pod["containers"][0]["command"][pod["containers"][0]["command"].index("--model") + 1] == (
        "/mnt/models/tiny.gguf")
    validate(docs, INIT_VERSIONS)
    # the init container's own command, run here against the registry (it would run in the image)
    dest = tmp_path / "node"
    argv = list(init["command"])
    argv[argv.index("/mnt/models")] = str(dest)
    argv[argv.index("https://" + reg.host)] = "http://" + reg.host          # this test registry is plain HTTP
    r = subprocess.run([sys.executable if a == "python3" else a for a in argv], capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert sha256(dest / "tiny.gguf") == sha256(model_file) and not list(dest.glob("*.part"))
    assert r.stdout.split() == ["sha256:" + sha256(model_file), "tiny.gguf"]


def test_the_init_fetch_refuses_bytes_that_do_not_match(cli, pushed, tmp_path):
    reg, target = pushed
    _text, docs = generate(cli, tmp_path, target)
    init = docs[0]["spec"]["template"]["spec"]["initContainers"][0]
    argv = list(init["command"])
    files = json.loads(argv[-1])
    wrong = "sha256:" + hashlib.sha256(b"another file").hexdigest()
    argv[-1] = json.dumps([[files[0][0], wrong]])
    argv[argv.index("/mnt/models")] = str(tmp_path / "node")
    argv[argv.index("https://" + reg.host)] = "http://" + reg.host
    r = subprocess.run([sys.executable if a == "python3" else a for a in argv], capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode != 0 and not (tmp_path / "node" / "tiny.gguf").exists()


def test_an_image_volume_names_the_artifact_by_digest(cli, pushed, tmp_path):
    reg, target = pushed
    text, docs = generate(cli, tmp_path, target, "--kube-volume", "image")
    pod = docs[0]["spec"]["template"]["spec"]
    assert "hostPath" not in text and "initContainers" not in pod
    volume, = pod["volumes"]
    assert volume["image"]["reference"].startswith("%s/models/tiny@sha256:" % reg.host)
    assert pod["containers"][0]["volumeMounts"] == [{"name": "model", "mountPath": "/mnt/models",
                                                     "readOnly": True}]
    validate(docs, IMAGE_VERSIONS)
    import kubernetes_validate
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(docs, ("1.29.0",))                                  # before image volumes existed


def test_a_local_model_stays_on_its_node_and_says_how_to_move(cli, store, model_file, tmp_path):
    local = "file://%s" % model_file
    assert cli("pull", local).code == 0
    text, docs = generate(cli, tmp_path, local)
    assert "hostPath" in text
    validate(docs, INIT_VERSIONS)
    r = cli("serve", "--generate", "kube:%s" % tmp_path, "--kube-volume", "init", local)
    assert r.code == 2 and "push it" in r.err and len(r.err.strip().splitlines()) == 1
