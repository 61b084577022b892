"""Pulls through a real proxy (squid). Every server sits behind a test-only name
(registry.test, hub.test, cdn.test, files.test, auth.test) that only squid resolves, so a
request that bypasses the proxy cannot succeed."""
import io
import json
import os
import shutil

import pytest

from conftest import blobs, require
from hub import FakeHub, Repo
from oci_layout import descriptor, digest, http_push
from proxy import Squid
from registry import RegistryServer
from servers import FileServer
from test_oci import MODELPACK_CONFIG, fake_registry
from test_ollama import ollama_layers, ollama_manifest

import ramalama

USER, PASSWORD = "alice", "pr0xy-s3cret"


def squid_or_fail(users=None) -> Squid:
    require("squid (apt-get install squid)", shutil.which("squid") or os.path.exists("/usr/sbin/squid"))
    return Squid(users)


@pytest.fixture(scope="module")
def squid():
    with squid_or_fail() as s:
        yield s


@pytest.fixture(scope="module")
def squid_auth():
    with squid_or_fail({USER: PASSWORD}) as s:
        yield s


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_gguf):
    """Every transport's server, each reachable by a .test name: a file server, a Hub with
    its CDN, a real TLS registry (OCI and Ollama content), a fake registry with a token service."""
    require("docker-registry (apt-get install docker-registry)", shutil.which("docker-registry"))
    gguf = tiny_gguf.read_bytes()
    big = os.urandom(40 << 20)                 # big enough for parallel parts
    with RegistryServer(tmp_path_factory.mktemp("tlsreg"), tls=True) as reg, FakeHub() as hub, \
            FileServer() as files, FileServer() as fake_reg, FileServer() as tokens:
        files.add("/tiny.gguf", gguf)
        hub.add("org/tiny-GGUF", Repo({"tiny-Q8_0.gguf": gguf, "README.md": b"tiny"}))
        hub.public_url = "http://hub.test:%d" % int(hub.url.rsplit(":", 1)[1])
        hub.cdn_url = "http://cdn.test:%d" % hub.cdn.port
        fake_registry(fake_reg, tokens, gguf)
        fake_reg.challenge = fake_reg.challenge.replace(tokens.url, "http://auth.test:%d" % tokens.port)
        manifest, config = ollama_manifest(ollama_layers(gguf))
        http_push(reg.host, "library/tiny", "latest", manifest, [config] + [gguf, b"{{ .Prompt }}",
                  b"You are tiny.", b'{"stop": ["</s>"]}', b"MIT", gguf + b"proj"], scheme="https",
                  cafile=str(reg.ca))
        art = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "artifactType": "application/vnd.cncf.model.manifest.v1+json",
               "config": descriptor("application/vnd.cncf.model.config.v1+json", MODELPACK_CONFIG),
               "layers": [descriptor("application/vnd.cncf.model.weight.v1.raw", big,
                                     {"org.cncf.model.filepath": "big.gguf"})]}
        http_push(reg.host, "proxy/big", "1", art, [MODELPACK_CONFIG, big], scheme="https",
                  cafile=str(reg.ca))
        yield {
            "reg": reg, "hub": hub, "files": files, "fake_reg": fake_reg, "tokens": tokens,
               "big": digest(big),
            "env": {"SSL_CERT_FILE": str(reg.ca), "HF_ENDPOINT": hub.public_url,
                    "RAMALAMA_OLLAMA_REGISTRY": "registry.test:%d" % reg.port},
            "refs": {
                "http": ["http://files.test:%d/tiny.gguf" % files.port],
                "hf": ["hf://org/tiny-GGUF"],
                "oci": ["--parallel", "4", "oci://registry.test:%d/proxy/big:1" % reg.port],
                "oci-token": ["--tls-verify=false", "oci://registry.test:%d/m/tiny:1" % fake_reg.port],
                "ollama": ["ollama://tiny"],
            },
        }


def pull(tmp_path, env, *argv):
    """One pull into a fresh store (no blob is shared, so every byte crosses the proxy)."""
    store = tmp_path / ("store-%d" % len(list(tmp_path.glob("store-*"))))
    out, err = io.StringIO(), io.StringIO()
    code = ramalama.main(["--debug", "--store", str(store), "pull"] + list(argv), env=env, stdout=out,
                         stderr=err)
    return code, out.getvalue(), err.getvalue(), store


def origin_headers(world) -> list:
    return [r["headers"] for s in (world["files"], world["fake_reg"], world["tokens"], world["hub"].cdn)
            for r in s.requests]


