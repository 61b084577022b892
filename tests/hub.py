"""A fake Hugging Face Hub that follows the real protocol closely enough for a client:

  GET  /api/models/<repo>/revision/<rev>      {"id", "sha", "siblings": [{"rfilename"}]}
  GET  /api/models/<repo>/tree/<rev>?recursive=true[&cursor=N]
                                              pages of {"type", "path", "size", "oid", "lfs"},
                                              Link: <next>; rel="next"
  GET  /v2/<repo>/manifests/<tag>             llama.cpp's manifest: {"ggufFile": {rfilename, blobId, size}}
  HEAD/GET /<repo>/resolve/<rev>/<path>       LFS files: 302 to the CDN (a second server) with
                                              X-Repo-Commit, X-Linked-Etag, X-Linked-Size, ETag;
                                              small files: 200 with the git blob sha1 as ETag
Errors carry X-Error-Code / X-Error-Message (RepoNotFound, GatedRepo, RevisionNotFound,
EntryNotFound); gated and private repos need `Authorization: Bearer <token>`; `fail_next`
answers 429 with Retry-After. The CDN is a servers.FileServer: tests assert it never sees the
Authorization header.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse

from servers import FileServer

LFS_THRESHOLD = 1000        # bytes; bigger files (and every .gguf) are LFS files
PAGE = 2                    # tree entries per page, so pagination is always exercised


class Repo:
    def __init__(self, files: dict, commit: str = None, gated: bool = False, private: bool = False,
                 branches: dict = None):
        self.files = files
        self.commit = commit or hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
        self.gated, self.private = gated, private
        self.branches = {"main": self.commit, **(branches or {})}

    def is_lfs(self, path: str) -> bool:
        return path.endswith(".gguf") or len(self.files[path]) > LFS_THRESHOLD


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, token: str = "hf_test_token"):
        self.repos: dict = {}
        self.token = token
        self.requests: list = []
        self.fail_next: list = []
        self.cdn = FileServer()
        self._httpd = None
        self.public_url = self.cdn_url = None    # names clients see instead of 127.0.0.1 (a proxy test's)

    def __enter__(self):
        self.cdn.start()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                hub._handle(self, head=False)

            def do_HEAD(self):
                hub._handle(self, head=True)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
        self.cdn.stop()

    def add(self, name: str, repo: Repo) -> Repo:
        self.repos[name] = repo
        for path, data in repo.files.items():
            if repo.is_lfs(path):
                self.cdn.add("/repos/%s/%s" % (name, hashlib.sha256(data).hexdigest()), data)
        return repo

    # -- protocol
    def _send(self, h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, status, code, message, head):
        self._send(h, status, json.dumps({"error": message}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": message}, head)

    def _handle(self, h, head):
        split = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(split.path)
        auth = h.headers.get("Authorization")
        self.requests.append({"method": h.command, "path": path, "query": split.query,
                              "authorization": auth})
        if self.fail_next:
            status = self.fail_next.pop(0)
            return self._send(h, status, b'{"error":"slow down"}', {"Retry-After": "0"}, head)
        if path.startswith("/v2/") and "/manifests/" in path:
            return self._gguf_manifest(h, path, head)
        api = path.startswith("/api/models/")
        rest = path[len("/api/models/"):] if api else path[1:]
        parts = rest.split("/")
        name = "/".join(parts[:2])
        repo = self.repos.get(name)
        authorized = auth == "Bearer " + self.token
        if repo is None or (repo.private and not authorized):
            return self._error(h, 401, "RepoNotFound", "Repository not found", head)
        if repo.gated and not authorized:
            return self._error(h, 401 if not auth else 403, "GatedRepo",
                               "Access to model %s is restricted. You must have access to it and be "
                               "authenticated to access it. Please log in." % name, head)
        if len(parts) < 4:
            return self._error(h, 404, "EntryNotFound", "Not found", head)
        kind, rev = parts[2], parts[3]
        commit = repo.branches.get(rev) or (rev if rev == repo.commit else None)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", "Invalid rev id: %s" % rev, head)
        if api and kind == "revision":
            body = {"id": name, "sha": commit, "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            return self._send(h, 200, json.dumps(body).encode(), head=head)
        if api and kind == "tree":
            query = urllib.parse.parse_qs(split.query)
            cursor = int(query.get("cursor", ["0"])[0])
            dirs = sorted({"/".join(p.split("/")[:i]) for p in repo.files
                           for i in range(1, p.count("/") + 1)})
            entries = sorted([{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
                             + [self._entry(repo, p) for p in repo.files], key=lambda e: e["path"])
            page = entries[cursor:cursor + PAGE]
            headers = {}
            if cursor + PAGE < len(entries):
                nxt = "%s/api/models/%s/tree/%s?recursive=true&cursor=%d" % (
                    self.public_url or self.url, name, rev, cursor + PAGE)
                headers["Link"] = '<%s>; rel="next"' % nxt
            return self._send(h, 200, json.dumps(page).encode(), headers, head)
        if not api and kind == "resolve":
            file = "/".join(parts[4:])
            if file not in repo.files:
                return self._error(h, 404, "EntryNotFound", "Entry not found", head)
            data = repo.files[file]
            if repo.is_lfs(file):
                sha = hashlib.sha256(data).hexdigest()
                location = "%s/repos/%s/%s?X-Amz-Signature=abc" % (self.cdn_url or self.cdn.url, name, sha)
                return self._send(h, 302, b"", {"Location": location, "X-Repo-Commit": commit,
                                                "X-Linked-Etag": '"%s"' % sha,
                                                "X-Linked-Size": str(len(data)),
                                                "ETag": '"%s"' % git_blob_sha1(data)}, head)
            return self._send(h, 200, data, {"ETag": '"%s"' % git_blob_sha1(data), "X-Repo-Commit": commit,
                                             "Content-Type": "application/octet-stream"}, head)
        return self._error(h, 404, "EntryNotFound", "Not found", head)

    def _gguf_manifest(self, h, path, head):
        """The Hub's llama.cpp manifest (GET /v2/<repo>/manifests/<tag>, User-Agent llama-cpp):
        the GGUF that the tag (a quant, or latest: Q4_K_M, else the first) picks, by blob id."""
        name, _, tag = path[len("/v2/"):].partition("/manifests/")
        repo = self.repos.get(name)
        ggufs = sorted(p for p in (repo.files if repo else {}) if p.endswith(".gguf") and "mmproj" not in p)
        if not ggufs:
            return self._error(h, 404, "RepoNotFound", "Repository not found", head)
        want = "Q4_K_M" if tag == "latest" else tag.upper()
        pick = next((p for p in ggufs if want in p.upper()), ggufs[0])
        data = repo.files[pick]
        body = {"ggufFile": {"rfilename": pick, "blobId": "sha256:" + hashlib.sha256(data).hexdigest(),
                             "size": len(data)}}
        return self._send(h, 200, json.dumps(body).encode(), head=head)

    @staticmethod
    def _entry(repo: Repo, path: str) -> dict:
        data = repo.files[path]
        entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if repo.is_lfs(path):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry
