"""Terminal-safe output: names, annotations, GGUF metadata, Hub file names and server error
bodies that carry control characters (0x00-0x1f, 0x7f) reach the terminal escaped, in errors,
progress, list, inspect, info and ps; every error stays one line; JSON stays exact JSON."""
import hashlib
import json

import pytest

from conftest import record, write_tiny_llama
from hub import FakeHub, Repo
from servers import FileServer
from test_oci import fake_registry

CONTROLS = [chr(c) for c in list(range(0x20)) + [0x7f]]
NAMED = [c for c in CONTROLS if c not in ("\0", "/")]         # what a file name can hold


def raw_controls(text: str) -> list:
    """Control characters in output, other than the line breaks that end its lines."""
    return sorted({"%02x" % ord(c) for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) < 0xa0})


def check(r, tally, one_error_line=False, prose=False):
    """prose: a model's reply on stdout, where tabs stay (code has them; they move no cursor)."""
    bad = [c for c in raw_controls(r.out) if not (prose and c == "09")] + raw_controls(r.err)
    if one_error_line:
        lines = r.err.strip("\n").split("\n")
        bad += [] if len(lines) == 1 and lines[0].startswith("Error: ") else ["%d error lines" % len(lines)]
    tally.append(bool(bad))
    assert not bad, r
    return r


@pytest.fixture
def tally():
    outcomes = []
    yield outcomes
    record("hostile output", len(outcomes), sum(outcomes), "0x00-0x1f and 0x7f; 0 raw control bytes allowed")


@pytest.mark.parametrize("c", CONTROLS, ids=lambda c: "%02x" % ord(c))
def test_a_missing_file_name_is_one_escaped_line(cli, c, tally):
    name = "file:///nonexistent/%s\x1b]0;pwned\x07%s.gguf\nFAKE: injected line" % (c, c)
    r = check(cli("pull", name), tally, one_error_line=True)
    assert r.code != 0
    if c != "\0":                               # a NUL is refused before the name is shown
        assert "\\x1b]0;pwned\\x07" in r.err and "\\nFAKE: injected line" in r.err


@pytest.mark.parametrize("c", NAMED, ids=lambda c: "%02x" % ord(c))
def test_a_model_named_with_control_characters(cli, tmp_path, tiny_gguf, c, tally):
    path = tmp_path / ("a%sb\x1b[31mred\nFAKE: line.gguf" % c)
    path.write_bytes(tiny_gguf.read_bytes())
    ref = "file://%s" % path
    check(cli("pull", ref), tally)
    listed = check(cli("list"), tally)
    assert len(listed.out.strip().splitlines()) == 2          # the header and one model: no forged line
    check(cli("list", "--format", "{{.Name}} {{.Size}}"), tally)
    names = [m["name"] for m in json.loads(check(cli("list", "--json"), tally).out)]
    assert names == [ref]                                      # JSON keeps the exact value
    check(cli("inspect", ref), tally)
    assert json.loads(check(cli("inspect", "--json", ref), tally).out)["name"] == ref
    check(cli("--dryrun", "--nocontainer", "serve", ref), tally)
    check(cli("rm", ref), tally)


def test_gguf_metadata_with_every_control_character(cli, tmp_path, tally):
    every = "".join(CONTROLS)
    path = tmp_path / "meta.gguf"
    write_tiny_llama(str(path),
                     extra_kv={"general.name": "evil" + every, "tokenizer.chat_template": every * 3,
                                          "general.description" + every: every})
    ref = "file://%s" % path
    check(cli("pull", ref), tally)
    text = check(cli("inspect", ref), tally).out
    assert "\\x1b" in text and "\\x7f" in text
    check(cli("inspect", "--all", ref), tally)
    meta = json.loads(check(cli("inspect", "--all", "--json", ref), tally).out)["metadata"]
    assert meta["general.name"] == "evil" + every                 # exact in JSON
    check(cli("info"), tally)


@pytest.mark.parametrize("c", CONTROLS, ids=lambda c: "%02x" % ord(c))
def test_server_error_bodies_are_escaped(cli, c, tally):
    with FileServer() as srv:
        srv.error_body = ("no such\x1b]0;pwned\x07 file %s here\r\nFAKE: line" % c).encode()
        r = check(cli("pull", srv.url + "/missing.gguf"), tally, one_error_line=True)
    assert "HTTP 404" in r.err


