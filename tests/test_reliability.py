"""Reliability: kills at random moments, concurrent pulls with rm/prune, injected network faults
for every transport, hostile input, secrets, a full disk, old store layouts.

The promise checked after every case: every blob under blobs/ hashes to its name, every model
folder is complete, nothing is written outside the store, and a retry finishes the job."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, blobs, record, require
from hub import FakeHub, Repo
from servers import FileServer
from test_download import payload

import ramalama

PY = [sys.executable, str(ROOT / "ramalama.py")]


def store_is_sound(store) -> list:
    """Problems in a store: blobs that do not hash to their name, model folders without
    .ref.json (half-published), fsck complaints. Empty means sound."""
    problems = []
    d = store / "blobs" / "sha256"
    for name in os.listdir(d) if d.exists() else []:
        if ramalama.sha256_file(str(d / name)) != name:
            problems.append("blob %s" % name)
    repos = store / "repos"
    for dirpath, dirs, files in os.walk(repos) if repos.exists() else []:
        if files and ".ref.json" not in files and not any(
                os.path.exists(os.path.join(p, ".ref.json")) for p in _parents(dirpath, repos)):
            problems.append("folder without .ref.json: %s" % dirpath)
    if store.exists():
        r = subprocess.run(PY + ["--store", str(store), "fsck"], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append("fsck: " + r.stdout + r.stderr)
    return problems


def _parents(path, stop):
    path = os.path.abspath(path)
    while len(path) > len(str(stop)):
        yield path
        path = os.path.dirname(path)


def phase(store) -> str:
    tmp = store / "tmp"
    entries = os.listdir(tmp) if tmp.exists() else []
    if any(e.startswith("model-") for e in entries):
        return "link"
    if any(e.endswith(".partial") for e in entries):
        state = [e for e in entries if e.endswith(".json")]
        return "part" if state and "parts" in (store / "tmp" / state[0]).read_text() else "blob"
    if (store / "repos").exists() and any(files for _d, _s, files in os.walk(store / "repos")):
        return "published"
    return "manifest"


# -- kills ------------------------------------------------------------------

def _kill_and_rerun(cmd, store, delay, env, served):
    """Start the pull, SIGKILL it after `delay` seconds, check the store, rerun; returns
    (phase hit, bytes the rerun moved, bytes the saved state says were done)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hit = phase(store)
    assert store_is_sound(store) == [], hit
    done = 0
    for state in (store / "tmp").glob("*.json") if (store / "tmp").exists() else []:
        try:
            parts = json.loads(state.read_text()).get("parts") or []
        except ValueError:
            continue
        done += sum(min(p[2], p[1] - p[0]) for p in parts)
    time.sleep(0.3)                                  # connections of the killed process drain
    before = served()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert store_is_sound(store) == []
    return hit, served() - before, done


