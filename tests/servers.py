"""Fake HTTP servers for tests (stdlib only).

``FileServer`` serves registered byte strings over HTTP/1.1 with the
behaviour a resumable, verifying downloader has to cope with: validators
(ETag, Last-Modified), byte ranges, If-Range, redirects to a signed CDN URL,
bearer auth, transient failures, dropped connections and slow transfers.
A "CDN" is simply a second FileServer that the first one redirects to.

    with FileServer() as origin, FileServer() as cdn:
        origin.add("/blobs/x", data)
        cdn.add("/blobs/x", data)
        origin.redirect = cdn.url
        ...
        assert all("authorization" not in r["headers"] for r in cdn.requests)

Knobs are plain attributes and may be changed at any time:
    drop_after      int | None   next GET: full headers, then close after N body bytes
    ignore_range    bool         ignore Range and always answer 200 with everything
    fail_next       list[int]    answer these statuses first, one request each
    redirect        str | None   302 registered paths to redirect + path + "?sig=" + sig
    sig             str          the signature redirects carry (default "abc")
    valid_sig       str | None   when set, requests whose ?sig= differs get 403 (an expired URL)
    require_auth    str | None   401 unless Authorization equals this exact value
    challenge       str          the WWW-Authenticate value sent with that 401
    delay_per_chunk float        seconds to sleep between 64 KiB body chunks
    slow_start      int | None   ranged requests starting at this offset get 20x the delay
    rate            float | None bytes per second per connection (a token bucket), e.g. 20e6
    stall_after     int | None   next GET: send this many body bytes, then go silent for `stall` s
    stall_half      bool         every GET: send half of its body, then go silent for `stall` s
    bad_range       bool         answer ranged requests with a Content-Range one byte off
    fault_match     str | None   fail_next, drop_after and stall_after apply only to paths containing it
    corrupt         bool         flip the first byte of every body served (bytes that fail their digest)
    error_body      bytes | None the body of every error answer (default: the status number)

Checks run in this order: fail_next, require_auth, 404, redirect, content.
drop_after is consumed by the next GET that sends content (not by errors).

Observations: ``requests`` holds one dict per request (method, path without
query, query, headers with lower-case keys, range = Range header or None,
sent = content body bytes written for it);
``bytes_sent`` counts content body bytes written (error bodies excluded).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import socket
import threading
import time
import urllib.parse

CHUNK = 64 * 1024


class _Resource:
    def __init__(self, data: bytes, etag: str, content_type: str, headers: dict):
        self.data = data
        self.etag = etag
        self.last_modified = email.utils.formatdate(int(time.time()), usegmt=True)
        self.content_type = content_type
        self.headers = headers


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "FileServer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Otherwise a stopped server keeps answering on kept-alive connections.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # Clients hanging up mid-transfer is expected here; keep stderr clean.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections otherwise pin handler threads forever.
    timeout = 30

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.owner._handle(self, head=False)

    def do_HEAD(self):
        self.server.owner._handle(self, head=True)


def _parse_range(value: str, size: int):
    """Return (start, end) inclusive, "unsatisfiable", or None to ignore.

    Only a single range is supported; anything else is ignored, which RFC 9110
    allows (the server then sends the whole representation)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":  # suffix range: the final N bytes
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if last and end < start:
        return None  # syntactically invalid
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class FileServer:
    """Threaded HTTP/1.1 server on 127.0.0.1 with an ephemeral port."""

    def __init__(self):
        self._files: dict[str, _Resource] = {}
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self.port = 0                  # kept after stop() so tests can still name the URL
        self._thread: threading.Thread | None = None
        self.requests: list[dict] = []
        self.bytes_sent = 0
        self.drop_after: int | None = None
        self.ignore_range = False
        self.fail_next: list[int] = []
        self.redirect: str | None = None
        self.require_auth: str | None = None
        self.challenge = 'Bearer realm="x"'
        self.delay_per_chunk = 0.0
        self.sig = "abc"
        self.valid_sig: str | None = None
        self.slow_start: int | None = None
        self.rate: float | None = None
        self.stall_after: int | None = None
        self.stall_half = False
        self.stall = 30.0
        self.bad_range = False
        self.fault_match: str | None = None
        self.corrupt = False
        self.error_body: bytes | None = None
        self.active = self.max_active = 0     # requests being answered now, and the most at once

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "FileServer":
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FileServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_connections()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- content -----------------------------------------------------------

    def add(self, path: str, data: bytes, *, etag: str | None = None,
            content_type: str = "application/octet-stream",
            headers: dict | None = None) -> str:
        """Serve ``data`` at ``path`` (query strings are ignored when matching).

        etag defaults to the quoted sha256 hex of data; an unquoted value is
        quoted.  headers are extra response headers (e.g. a digest header).
        Returns the full URL."""
        if etag is None:
            etag = '"%s"' % hashlib.sha256(data).hexdigest()
        elif not etag.startswith(('"', 'W/"')):
            etag = f'"{etag}"'
        with self._lock:
            self._files[urllib.parse.unquote(path)] = _Resource(
                bytes(data), etag, content_type, dict(headers or {}))
        return self.url + path

    def remove(self, path: str) -> None:
        with self._lock:
            self._files.pop(urllib.parse.unquote(path), None)

    # -- request handling --------------------------------------------------

    def _handle(self, h: _Handler, head: bool) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self._respond(h, head)
        finally:
            with self._lock:
                self.active -= 1

    def _respond(self, h: _Handler, head: bool) -> None:
        split = urllib.parse.urlsplit(h.path)
        path = split.path
        headers = {k.lower(): v for k, v in h.headers.items()}
        record = {"method": h.command, "path": path, "query": split.query,
                  "headers": headers, "range": headers.get("range"), "sent": 0}
        with self._lock:
            self.requests.append(record)
            faulty = self.fault_match is None or self.fault_match in path
            status = self.fail_next.pop(0) if self.fail_next and faulty else None
            res = self._files.get(urllib.parse.unquote(path))

        if status is not None:
            extra = {"Retry-After": "0"} if status in (429, 503) else {}
            return self._simple(h, status, head, extra)
        if self.require_auth is not None and headers.get("authorization") != self.require_auth:
            return self._simple(h, 401, head, {"WWW-Authenticate": self.challenge})
        if res is None:
            return self._simple(h, 404, head)
        if self.valid_sig is not None and urllib.parse.parse_qs(split.query).get("sig") != [self.valid_sig]:
            return self._simple(h, 403, head)
        if self.redirect:
            location = self.redirect.rstrip("/") + path + "?sig=" + self.sig
            return self._simple(h, 302, head, {"Location": location})

        size = len(res.data)
        rng = None
        if "range" in headers and not self.ignore_range:
            rng = _parse_range(headers["range"], size)
            if_range = headers.get("if-range")
            if if_range is not None and if_range not in (res.etag, res.last_modified):
                rng = None  # representation changed: send it whole
        if rng == "unsatisfiable":
            return self._simple(h, 416, head, {"Content-Range": f"bytes */{size}"})

        if rng is None:
            start, end, status = 0, size - 1, 200
        else:
            (start, end), status = rng, 206
        h.send_response(status)
        h.send_header("Content-Type", res.content_type)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("ETag", res.etag)
        h.send_header("Last-Modified", res.last_modified)
        h.send_header("Accept-Ranges", "bytes")
        if status == 206:
            shift = 1 if self.bad_range and start + 1 <= end else 0
            h.send_header("Content-Range", f"bytes {start + shift}-{end}/{size}")
        for k, v in res.headers.items():
            h.send_header(k, v)
        h.end_headers()
        if head:
            return

        with self._lock:
            limit, stall = None, None
            if faulty:
                limit, self.drop_after = self.drop_after, None
                stall, self.stall_after = self.stall_after, None
                if self.stall_half:
                    stall = (end + 1 - start) // 2
        body = memoryview(res.data)[start:end + 1]
        if self.corrupt and faulty and len(body):
            body = memoryview(bytes([body[0] ^ 0xFF]) + bytes(body[1:]))
        if limit is not None:
            body = body[:limit]
        delay = self.delay_per_chunk * (20 if rng is not None and start == self.slow_start else 1)
        t0 = time.monotonic()
        try:
            for off in range(0, len(body), CHUNK):
                if off and delay:
                    time.sleep(delay)
                if stall is not None and off >= stall:
                    time.sleep(self.stall)       # the connection stays open, nothing arrives
                    stall = None
                if self.rate:                   # never ahead of rate x elapsed on this connection
                    ahead = off / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                chunk = body[off:off + CHUNK]
                h.wfile.write(chunk)
                with self._lock:
                    self.bytes_sent += len(chunk)
                    record["sent"] += len(chunk)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
            return
        if limit is not None:
            # Fewer bytes than Content-Length promised: the client must see EOF.
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _simple(self, h: _Handler, status: int, head: bool, extra: dict | None = None) -> None:
        body = b"" if status in (204, 304) else (self.error_body or f"{status}\n".encode())
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if not head and body:
            h.wfile.write(body)
