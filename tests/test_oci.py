"""OCI registries against Debian's real docker-registry, with skopeo as an independent client."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, blobs, require
from oci_layout import descriptor, digest, http_push, skopeo_copy, tar_layer, write_layout
from registry import RegistryServer

import ramalama

MODELPACK_CONFIG = (b'{"config":{"format":"gguf"},"descriptor":{"name":"tiny"},'
                    b'"modelfs":{"type":"layers","diffIds":[]}}')


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    require("docker-registry (apt-get install docker-registry)", shutil.which("docker-registry"))
    with RegistryServer(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def skopeo():
    return require("skopeo (apt-get install skopeo)", shutil.which("skopeo"))


def sha(path):
    return ramalama.sha256_file(str(path))


def test_round_trip_file_push_rm_pull(cli, store, registry, model_file, skopeo):
    ref = "oci://%s/models/tiny:1" % registry.host
    assert cli("pull", "file://%s" % model_file).code == 0
    r = cli("push", "file://%s" % model_file, ref)
    assert r.code == 0, r
    pushed = r.out.strip()
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", "docker://%s/models/tiny:1"
                          % registry.host],
                         check=True, capture_output=True).stdout
    assert digest(raw) == pushed
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    layer = manifest["layers"][0]
    assert layer["digest"] == "sha256:" + sha(model_file)       # raw layer digest = file sha256
    assert layer["annotations"] == {"org.cncf.model.filepath": "tiny.gguf",
                                    "org.opencontainers.image.title": "tiny.gguf"}
    assert cli("rm", "--all").code == 0 and blobs(store) == []
    r = cli("pull", ref)
    assert r.code == 0, r
    assert blobs(store) == [sha(model_file)]
    meta = json.loads(cli("inspect", "--json", ref).out)
    assert meta["architecture"] == "llama" and meta["digest"] == "sha256:" + sha(model_file)
    # skopeo copies what we pushed into an OCI layout with the same digests
    out = store.parent / "copied"
    subprocess.run([skopeo, "copy", "--quiet", "--src-tls-verify=false", "docker://%s/models/tiny:1"
                    % registry.host,
                    "oci:%s:1" % out], check=True, capture_output=True)
    assert (out / "blobs" / "sha256" / sha(model_file)).exists()
    assert (out / "blobs" / "sha256" / pushed[7:]).exists()


def test_repull_transfers_nothing_and_digest_pins(cli, store, registry, model_file):
    ref = "oci://%s/models/pin:1" % registry.host
    assert cli("push", "file://%s" % model_file, ref).code == 0
    manifest_digest = cli("push", "file://%s" % model_file, ref).out.strip()
    assert cli("pull", ref).code == 0
    r = cli("--debug", "pull", ref)
    assert "up to date" in r.err and "/blobs/" not in r.err        # no blob request at all
    by_digest = "oci://%s/models/pin@%s" % (registry.host, manifest_digest)
    assert cli("pull", by_digest).code == 0
    r = cli("pull", "oci://%s/models/pin@sha256:%s" % (registry.host, "0" * 64))
    assert r.code == 1 and "MANIFEST_UNKNOWN" in r.err


def test_every_format_of_one_gguf_is_one_blob(cli, store, registry, tiny_gguf, tmp_path, skopeo):
    gguf = tiny_gguf.read_bytes()
    host = registry.host
    # ModelPack with a tar+gzip weight layer (written here, copied by skopeo)
    write_layout(tmp_path / "mp", "1", ("application/vnd.cncf.model.config.v1+json", MODELPACK_CONFIG),
                 [("application/vnd.cncf.model.weight.v1.tar+gzip", tar_layer({"tiny.gguf": gguf}, gz=True),
                   {"org.cncf.model.filepath": "tiny.gguf"})],
                 artifact_type="application/vnd.cncf.model.manifest.v1+json")
    skopeo_copy(tmp_path / "mp", "1", host, "fmt/modelpack")
    # Docker Model Runner
    write_layout(tmp_path / "dmr", "1",
                 ("application/vnd.docker.ai.model.config.v0.1+json", b'{"format":"gguf"}'),
                 [("application/vnd.docker.ai.gguf.v3", gguf, None),
                  ("application/vnd.docker.ai.license", b"MIT\n", None)])
    skopeo_copy(tmp_path / "dmr", "1", host, "fmt/dmr")
    # ramalama image: /models/model.file -> tiny.gguf inside an image layer
    layer = tar_layer({"models/tiny.gguf": gguf}, {"models/model.file": "tiny.gguf"}, gz=True)
    image_config = json.dumps({"architecture": "amd64", "os": "linux",
                               "config": {"Labels": {"org.containers.type": "ai.image.model.raw"}},
                               "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}).encode()
    write_layout(tmp_path / "img", "1", ("application/vnd.oci.image.config.v1+json", image_config),
                 [("application/vnd.oci.image.layer.v1.tar+gzip", layer, None)])
    skopeo_copy(tmp_path / "img", "1", host, "fmt/image")
    # omlmd, pushed with plain HTTP
    cfg = b'{"name":"tiny"}'
    http_push(host, "fmt/omlmd", "1", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/x-config", cfg),
        "layers": [descriptor("application/x-mlmodel", gguf,
                              {"org.opencontainers.image.title": "tiny.gguf"})]},
        [cfg, gguf])
    for name in ("modelpack", "dmr", "image", "omlmd"):
        r = cli("pull", "oci://%s/fmt/%s:1" % (host, name))
        assert r.code == 0, (name, r)
    want = ramalama.sha256_file(str(tiny_gguf))
    assert want in blobs(store)
    assert len([b for b in blobs(store) if os.path.getsize(store / "blobs" / "sha256" / b) == len(gguf)]) == 1
    listed = {m["name"]: m for m in json.loads(cli("list", "--json").out)}
    assert len(listed) == 4
    for name in ("modelpack", "dmr", "image", "omlmd"):
        info = json.loads(cli("inspect", "--json", "oci://%s/fmt/%s:1" % (host, name)).out)
        assert info["digest"] == "sha256:" + want and info["architecture"] == "llama", name
    image_files = json.loads(cli("inspect", "--json", "oci://%s/fmt/image:1" % host).out)["files"]
    assert [(f["name"], f["role"]) for f in image_files] == [("tiny.gguf", "model")]
    dmr_files = json.loads(cli("inspect", "--json", "oci://%s/fmt/dmr:1" % host).out)["files"]
    assert [f["name"] for f in dmr_files] == ["model.gguf", "LICENSE"]


def test_index_picks_the_model_artifact(cli, store, registry, tiny_gguf):
    gguf = tiny_gguf.read_bytes()
    host = registry.host
    art = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "artifactType": "application/vnd.cncf.model.manifest.v1+json",
           "config": descriptor("application/vnd.cncf.model.config.v1+json", MODELPACK_CONFIG),
           "layers": [descriptor("application/vnd.cncf.model.weight.v1.raw", gguf,
                                 {"org.cncf.model.filepath": "m.gguf"})]}
    art_digest = http_push(host, "fmt/indexed", "art", art, [MODELPACK_CONFIG, gguf])
    art_size = len(json.dumps(art).encode())
    other_cfg, other_layer = b'{"architecture":"s390x","os":"linux"}', tar_layer({"etc/x": b"x"})
    other = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": descriptor("application/vnd.oci.image.config.v1+json", other_cfg),
             "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", other_layer)]}
    other_digest = http_push(host, "fmt/indexed", "s390x", other, [other_cfg, other_layer])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other_digest,
         "size": len(json.dumps(other).encode()), "platform": {"os": "linux", "architecture": "s390x"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": art_digest, "size": art_size,
         "artifactType": "application/vnd.cncf.model.manifest.v1+json"}]}
    http_push(host, "fmt/indexed", "1", index, [])
    r = cli("pull", "oci://%s/fmt/indexed:1" % host)
    assert r.code == 0, r
    files = json.loads(cli("inspect", "--json", "oci://%s/fmt/indexed:1" % host).out)["files"]
    assert files[0]["name"] == "m.gguf"


def test_unknown_artifact_names_its_media_types(cli, store, registry):
    cfg = b"{}"
    http_push(registry.host, "fmt/unknown", "1", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.example.config+json", cfg),
        "layers": [descriptor("application/vnd.example.thing", b"x")]}, [cfg, b"x"])
    r = cli("pull", "oci://%s/fmt/unknown:1" % registry.host)
    assert r.code == 1
    assert r.err.strip() == ("Error: not a model artifact this version can read (config "
                             "application/vnd.example.config+json; layers application/vnd.example.thing)")
    assert not (store / "repos" / "oci").exists()


def test_hostile_tar_layer_is_refused(cli, store, registry, tmp_path):
    def escape(tar):
        import io
        import tarfile
        info = tarfile.TarInfo("../../../../tmp/escaped-by-ramalama")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    layer = tar_layer({}, extra=escape)
    http_push(registry.host, "fmt/hostile", "1", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.cncf.model.config.v1+json", MODELPACK_CONFIG),
        "layers": [descriptor("application/vnd.cncf.model.weight.v1.tar", layer)]}, [MODELPACK_CONFIG, layer])
    r = cli("pull", "oci://%s/fmt/hostile:1" % registry.host)
    assert r.code == 1 and r.err.splitlines()[-1] == (
        "Error: unsafe file name '../../../../tmp/escaped-by-ramalama'")
    assert not os.path.exists("/tmp/escaped-by-ramalama")
    assert not (store / "repos" / "oci").exists()


def test_push_ramalama_image_and_mount_across_repositories(cli, store, registry, model_file, skopeo):
    host = registry.host
    assert cli("push", "file://%s" % model_file, "oci://%s/share/a:1" % host).code == 0
    assert cli("pull", "oci://%s/share/a:1" % host).code == 0
    r = cli("--debug", "push", "oci://%s/share/a:1" % host, "oci://%s/share/b:1" % host)
    assert r.code == 0 and "blob sha256:%s: mounted" % sha(model_file) in r.err
    r = cli("push", "--type", "ramalama", "oci://%s/share/a:1" % host, "oci://%s/share/img:1" % host)
    assert r.code == 0, r
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", "docker://%s/share/img:1" % host],
                         check=True, capture_output=True).stdout
    assert json.loads(raw)["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    config = json.loads(subprocess.run(
        [skopeo, "inspect", "--config", "--tls-verify=false", "docker://%s/share/img:1" % host],
        check=True, capture_output=True).stdout)
    assert config["config"]["Labels"]["org.containers.type"] == "ai.image.model.raw"
    assert cli("rm", "--all").code == 0
    assert cli("pull", "oci://%s/share/img:1" % host).code == 0
    assert blobs(store) == [sha(model_file)]


def test_chunked_upload(tmp_path, registry, model_file, env):
    log = []                               # the client takes its collaborators, no CLI context
    reg = ramalama.Registry(ramalama.HTTPSession(log=log.append), registry.host, env=env, log=log.append)
    reg.upload_chunk, reg.upload_monolithic = 100_000, 100_000
    d = "sha256:" + sha(model_file)
    size = model_file.stat().st_size
    assert reg.upload("chunked/m", d, size, path=str(model_file)) == "uploaded"
    assert sum(1 for line in log if line.startswith("PATCH ")) == -(-size // 100_000)
    assert reg.upload("chunked/m", d, size, path=str(model_file)) == "exists"
    import urllib.request                  # the registry assembled the chunks into the right blob
    with urllib.request.urlopen("http://%s/v2/chunked/m/blobs/%s" % (registry.host, d)) as resp:
        assert digest(resp.read()) == d


# -- authentication and TLS

def test_htpasswd_login_logout(cli, store, env, tmp_path, model_file):
    require("docker-registry", shutil.which("docker-registry"))
    with RegistryServer(tmp_path / "authreg", users={"alice": "s3cret-pw"}) as reg:
        ref = "oci://%s/private/m:1" % reg.host
        r = cli("push", "file://%s" % model_file, ref)
        assert r.code == 1 and r.err.splitlines()[-1] == (
            "Error: %s requires authentication; run `ramalama login %s`" % (reg.host, reg.host))
        r = cli("login", "-u", "alice", "-p", "wrong", reg.host)
        assert r.code == 1 and "credentials rejected" in r.err
        authfile = tmp_path / "home" / ".config" / "containers" / "auth.json"
        assert not authfile.exists()
        r = cli("--debug", "login", "-u", "alice", "-p", "s3cret-pw", reg.host)
        assert r.code == 0 and r.out == "Login Succeeded!\n" and "s3cret-pw" not in r.err
        assert stat.S_IMODE(os.stat(authfile).st_mode) == 0o600
        assert reg.host in json.loads(authfile.read_text())["auths"]
        r = cli("--debug", "push", "file://%s" % model_file, ref)
        assert r.code == 0, r
        r = cli("--debug", "pull", ref)
        assert r.code == 0 and "s3cret-pw" not in r.err and "Authorization" not in r.err
        assert cli("logout", reg.host).out == "Removed login credentials for %s\n" % reg.host
        assert json.loads(authfile.read_text())["auths"] == {}
        r = cli("pull", ref)
        assert r.code == 1 and "requires authentication" in r.err
        # credentials from a docker config.json work too, and --authfile replaces the search
        other = tmp_path / "other-auth.json"
        import base64
        other.write_text(json.dumps({"auths": {"http://%s" % reg.host: {
            "auth": base64.b64encode(b"alice:s3cret-pw").decode()}}}))
        assert cli("pull", "--authfile", other, ref).code == 0
        docker_dir = tmp_path / "home" / ".docker"
        docker_dir.mkdir()
        (docker_dir / "config.json").write_text(other.read_text())
        assert cli("pull", ref).code == 0


def test_tls_registry(tmp_path, model_file, env):
    require("docker-registry", shutil.which("docker-registry"))
    with RegistryServer(tmp_path / "tlsreg", tls=True) as reg:
        ref = "oci://%s/secure/m:1" % reg.host
        base = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(tmp_path / "store")]
        run_env = dict(env, SSL_CERT_FILE="/nonexistent-ca.pem")

        def run(*argv, **extra):
            return subprocess.run(base + list(argv), capture_output=True, text=True,
                                  env=dict(run_env, **extra))
        r = run("push", "file://%s" % model_file, ref)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
        assert r.returncode == 1 and len(errors) == 1 and "TLS certificate verification failed" in errors[0]
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(reg.ca, certs / "ca.crt")
        r = run("push", "--cert-dir", str(certs), "file://%s" % model_file, ref)
        assert r.returncode == 0, r.stderr
        assert run("pull", ref, SSL_CERT_FILE=str(reg.ca)).returncode == 0
        assert run("rm", ref).returncode == 0
        assert run("pull", "--tls-verify=false", ref).returncode == 0


def fake_registry(origin, token_server, gguf: bytes, user=None):
    """A registry played by FileServer: bearer challenge -> token service -> content."""
    import base64
    cfg = MODELPACK_CONFIG
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": descriptor("application/vnd.cncf.model.config.v1+json", cfg),
        "layers": [descriptor("application/vnd.cncf.model.weight.v1.raw", gguf,
                              {"org.cncf.model.filepath": "m.gguf"})]}).encode()
    origin.add("/v2/m/tiny/manifests/1", manifest, content_type="application/vnd.oci.image.manifest.v1+json",
               headers={"Docker-Content-Digest": digest(manifest)})
    origin.add("/v2/m/tiny/blobs/" + digest(cfg), cfg)
    origin.add("/v2/m/tiny/blobs/" + digest(gguf), gguf)
    origin.require_auth = "Bearer t0k"
    origin.challenge = 'Bearer realm="%s/token",service="fake-registry",scope="repository:m/tiny:pull"' % (
        token_server.url)
    token_server.add("/token", b'{"token": "t0k", "expires_in": 300}', content_type="application/json")
    if user:
        token_server.require_auth = "Basic " + base64.b64encode(("%s:%s" % user).encode()).decode()
        token_server.challenge = 'Basic realm="token"'


def test_bearer_token_flow_anonymous_and_cached(cli, store, tiny_gguf):
    from servers import FileServer
    with FileServer() as origin, FileServer() as tokens:
        fake_registry(origin, tokens, tiny_gguf.read_bytes())
        r = cli("pull", "oci://127.0.0.1:%d/m/tiny:1" % origin.port)
        assert r.code == 0, r
    assert len(tokens.requests) == 1                       # one token per scope, reused
    query = dict(p.split("=", 1) for p in tokens.requests[0]["query"].split("&"))
    assert query == {"service": "fake-registry", "scope": "repository%3Am%2Ftiny%3Apull"}
    assert "authorization" not in tokens.requests[0]["headers"]
    assert blobs(store) == [sha(tiny_gguf)]


def test_bearer_token_with_credentials_from_a_helper(cli, store, tiny_gguf, env, tmp_path):
    from servers import FileServer
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text("#!/bin/sh\necho \"$@\" > %s/argv\ncat > %s/stdin\n"
                      "echo '{\"Username\": \"alice\", \"Secret\": \"hunter22\"}'\n" % (tmp_path, tmp_path))
    helper.chmod(0o755)
    with FileServer() as origin, FileServer() as tokens:
        fake_registry(origin, tokens, tiny_gguf.read_bytes(), user=("alice", "hunter22"))
        host = "127.0.0.1:%d" % origin.port
        docker = tmp_path / "home" / ".docker"
        docker.mkdir(parents=True)
        (docker / "config.json").write_text(json.dumps({"credHelpers": {host: "fake"}}))
        r = cli("--debug", "pull", "oci://%s/m/tiny:1" % host,
                env_extra={"PATH": "%s:%s" % (bindir, env["PATH"])})
        assert r.code == 0, r
    assert (tmp_path / "argv").read_text().split() == ["get"]      # the secret never in argv
    assert (tmp_path / "stdin").read_text() == host
    assert "hunter22" not in r.err
    assert all(r["headers"].get("authorization") in (None, "Bearer t0k") for r in origin.requests)


def test_a_layout_and_a_registry_give_the_same_files(cli, store, registry, tiny_gguf, tmp_path, skopeo):
    """One artifact, two sources: a multi-file tar layer sits below its annotated name either way."""
    gguf = tiny_gguf.read_bytes()
    layout = tmp_path / "bundle"
    write_layout(layout, "1", ("application/vnd.cncf.model.config.v1+json", MODELPACK_CONFIG),
                 [("application/vnd.cncf.model.weight.v1.tar",
                   tar_layer({"tiny.gguf": gguf, "extra.gguf": gguf + b"x"}),
                   {"org.cncf.model.filepath": "bundle"})],
                 artifact_type="application/vnd.cncf.model.manifest.v1+json")
    skopeo_copy(layout, "1", registry.host, "same/bundle")
    names = []
    for ref in ("oci-layout:%s:1" % layout, "oci://%s/same/bundle:1" % registry.host):
        assert cli("pull", ref).code == 0
        info = json.loads(cli("inspect", "--json", ref).out)
        names.append(sorted(f["name"] for f in info["files"]))
    assert names[0] == names[1] == ["bundle/extra.gguf", "bundle/tiny.gguf"]