def test_kills_at_random_moments(tmp_path, env, tiny_gguf):
    rng = random.Random(20261125)
    big = payload(40 << 20)
    hits = {}
    with FileServer() as srv, FakeHub() as hub:
        srv.add("/big.gguf", big)
        srv.rate = 60e6
        parts = {"m-Q8_0-0000%d-of-00003.gguf" % i: payload(3 << 20, seed=i) for i in (1, 2, 3)}
        parts["mmproj-f16.gguf"] = payload(1 << 20, seed=9)
        hub.add("org/split", Repo(parts))
        hub.cdn.rate = 30e6
        many = {"shard-%03d.gguf" % i: payload(64 << 10, seed=100 + i) for i in range(120)}
        hub.add("org/many", Repo(many))            # 120 files: many blob, link and publish steps
        cases = [("url", srv.url + "/big.gguf", lambda: srv.bytes_sent, len(big)),
                 ("hf", "hf://org/split:Q8_0", lambda: hub.cdn.bytes_sent, sum(map(len, parts.values()))),
                 ("hf-many", "--all-files hf://org/many", lambda: hub.cdn.bytes_sent,
                  sum(map(len, many.values())))]
        run_env = dict(env, HF_ENDPOINT=hub.url)
        kills = 0
        for name, ref, served, total in cases:
            # a reference run measures how long the pull takes here
            ref_store = tmp_path / ("ref-" + name)
            t0 = time.monotonic()
            subprocess.run(PY + ["--store", str(ref_store), "-q", "pull"] + ref.split(), check=True,
                           env=run_env)
            duration = time.monotonic() - t0
            for i in range(4 if name == "hf-many" else 10):
                store = tmp_path / ("%s-%d" % (name, i))
                delay = duration * (rng.uniform(0.0, 1.0) if i < 6 else rng.uniform(0.92, 1.02))
                hit, moved, done = _kill_and_rerun(PY + ["--store", str(store), "-q", "pull"] + ref.split(),
                                                   store,
                                                   delay, run_env, served)
                hits[hit] = hits.get(hit, 0) + 1
                # resumed parts are not fetched again (slack: a chunk in flight per connection)
                assert moved <= total - done + 8 * (1 << 20), (name, hit, moved, done)
                assert blobs(store) == blobs(ref_store)
                kills += 1
    record("kills", kills, 0, " ".join("%s=%d" % kv for kv in sorted(hits.items())))
    assert kills >= 20 and len(hits) >= 3, hits          # which phases a timed kill lands in varies


# -- concurrency ------------------------------------------------------------