def test_registry_errors_and_annotations_are_escaped(cli, tiny_gguf, tally):
    every = "".join(CONTROLS)
    with FileServer() as origin, FileServer() as tokens:
        fake_registry(origin, tokens, tiny_gguf.read_bytes())
        origin.require_auth = None
        body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN" + every, "message": "gone"
                                       + every}]}).encode()
        origin.error_body = body
        check(cli("pull", "oci://127.0.0.1:%d/m/nothing:1" % origin.port), tally, one_error_line=True)
        # an annotation that names the file with control characters
        manifest = json.loads(origin._files["/v2/m/tiny/manifests/1"].data)
        manifest["layers"][0]["annotations"]["org.cncf.model.filepath"] = "m%s.gguf" % every[1:]
        raw = json.dumps(manifest).encode()
        origin.add("/v2/m/tiny/manifests/2", raw, content_type=manifest["mediaType"],
                   headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(raw).hexdigest()})
        check(cli("pull", "oci://127.0.0.1:%d/m/tiny:2" % origin.port), tally)
        check(cli("list"), tally)


def test_hub_file_names_are_escaped(cli, env, tiny_gguf, tally):
    with FakeHub() as hub:
        hub.add("org/evil-GGUF", Repo({"m\x1b]0;pwned\x07-Q8_0.gguf": tiny_gguf.read_bytes(),
                                       "x\x1b[2J.gguf": b"not used"}))
        check(cli("pull", "hf://org/evil-GGUF", env_extra={"HF_ENDPOINT": hub.url}), tally)
        check(cli("list"), tally)
        check(cli("pull", "hf://org/evil-GGUF/x\x1b[2J.gguf", env_extra={"HF_ENDPOINT": hub.url}), tally)


class HostileAPI:
    """An OpenAI-compatible server whose model names, streamed tokens and error messages carry
    every control character."""

    def __init__(self, evil: str):
        import http.server
        import threading
        ids = json.dumps({"data": [{"id": "m%s\x1b[2Jx" % evil, "owned_by": "o\x07%s" % evil}]}).encode()
        tokens = b"".join(b"data: "
                          + json.dumps({"choices": [{"delta": {"content": "t%s\x1b]0;pwned\x07" % evil}}]})
                          .encode() + b"\n\n" for _ in range(3)) + b"data: [DONE]\n\n"
        error = json.dumps({"error": {"message": "no %s\x1b[31m\nFAKE: line" % evil}}).encode()
        whole = json.dumps({"choices": [{"message": {"content": "w%s\x1b]0;pwned\x07" % evil}}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def answer(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.answer(200, ids)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if request.get("model") == "missing":
                    return self.answer(404, error)
                if request.get("model") == "whole":               # a server that does not stream
                    return self.answer(200, whole)
                self.answer(200, tokens, "text/event-stream")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v1" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("c", CONTROLS, ids=lambda c: "%02x" % ord(c))
def test_what_a_model_server_says_is_escaped(cli, c, tally):
    api = HostileAPI(c)
    try:
        r = check(cli("chat", "--url", api.url, "hi"), tally, prose=True)
        assert r.code == 0 and "\\x1b]0;pwned\\x07" in r.out
        r = check(cli("chat", "--url", api.url, "--model", "whole", "hi"), tally, prose=True)
        assert r.code == 0 and r.out.startswith("w") and "\\x1b]0;pwned\\x07" in r.out
        check(cli("models", "--url", api.url), tally)
        check(cli("chat", "--url", api.url, "--list"), tally)
        r = check(cli("chat", "--url", api.url, "--model", "missing", "hi"), tally, one_error_line=True)
        assert r.code == 1 and "\\nFAKE: line" not in r.err        # folded into one line
        models = json.loads(check(cli("models", "--url", api.url, "--json"), tally).out)
        assert models == ["m%s\x1b[2Jx" % c]                       # JSON keeps the exact value
    finally:
        api.close()
