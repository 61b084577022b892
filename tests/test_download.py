"""HTTP session and downloader against real local servers: resume, Range trust, retries,
redirects that drop credentials, digest checks, interrupts."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, blobs
from servers import FileServer

import ramalama


def payload(n=3 << 20, seed=1):
    """Incompressible test bytes (several MiB so that a download spans many reads)."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


class Recorder:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


def session(**kw):
    kw.setdefault("sleep", Recorder())
    kw.setdefault("rand", lambda: 0.5)
    return ramalama.HTTPSession(timeout=10, **kw)


def fetch(tmp_path, url, digest=None, **kw):
    store = ramalama.Store(str(tmp_path / "s")).ensure()
    got = ramalama.Downloader(session(**kw), store).fetch(url, "k", "m.gguf", digest=digest)
    return store, got


def test_dropped_connection_resumes_with_range(tmp_path):
    data = payload()
    with FileServer() as srv:
        srv.add("/m", data)
        srv.drop_after = len(data) // 3
        store, got = fetch(tmp_path, srv.url + "/m")
        ranges = [r["range"] for r in srv.requests]
    assert got.hexdigest == hashlib.sha256(data).hexdigest() and got.size == len(data)
    assert ranges[0] is None and ranges[1] == "bytes=%d-" % (len(data) // 3)
    assert srv.bytes_sent == len(data)                     # nothing fetched twice
    assert got.validator and not os.path.exists(store.tmp_path("k.json"))


def test_server_ignoring_range_means_start_over(tmp_path):
    data = payload()
    with FileServer() as srv:
        srv.add("/m", data)
        srv.drop_after = 1 << 20
        srv.ignore_range = True
        _, got = fetch(tmp_path, srv.url + "/m")
    assert got.hexdigest == hashlib.sha256(data).hexdigest()
    assert srv.bytes_sent == len(data) + (1 << 20)


def test_wrong_content_range_is_not_trusted(tmp_path, monkeypatch):
    data = payload()
    with FileServer() as srv:
        srv.add("/m", data)
        srv.drop_after = 1 << 20
        orig = srv._handle

        def lie(h, head):                       # shift the announced range by one byte
            if h.headers.get("Range"):
                h.headers.replace_header("Range", "bytes=%d-" % ((1 << 20) + 1))
            return orig(h, head)
        srv._handle = lie
        _, got = fetch(tmp_path, srv.url + "/m")
    assert got.hexdigest == hashlib.sha256(data).hexdigest()
    assert [r["range"] for r in srv.requests][-1] is None   # the rest came from a fresh start


def test_changed_content_restarts_via_if_range(tmp_path):
    old, new = payload(seed=1), payload(seed=2)
    with FileServer() as srv:
        srv.add("/m", old)
        srv.drop_after = 1 << 20
        srv.delay_per_chunk = 0
        store = ramalama.Store(str(tmp_path / "s")).ensure()
        sess = session(retries=0)
        with pytest.raises(ramalama.NetworkError):
            ramalama.Downloader(sess, store).fetch(srv.url + "/m", "k", "m")
        assert os.path.getsize(store.tmp_path("k.partial")) == 1 << 20     # kept for resume
        srv.add("/m", new)                                                  # new ETag
        got = ramalama.Downloader(session(), store).fetch(srv.url + "/m", "k", "m")
        last = srv.requests[-1]
    assert last["headers"]["if-range"] and last["range"] == "bytes=%d-" % (1 << 20)
    assert got.hexdigest == hashlib.sha256(new).hexdigest()


def test_retries_transient_statuses_with_backoff(tmp_path):
    data = payload(1 << 16)
    with FileServer() as srv:
        srv.add("/m", data)
        srv.fail_next = [503, 500, 429]
        rec = Recorder()
        _, got = fetch(tmp_path, srv.url + "/m", sleep=rec)
    assert got.size == len(data)
    assert rec.delays == [0.0, 1.0, 0.0]          # Retry-After: 0 where sent, else 2**n/2 * (0.5+0.5)


def test_gives_up_with_one_line(tmp_path):
    with FileServer() as srv:
        srv.add("/m", b"x")
        srv.fail_next = [503] * 10
        with pytest.raises(ramalama.HTTPStatusError) as e:
            fetch(tmp_path, srv.url + "/m", retries=2)
    assert e.value.status == 503 and "\n" not in str(e.value)


def test_redirect_to_cdn_drops_credentials(tmp_path):
    data = payload(1 << 18)
    with FileServer() as origin, FileServer() as cdn:
        origin.add("/blob", data)
        cdn.add("/blob", data)
        origin.redirect = cdn.url
        origin.require_auth = "Bearer secret-token"
        resp = session().request("GET", origin.url + "/blob", auth="Bearer secret-token")
        body = resp.read()
        head = session().request("HEAD", origin.url + "/blob", auth="Bearer secret-token")
    assert body == data and resp.url.startswith(cdn.url) and "sig=abc" in resp.url
    assert head.status == 200 and [r["method"] for r in cdn.requests] == ["GET", "HEAD"]   # HEAD stays HEAD
    assert all(r["headers"].get("authorization") == "Bearer secret-token" for r in origin.requests)
    assert all("authorization" not in r["headers"] for r in cdn.requests)


def test_redirect_loop_is_an_error(tmp_path):
    with FileServer() as a:
        a.add("/m", b"x")
        a.redirect = a.url
        with pytest.raises(ramalama.NetworkError, match="too many redirects"):
            session().request("GET", a.url + "/m")


def test_digest_mismatch_publishes_nothing(tmp_path):
    data = payload(1 << 16)
    with FileServer() as srv:
        srv.add("/m", data)
        with pytest.raises(ramalama.DigestMismatch, match="expected sha256:" + "0" * 64):
            fetch(tmp_path, srv.url + "/m", digest="sha256:" + "0" * 64)
    store = tmp_path / "s"
    assert blobs(store) == [] and os.listdir(store / "tmp") == []


def test_keepalive_connections_are_reused(tmp_path):
    with FileServer() as srv:
        for i in range(5):
            srv.add("/f%d" % i, payload(1000, seed=i))
        s = session()
        for i in range(5):
            s.request("GET", srv.url + "/f%d" % i).read()
        assert len(s._pool[("http", "127.0.0.1", srv.port)]) == 1


def test_cli_errors_are_one_line(cli, store):
    with FileServer() as srv:
        r = cli("pull", srv.url + "/missing.gguf")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("Error: %s/missing.gguf: HTTP 404 not found" % srv.url) and r.err.count("\n") == 1
    r = cli("pull", "http://127.0.0.1:9/refused.gguf")
    assert r.code == 1 and r.err.startswith("Error: http://127.0.0.1:9/refused.gguf: ")
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert blobs(store) == []


def test_repull_with_same_etag_transfers_nothing(cli, store):
    data = payload(1 << 20)
    with FileServer() as srv:
        srv.add("/m.gguf", data)
        assert cli("pull", srv.url + "/m.gguf").code == 0
        before = srv.bytes_sent
        r = cli("pull", srv.url + "/m.gguf")
        assert r.code == 0 and "up to date" in r.err
        assert srv.bytes_sent == before and srv.requests[-1]["method"] == "HEAD"


def _pull_proc(store, url, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(ROOT / "ramalama.py"), "--store", str(store), "pull", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_partial(store, at_least, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        parts = [f for f in os.listdir(store / "tmp")
                 if f.endswith(".partial")] if (store / "tmp").exists() else []
        if parts and os.path.getsize(store / "tmp" / parts[0]) >= at_least:
            return store / "tmp" / parts[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("download did not progress")


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_interrupted_pull_resumes_in_the_next_run(tmp_path, sig, code):
    data = payload(4 << 20)
    store = tmp_path / "store"
    with FileServer() as srv:
        srv.add("/m.gguf", data)
        srv.delay_per_chunk = 0.01                  # ~6 MiB/s: slow enough to interrupt
        proc = _pull_proc(store, srv.url + "/m.gguf")
        partial = _wait_for_partial(store, 1 << 20, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        if sig == signal.SIGINT:
            assert err.strip().splitlines()[-1] == "Interrupted" and "Traceback" not in err
        assert blobs(store) == [] and not (store / "repos" / "http").exists()
        have = os.path.getsize(partial)
        srv.delay_per_chunk = 0
        proc = _pull_proc(store, srv.url + "/m.gguf")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        last = srv.requests[-1]
    assert last["range"] == "bytes=%d-" % have
    assert last["sent"] == len(data) - have                         # only the missing bytes
    assert blobs(store) == [hashlib.sha256(data).hexdigest()]
    assert os.listdir(store / "tmp") == []


def test_truncated_chunked_body_is_never_published(tmp_path):
    """A body without Content-Length that ends in a dropped connection is incomplete."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n" + b"x" * 30000)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ramalama.NetworkError, match="connection keeps dropping at .* of an unknown size"):
            fetch(tmp_path, "http://127.0.0.1:%d/m.gguf" % srv.getsockname()[1], retries=1)
    finally:
        srv.close()
    assert blobs(tmp_path / "s") == []


@pytest.mark.parametrize("url, fragment", [
    ("http://127.0.0.1:99999/m.gguf", "unsupported URL http://127.0.0.1:99999/m.gguf"),
    ("http://127.0.0.1:abc/m.gguf", "unsupported URL"),
    ("http://h/.ref.json/m.gguf", "reserved path component"),
])
def test_bad_urls_are_one_line(cli, store, url, fragment):
    r = cli("pull", url)
    assert r.code in (1, 2) and r.err.count("\n") == 1 and fragment in r.err, r


def test_two_processes_pull_the_same_url(tmp_path):
    data = payload(2 << 20)
    store = tmp_path / "store"
    with FileServer() as srv:
        srv.add("/m.gguf", data)
        srv.delay_per_chunk = 0.005
        procs = [_pull_proc(store, srv.url + "/m.gguf") for _ in range(2)]
        results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    assert blobs(store) == [hashlib.sha256(data).hexdigest()]
    assert os.listdir(store / "tmp") == []
    assert srv.bytes_sent == len(data)          # the second waited, then found the model up to date