def test_eight_processes_pull_one_model(tmp_path, env):
    data = payload(36 << 20)
    store = tmp_path / "store"
    with FileServer() as srv:
        srv.add("/m.gguf", data)
        srv.rate = 40e6
        procs = [subprocess.Popen(PY + ["--store", str(store), "-q", "pull", srv.url + "/m.gguf"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        codes = [p.wait(120) for p in procs]
    assert codes == [0] * 8, [p.stderr.read() for p in procs]
    assert blobs(store) == [hashlib.sha256(data).hexdigest()]
    assert srv.bytes_sent < 2 * len(data)            # one download; the others waited for it
    assert store_is_sound(store) == []
    record("concurrent pulls", 8, 0)


def test_shared_blob_rm_and_prune_during_pulls(tmp_path, env):
    data = payload(36 << 20)
    store = tmp_path / "store"
    base = PY + ["--store", str(store), "-q"]
    with FileServer() as srv:
        srv.add("/a/m.gguf", data)
        srv.add("/b/m.gguf", data)                   # another model, the same bytes
        srv.rate = 30e6
        pulls = [subprocess.Popen(base + ["pull", srv.url + p], env=env, stderr=subprocess.PIPE, text=True)
                 for p in ("/a/m.gguf", "/b/m.gguf")]
        time.sleep(0.3)
        others = [subprocess.Popen(base + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
                  for cmd in (["prune"], ["rm", "--ignore", srv.url + "/a/m.gguf"])]
        codes = [p.wait(120) for p in pulls + others]
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in pulls + others]
    assert store_is_sound(store) == []
    listed = json.loads(subprocess.run(base + ["list", "--json"], capture_output=True, text=True).stdout)
    assert blobs(store) == ([hashlib.sha256(data).hexdigest()] if listed else [])
    record("concurrent pulls", 4, 0)


# -- faults -------------------------------------------------------------------

FAULTS = {
    # name: (set up the server, expected: "ok" = the right content lands, else an error fragment)
    "drop mid-body": (lambda s: setattr(s, "drop_after", 300_000), "ok"),
    "500 once": (lambda s: setattr(s, "fail_next", [500]), "ok"),
    "502 once": (lambda s: setattr(s, "fail_next", [502]), "ok"),
    "503 with Retry-After": (lambda s: setattr(s, "fail_next", [503, 503]), "ok"),
    "429 with Retry-After": (lambda s: setattr(s, "fail_next", [429]), "ok"),
    "Range ignored after a drop": (lambda s: (setattr(s, "drop_after", 300_000),
                                              setattr(s, "ignore_range", True)), "ok"),
    "wrong Content-Range after a drop": (lambda s: (setattr(s, "drop_after", 300_000),
                                                    setattr(s, "bad_range", True)),
                                         "wrongly"),
    "stall": (lambda s: setattr(s, "stall_after", 200_000), "ok"),
    "500 always": (lambda s: setattr(s, "fail_next", [500] * 50), "HTTP 500"),
    "redirect loop": (lambda s: setattr(s, "redirect", s.url), "too many redirects"),
    "wrong bytes": (lambda s: setattr(s, "corrupt", True), "content hashes to sha256:"),
}


@pytest.fixture
def fault_env(env, tmp_path):
    conf = tmp_path / "home" / ".config" / "ramalama" / "ramalama.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("[ramalama.download]\ntimeout = 1.5\n")   # a stall is noticed in 1.5 s
    return env


def _oci_fake(srv, data):
    """A registry played by a FileServer (so faults can be injected into blob answers)."""
    from oci_layout import descriptor, digest
    cfg = b'{"descriptor":{"name":"x"}}'
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                           "config": descriptor("application/vnd.cncf.model.config.v1+json", cfg),
                           "layers": [descriptor("application/vnd.cncf.model.weight.v1.raw", data,
                                                 {"org.cncf.model.filepath": "m.gguf"})]}).encode()
    srv.add("/v2/m/x/manifests/1", manifest, content_type="application/vnd.oci.image.manifest.v1+json")
    srv.add("/v2/m/x/blobs/" + digest(data), data)
    return "oci://127.0.0.1:%d/m/x:1" % srv.port


@pytest.mark.parametrize("transport, fault", [
    (t, f) for t in ("url", "hf", "oci") for f in sorted(FAULTS)
    if (t, f) != ("url", "wrong bytes")])        # a plain URL announces no digest to check against
def test_network_faults(fault_env, tmp_path, transport, fault):
    setup, expect = FAULTS[fault]
    data = payload(1 << 20, seed=7)
    store = tmp_path / "store"
    with FileServer() as srv, FakeHub() as hub:
        if transport == "url":
            srv.add("/m.gguf", data)
            ref, faulty, run_env = srv.url + "/m.gguf", srv, fault_env
        elif transport == "hf":
            hub.add("org/m", Repo({"m.Q4_K_M.gguf": data}))
            ref, faulty, run_env = "hf://org/m", hub.cdn, dict(fault_env, HF_ENDPOINT=hub.url)
        else:
            ref, faulty, run_env = _oci_fake(srv, data), srv, fault_env
            srv.fault_match = "/blobs/"
        setup(faulty)
        r = subprocess.run(PY + ["--store", str(store), "pull", ref], capture_output=True, text=True,
                           env=run_env, timeout=120)
        faulty.stall = 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    bad = 0
    if expect == "ok":
        bad += r.returncode != 0 or blobs(store) != [hashlib.sha256(data).hexdigest()]
    else:
        bad += not (r.returncode == 1 and len(errors) == 1 and expect in errors[0])
        bad += blobs(store) != [] or (store / "repos").exists() and any(
            f for _d, _s, f in os.walk(store / "repos"))
    bad += "Traceback" in r.stderr or store_is_sound(store) != []
    record("faults x transports", 1, int(bad))
    assert not bad, (r.returncode, r.stderr[-1500:])


# -- hostile input --------------------------------------------------------------

def test_generated_references_only_fail_cleanly(tmp_path):
    from hypothesis import given, settings, strategies as st, HealthCheck
    store = ramalama.Store(str(tmp_path / "store"))
    alphabet = st.sampled_from(list("abcAB09:/@._-%?#~ \\\0") + ["..", "://", "hf://", "oci://", "ollama://",
                                                                 "file://", "sha256:", "https://", "\u00e9"])
    tried = [0]

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(alphabet, max_size=12).map("".join))
    def check(text):
        tried[0] += 1
        try:
            ref = ramalama.parse_ref(text)
            path = store.folder(ref)
        except ramalama.RamalamaError as e:
            assert "\n" not in str(e)
            return
        assert os.path.abspath(path).startswith(store.repos + os.sep)
        assert ramalama.parse_ref(str(ref)).folder() == ref.folder()
    check()
    record("hostile inputs", tried[0], 0, "generated references")


HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "a/../../b", "x\0y", "a" * 300, "d/.ref.json", "", "..",
                 "\\..\\..\\x"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_from_the_hub(cli, store, tmp_path, name):
    with FakeHub() as hub:
        repo = hub.add("org/evil", Repo({"ok.Q4_K_M.gguf": b"GGUF" + b"\0" * 64}))
        repo.files[name] = b"GGUF evil"
        r = cli("pull", "--all-files", "hf://org/evil", env_extra={"HF_ENDPOINT": hub.url})
    bad = (r.code == 0 or r.err.count("Error: ") != 1 or "Traceback" in r.err
           or os.path.exists("/etc/passwd.x"))
    bad = bad or (store / "repos" / "huggingface").exists()
    record("hostile inputs", 1, int(bad), "file names")
    assert not bad, r


@pytest.mark.parametrize("case", ["digest", "annotation", "huge manifest", "nesting bomb", "device in tar",
                                  "symlink out of tar", "hardlink out of tar", "absolute tar path"])
def test_hostile_registry_answers(cli, store, case):
    import io
    import tarfile
    from oci_layout import descriptor, tar_layer
    data = b"GGUF" + b"\0" * 100
    layers = [descriptor("application/vnd.cncf.model.weight.v1.raw", data,
                         {"org.cncf.model.filepath": "m.gguf"})]

    def tar_with(kind):
        def extra(tar):
            info = tarfile.TarInfo({"absolute tar path": "/etc/evil"}.get(kind, "evil"))
            if kind == "device in tar":
                info.type = tarfile.CHRTYPE
            elif kind == "symlink out of tar":
                info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
            elif kind == "hardlink out of tar":
                info.type, info.linkname = tarfile.LNKTYPE, "../../etc/passwd"
            tar.addfile(info, io.BytesIO(b"x" * info.size))
        return tar_layer({"ok": b"fine"}, extra=extra)
    with FileServer() as srv:
        blobs_served = {data}
        if case == "digest":
            layers[0]["digest"] = "sha256:../../../../etc/passwd"
        elif case == "annotation":
            layers[0]["annotations"]["org.cncf.model.filepath"] = "../../../tmp/evil-annotation"
        elif case.endswith("tar") or case == "absolute tar path":
            layer = tar_with(case)
            blobs_served = {layer}
            layers = [descriptor("application/vnd.cncf.model.weight.v1.tar", layer)]
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": descriptor("application/vnd.cncf.model.config.v1+json", b"{}"),
                    "layers": layers}
        raw = json.dumps(manifest).encode()
        if case == "huge manifest":
            raw = raw[:-1] + b', "pad": "' + b"x" * (5 << 20) + b'"}'
        elif case == "nesting bomb":
            raw = b"[" * 100000 + b"]" * 100000
        srv.add("/v2/m/x/manifests/1", raw, content_type="application/vnd.oci.image.manifest.v1+json")
        for blob in blobs_served:
            srv.add("/v2/m/x/blobs/sha256:" + hashlib.sha256(blob).hexdigest(), blob)
        r = cli("pull", "oci://127.0.0.1:%d/m/x:1" % srv.port)
    bad = r.code == 0 or r.err.count("Error: ") != 1 or "Traceback" in r.err
    bad = bad or os.path.exists("/tmp/evil-annotation") or (store / "repos").exists() and any(
        f for _d, _s, f in os.walk(store / "repos"))
    record("hostile inputs", 1, int(bad), "registry answers")
    assert not bad, r


def test_hostile_gguf_headers_in_inspect(cli, tmp_path):
    import struct
    cases = [b"GGUF" + struct.pack("<IQQ", 3, 2 ** 63, 0), b"GGUF" + struct.pack("<IQQ", 3, 0, 2 ** 63),
             b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2 ** 62) + b"k",
             b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k"
             + struct.pack("<IIQ", 9, 8, 2 ** 60),
             b"GGUF" + struct.pack("<I", 0xFFFFFFFF), b"GGUF"]
    bad = 0
    for i, data in enumerate(cases):
        f = tmp_path / ("h%d.gguf" % i)
        f.write_bytes(data + b"\0" * 32)
        assert cli("pull", "file://%s" % f).code == 0
        r = cli("inspect", "file://%s" % f)
        bad += r.code != 0 or "Traceback" in r.err or "Format:" not in r.out
    record("hostile inputs", len(cases), bad, "GGUF headers")
    assert bad == 0