@pytest.mark.parametrize("with_auth", [False, True], ids=["open", "proxy-auth"])
def test_every_transport_pulls_through_the_proxy(world, squid, squid_auth, tmp_path, env, with_auth):
    proxy = squid_auth.url_with(USER, PASSWORD) if with_auth else squid.url
    base = dict(env, **world["env"])
    for name, argv in world["refs"].items():
        code, out, err, _store = pull(tmp_path, base, *argv)     # no proxy: the .test names do not resolve
        assert code == 1 and len(err.strip().splitlines()[-1:]) == 1, (name, err)
    for var in (("HTTPS_PROXY", "HTTP_PROXY"), ("https_proxy", "http_proxy")):
        run_env = dict(base, **{v: proxy for v in var})
        for name, argv in world["refs"].items():
            code, out, err, store = pull(tmp_path, run_env, *argv)
            assert code == 0, (name, err[-3000:])
            assert blobs(store), name
            assert PASSWORD not in out + err
            assert "through proxy http://" in err
    log = (squid_auth if with_auth else squid).access_log()
    for host in ("files.test", "hub.test", "cdn.test", "registry.test", "auth.test"):
        assert host in log, host
    tunnels = [line for line in log.splitlines() if "CONNECT registry.test:%d" % world["reg"].port in line]
    assert len(tunnels) >= 2            # parallel parts each open their own tunnel
    if with_auth:
        assert " %s " % USER in log     # squid saw who authenticated
    assert not any("proxy-authorization" in h for h in origin_headers(world))


def test_big_blob_arrives_whole_through_tunnels(world, squid, tmp_path, env):
    run_env = dict(env, **world["env"], HTTPS_PROXY=squid.url)
    code, out, err, store = pull(tmp_path, run_env, *world["refs"]["oci"])
    assert code == 0, err
    assert world["big"][7:] in blobs(store)


@pytest.mark.parametrize("no_proxy, through", [
    ("files.test", False), (".test", False), ("*", False), ("test", False), ("files.test:1", True),
    ("other.test,example.com", True), ("10.0.0.0/8", True), ("", True),
])
def test_no_proxy_picks_the_route(world, squid, tmp_path, env, no_proxy, through):
    run_env = dict(env, HTTP_PROXY=squid.url, NO_PROXY=no_proxy)
    code, out, err, store = pull(tmp_path, run_env, *world["refs"]["http"])
    # a bypassed request goes direct, where the .test name does not resolve
    assert (code == 0) == through, err


def test_proxy_failures_are_one_line_without_credentials(world, squid_auth, tmp_path, env):
    ref = world["refs"]["http"]
    cases = [
        (squid_auth.url, "requires authentication"),
        (squid_auth.url_with(USER, "wrong-password"), "rejected the credentials"),
        ("http://%s:%s@127.0.0.1:9" % (USER, PASSWORD), "cannot reach proxy"),
    ]
    for proxy, message in cases:
        for var, argv in (("HTTP_PROXY", ref),
                          ("HTTPS_PROXY", ["https://files.test:%d/x.gguf" % world["files"].port])):
            code, out, err, _ = pull(tmp_path, dict(env, **{var: proxy}), *argv)
            errors = [line for line in err.splitlines() if line.startswith("Error:")]
            assert code == 1 and len(errors) == 1 and message in errors[0], (var, err)
            assert "proxy http://" in errors[0] and "(from %s)" % var in errors[0]
            assert PASSWORD not in out + err and "wrong-password" not in out + err


def test_info_shows_the_proxy_masked(cli, env):
    r = cli("info", env_extra={"HTTPS_PROXY": "http://%s:%s@proxy.example:3128" % (USER, PASSWORD),
                               "no_proxy": "localhost,.corp"})
    assert r.code == 0, r
    shown = json.loads(r.out)["proxy"]
    assert shown["https"] == "http://%s:***@proxy.example:3128 (HTTPS_PROXY)" % USER
    assert shown["no_proxy"] == "localhost,.corp" and PASSWORD not in r.out


def test_unsupported_proxy_scheme_is_one_line(cli, env):
    r = cli("pull", "https://files.test/x.gguf", env_extra={"ALL_PROXY": "socks5://127.0.0.1:1080"})
    assert r.code == 2 and r.err.strip().splitlines() == [
        "Error: ALL_PROXY=socks5://127.0.0.1:1080: only http://host[:port] proxies are supported"], r


@pytest.mark.parametrize("host, port, no_proxy, exempt", [
    ("a.example.com", 443, "example.com", True), ("example.com", 443, ".example.com", True),
    ("badexample.com", 443, "example.com", False), ("x.corp", 80, "*.corp", True),
    ("10.1.2.3", 443, "10.0.0.0/8", True), ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("192.168.1.5", 443, "192.168.1.5", True), ("::2", 443, "[::2]", True), ("::2", 443, "::2", True),
    ("h.test", 8443, "h.test:8443", True), ("h.test", 443, "h.test:8443", False),
    ("H.Test", 443, " h.test ", True), ("h.test", 443, "", False),
])
def test_no_proxy_rules(host, port, no_proxy, exempt):
    assert ramalama.no_proxy_match(host, port, no_proxy) == exempt


def test_loopback_never_goes_through_a_proxy():
    env = {"HTTPS_PROXY": "http://proxy.example:3128", "HTTP_PROXY": "http://proxy.example:3128"}
    assert ramalama.proxy_for("https", "127.0.0.1", 5000, env) is None
    assert ramalama.proxy_for("http", "localhost", 80, env) is None
    assert ramalama.proxy_for("https", "registry.example", 443, env).host == "proxy.example"
    assert ramalama.proxy_for("http", "x.example", 80,
                              {"http_proxy": "http://a:1", "HTTP_PROXY": "http://b:2"}).host == "a"
