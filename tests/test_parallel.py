"""Parallel ranged downloads: parts on several connections, resume by parts, work stealing from
slow connections, expired CDN URLs, changed files, and a real registry."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, blobs
from servers import FileServer
from test_download import Recorder, payload

import ramalama


def downloader(tmp_path, connections=4, **kw):
    store = ramalama.Store(str(tmp_path / "s")).ensure()
    session = ramalama.HTTPSession(timeout=10, sleep=Recorder(), rand=lambda: 0.5)
    return store, ramalama.Downloader(session, store, None, connections=connections, part_min=256 << 10,
                                      steal_min=64 << 10, request_size=128 << 10, **kw)


def test_plan_parts():
    def plan(*a):
        return [p.saved() for p in ramalama.plan_parts(*a)]
    assert plan(100, 4, 10) == [[0, 25, 0], [25, 50, 0], [50, 75, 0], [75, 100, 0]]
    assert plan(15, 8, 10) == [[0, 15, 0]]
    assert plan(101, 3, 10) == [[0, 34, 0], [34, 68, 0], [68, 101, 0]]


def test_a_part_splits_only_what_nobody_asked_for():
    p = ramalama.Part(0, 100, 10)
    p.requested = 30                       # bytes 10-30 are in flight
    tail = p.split()
    assert (p.saved(), tail.saved()) == ([0, 65, 10], [65, 100, 0])
    with pytest.raises(ValueError):
        ramalama.Part.load([0, 200, 0], 100)
    with pytest.raises(ValueError):
        ramalama.Part.load([0, 50, 60], 100)


def test_stall_guard_gives_up_on_a_second_stall_without_flow_between():
    now = [0.0]
    guard = ramalama.StallGuard(30, clock=lambda: now[0])
    now[0] = 30
    assert not guard.stalled()
    now[0] = 61                            # silent again right after the retry
    assert guard.stalled()
    now[0] = 500                           # data flowed for minutes since: a fresh stall is retried
    assert not guard.stalled()


def test_parts_on_several_connections(tmp_path):
    data = payload(4 << 20)
    with FileServer() as srv:
        srv.add("/m", data)
        store, dl = downloader(tmp_path)
        got = dl.fetch(srv.url + "/m", "k", "m", digest="sha256:" + hashlib.sha256(data).hexdigest())
        starts = sorted(int(r["range"][6:].split("-")[0]) for r in srv.requests if r["range"] != "bytes=0-")
    assert got.size == len(data) and blobs(tmp_path / "s") == [hashlib.sha256(data).hexdigest()]
    assert {1 << 20, 2 << 20, 3 << 20} <= set(starts)   # the plan: 4 parts, the first on the probe's body
    assert [r["range"] for r in srv.requests].count("bytes=0-") == 1


def test_a_slow_connection_is_split(tmp_path):
    data = payload(4 << 20)
    with FileServer() as srv:
        srv.add("/m", data)
        srv.delay_per_chunk = 0.002
        srv.slow_start = 1 << 20                 # the part starting at 1 MiB crawls
        _, dl = downloader(tmp_path)
        got = dl.fetch(srv.url + "/m", "k", "m")
        starts = [int(r["range"][6:].split("-")[0]) for r in srv.requests if r["range"] != "bytes=0-"]
    assert got.hexdigest == hashlib.sha256(data).hexdigest()
    stolen = [s for s in starts if (1 << 20) < s < (2 << 20)]
    assert stolen, starts                          # idle connections took over the slow part's tail


def test_expired_cdn_url_is_resolved_again_without_credentials(tmp_path):
    data = payload(4 << 20)
    with FileServer() as origin, FileServer() as cdn:
        origin.add("/blob", data)
        cdn.add("/blob", data)
        origin.redirect = cdn.url
        origin.require_auth = "Bearer tok"
        cdn.delay_per_chunk = 0.02
        _, dl = downloader(tmp_path)
        import threading

        def expire():                      # the signature changes while the parts run
            time.sleep(0.1)
            origin.sig, cdn.valid_sig = "fresh", "fresh"
        threading.Thread(target=expire, daemon=True).start()
        got = dl.fetch(origin.url + "/blob", "k", "blob", auth="Bearer tok")
    assert got.hexdigest == hashlib.sha256(data).hexdigest()
    assert any(r["query"] == "sig=fresh" for r in cdn.requests)
    assert all("authorization" not in r["headers"] for r in cdn.requests)
    assert sum(1 for r in origin.requests if r["method"] == "GET") >= 2


def test_changed_file_under_a_resumed_parallel_download_starts_over(tmp_path):
    old, new = payload(4 << 20, seed=1), payload(4 << 20, seed=2)
    with FileServer() as srv:
        srv.add("/m", old)
        store, dl = downloader(tmp_path)
        dl.session.retries = 0
        srv.drop_after = None
        # a first, interrupted parallel run: plan, then fail every part after the probe
        srv.fail_next = []
        state_path = store.tmp_path("k.json")
        with open(store.tmp_path("k.partial"), "wb") as f:
            f.truncate(len(old))
        ramalama._write_json_atomic(state_path, {
            "url": srv.url + "/m", "validator": '"stale-etag"', "total": len(old), "resumed": False,
            "final_url": srv.url + "/m", "parts": [[0, 2 << 20, 1 << 20, 0], [2 << 20, 4 << 20, 0, 0]]})
        srv.add("/m", new)
        _, dl = downloader(tmp_path)
        got = dl.fetch(srv.url + "/m", "k", "m")
    assert got.hexdigest == hashlib.sha256(new).hexdigest()
    assert any(r["headers"].get("if-range") == '"stale-etag"' for r in srv.requests)


def test_killed_parallel_pull_resumes_every_part(tmp_path):
    """SIGKILL a real pull in the middle, then rerun: only the missing bytes move."""
    data = payload(40 << 20)                     # above 2 x the 16 MiB part minimum
    store = tmp_path / "store"
    with FileServer() as srv:
        srv.add("/m.gguf", data)
        srv.delay_per_chunk = 0.004
        cmd = [sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "pull", "--parallel", "2",
               srv.url + "/m.gguf"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        state = None
        deadline = time.time() + 60
        while time.time() < deadline:
            states = [f for f in os.listdir(store / "tmp")
                      if f.endswith(".json")] if (store / "tmp").exists() else []
            if states:
                try:
                    state = json.loads((store / "tmp" / states[0]).read_text())
                except ValueError:
                    state = None
                if state and sum(p[2] for p in state["parts"]) > len(data) // 3:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert state and len(state["parts"]) == 2
        sent_before = srv.bytes_sent
        srv.delay_per_chunk = 0
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        second = srv.bytes_sent - sent_before
    assert blobs(store) == [hashlib.sha256(data).hexdigest()]
    assert second <= len(data) * 0.70             # the saved progress was reused
    assert os.listdir(store / "tmp") == []


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import shutil
    from conftest import require
    from registry import RegistryServer
    require("docker-registry", shutil.which("docker-registry"))
    with RegistryServer(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def test_parallel_pull_from_a_real_registry(cli, store, registry, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(payload(40 << 20))
    ref = "oci://%s/parallel/big:1" % registry.host
    assert cli("-q", "push", "file://%s" % big, ref).code == 0
    assert cli("rm", "--all").code == 0
    r = cli("--debug", "pull", "--parallel", "4", ref)
    assert r.code == 0, r
    ranges = [line for line in r.err.splitlines() if line.startswith("debug: GET ") and "/blobs/" in line]
    assert len(ranges) >= 4                     # the probe carries part 1; one request per other part
    assert blobs(store) == [ramalama.sha256_file(str(big))]


def test_state_file_rewritten_in_place_stays_valid_json(tmp_path):
    path = str(tmp_path / "k.json")
    saved = ramalama._StateFile(path)
    long_state = {"parts": [[i, i + 1, 0] for i in range(50)]}
    saved.save(long_state)
    saved.save({"parts": [[0, 1, 1]]})                 # shorter: padded, not truncated
    assert json.loads(open(path).read()) == {"parts": [[0, 1, 1]]}
    huge = {"parts": [[i, i + 1, 0] for i in range(1000)]}   # over a page: replaced by a rename
    saved.save(huge)
    saved.save({"parts": []})
    saved.close()
    assert json.loads(open(path).read()) == {"parts": []}