# -- secrets ----------------------------------------------------------------------

def test_secrets_stay_out_of_logs_argv_and_cdn(tmp_path, env, model_file, llama_server):
    token = "hf_SECRET_token_1234567890"
    with FakeHub() as hub:
        hub.token = token
        hub.add("org/private", Repo({"p.Q4_K_M.gguf": model_file.read_bytes()}, private=True))
        run_env = dict(env, HF_ENDPOINT=hub.url, HF_TOKEN=token,
                       PATH=os.path.dirname(llama_server) + ":" + env["PATH"])
        store = tmp_path / "store"
        r = subprocess.run(PY + ["--store", str(store), "--debug", "pull", "hf://org/private"],
                           capture_output=True,
                           text=True, env=run_env)
        assert r.returncode == 0, r.stderr
        assert token not in r.stderr and token not in r.stdout
        assert all("authorization" not in q["headers"] for q in hub.cdn.requests)
        port = ramalama.free_port()
        proc = subprocess.Popen(PY + ["--store", str(store), "--nocontainer", "serve", "--port", str(port),
                                      "hf://org/private"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True,
                                env=run_env)
        try:
            proc.stderr.readline()                        # serving: the runtime runs
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            assert children
            for pid in children:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    assert token.encode() not in f.read()
                with open("/proc/%s/environ" % pid, "rb") as f:
                    assert token.encode() not in f.read()    # the runtime does not even inherit it
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        r = subprocess.run(PY + ["--store", str(tmp_path / "s2"), "pull", "hf://org/private"],
                           capture_output=True,
                           text=True, env=dict(run_env, HF_TOKEN="hf_wrong_" + "x" * 20))
        assert r.returncode == 1 and "hf_wrong" not in r.stderr
    record("secrets", 4, 0)


# -- a full disk ------------------------------------------------------------------

@pytest.mark.parametrize("size_mib", [12, 40])                    # one stream; parallel parts
def test_full_disk_is_one_clear_error(tmp_path, env, size_mib):
    mnt = tmp_path / "small"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0
    require("a tmpfs mount (root)", ok)
    try:
        data = payload(size_mib << 20)
        with FileServer() as srv:
            srv.add("/big.gguf", data)
            store = mnt / "store"
            r = subprocess.run(PY + ["--store", str(store), "pull", srv.url + "/big.gguf"],
                               capture_output=True,
                               text=True, env=env)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
        assert r.returncode == 1 and len(errors) == 1 and "No space left on device" in errors[0], r.stderr
        assert "Traceback" not in r.stderr
        assert blobs(store) == [] and store_is_sound(store) == []
        r = subprocess.run(PY + ["--store", str(store), "prune"], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and os.listdir(store / "tmp") == []
    finally:
        subprocess.run(["umount", str(mnt)])
    record("full disk", 1, 0)


# -- store layout versions ------------------------------------------------------------

def test_a_store_without_layout_version_is_read(cli, store, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    ref_file = store / "repos" / "file" / model_file.relative_to("/") / ".ref.json"
    meta = json.loads(ref_file.read_text())
    del meta["version"]
    ref_file.write_text(json.dumps(meta))
    r = cli("list", "--json")
    assert r.code == 0 and json.loads(r.out)[0]["name"] == "file://%s" % model_file
    assert cli("fsck").code == 0 and cli("inspect", "file://%s" % model_file).code == 0
    meta["version"] = 7
    ref_file.write_text(json.dumps(meta))
    r = cli("list")
    assert r.code == 1 and "newer ramalama.pyz (layout version 7)" in r.err
    record("layout versions", 2, 0)
