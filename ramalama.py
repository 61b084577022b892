"""ramalama.pyz: pull AI models into one content-addressed store and run them.

One file, standard library only at run time (tomli is vendored for Python < 3.11).
The module reads top to bottom in data-flow order:

  1. compat        tomllib or tomli, loaded only when a config file exists
  2. constants     version, default hosts, sizes
  3. errors        RamalamaError and its kinds; each carries its exit code
  4. helpers       pure functions: digests, sizes, ages, Content-Range, backoff, safe names
  5. references    "ollama://x", "hf://o/r:Q4", "oci://reg/n:t", "file:///p", URLs -> Ref
  6. config        ramalama.conf layers merged into one dict; shortnames
  7. http          HTTPSession: pooled http.client, manual redirects, retries
  8. download      Downloader: resumable, hashing, verified stream into the store's tmp/
  9. store         Store: blobs/sha256/<hex> once each, repos/... folders of hardlinks
 10. registries    credentials, auth challenges, the OCI client, model formats in OCI
 11. transports    Services; file://, http(s)://, oci:// pulls and pushes, ramalama's raw and
                   car images, OCI layouts; a scheme -> function table
 12. gguf          header reader for `inspect`
 13. launchers     engines, image digests, GPUs, argv builders, the OpenAI API client,
                   deployment files, servers and tools (llama-bench, RPC workers) run to their end
 14. output        progress bars and lines, tables
 15. cli           @command: each command's flags, examples and handler together; main()

Store layout (root: --store, RAMALAMA_STORE, config `store`, else
~/.local/share/ramalama or /var/lib/ramalama for root):

  blobs/sha256/<hex>              every file once, mode 0444, name = verified sha256
  repos/<transport>/<path>/<tag>/ one folder per model: hardlinks to blobs + .ref.json
  tmp/                            downloads in progress and folders being built
  locks/                          flock files: store.lock, one per download
  listing.json                    what `list` last read, with stamps: checked on every use

Environment: RAMALAMA_CONFIG, and RAMALAMA_<KEY> / RAMALAMA_<TABLE>__<KEY> for every config key
(RAMALAMA_STORE, RAMALAMA_PORT, RAMALAMA_RUNTIMES__LLAMA_CPP__NGL, ...); HTTPS_PROXY, HTTP_PROXY,
ALL_PROXY, NO_PROXY; CUDA_VISIBLE_DEVICES and the other GPU selection variables; XDG_CONFIG_HOME,
XDG_DATA_HOME.

Modules are imported where they are used, not at the top: `--help` loads only what argparse needs.

Sections 11 to 13 are given a Services object (the CLI's Context is one): the store, HTTP sessions,
registry clients, downloads and messages, and the CLI's decisions as typed Choices. They never
read flags or config themselves.

Exit codes: 0 success, 1 failure (network, registry, store, digest), 2 usage
(bad arguments, bad model name, bad config), 128 + the signal when stopped (130 Ctrl-C,
143 SIGTERM, 129 SIGHUP).
"""
from __future__ import annotations

import errno
import os
import sys
import time

__version__ = "0.1.0"


# ---------------------------------------------------------------------------
# 1. compat
# ---------------------------------------------------------------------------

def _toml_loads(text: str) -> dict:
    """Parse TOML with tomllib (3.11+), an installed tomli, or the vendored copy."""
    try:
        import tomllib as toml  # novm: guarded, 3.11+
    except ImportError:
        try:
            import tomli as toml
        except ImportError:
            # Next to this file, inside the zipapp too: zipimport accepts "x.pyz/.../vendor".
            sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor"))
            import tomli as toml
    return toml.loads(text)


# ---------------------------------------------------------------------------
# 2. constants
# ---------------------------------------------------------------------------

DEFAULT_TRANSPORT = "ollama"
OLLAMA_HOST = "registry.ollama.ai"
DOCKER_HUB = "docker.io"
CHUNK = 1 << 20                  # read buffer for downloads and hashing
CONNECTIONS = 8                  # default connections per download (--parallel, [ramalama.download])
PART_MIN = 16 << 20              # blobs below 2 parts of this size come in one stream
STEAL_MIN = 4 << 20              # an idle connection takes half of a part with at least 2x this unrequested
REQUEST_SIZE = 4 << 20           # bytes a part asks for at a time: the most a slow connection holds back
HOST_CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
REF_FILE = ".ref.json"           # a model folder's commit point
REF_VERSION = 1                  # layout version written into every .ref.json
MAX_REDIRECTS = 10
USER_AGENT = "ramalama.pyz/" + __version__


# ---------------------------------------------------------------------------
# 3. errors
# ---------------------------------------------------------------------------

class RamalamaError(Exception):
    """A failure the user should see as one line; exit_code is what main() returns."""
    exit_code = 1


class Signalled(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT. It unwinds like Ctrl-C, so servers, containers and downloads
    are cleaned up on the way out; main() then exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class UsageError(RamalamaError):
    """Bad arguments or an unparseable model name."""
    exit_code = 2


class ConfigError(UsageError):
    """A config file that does not parse or has a wrong value."""


class NotFound(RamalamaError):
    """A model that is not in the store, or a remote object that does not exist."""


class NetworkError(RamalamaError):
    """Connection failures, timeouts, retries exhausted."""


class HTTPStatusError(NetworkError):
    """A server answered with an error status."""

    def __init__(self, message: str, status: int, code: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code          # X-Error-Code (Hugging Face) or the first registry error code


class Stalled(NetworkError):
    """A server that keeps sending nothing: the download stops, resumable."""


class DigestMismatch(RamalamaError):
    """Bytes that do not hash to what they were announced as."""


class StoreError(RamalamaError):
    """A store that is damaged, locked or not writable."""


class FormatError(RamalamaError):
    """A file that is not what it claims to be (e.g. a broken GGUF header)."""


# ---------------------------------------------------------------------------
# 4. helpers (pure)
# ---------------------------------------------------------------------------

def namedtuple(name: str, fields: str, defaults: tuple = ()):
    """collections.namedtuple's tuples with named fields, _replace and _asdict, made without
    its compile step, which costs more than the rest of this module's start-up."""
    from operator import itemgetter
    names = tuple(fields.split())
    required = len(names) - len(defaults)

    def __new__(cls, *args, **kwargs):
        values = list(args)
        for field in names[len(args):]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif len(values) >= required:
                values.append(defaults[len(values) - required])
            else:
                raise TypeError("%s() needs %s" % (name, field))
        if kwargs or len(values) > len(names):
            raise TypeError("%s() takes %s" % (name, ", ".join(names)))
        return tuple.__new__(cls, values)

    def _replace(self, **changes):
        values = [changes.pop(f, v) for f, v in zip(names, self)]
        if changes:
            raise ValueError("%s has no field %s" % (name, ", ".join(changes)))
        return type(self)(*values)

    body = {"__slots__": (), "_fields": names, "__new__": __new__, "_replace": _replace,
            "_asdict": lambda self: dict(zip(names, self)),
            "__getnewargs__": lambda self: tuple(self),
            "__repr__": lambda self: "%s(%s)" % (name, ", ".join("%s=%r" % kv for kv in zip(names, self)))}
    body.update((f, property(itemgetter(i))) for i, f in enumerate(names))
    return type(name, (tuple,), body)


def parse_digest(text: str) -> str:
    """Return the 64-hex part of "sha256:<hex>"; anything else is refused before it names a path."""
    algo, sep, hexpart = text.partition(":")
    if algo != "sha256" or not sep or len(hexpart) != 64 or hexpart.strip("0123456789abcdef"):
        raise FormatError("not a sha256 digest: %r" % text[:100])
    return hexpart


# C0 controls, DEL and C1 controls, each shown as \xNN: a name, an annotation or an error body
# that carries ESC or BEL cannot retitle or redraw a terminal, nor a newline forge a line
_ESCAPES = {c: {0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"}.get(c, "\\x%02x" % c)
            for c in list(range(0x20)) + list(range(0x7f, 0xa0))}
_ESCAPES_TEXT = {c: e for c, e in _ESCAPES.items() if c not in (0x09, 0x0a)}    # tabs and lines stay


def tty_safe(text) -> str:
    """One line for a terminal: every control character escaped, line breaks included."""
    text = str(text)
    return text if text.isprintable() else text.translate(_ESCAPES)      # the check is C-fast


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """'Just now', '5 minutes ago', '3 days ago': what `list` shows in MODIFIED."""
    seconds = max(0, int(seconds))
    for unit, size in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return "%d %s%s ago" % (count, unit, "" if count == 1 else "s")
    return "Just now"


def human_count(n: int) -> str:
    """Parameter counts the way model cards write them: 72.5K, 7.2B."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return "%.1f%s" % (n / size, unit)
    return str(n)


def parse_content_range(value: str):
    """'bytes 100-199/1000' -> (100, 199, 1000); 'bytes */1000' -> (None, None, 1000).

    A total of '*' (unknown) gives None. Anything malformed gives None: the caller then
    refuses to trust the response as a continuation.
    """
    unit, _, spec = (value or "").strip().partition(" ")
    if unit != "bytes" or "/" not in spec:
        return None
    span, _, total_s = spec.partition("/")
    try:
        total = None if total_s == "*" else int(total_s)
        if span == "*":
            return (None, None, total)
        first_s, _, last_s = span.partition("-")
        first, last = int(first_s), int(last_s)
    except ValueError:
        return None
    if first < 0 or last < first or (total is not None and last >= total):
        return None
    return (first, last, total)


class Part:
    """One byte range [start, end) of a parallel download. `done` bytes from start are on
    disk; a connection has asked for the bytes up to `requested`. An idle connection may take
    the rest that nobody has asked for yet (end shrinks), never bytes in flight."""
    __slots__ = ("start", "end", "done", "requested")

    def __init__(self, start: int, end: int, done: int = 0):
        self.start, self.end, self.done = start, end, done
        self.requested = start + done            # nothing is in flight when a part is made

    @property
    def pos(self) -> int:
        return self.start + self.done

    @property
    def left(self) -> int:
        return self.end - self.pos

    @property
    def unrequested(self) -> int:
        return self.end - max(self.requested, self.pos)

    def split(self) -> "Part":
        """Hand the back half of what nobody has asked for yet to a new part."""
        mid = self.end - self.unrequested // 2
        tail, self.end = Part(mid, self.end), mid
        return tail

    def saved(self) -> list:
        return [self.start, self.end, self.done]

    @classmethod
    def load(cls, saved, total: int) -> "Part":
        """A part from a state file; ValueError when it does not fit the download."""
        start, end, done = (list(saved) + [None] * 3)[:3]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end, done)) or not (
                0 <= start <= end <= total and 0 <= done <= end - start):
            raise ValueError("bad part %r" % (saved,))
        return cls(start, end, done)

    def __eq__(self, other):
        return isinstance(other, Part) and self.saved() == other.saved()

    def __repr__(self):
        return "Part(%d, %d, %d)" % (self.start, self.end, self.done)


def plan_parts(total: int, connections: int, part_min: int = PART_MIN) -> list:
    """The Parts of a download: as many as connections allow, none smaller than part_min
    (a small blob stays one part)."""
    n = max(1, min(connections, total // part_min))
    size = -(-total // n)
    return [Part(i * size, min(total, (i + 1) * size)) for i in range(n) if i * size < total]


class StallGuard:
    """Decides when a connection that keeps going silent should stop trying. One stall (no
    data for `timeout` seconds) is retried; a second one ends the work unless data flowed
    for at least `timeout` seconds in between, i.e. unless the stalls are 2 x timeout apart.
    A server that stalls every request so ends a pull within about 2 x timeout."""

    def __init__(self, timeout: float, clock=time.monotonic):
        self.timeout, self.clock = timeout, clock
        self.last = None

    def stalled(self) -> bool:
        """Record a stall now; True when it is time to give up."""
        now = self.clock()
        give_up = self.last is not None and now - self.last < 2 * self.timeout
        self.last = now
        return give_up


def backoff_delay(attempt: int, retry_after: str = None, rand: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number `attempt` (0-based): Retry-After wins, else
    jittered exponential backoff (0.5 s, 1 s, 2 s, ... up to `cap`); `rand` in [0, 1)."""
    if retry_after:
        try:
            return min(max(0.0, float(retry_after)), 300.0)
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    base = min(cap, 0.5 * (2 ** attempt))
    return base * (0.5 + rand)


def safe_relpath(name: str) -> str:
    """Validate a file name that came from the network or a user before it becomes a path.

    Returns the normalised relative path; refuses absolute paths, '..', NUL, empty or
    over-long components and our own metadata file name.
    """
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 1024:
        raise FormatError("unsafe file name %r" % (name[:100] if isinstance(name, str) else name))
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if (name.startswith(("/", "\\")) or not parts
            or any(p in ("..", REF_FILE) or len(p) > 255 for p in parts)):
        raise FormatError("unsafe file name %r" % name[:100])
    return "/".join(parts)


def _is_loopback(host: str) -> bool:
    """localhost, 127.x.x.x or ::1, with or without a port."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    return name == "localhost" or name.startswith("127.") or name == "::1"


def _sha256_bytes(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str, progress=None) -> str:
    """Hex sha256 of a file, read in CHUNK blocks; progress(done) after each block."""
    import hashlib
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    done = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return h.hexdigest()
            h.update(view[:n])
            done += n
            if progress:
                progress(done)


class HashingWriter:
    """A sink that writes to a descriptor and hashes the same bytes on the way (tar layers
    unpacked or built: the digest comes with the copy)."""

    def __init__(self, fd: int):
        import hashlib
        self.fd, self.h = fd, hashlib.sha256()

    def write(self, data) -> int:
        self.h.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


# ---------------------------------------------------------------------------
# 5. model references
# ---------------------------------------------------------------------------

_RefFields = namedtuple("_RefFields", "transport host name tag digest revision file",
                        defaults=("", "", "", "", "", "", ""))


class Ref(_RefFields):
    """One parsed model reference; immutable and hashable.

    transport  ollama | huggingface | oci | file | http | https
    host       registry or URL host ('' for file and huggingface)
    name       repository path ('library/llama3', 'org/repo'), or the absolute file path,
               or the URL path with its query
    tag        ollama/oci tag; Hugging Face quantisation (':Q4_K_M')
    digest     oci '@sha256:...' pin
    revision   Hugging Face '@branch|tag|commit'
    file       Hugging Face file inside the repo
    """
    __slots__ = ()

    def __str__(self) -> str:
        t = self.transport
        if t == "ollama":
            short = self.name[len("library/"):] if self.name.startswith("library/") else self.name
            host = "" if self.host == OLLAMA_HOST else self.host + "/"
            return "ollama://%s%s:%s" % (host, short, self.tag)
        if t == "oci":
            return "oci://%s/%s%s" % (self.host, self.name,
                                      "@" + self.digest if self.digest else ":" + self.tag)
        if t == "huggingface":
            s = "hf://" + self.name + ("/" + self.file if self.file else "")
            return s + (":" + self.tag if self.tag else "") + ("@" + self.revision if self.revision else "")
        if t == "file":
            return "file://" + self.name
        if t in ("oci-layout", "oci-archive"):
            return "%s:%s:%s" % (t, self.name, self.tag)
        return "%s://%s%s" % (t, self.host, self.name)

    def folder(self) -> tuple:
        """Path components of this model's folder below repos/ (human-readable, unique)."""
        t = self.transport
        if t == "ollama":
            return ("ollama", self.host) + tuple(self.name.split("/")) + (self.tag,)
        if t == "oci":
            last = "sha256-" + parse_digest(self.digest) if self.digest else self.tag
            return ("oci", self.host) + tuple(self.name.split("/")) + (last,)
        if t == "huggingface":
            sel = self.file or (self.tag or "default")
            return (("huggingface",) + tuple(self.name.split("/")) + tuple(sel.split("/"))
                    + (self.revision or "main",))
        if t == "file":
            return ("file",) + tuple(p for p in self.name.split("/") if p)
        if t in ("oci-layout", "oci-archive"):
            return (t,) + tuple(p for p in self.name.split("/") if p) + (self.tag,)
        path, _, query = self.name.partition("?")
        parts = [p for p in path.split("/") if p] or ["index"]
        if query:
            import hashlib
            parts[-1] += "-" + hashlib.sha256(query.encode()).hexdigest()[:12]
        return (t, self.host.replace(":", "_")) + tuple(parts)

    def file_name(self) -> str:
        """Name of the single model file for file:// and URL references."""
        from urllib.parse import unquote
        base = unquote(self.name.partition("?")[0].rstrip("/").rsplit("/", 1)[-1])
        return safe_relpath(base.replace("/", "_")) if base not in ("", ".", "..") else "model"


_OCI_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"


def _is_registry_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _check_name(name: str, text: str, pattern: str = _OCI_COMPONENT) -> None:
    import re
    if not all(re.fullmatch(pattern, c) for c in name.split("/")):
        raise UsageError("invalid model name %r: each part of %r must match %s" % (text, name, pattern))


def _split_tag(rest: str, default: str, text: str):
    import re
    name, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        return rest, default
    if not re.fullmatch(_TAG, tag):
        raise UsageError("invalid tag %r in %r" % (tag, text))
    return name, tag


def _parse_ollama(rest: str, text: str) -> Ref:
    rest, tag = _split_tag(rest, "latest", text)
    parts = rest.split("/")
    host = OLLAMA_HOST
    if len(parts) > 1 and _is_registry_host(parts[0]):
        host, parts = parts[0].lower(), parts[1:]
    if len(parts) == 1:
        parts = ["library"] + parts
    if len(parts) != 2:
        raise UsageError("invalid ollama model %r: expected [host/][namespace/]model[:tag]" % text)
    name = "/".join(parts)
    _check_name(name, text, "[A-Za-z0-9][A-Za-z0-9._-]*")
    return Ref("ollama", host, name, tag)


def _parse_oci(rest: str, text: str) -> Ref:
    rest, _, digest = rest.partition("@")
    if digest:
        parse_digest(digest)
    rest, tag = _split_tag(rest, "latest", text)
    parts = rest.split("/")
    host = DOCKER_HUB
    if len(parts) > 1 and _is_registry_host(parts[0]):
        host, parts = parts[0].lower(), parts[1:]
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = DOCKER_HUB
    if host == DOCKER_HUB and len(parts) == 1:
        parts = ["library"] + parts
    name = "/".join(parts)
    if not name:
        raise UsageError("invalid OCI reference %r: no repository name" % text)
    _check_name(name, text)
    return Ref("oci", host, name, tag, digest)


def _parse_hf(rest: str, text: str) -> Ref:
    rest, _, revision = rest.partition("@")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise UsageError("invalid Hugging Face model %r: expected org/repo[/file][:quant][@revision]" % text)
    quant = ""
    if ":" in parts[-1]:
        parts[-1], _, quant = parts[-1].partition(":")
        quant = quant.upper()                  # quantisation names are case-insensitive
    if len(parts) > 2 and parts[2] in ("blob", "resolve", "tree") and len(parts) > 3:
        revision, parts = revision or parts[3], parts[:2] + parts[4:]   # pasted browser URL
    name, file = "/".join(parts[:2]), "/".join(parts[2:])
    _check_name(name, text, "[A-Za-z0-9][A-Za-z0-9._-]*")
    if file:
        file = safe_relpath(file)
    if revision and ("\0" in revision or ".." in revision.split("/")):
        raise UsageError("invalid revision %r in %r" % (revision, text))
    return Ref("huggingface", "", name, quant, "", revision, file)


def _parse_file(rest: str, text: str) -> Ref:
    if not rest:
        raise UsageError("invalid file reference %r: no path" % text)
    path = os.path.normpath(os.path.abspath(os.path.expanduser(rest)))
    if "\0" in path or path == "/" or any(p != p.strip() for p in path.split("/")):
        raise UsageError("invalid file reference %r (no path parts with leading or trailing spaces)" % text)
    return Ref("file", "", path)


def _parse_url(scheme: str, rest: str, text: str) -> Ref:
    import posixpath
    host, slash, path = rest.partition("/")
    if not host or "@" in host or " " in rest or "\0" in rest:
        raise UsageError("invalid URL %r" % text)
    path, q, query = path.partition("?")
    path = posixpath.normpath("/" + path.split("#")[0]) if path else "/"
    return Ref(scheme, host.lower(), path + (q + query if query else ""))


_URL_ALIASES = (
    ("https://huggingface.co/", "huggingface"), ("http://huggingface.co/", "huggingface"),
    ("huggingface.co/", "huggingface"), ("https://hf.co/", "huggingface"), ("hf.co/", "huggingface"),
    ("https://ollama.com/", "ollama"), ("ollama.com/", "ollama"),
)
_SCHEMES = {"ollama": "ollama", "hf": "huggingface", "huggingface": "huggingface", "oci": "oci",
            "docker": "oci", "file": "file", "http": "http", "https": "https"}


def parse_ref(text: str, shortnames: dict = None, default_transport: str = None) -> Ref:
    """Turn what a user typed into a Ref. Bare names go through shortnames, then the configured
    transport; with none configured, org/name is a Hugging Face repository (as in ramalama) and
    a plain name an Ollama one. Paths starting with /, ./, ../ or ~ are local files."""
    text = (text or "").strip()
    if not text or "\0" in text:
        raise UsageError("empty or invalid model name")
    low = text.lower()
    for transport in ("oci-layout", "oci-archive"):      # skopeo's spelling: oci-layout:PATH[:tag]
        if low.startswith(transport + ":"):
            path = text[len(transport) + 1:]
            path = path[2:] if path.startswith("//") else path
            head, sep, tag = path.rpartition(":")
            if not sep or "/" in tag:
                head, tag = path, "latest"
            return Ref(transport, "", _parse_file(head, text).name, tag)
    for prefix, transport in _URL_ALIASES:
        if low.startswith(prefix):
            return parse_ref(transport + "://" + text[len(prefix):], None, default_transport)
    scheme, sep, rest = text.partition("://")
    if sep:
        transport = _SCHEMES.get(scheme.lower())
        if scheme.lower() == "openai":
            raise UsageError("%r is a model OpenAI serves through its API: there is nothing to pull or run "
                             "here" % text)
        if transport is None:
            raise UsageError("unknown transport %r in %r; use one of: %s"
                             % (scheme + "://", text, ", ".join(k + "://" for k in _SCHEMES)))
        if transport == "ollama":
            return _parse_ollama(rest, text)
        if transport == "oci":
            return _parse_oci(rest, text)
        if transport == "huggingface":
            return _parse_hf(rest, text)
        if transport == "file":
            return _parse_file(rest, text)
        return _parse_url(transport, rest, text)
    if text.startswith(("/", "./", "../", "~")):
        return _parse_file(text, text)
    if shortnames and text in shortnames:
        return parse_ref(shortnames[text], None, default_transport)
    transport = default_transport or ("huggingface" if "/" in text else DEFAULT_TRANSPORT)
    if transport not in _SCHEMES:
        raise ConfigError("unknown default transport %r; use one of: %s"
                          % (transport, ", ".join(sorted(set(_SCHEMES.values())))))
    return parse_ref(transport + "://" + text, None, default_transport)


# ---------------------------------------------------------------------------
# 6. config
# ---------------------------------------------------------------------------

# Keys of [ramalama] we act on, with their kinds. ramalama 0.25 writes some numbers as strings
# (port = "8080", temp = "0.8"), so numeric strings are numbers and booleans take its spellings;
# ngl is a number of layers, or all / auto. Other keys (its ramalama.conf has many) are kept and
# listed by `info` and --debug, never fatal.
CONFIG_TYPES = {
    "store": str, "engine": str, "container": bool, "runtime": str, "image": str,
    "transport": str, "ngl": "layers", "ctx_size": int, "temp": float, "threads": int,
    "port": int, "host": str, "pull": str, "ollama_registry": str, "api_key": str, "max_tokens": int,
    "selinux": bool, "keep_groups": bool, "carimage": str, "convert_type": str, "kube_volume": str,
}
SECRET_KEYS = ("api_key",)       # config values shown masked
TABLE_TYPES = {"download": {"connections": int, "timeout": float}}
# read from [ramalama.runtimes.<runtime>] first (where ramalama 0.25 reads them), then [ramalama]
RUNTIME_KEYS = {"ngl": "layers", "temp": float, "threads": int, "ctx_size": int, "max_tokens": int}
# RAMALAMA_<KEY> spellings that name another key
ENV_ALIASES = {"in_container": "container", "container_engine": "engine", "transports": "transport"}
TRUE_WORDS, FALSE_WORDS = ("on", "true", "1", "yes", "y"), ("off", "false", "0", "no", "n")


def runtime_table(runtime: str) -> str:
    """[ramalama.runtimes.<this>] for a runtime name, as ramalama spells it: llama.cpp -> llama_cpp."""
    return runtime.replace(".", "_").replace("-", "_")


def coerce(value, kind):
    """A config value read as `kind` the way ramalama 0.25 reads it; ValueError when it cannot
    be (bools are never numbers)."""
    import re
    text = value.strip().lower() if isinstance(value, str) else None
    if kind is str and isinstance(value, str):
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text in TRUE_WORDS or text in FALSE_WORDS:
            return text in TRUE_WORDS
    elif kind in (int, "layers") and not isinstance(value, bool):
        if kind == "layers" and text in ("all", "auto"):
            return text
        if isinstance(value, int) or (text is not None and re.fullmatch(r"[-+]?\d+", text)):
            return int(value)
    elif kind is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if text is not None and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", text):
            return float(text)
    raise ValueError({str: "a string", int: "an integer", float: "a number", bool: "true or false",
                      "layers": "an integer, all or auto"}[kind])


def config_dirs(env: dict, system_dirs=None) -> list:
    """Directories searched for ramalama.conf and shortnames.conf, lowest priority first, in
    ramalama 0.25's order: <prefix>/share/ramalama and <prefix>/local/share/ramalama (for /usr
    and this Python's prefix), /etc/ramalama, $XDG_DATA_HOME/ramalama, $XDG_CONFIG_HOME/ramalama."""
    if system_dirs is None:
        prefixes = ["/usr"] + ([sys.prefix] if sys.prefix != "/usr" else [])
        system_dirs = [os.path.join(p, sub, "ramalama") for p in prefixes for sub in ("share", "local/share")]
        system_dirs.append("/etc/ramalama")
    home = env.get("HOME") or os.path.expanduser("~")
    data = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    user = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return list(system_dirs) + [os.path.join(data, "ramalama"), os.path.join(user, "ramalama")]


def config_files(dirs: list, stem: str) -> list:
    """Existing files <dir>/<stem>.conf then <dir>/<stem>.conf.d/*.conf, in priority order."""
    found = []
    for d in dirs:
        main_file = os.path.join(d, stem + ".conf")
        if os.path.isfile(main_file) and main_file not in found:
            found.append(main_file)
        drop = main_file + ".d"
        if os.path.isdir(drop):
            found.extend(os.path.join(drop, n) for n in sorted(os.listdir(drop)) if n.endswith(".conf"))
    return found


def read_toml(path: str, warnings: list = None) -> dict:
    """A TOML file. One that strict TOML refuses only because it declares a table twice (as
    ramalama's own packaged ramalama.conf does) is read as ramalama reads it, the tables merged;
    the fact is added to `warnings`. Anything else broken is one ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("%s: not UTF-8 text" % path)
    except OSError as e:
        raise ConfigError("%s: %s" % (path, e.strerror or e))
    try:
        return _toml_loads(text)
    except ValueError as e:   # TOMLDecodeError is a ValueError: "Invalid value (at line 2, column 7)"
        try:
            data = _toml_by_table(text)
        except ValueError:
            raise ConfigError("%s: %s" % (path, e))
        if warnings is not None:
            warnings.append("%s: not strict TOML (%s); read with its tables merged, as ramalama does"
                            % (path, e))
        return data


def _toml_by_table(text: str) -> dict:
    """Each [table]'s lines parsed on their own and merged into one document: a table declared
    twice gets the keys of both, later ones winning."""
    import re
    header = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
    sections, name, lines = [], None, []
    for line in text.splitlines():
        m = header.match(line)
        if m:
            sections.append((name, lines))
            name, lines = m.group(1), []
        else:
            lines.append(line)
    sections.append((name, lines))
    data = {}
    for name, body in sections:
        table = data
        for key in (name.split(".") if name else []):
            table = table.setdefault(key.strip().strip("\"'"), {})
            if not isinstance(table, dict):
                raise ValueError("%s is not a table" % name)
        table.update(merge(table, _toml_loads("\n".join(body))))
    return data


def check_config(section: dict, origin: str) -> dict:
    """Read the values of the keys we know as their kinds (see coerce); a value that cannot be
    read is one ConfigError naming the file and the key."""
    def checked(table: dict, types: dict, where: str) -> None:
        for key, kind in types.items():
            if key in table:
                try:
                    table[key] = coerce(table[key], kind)
                except ValueError as e:
                    raise ConfigError("%s: %s %s must be %s, not %r" % (origin, where, key, e, table[key]))
    checked(section, CONFIG_TYPES, "[ramalama]")
    for name, types in TABLE_TYPES.items():
        if isinstance(section.get(name), dict):
            checked(section[name], types, "[ramalama.%s]" % name)
    for name, table in (section.get("runtimes") or {}).items():
        if isinstance(table, dict):
            checked(table, RUNTIME_KEYS, "[ramalama.runtimes.%s]" % name)
    return section


def env_config(env: dict) -> dict:
    """The [ramalama] layer that RAMALAMA_<KEY> and RAMALAMA_<TABLE>__<KEY> variables make, as
    ramalama 0.25 defines them (RAMALAMA_PORT, RAMALAMA_RUNTIMES__LLAMA_CPP__NGL, ...). Only keys
    we know are taken; a value that cannot be read is one ConfigError naming the variable."""
    layer = {}
    for var, value in env.items():
        if not var.startswith("RAMALAMA_") or not value:
            continue
        path = [p.lower() for p in var[len("RAMALAMA_"):].split("__")]
        if len(path) == 1 and path[0] in ENV_ALIASES:
            if "RAMALAMA_" + ENV_ALIASES[path[0]].upper() in env:
                continue                         # the key's own variable wins over an alias
            path = [ENV_ALIASES[path[0]]]
        if len(path) == 1:
            kind = CONFIG_TYPES.get(path[0])
        elif len(path) == 2:
            kind = TABLE_TYPES.get(path[0], {}).get(path[1])
        else:
            kind = RUNTIME_KEYS.get(path[2]) if len(path) == 3 and path[0] == "runtimes" else None
        if kind is None:
            continue
        try:
            value = coerce(value, kind)
        except ValueError as e:
            raise ConfigError("environment variable %s must be %s, not %r" % (var, e, value))
        table = layer
        for key in path[:-1]:
            table = table.setdefault(key, {})
        table[path[-1]] = value
    return layer


def merge(base: dict, over: dict) -> dict:
    """Deep merge of config tables: later layers win key by key, tables merge."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ramalama 0.25's packaged shortnames.conf, so that a bare name means what it means to ramalama;
# shortnames.conf files in the config directories win over it. "name target" per line.
BUILTIN_SHORTNAMES = """\
cerebrum hf://bartowski/Cerebrum-1.0-7b-GGUF
codellama hf://TheBloke/CodeLlama-7B-Instruct-GGUF
codellama:7b hf://TheBloke/CodeLlama-7B-Instruct-GGUF
codellama:13b hf://TheBloke/CodeLlama-13B-Instruct-GGUF
codellama:34b hf://TheBloke/CodeLlama-34B-Instruct-GGUF
deepseek hf://bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF
deepseek-coder hf://TheBloke/deepseek-coder-6.7b-instruct-GGUF
deepseek-coder:6.7b hf://TheBloke/deepseek-coder-6.7b-instruct-GGUF
deepseek-coder:33b hf://TheBloke/deepseek-coder-33b-instruct-GGUF
deepseek-r1 hf://bartowski/DeepSeek-R1-GGUF
deepseek-v3 hf://unsloth/DeepSeek-V3-GGUF
devstral hf://bartowski/mistralai_Devstral-Small-2-24B-Instruct-2512-GGUF
devstral:24b hf://bartowski/mistralai_Devstral-Small-2-24B-Instruct-2512-GGUF
devstral:123b hf://bartowski/mistralai_Devstral-2-123B-Instruct-2512-GGUF
dragon hf://llmware/dragon-mistral-7b-v0
embeddinggemma hf://ggml-org/embeddinggemma-300M-GGUF
falcon3 hf://tiiuae/Falcon3-10B-Instruct-GGUF
falcon3:10b hf://tiiuae/Falcon3-10B-Instruct-GGUF
falcon3-moe:2x7b hf://mradermacher/Falcon3-MoE-2x7B-Insruct-GGUF
flan-t5-large hf://Felladrin/gguf-flan-t5-large
gemma-4 hf://bartowski/google_gemma-4-E4B-it-GGUF
gemma-4:e2b hf://bartowski/google_gemma-4-E2B-it-GGUF
gemma-4:e4b hf://bartowski/google_gemma-4-E4B-it-GGUF
gemma-4:26b hf://bartowski/google_gemma-4-26B-A4B-it-GGUF
gemma-4:31b hf://lmstudio-community/gemma-4-31B-it-GGUF
gemma2 hf://bartowski/gemma-2-9b-it-GGUF
gemma2:2b hf://bartowski/gemma-2-2b-it-GGUF
gemma2:9b hf://bartowski/gemma-2-9b-it-GGUF
gemma3 hf://ggml-org/gemma-3-4b-it-GGUF
gemma3:1b hf://ggml-org/gemma-3-1b-it-GGUF
gemma3:4b hf://ggml-org/gemma-3-4b-it-GGUF
gemma3:12b hf://ggml-org/gemma-3-12b-it-GGUF
gemma3:27b hf://ggml-org/gemma-3-27b-it-GGUF
gemma3n hf://ggml-org/gemma-3n-E4B-it-GGUF
gemma3n:e2b hf://ggml-org/gemma-3n-E2B-it-GGUF
gemma3n:e2b-it-f16 hf://ggml-org/gemma-3n-E2B-it-GGUF:F16
gemma3n:e2b-it-q8_0 hf://ggml-org/gemma-3n-E2B-it-GGUF:Q8_0
gemma3n:e4b hf://ggml-org/gemma-3n-E4B-it-GGUF
gemma3n:e4b-it-f16 hf://ggml-org/gemma-3n-E4B-it-GGUF:F16
gemma3n:e4b-it-q8_0 hf://ggml-org/gemma-3n-E4B-it-GGUF:Q8_0
gemma4 hf://bartowski/google_gemma-4-E4B-it-GGUF
gemma4:e2b hf://bartowski/google_gemma-4-E2B-it-GGUF
gemma4:e4b hf://bartowski/google_gemma-4-E4B-it-GGUF
gemma4:26b hf://bartowski/google_gemma-4-26B-A4B-it-GGUF
gemma4:31b hf://lmstudio-community/gemma-4-31B-it-GGUF
glm-4.6 hf://unsloth/GLM-4.6-GGUF
glm-4.6-vl hf://ggml-org/GLM-4.6V-GGUF
glm-4.6v-flash hf://bartowski/zai-org_GLM-4.6V-Flash-GGUF
gpt-5.1 openai://gpt-5.1-2025-11-13
gpt-oss hf://ggml-org/gpt-oss-20b-GGUF
gpt-oss:20b hf://ggml-org/gpt-oss-20b-GGUF
gpt-oss:120b hf://ggml-org/gpt-oss-120b-GGUF
granite hf://ibm-granite/granite-3.3-8b-instruct-GGUF
granite:2b hf://bartowski/ibm-granite_granite-3.3-2b-instruct-GGUF
granite:7b hf://instructlab/granite-7b-lab-GGUF
granite:8b hf://ibm-granite/granite-3.3-8b-instruct-GGUF
granite-be-3.0:1b hf://taronaeo/Granite-3.0-1B-A400M-Instruct-BE-GGUF
granite-be-3.3:2b hf://taronaeo/Granite-3.3-2B-Instruct-BE-GGUF
granite-lab:7b hf://instructlab/granite-7b-lab-GGUF
granite-lab-7b hf://instructlab/granite-7b-lab-GGUF
granite-lab-8b hf://ibm-granite/granite-3.3-8b-instruct-GGUF
hermes hf://bartowski/Hermes-2-Pro-Mistral-7B-GGUF
ibm/granite hf://ibm-granite/granite-3.3-8b-instruct-GGUF
ibm/granite:2b hf://bartowski/ibm-granite_granite-3.3-2b-instruct-GGUF
ibm/granite:7b hf://instructlab/granite-7b-lab-GGUF
ibm/granite:8b hf://ibm-granite/granite-3.3-8b-instruct-GGUF
internlm2.5 hf://bartowski/internlm2_5-20b-chat-GGUF
internlm2.5:20b hf://bartowski/internlm2_5-20b-chat-GGUF
kimi-k2 hf://bartowski/moonshotai_Kimi-K2-Instruct-0905-GGUF
kimi-k2.5 hf://bartowski/moonshotai_Kimi-K2.5-GGUF
kimi-k2.6 hf://bartowski/moonshotai_Kimi-K2.6-GGUF
llama2 hf://TheBloke/Llama-2-7B-Chat-GGUF
llama2:7b hf://TheBloke/Llama-2-7B-Chat-GGUF
llama2:70b hf://TheBloke/Llama-2-70B-Chat-GGUF
llama3 hf://bartowski/Meta-Llama-3-8B-Instruct-GGUF
llama3:8b hf://bartowski/Meta-Llama-3-8B-Instruct-GGUF
llama3:70b hf://bartowski/Meta-Llama-3-70B-Instruct-GGUF
llama3.1 hf://bartowski/Meta-Llama-3.1-8B-Instruct-GGUF
llama3.1:8b hf://bartowski/Meta-Llama-3.1-8B-Instruct-GGUF
llama3.1:70b hf://bartowski/Meta-Llama-3.1-70B-Instruct-GGUF
llama3.2:1b hf://bartowski/Llama-3.2-1B-Instruct-GGUF
llama3.2:3b hf://bartowski/Llama-3.2-3B-Instruct-GGUF
llama3.3 hf://bartowski/Llama-3.3-70B-Instruct-GGUF
llama3.3:70b hf://bartowski/Llama-3.3-70B-Instruct-GGUF
magistral hf://bartowski/mistralai_Magistral-Small-2509-GGUF
magistral:2509 hf://bartowski/mistralai_Magistral-Small-2509-GGUF
merlinite hf://instructlab/merlinite-7b-lab-GGUF
merlinite:7b hf://instructlab/merlinite-7b-lab-GGUF
merlinite-lab:7b hf://instructlab/merlinite-7b-lab-GGUF
merlinite-lab-7b hf://instructlab/merlinite-7b-lab-GGUF
minimax-m2 hf://bartowski/MiniMaxAI_MiniMax-M2.7-GGUF
mistral hf://bartowski/Mistral-7B-Instruct-v0.3-GGUF
mistral:7b hf://bartowski/Mistral-7B-Instruct-v0.3-GGUF
mistral:7b-v1 hf://TheBloke/Mistral-7B-Instruct-v0.1-GGUF
mistral:7b-v2 hf://TheBloke/Mistral-7B-Instruct-v0.2-GGUF
mistral:7b-v3 hf://bartowski/Mistral-7B-Instruct-v0.3-GGUF
mistral-large hf://bartowski/Mistral-Large-Instruct-2411-GGUF
mistral-large:2411 hf://bartowski/Mistral-Large-Instruct-2411-GGUF
mistral-nemo hf://bartowski/Mistral-Nemo-Instruct-2407-GGUF
mistral-small3.1 hf://bartowski/mistralai_Mistral-Small-3.1-24B-Instruct-2503-GGUF
mistral-small3.1:24b hf://bartowski/mistralai_Mistral-Small-3.1-24B-Instruct-2503-GGUF
mistral_code_16k hf://TheBloke/Mistral-7B-Code-16K-qlora-GGUF
mistral_codealpaca hf://TheBloke/Mistral-7B-codealpaca-lora-GGUF
mixtao hf://MaziyarPanahi/MixTAO-7Bx2-MoE-Instruct-v7.0-GGUF
mixtral hf://TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF
mixtral:8x7b hf://TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF
nemotron hf://lmstudio-community/NVIDIA-Nemotron-3-Nano-30B-A3B-GGUF
nemotron:4b hf://lmstudio-community/NVIDIA-Nemotron-3-Nano-4B-GGUF
nemotron:30b hf://lmstudio-community/NVIDIA-Nemotron-3-Nano-30B-A3B-GGUF
nemotron:omni-30b hf://lmstudio-community/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-GGUF
nemotron:49b hf://bartowski/nvidia_Llama-3_3-Nemotron-Super-49B-v1-GGUF
nemotron:51b hf://bartowski/Llama-3_1-Nemotron-51B-Instruct-GGUF
nemotron:70b hf://bartowski/Llama-3.1-Nemotron-70B-Instruct-HF-GGUF
nemotron:120b hf://lmstudio-community/NVIDIA-Nemotron-3-Super-120B-A12B-GGUF
olmo3 hf://bartowski/allenai_Olmo-3-7B-Instruct-GGUF
olmo3:7b hf://bartowski/allenai_Olmo-3-7B-Instruct-GGUF
olmo3:32b-think hf://bartowski/allenai_Olmo-3-32B-Think-GGUF
olmo3.1:32b hf://bartowski/allenai_Olmo-3.1-32B-Instruct-GGUF
olmo3.1:32b-think hf://bartowski/allenai_Olmo-3.1-32B-Think-GGUF
openchat hf://TheBloke/openchat-3.5-0106-GGUF
openorca hf://TheBloke/Mistral-7B-OpenOrca-GGUF
phi2 hf://MaziyarPanahi/phi-2-GGUF
phi3 hf://microsoft/Phi-3-mini-4k-instruct-gguf
phi3:mini hf://microsoft/Phi-3-mini-4k-instruct-gguf
phi4 hf://microsoft/phi-4-GGUF
qwen-3.6 hf://bartowski/Qwen_Qwen3.6-27B-GGUF
qwen-3.6:27b hf://bartowski/Qwen_Qwen3.6-27B-GGUF
qwen-3.6:35b hf://lmstudio-community/Qwen3.6-35B-A3B-GGUF
qwen1.5:110b hf://bartowski/Qwen1.5-110B-Chat-GGUF
qwen2 hf://bartowski/Qwen2-7B-Instruct-GGUF
qwen2:7b hf://bartowski/Qwen2-7B-Instruct-GGUF
qwen2-vl hf://bartowski/Qwen2-VL-7B-Instruct-GGUF
qwen2-vl:2b hf://bartowski/Qwen2-VL-2B-Instruct-GGUF
qwen2-vl:7b hf://bartowski/Qwen2-VL-7B-Instruct-GGUF
qwen2-vl:72b hf://bartowski/Qwen2-VL-72B-Instruct-GGUF
qwen2.5 hf://bartowski/Qwen2.5-7B-Instruct-GGUF
qwen2.5:0.5b hf://bartowski/Qwen2.5-0.5B-Instruct-GGUF
qwen2.5:1.5b hf://bartowski/Qwen2.5-1.5B-Instruct-GGUF
qwen2.5:3b hf://bartowski/Qwen2.5-3B-Instruct-GGUF
qwen2.5:7b hf://bartowski/Qwen2.5-7B-Instruct-GGUF
qwen2.5:14b hf://bartowski/Qwen2.5-14B-Instruct-GGUF
qwen2.5:32b hf://bartowski/Qwen2.5-32B-Instruct-GGUF
qwen2.5:72b hf://bartowski/Qwen2.5-72B-Instruct-GGUF
qwen2.5-coder hf://bartowski/Qwen2.5-Coder-7B-Instruct-GGUF
qwen2.5-coder:1.5b hf://bartowski/Qwen2.5-Coder-1.5B-Instruct-GGUF
qwen2.5-coder:7b hf://bartowski/Qwen2.5-Coder-7B-Instruct-GGUF
qwen2.5-coder:14b hf://bartowski/Qwen2.5-Coder-14B-Instruct-GGUF
qwen2.5-coder:32b hf://bartowski/Qwen2.5-Coder-32B-Instruct-GGUF
qwen2.5vl hf://bartowski/Qwen_Qwen2.5-VL-32B-Instruct-GGUF
qwen2.5vl:2b hf://ggml-org/Qwen2.5-VL-2B-Instruct-GGUF
qwen2.5vl:3b hf://ggml-org/Qwen2.5-VL-3B-Instruct-GGUF
qwen2.5vl:7b hf://bartowski/Qwen_Qwen2.5-VL-7B-Instruct-GGUF
qwen2.5vl:32b hf://bartowski/Qwen_Qwen2.5-VL-32B-Instruct-GGUF
qwen3:0.6b hf://bartowski/Qwen_Qwen3-0.6B-GGUF
qwen3:1.7b hf://bartowski/Qwen_Qwen3-1.7B-GGUF
qwen3:4b hf://bartowski/Qwen_Qwen3-4B-GGUF
qwen3:8b hf://bartowski/Qwen_Qwen3-8B-GGUF
qwen3:14b hf://bartowski/Qwen_Qwen3-14B-GGUF
qwen3:30b hf://bartowski/Qwen_Qwen3-30B-A3B-Instruct-2507-GGUF
qwen3:32b hf://bartowski/Qwen_Qwen3-32B-GGUF
qwen3-coder:30b hf://unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF
qwen3-coder-next hf://unsloth/Qwen3-Coder-Next-GGUF
qwen3-moe:30b hf://bartowski/Qwen_Qwen3-30B-A3B-Instruct-2507-GGUF
qwen3-omni:30b hf://ggml-org/Qwen3-Omni-30B-A3B-Instruct-GGUF
qwen3-vl:8b hf://bartowski/Qwen_Qwen3-VL-8B-Instruct-GGUF
qwen3-vl:30b hf://bartowski/Qwen_Qwen3-VL-30B-A3B-Instruct-GGUF
qwen3.5:0.8b hf://bartowski/Qwen_Qwen3.5-0.8B-GGUF
qwen3.5:2b hf://bartowski/Qwen_Qwen3.5-2B-GGUF
qwen3.5:4b hf://bartowski/Qwen_Qwen3.5-4B-GGUF
qwen3.5:9b hf://bartowski/Qwen_Qwen3.5-9B-GGUF
qwen3.5:27b hf://bartowski/Qwen_Qwen3.5-27B-GGUF
qwen3.5:35b hf://bartowski/Qwen_Qwen3.5-35B-A3B-GGUF
qwen3.6 hf://bartowski/Qwen_Qwen3.6-27B-GGUF
qwen3.6:27b hf://bartowski/Qwen_Qwen3.6-27B-GGUF
qwen3.6:35b hf://lmstudio-community/Qwen3.6-35B-A3B-GGUF
smollm:135m hf://HuggingFaceTB/smollm-135M-instruct-v0.2-Q8_0-GGUF
smollm2 hf://bartowski/SmolLM2-1.7B-Instruct-GGUF
smollm2:360m hf://bartowski/SmolLM2-360M-Instruct-GGUF
smollm2:1.7b hf://bartowski/SmolLM2-1.7B-Instruct-GGUF
smolvlm hf://ggml-org/SmolVLM-500M-Instruct-GGUF
smolvlm:256m hf://ggml-org/SmolVLM-256M-Instruct-GGUF
smolvlm:500m hf://ggml-org/SmolVLM-500M-Instruct-GGUF
smolvlm:2b hf://ggml-org/SmolVLM-Instruct-GGUF
solar-pro hf://MaziyarPanahi/solar-pro-preview-instruct-GGUF
stories-be:260k hf://taronaeo/tinyllamas-BE/stories260K-be.gguf
tiny hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF
tinyllama hf://TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF
"""


class Config:
    """The merged [ramalama] settings, where they came from, and the shortnames."""

    def __init__(self, settings: dict, files: list, dirs: list, warnings: list = None):
        self.settings = settings
        self.files = files
        self.dirs = dirs
        self.warnings = warnings or []
        self._shortnames = None
        self.shortname_sources = {}

    def get(self, key, default=None):
        return self.settings.get(key, default)

    def runtime_get(self, runtime: str, key: str, default=None):
        """A runtime setting: [ramalama.runtimes.<runtime>] first, then [ramalama]."""
        table = (self.settings.get("runtimes") or {}).get(runtime_table(runtime))
        if isinstance(table, dict) and table.get(key) is not None:
            return table[key]
        return self.settings.get(key, default)

    def unknown_keys(self) -> list:
        return sorted(k for k, v in self.settings.items() if k not in CONFIG_TYPES
                      and not isinstance(v, dict))

    @property
    def shortnames(self) -> dict:
        """The built-in names, then the [shortnames] tables of every shortnames.conf, later files
        winning; read on first use. shortname_sources says where each came from."""
        if self._shortnames is None:
            names = dict(line.split(" ", 1) for line in BUILTIN_SHORTNAMES.splitlines())
            self.shortname_sources = dict.fromkeys(names, "built-in")
            for path in config_files(self.dirs, "shortnames"):
                table = read_toml(path, self.warnings).get("shortnames", {})
                if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
                    raise ConfigError("%s: [shortnames] must map names to model strings" % path)
                names.update(table)
                self.shortname_sources.update(dict.fromkeys(table, path))
            self._shortnames = names
        return self._shortnames


def load_config(env: dict, system_dirs=None) -> Config:
    """defaults < <prefix>/share < /etc < $XDG_DATA_HOME < $XDG_CONFIG_HOME (each: .conf then
    .conf.d) < env. RAMALAMA_CONFIG names the only config file to read."""
    dirs = config_dirs(env, system_dirs)
    only = env.get("RAMALAMA_CONFIG")
    if only:
        if not os.path.exists(only):
            raise ConfigError("RAMALAMA_CONFIG names %s, which does not exist" % only)
        files = [only]
    else:
        files = config_files(dirs, "ramalama")
    settings, warnings = {}, []
    for path in files:
        table = read_toml(path, warnings).get("ramalama", {})
        if not isinstance(table, dict):
            raise ConfigError("%s: [ramalama] must be a table" % path)
        settings = merge(settings, check_config(table, path))
    return Config(merge(settings, env_config(env)), files, dirs, warnings)


def default_store(env: dict) -> str:
    if os.geteuid() == 0:
        return "/var/lib/ramalama"
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "ramalama")


# ---------------------------------------------------------------------------
# 7. http
# ---------------------------------------------------------------------------

RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)
# what an API client reads itself: every status but the redirects the session follows
API_STATUSES = tuple(s for s in range(200, 600) if s not in (301, 302, 303, 307, 308))


class Response:
    """A response whose connection goes back to the pool once its body has been read."""

    def __init__(self, session, key, conn, raw, url: str):
        self._session, self._key, self._conn, self.raw = session, key, conn, raw
        self.url = url
        self.status = raw.status

    def header(self, name: str, default: str = None):
        return self.raw.getheader(name, default)

    def read(self, limit: int = 64 << 20) -> bytes:
        """The whole (small) body; refuses bodies above `limit` (manifests, JSON)."""
        data = self.raw.read(limit + 1)
        if len(data) > limit:
            self.close(reuse=False)
            raise NetworkError("%s: response larger than %s" % (redact(self.url), human_size(limit)))
        self.close()
        return data

    def readinto(self, buf) -> int:
        return self.raw.readinto(buf)

    def discard(self) -> None:
        """Drop an unwanted body (a redirect's, an error's): drained when short, else the
        connection is closed rather than read to the end."""
        self.raw.read(1 << 16)
        self.close(reuse=self.raw.isclosed())

    def close(self, reuse: bool = True) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if reuse and self.raw.isclosed():       # body fully consumed: keep-alive is safe
            self._session._release(self._key, conn)
        else:
            self.raw.close()
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(reuse=exc[0] is None)


def redact(url: str) -> str:
    """URL for logs and errors: signed query strings and userinfo carry credentials."""
    from urllib.parse import urlsplit
    p = urlsplit(url)
    return "%s://%s%s" % (p.scheme, p.netloc.rsplit("@", 1)[-1], p.path)


# -- proxies, read from the environment as curl and Python read them

PROXY_VARS = {"https": ("https_proxy", "HTTPS_PROXY"), "http": ("http_proxy", "HTTP_PROXY")}


class ProxyError(NetworkError):
    """A proxy that cannot be reached, refuses a tunnel, or wants credentials (407)."""


class Proxy(namedtuple("Proxy", "host port auth var shown")):
    """An http:// proxy: where it is, its Proxy-Authorization value (None without
    credentials), the variable that named it, and its URL with the password masked."""
    __slots__ = ()


def parse_proxy(value: str, var: str) -> Proxy:
    """'http://user:pass@proxy:3128' (a missing scheme means http) -> Proxy."""
    import base64
    from urllib.parse import unquote, urlsplit
    text = value.strip()
    p = urlsplit(text if "://" in text else "http://" + text)
    try:
        port = p.port or 80
    except ValueError:
        port = None
    if p.scheme.lower() != "http" or not p.hostname or port is None:
        raise ConfigError("%s=%s: only http://host[:port] proxies are supported" % (var, redact(text)))
    auth, shown = None, "http://%s:%d" % (p.hostname, port)
    if p.username is not None:
        user_pass = "%s:%s" % (unquote(p.username), unquote(p.password or ""))
        auth = "Basic " + base64.b64encode(user_pass.encode()).decode()
        shown = "http://%s:***@%s:%d" % (unquote(p.username), p.hostname, port)
    return Proxy(p.hostname, port, auth, var, shown)


def _env_first(env: dict, names) -> tuple:
    """(name, value) of the first variable set to something, lower case before upper."""
    for name in names:
        if env.get(name, "").strip():
            return name, env[name]
    return None, None


def no_proxy_match(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts host:port: '*', names (a leading dot or none: the domain and
    its subdomains), IP addresses, CIDR ranges, each optionally with ':port'."""
    import ipaddress
    host = host.strip("[]").rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in no_proxy.replace(" ", ",").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, want_port = entry, None
        if entry.startswith("["):                       # [v6]:port
            name, _, rest = entry[1:].partition("]")
            want_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:                      # host:port or v4:port
            name, want_port = entry.split(":")
        if want_port is not None and want_port != str(port):
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def proxy_for(scheme: str, host: str, port: int, env: dict):
    """The Proxy a request to scheme://host:port goes through, or None for a direct
    connection. Loopback is always direct (as in podman and Go's net/http)."""
    if _is_loopback(host):
        return None
    _name, no_proxy = _env_first(env, ("no_proxy", "NO_PROXY"))
    if no_proxy and no_proxy_match(host, port, no_proxy):
        return None
    name, value = _env_first(env, PROXY_VARS.get(scheme, ()) + ("all_proxy", "ALL_PROXY"))
    return parse_proxy(value, name) if name else None


def proxies_in_use(env: dict) -> dict:
    """What `info` shows: each scheme's proxy (password masked) and NO_PROXY."""
    shown = {}
    for scheme in ("https", "http"):
        name, value = _env_first(env, PROXY_VARS[scheme] + ("all_proxy", "ALL_PROXY"))
        if name:
            try:
                shown[scheme] = "%s (%s)" % (parse_proxy(value, name).shown, name)
            except ConfigError as e:
                shown[scheme] = str(e)
    name, value = _env_first(env, ("no_proxy", "NO_PROXY"))
    if name:
        shown["no_proxy"] = value
    return shown


def proxy_failure(proxy: Proxy, target: str, e: BaseException = None, status: int = None) -> ProxyError:
    """One line for a proxy that failed us: unreachable, 407, or a refused tunnel."""
    import re
    where = "proxy %s (from %s)" % (proxy.shown, proxy.var)
    m = re.search(r"Tunnel connection failed: (\d+)\s*(.*)", str(e or ""))
    if m:
        status = int(m.group(1))
    if status == 407:
        problem = ("rejected the credentials in the proxy URL" if proxy.auth
                   else "requires authentication: put user:password in the proxy URL")
        return ProxyError("%s %s (HTTP 407)" % (where, problem))
    if status:
        return ProxyError("%s could not connect to %s: HTTP %d %s" % (where, target, status,
                                                                     (m.group(2) if m else "").strip()))
    return ProxyError("cannot reach %s: %s" % (where, _describe_oserror(e)))


class HTTPSession:
    """Pooled keep-alive connections with manual redirects and retries.

    Credentials are given per request for one origin (scheme, host, port); a redirect to
    another origin drops them, which is what registries' signed CDN URLs expect.
    `connect`, `sleep` and `rand` are injectable for tests.
    """

    def __init__(self, *, timeout: float = 30.0, tls_verify: bool = True, cert_dir: str = None,
                 host_cert_dirs=HOST_CERT_DIRS, retries: int = 5, sleep=time.sleep, rand=None, log=None,
                 env: dict = None):
        self.timeout = timeout
        self.env = env or {}          # where HTTPS_PROXY, NO_PROXY and friends are read
        self.tls_verify = tls_verify
        self.cert_dir, self.host_cert_dirs = cert_dir, host_cert_dirs
        self.retries = retries
        self.sleep = sleep
        self.rand = rand
        self.log = log or (lambda msg: None)
        self._pool = {}
        self._ssl = {}
        self._proxies = {}

    # -- connections
    def _context(self, host: str, port: int):
        """The TLS context for one host: system CAs (SSL_CERT_FILE honoured) plus the *.crt
        files of --cert-dir and of /etc/containers/certs.d/<host[:port]>, as podman does."""
        key = (host, port)
        if key not in self._ssl:
            import ssl
            if not self.tls_verify:
                self._ssl[key] = ssl._create_unverified_context()
                return self._ssl[key]
            ctx = ssl.create_default_context()
            # OpenSSL reads SSL_CERT_FILE from the process environment; the session's own
            # environment (the one a command was given) counts too
            cafile = self.env.get("SSL_CERT_FILE")
            if cafile and os.path.isfile(cafile):
                ctx.load_verify_locations(cafile=cafile)
            dirs = [self.cert_dir] if self.cert_dir else []
            for base in self.host_cert_dirs:
                dirs += [os.path.join(base, "%s:%d" % (host, port)), os.path.join(base, host)]
            for d in dirs:
                if os.path.isdir(d):
                    for name in sorted(os.listdir(d)):
                        if name.endswith(".crt"):
                            try:
                                ctx.load_verify_locations(cafile=os.path.join(d, name))
                            except (OSError, ssl.SSLError) as e:
                                raise NetworkError("cannot load CA certificate %s: %s"
                                                   % (os.path.join(d, name), e))
            self._ssl[key] = ctx
        return self._ssl[key]

    def proxy(self, key):
        """The Proxy for (scheme, host, port), or None: decided once per origin."""
        if key not in self._proxies:
            self._proxies[key] = proxy_for(key[0], key[1], key[2], self.env)
            if self._proxies[key]:
                self.log("%s://%s:%d through proxy %s" % (key + (self._proxies[key].shown,)))
        return self._proxies[key]

    def _acquire(self, key):
        """(connection, reused). Through a proxy, https is a CONNECT tunnel with TLS verified
        against the origin; plain http talks to the proxy itself (absolute-form requests)."""
        idle = self._pool.get(key)
        try:                        # list.pop is atomic: part workers share the pool
            return idle.pop(), True
        except (AttributeError, IndexError):
            pass
        import http.client
        scheme, host, port = key
        proxy = self.proxy(key)
        at = (proxy.host, proxy.port) if proxy else (host, port)
        if scheme == "https":
            conn = http.client.HTTPSConnection(*at, timeout=self.timeout, blocksize=CHUNK,
                                               context=self._context(host, port))
            if proxy:
                conn.set_tunnel(host, port, headers={"Proxy-Authorization": proxy.auth} if proxy.auth
                                else None)
        else:
            conn = http.client.HTTPConnection(*at, timeout=self.timeout, blocksize=CHUNK)
        if proxy:
            import socket
            import ssl
            try:
                conn.connect()       # reaching the proxy (and its tunnel) fails as the proxy's fault
            except (socket.timeout, ssl.SSLError):       # a slow origin, or the origin's TLS
                conn.close()
                raise
            except OSError as e:
                conn.close()
                raise proxy_failure(proxy, "%s:%d" % (host, port), e) from e
        return conn, False

    def _release(self, key, conn):
        self._pool.setdefault(key, []).append(conn)

    # -- one exchange, no redirects
    def _send(self, method, url, headers, body):
        from urllib.parse import urlsplit
        import http.client
        p = urlsplit(url)
        try:
            port = p.port
        except ValueError:
            port = -1
        if p.scheme not in ("http", "https") or not p.hostname or port == -1:
            raise NetworkError("unsupported URL %s" % url.split("?")[0][:200])
        key = (p.scheme, p.hostname, port or (443 if p.scheme == "https" else 80))
        target = (p.path or "/") + ("?" + p.query if p.query else "")
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        hdrs.update(headers or {})
        proxy = self.proxy(key) if p.scheme == "http" else None
        if proxy:                   # plain http through a proxy: the absolute URL, to the proxy
            target = "http://%s:%d%s" % (key[1] if ":" not in key[1] else "[%s]" % key[1], key[2], target)
            if proxy.auth:
                hdrs["Proxy-Authorization"] = proxy.auth
        start = body.tell() if hasattr(body, "seek") else None
        while True:
            conn, reused = self._acquire(key)
            if start is not None:
                body.seek(start)            # a resent streamed body starts where it started
            try:
                conn.request(method, target, body=body, headers=hdrs)
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if reused:          # the server closed an idle keep-alive connection: not a failure
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if method == "HEAD":
                raw.read()
            resp = Response(self, key, conn, raw, url)
            if proxy and resp.status == 407:
                resp.discard()
                raise proxy_failure(proxy, "%s:%d" % key[1:], status=407)
            return resp

    # -- the public call: redirects, retries, status errors
    def request(self, method: str, url: str, headers: dict = None, body=None,
                ok=(200,), auth: str = None, retries: int = None, stalls: StallGuard = None) -> Response:
        """Send a request, following redirects and retrying transient failures.

        `ok` lists the statuses returned to the caller (a redirect status listed there is
        returned, not followed); others raise HTTPStatusError after retries. `auth` is an
        Authorization value valid for the origin of `url` only. `body` is bytes or a file
        object (streamed; requests with a body are never retried). A timeout is a stall:
        `stalls` (a connection's StallGuard, else one for this call) decides when to stop.
        """
        import socket
        import ssl
        import http.client
        retries = self.retries if retries is None else retries
        stalls = stalls or StallGuard(self.timeout)
        from urllib.parse import urljoin, urlsplit
        origin = urlsplit(url)[:2]
        attempt = 0
        while True:
            current, hops, meth = url, 0, method
            try:
                while True:
                    hdrs = dict(headers or {})
                    if auth and urlsplit(current)[:2] == origin:
                        hdrs["Authorization"] = auth
                    self.log("%s %s" % (meth, redact(current)))
                    resp = self._send(meth, current, hdrs, body if meth == method else None)
                    if resp.status in (301, 302, 303, 307, 308) and resp.status not in ok:
                        location = resp.header("Location")
                        resp.discard()
                        hops += 1
                        if not location or hops > MAX_REDIRECTS:
                            raise NetworkError("%s: too many redirects" % redact(url))
                        current = urljoin(current, location)
                        if resp.status == 303 and meth != "HEAD":
                            meth = "GET"
                        continue
                    break
            except ssl.SSLCertVerificationError as e:
                raise NetworkError("%s: TLS certificate verification failed (%s); add the CA with "
                                   "--cert-dir or SSL_CERT_FILE, or use --tls-verify=false"
                                   % (redact(current), e.verify_message or e.reason)) from e
            except ValueError as e:          # a malformed Location header
                raise NetworkError("%s: bad redirect (%s)" % (redact(url), e)) from e
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                # Refused connections and unknown hosts will not heal in seconds: fail fast.
                if (attempt >= retries or method not in ("GET", "HEAD")
                        or isinstance(e, (ConnectionRefusedError, socket.gaierror))):
                    raise NetworkError("%s: %s" % (redact(current), _describe_oserror(e))) from e
                if isinstance(e, socket.timeout) and stalls.stalled():
                    raise Stalled(self.stall_message(current)) from e
                self.backoff(attempt, None, "%s: %s" % (redact(current), _describe_oserror(e)))
                attempt += 1
                continue
            if resp.status in ok:
                if method == "HEAD":
                    resp.close()             # no body: the connection goes back to the pool
                return resp
            if resp.status in RETRY_STATUSES and attempt < retries and method in ("GET", "HEAD"):
                retry_after = resp.header("Retry-After")
                resp.discard()
                self.backoff(attempt, retry_after, "%s: HTTP %d" % (redact(current), resp.status))
                attempt += 1
                continue
            raise status_error(resp, current)

    def stall_message(self, url: str) -> str:
        from urllib.parse import urlsplit
        return ("%s: no data for %g s, twice in a row; giving up (the same command resumes the download)"
                % (urlsplit(url).netloc.rsplit("@", 1)[-1], self.timeout))

    def backoff(self, attempt, retry_after, why):
        import random
        delay = backoff_delay(attempt, retry_after, self.rand() if self.rand else random.random())
        self.log("%s; retrying in %.1f s" % (why, delay))
        self.sleep(delay)


def _describe_oserror(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    reason = getattr(e, "reason", None)
    return "%s" % (reason or text)


def status_error(resp: Response, url: str) -> HTTPStatusError:
    """One clear line for an error status: registries' JSON errors ("MANIFEST_UNKNOWN:
    manifest unknown"), the Hub's X-Error-Message, or a short plain-text body."""
    import json
    try:
        body = resp.read(1 << 16).decode("utf-8", "replace").strip()
    except (OSError, NetworkError):
        body = ""
    detail, code = resp.header("X-Error-Message") or "", resp.header("X-Error-Code") or ""
    if not detail and body.startswith("{"):
        try:
            errors = [e for e in json.loads(body).get("errors") or [] if isinstance(e, dict)]
            detail = "; ".join("%s: %s" % (e.get("code", "?"), e.get("message", "")) for e in errors[:3])
            if errors and not code:
                code = str(errors[0].get("code", ""))
        except (ValueError, AttributeError, RecursionError):
            pass
    if not detail and body and not body.startswith(("<", "{")):
        detail = " ".join(body.split())[:200]
    names = {401: "authentication required", 403: "access denied", 404: "not found",
             416: "range not satisfiable", 429: "too many requests"}
    msg = "%s: HTTP %d %s%s" % (redact(url), resp.status, names.get(resp.status, resp.raw.reason or ""),
                                (" (" + detail + ")") if detail else "")
    return HTTPStatusError(msg, resp.status, code)


# ---------------------------------------------------------------------------
# 8. download
# ---------------------------------------------------------------------------

Fetched = namedtuple("Fetched", "path hexdigest size validator")


class _Changed(Exception):
    """The remote file changed under a resumed download: start it over."""


class Downloader:
    """Fetches one URL into the store's tmp/, resumable, hashing as bytes arrive.

    The partial file tmp/<key>.partial and its state tmp/<key>.json (URL validator and total)
    survive a kill; a rerun asks for the remaining bytes with Range and trusts only a matching
    Content-Range. One process at a time works on a key (flock on locks/<key>), and the
    verified file is consumed (published, or unpacked) before that lock is released. Big
    blobs come in Parts on several connections (`_parallel`), small ones in one stream.
    """

    def __init__(self, session: HTTPSession, store: "Store", progress=None, connections: int = 1,
                 part_min: int = PART_MIN, steal_min: int = STEAL_MIN, request_size: int = REQUEST_SIZE):
        self.session = session
        self.store = store
        self.progress = progress
        self.connections = max(1, connections)
        self.part_min, self.steal_min, self.request_size = part_min, steal_min, request_size

    def fetch(self, url: str, key: str, label: str, digest: str = None, size: int = None,
              auth: str = None, consume=None, on_wait=None) -> "Fetched":
        """Download, verify `digest`/`size` when given, then `consume(path, hexdigest)` under
        the key's lock (default: publish into blobs/). A blob already stored is not fetched."""
        consume = consume or (lambda path, hexdigest: self.store.publish_blob(path, hexdigest))
        with self.store.lock(key, on_wait=on_wait):
            if digest and self.store.has_blob(digest):
                return Fetched(self.store.blob_path(digest), parse_digest(digest), size, None)
            got = self._verified(url, key, label, digest, size, auth)
            try:
                consume(got.path, got.hexdigest)
            finally:
                _unlink_quiet(got.path)
            return got

    def _verified(self, url, key, label, digest, size, auth) -> "Fetched":
        partial = self.store.tmp_path(key + ".partial")
        state_path = self.store.tmp_path(key + ".json")
        state = self._load_state(state_path, url)
        for fresh_start in (False, True):
            if fresh_start:
                state = {}
            hexdigest, total = self._transfer(url, partial, state, state_path, label, auth)
            if (size is None or total == size) and (digest is None or hexdigest == parse_digest(digest)):
                os.unlink(state_path)
                return Fetched(partial, hexdigest, total, state.get("validator"))
            if not state.get("resumed"):
                break
            # A resumed file that fails its digest may have a damaged prefix: start over once.
        _unlink_quiet(partial)
        _unlink_quiet(state_path)
        if size is not None and total != size:
            raise DigestMismatch("%s: expected %d bytes, got %d" % (label, size, total))
        raise DigestMismatch("%s: content hashes to sha256:%s, expected %s" % (label, hexdigest, digest))

    @staticmethod
    def _load_state(path: str, url: str) -> dict:
        import json
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) and state.get("url") == url else {}

    def _transfer(self, url, partial, state, state_path, label, auth):
        """Run one download to completion, resuming after dropped connections: one stream, or
        parts on several connections when the server answers the probe's Range with a 206."""
        import hashlib
        attempts, first = 0, None
        guard = StallGuard(self.session.timeout)      # this stream's connection
        while True:
            if state.get("parts"):
                try:
                    return self._parallel(url, partial, state, state_path, label, auth, first)
                except _Changed:
                    state.clear()
                    attempts += 1
                    if attempts > self.session.retries:
                        raise NetworkError("%s: the file keeps changing while it downloads" % label)
                    continue
                finally:
                    if first is not None:
                        first.close(reuse=False)     # a no-op when the first part consumed it
                        first = None
            offset = _file_size(partial) if state else 0
            headers = {}
            if offset:
                headers["Range"] = "bytes=%d-" % offset
                if state.get("validator"):
                    headers["If-Range"] = state["validator"]
            elif self.connections > 1:
                headers["Range"] = "bytes=0-"         # a 206 says ranges work: parts may follow
            resp = self.session.request("GET", url, headers=headers, ok=(200, 206, 416), auth=auth,
                                        stalls=guard)
            cont = self._continuation(resp, offset)
            validator = resp.header("ETag") or resp.header("Last-Modified")
            if cont and not offset and resp.status == 206 and cont[0] and cont[0] >= 2 * self.part_min:
                state.update(url=url, validator=validator, total=cont[0], resumed=False, final_url=resp.url,
                             parts=[p.saved() for p in plan_parts(cont[0], self.connections, self.part_min)])
                _write_json_atomic(state_path, state)
                first = resp                       # its body is the first part's beginning
                continue
            with resp:
                if cont is None:                        # not the bytes we asked for: start over
                    resp.close(reuse=False)
                    state.clear()
                    attempts += 1
                    if attempts > self.session.retries:
                        raise NetworkError("%s: server keeps answering Range requests wrongly" % label)
                    continue
                total, offset = cont
                if total is not None and offset == total:      # 416 on a complete partial
                    resp.read(1 << 16)
                    return sha256_file(partial), total
                state.update(url=url, validator=validator, total=total, resumed=bool(offset))
                _write_json_atomic(state_path, state)
                h = hashlib.sha256()
                if offset:
                    _hash_prefix(partial, offset, h)
                done, clean = self._stream(resp, partial, offset, h, total, label, guard)
            # Without a length only a clean end of the body means complete.
            if clean and (total is None or done == total):
                return h.hexdigest(), done
            attempts += 1                                 # short body: ask for the rest
            of = human_size(total) if total is not None else "an unknown size"
            if attempts > self.session.retries:
                raise NetworkError("%s: connection keeps dropping at %s of %s"
                                   % (label, human_size(done), of))
            self.session.backoff(attempts - 1, None, "%s: connection dropped at %s of %s"
                                 % (label, human_size(done), of))

    def _parallel(self, url, partial, state, state_path, label, auth, first=None) -> tuple:
        """Fetch the planned parts on several connections at once, each written in place with
        pwrite. Progress is saved to the state file whenever about 512 KiB per connection has
        arrived since the last save (and at least twice a second), so a rerun after a kill
        fetches little twice. Returns the finished file's (sha256, size): hashed once at the
        end, as the parts arrive unordered."""
        import threading
        try:
            job = _PartsJob(url, state, first, save_every=self.connections * CHUNK // 2)
        except ValueError:
            raise _Changed()                     # a state file that does not fit: start over
        state["resumed"] = state.get("resumed") or any(p.done for p in job.parts)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != job.total:
                try:
                    os.posix_fallocate(fd, 0, job.total)     # claims the space now: ENOSPC before, not during
                except (AttributeError, OSError) as e:
                    if getattr(e, "errno", None) == errno.ENOSPC:
                        raise
                    os.ftruncate(fd, job.total)
            saved = _StateFile(state_path)
            threads = [threading.Thread(target=self._worker, args=(job, fd, auth), daemon=True)
                       for _ in range(self.connections)]
            if self.progress:
                self.progress.start(label, job.total, job.done())
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    job.dirty.wait(0.5)
                    job.dirty.clear()
                    saved.save(job.snapshot(state))
                    if self.progress:
                        self.progress.update(job.done())
            except BaseException:
                job.errors.append(KeyboardInterrupt())     # tell the workers to stop
                raise
            finally:
                saved.save(job.snapshot(state))            # the last word, however the loop ended
                saved.close()
            failure = job.failure()
            if self.progress:
                self.progress.finish(failure is None)
            if failure is not None:
                raise failure
        finally:
            os.close(fd)
        return sha256_file(partial), job.total

    def _worker(self, job: "_PartsJob", fd: int, auth: str) -> None:
        """One connection: takes parts until none is left. After two stalls in a row it
        gives its part back and stops; the others finish the work, if any still can."""
        guard = StallGuard(self.session.timeout)
        while not job.errors:
            part = job.take(self.steal_min)
            if part is None:
                return
            try:
                self._fetch_part(job, part, fd, auth, guard)
            except Stalled as e:
                job.stalled.append(e)
                return
            except BaseException as e:   # noqa: BLE001 - handed to the main thread
                job.errors.append(e)
            finally:
                job.release(part)

    def _fetch_part(self, job: "_PartsJob", part: Part, fd: int, auth: str, guard: StallGuard) -> None:
        """Fill the part from its position in requests of at most request_size on one
        keep-alive connection, resuming after drops. A CDN URL that expired (403/410) is
        resolved again from the original URL, without the credentials on the CDN."""
        import http.client
        import socket
        from urllib.parse import urlsplit
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        failures = 0
        while part.left > 0:
            pos = part.pos
            with job.lock:
                req_end = part.requested = min(part.end, pos + self.request_size)
            current = job.where
            resp = job.take_first(part)
            if resp is None:
                headers = {"Range": "bytes=%d-%d" % (pos, req_end - 1)}
                if job.validator:
                    headers["If-Range"] = job.validator
                same_origin = urlsplit(current)[:2] == urlsplit(job.url)[:2]
                resp = self.session.request("GET", current, headers=headers, ok=(200, 206, 403, 410),
                                            auth=auth if same_origin else None, stalls=guard)
            if resp.status == 200:                       # If-Range failed: not the file we started
                resp.close(reuse=False)
                raise _Changed()
            if resp.status in (403, 410):
                resp.discard()
                failures += 1
                if current == job.url or failures > self.session.retries:
                    raise NetworkError("%s: HTTP %d for a part of the download"
                                       % (redact(current), resp.status))
                job.resolve_again(current, lambda: self.session.request(
                    "GET", job.url, headers={"Range": "bytes=0-0"}, ok=(206,), auth=auth))
                continue
            cr = parse_content_range(resp.header("Content-Range"))
            if cr is None or cr[0] != pos:
                resp.close(reuse=False)
                raise NetworkError("%s: server answered a part with a wrong Content-Range" % redact(current))
            try:
                while pos < req_end:
                    n = resp.readinto(buf)
                    if not n:
                        break
                    n = min(n, req_end - pos)
                    os.pwrite(fd, view[:n], pos)
                    pos += n
                    job.advanced(part, n)
                resp.close(reuse=pos >= cr[1] + 1)
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                resp.close(reuse=False)
                if isinstance(e, socket.timeout):
                    if guard.stalled():
                        raise Stalled(self.session.stall_message(current)) from e
                else:
                    failures += 1
                    if failures > self.session.retries:
                        raise NetworkError("%s: a part keeps failing: %s"
                                           % (redact(current), _describe_oserror(e)))
                self.session.backoff(max(failures - 1, 0), None, "part at %d: %s"
                                     % (pos, _describe_oserror(e)))

    @staticmethod
    def _continuation(resp, offset):
        """(total size or None, offset to write at) from a response to a (ranged) GET, or None
        when the response does not continue at `offset` (only Content-Range is trusted)."""
        cr = parse_content_range(resp.header("Content-Range"))
        if resp.status == 416:
            return (offset, offset) if cr and cr[2] == offset else None
        if resp.status == 206:
            return (cr[2], offset) if cr and cr[0] == offset and cr[1] + 1 == cr[2] else None
        length = resp.header("Content-Length")
        return (int(length) if length and length.isdigit() else None), 0

    def _stream(self, resp, partial, offset, h, total, label, guard: StallGuard) -> tuple:
        """Append the body at `offset`, hashing in order. Returns (bytes on disk at the end,
        whether the body ended cleanly rather than with a dropped connection); Stalled when
        the guard says a stall was one too many."""
        import http.client
        import socket
        done = offset
        if self.progress:
            self.progress.start(label, total, done)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o644)
        hasher = _PipelinedHash(h)
        clean, stalled = True, None
        try:
            os.ftruncate(fd, offset)
            while True:
                buf = hasher.buffer()
                try:
                    n = resp.readinto(buf)
                except (OSError, http.client.HTTPException, socket.timeout) as e:
                    resp.close(reuse=False)
                    n, clean = 0, False
                    if isinstance(e, socket.timeout) and guard.stalled():
                        stalled = Stalled(self.session.stall_message(resp.url))
                if not n:
                    hasher.give_back(buf)
                    break
                os.pwrite(fd, memoryview(buf)[:n], done)
                hasher.submit(buf, n)
                done += n
                if self.progress:
                    self.progress.update(done)
        finally:
            hasher.close()
            os.close(fd)
        if self.progress:
            self.progress.finish(clean and (done == total or total is None))
        if stalled:
            raise stalled
        return done, clean


class _PartsJob:
    """What the connections of one parallel download share: the parts, the URL they fetch
    (a CDN URL, resolved again when it expires), the probe's response that carries the first
    part's beginning, failures, and how much arrived since progress was last saved."""

    def __init__(self, url: str, state: dict, first, save_every: int):
        import threading
        self.url, self.total = url, state["total"]
        self.where = state.get("final_url") or url
        self.validator = state.get("validator")
        self.parts = [Part.load(p, self.total) for p in state["parts"]]
        self.first = first
        self.lock = threading.Lock()
        self.busy = set()                   # ids of parts a connection is working on
        self.errors, self.stalled = [], []
        self.unsaved, self.save_every = 0, save_every
        self.dirty = threading.Event()      # set when enough arrived to be worth saving

    def take(self, steal_min: int):
        """A part for an idle connection: one nobody works on, else the back half of the
        unrequested rest of the busy part with the most of it (a slow or stalled connection
        then holds back only a shrinking tail); None when there is nothing worth taking."""
        with self.lock:
            part = next((p for p in self.parts if id(p) not in self.busy and p.left > 0), None)
            if part is None:
                active = [p for p in self.parts if id(p) in self.busy and p.unrequested >= 2 * steal_min]
                if not active:
                    return None
                part = max(active, key=lambda p: p.unrequested).split()
                self.parts.append(part)
            self.busy.add(id(part))
            return part

    def release(self, part: Part) -> None:
        with self.lock:
            self.busy.discard(id(part))

    def take_first(self, part: Part):
        """The probe's response, once, to the connection filling the file's first bytes."""
        with self.lock:
            if self.first is None or part.pos != 0:
                return None
            first, self.first = self.first, None
            return first

    def resolve_again(self, expired: str, probe) -> None:
        """One connection asks the origin for a fresh CDN URL; the others then use it."""
        with self.lock:
            if self.where == expired:
                fresh = probe()
                fresh.discard()
                self.where = fresh.url

    def advanced(self, part: Part, n: int) -> None:
        part.done += n
        self.unsaved += n                   # a lost update only delays a save a little
        if self.unsaved >= self.save_every:
            self.unsaved = 0
            self.dirty.set()

    def done(self) -> int:
        return sum(p.done for p in self.parts)

    def snapshot(self, state: dict) -> dict:
        with self.lock:
            state.update(final_url=self.where, parts=[p.saved() for p in self.parts])
        return state

    def failure(self):
        """The exception that ended the download, or None when every part is complete."""
        if self.errors:
            return self.errors[0]
        if any(p.left for p in self.parts):
            return self.stalled[0] if self.stalled else NetworkError("%s: parts left unfinished"
                                                                     % redact(self.url))
        return None


class _StateFile:
    """A parallel download's state, saved many times a second: rewritten in place by one
    pwrite, padded with spaces to the longest text so far (JSON ignores them). Up to a page,
    such a write is whole or not done at all when the process is killed; a longer state is
    replaced through a rename instead. Ten times cheaper than a rename per save."""
    PAGE = 4096

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def save(self, state: dict) -> None:
        import json
        data = json.dumps(state, separators=(",", ":")).encode()
        if max(len(data), self.size) > self.PAGE:
            os.close(self.fd)
            _write_json_atomic(self.path, state)
            self.fd = os.open(self.path, os.O_RDWR)
            self.size = os.fstat(self.fd).st_size
            return
        self.size = max(self.size, len(data))
        os.pwrite(self.fd, data.ljust(self.size), 0)

    def close(self) -> None:
        os.close(self.fd)


class _PipelinedHash:
    """sha256 in a second thread, so hashing one buffer overlaps receiving and writing the
    next (hashlib releases the GIL). Buffers cycle reader -> hasher -> reader, in order."""

    def __init__(self, h, buffers: int = 4):
        import queue
        import threading
        self.h = h
        self.free, self.full = queue.Queue(), queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(CHUNK))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def buffer(self) -> bytearray:
        return self.free.get()

    def give_back(self, buf: bytearray) -> None:
        self.free.put(buf)

    def submit(self, buf: bytearray, n: int) -> None:
        self.full.put((buf, n))

    def _run(self) -> None:
        while True:
            item = self.full.get()
            if item is None:
                return
            self.h.update(memoryview(item[0])[:item[1]])
            self.free.put(item[0])

    def close(self) -> None:
        """Wait until every submitted buffer is hashed."""
        self.full.put(None)
        self.thread.join()


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _hash_prefix(path: str, length: int, h) -> None:
    with open(path, "rb", buffering=0) as f:
        left = length
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                raise StoreError("%s shrank while resuming" % path)
            h.update(data)
            left -= len(data)


class atomic_file:
    """`with atomic_file(path) as f:` writes PATH.<pid>.tmp (created with `mode`), then renames
    it over `path`: readers see the old file or the whole new one, and a failure leaves no
    temporary file. `text` opens it for str."""

    def __init__(self, path: str, mode: int = 0o644, text: bool = False, fsync: bool = False):
        self.path, self.mode, self.text, self.fsync = path, mode, text, fsync
        self.tmp = "%s.%d.tmp" % (path, os.getpid())

    def __enter__(self):
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode)
        self.file = os.fdopen(fd, "w" if self.text else "wb")
        return self.file

    def __exit__(self, exc_type, *exc):
        renamed = False
        try:
            if exc_type is None:
                if self.fsync:
                    self.file.flush()
                    os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self.tmp, self.path)
                renamed = True
        finally:
            if not renamed:
                _unlink_quiet(self.tmp)
            self.file.close()                       # a no-op unless writing failed before


def _write_json_atomic(path: str, obj, fsync: bool = False) -> None:
    import json
    with atomic_file(path, text=True, fsync=fsync) as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------
# 9. store
# ---------------------------------------------------------------------------

class FileSpec(namedtuple("FileSpec", "name digest size role media_type")):
    """One file of a model: its name in the folder, 'sha256:<hex>', bytes, and role
    (model, mmproj, template, params, other)."""
    __slots__ = ()


class Model(namedtuple("Model", "ref path meta")):
    """A model folder in the store: its canonical reference string, folder path and .ref.json."""
    __slots__ = ()

    @classmethod
    def at(cls, path: str, meta: dict) -> "Model":
        """The model in folder `path`, whose .ref.json says `meta`."""
        return cls(meta.get("ref", path), path, meta)

    @property
    def files(self) -> list:
        return [FileSpec(f["name"], f["digest"], f["size"], f.get("role", "other"), f.get("media_type", ""))
                for f in self.meta.get("files", [])]

    @property
    def size(self) -> int:
        return sum(f.get("size", 0) for f in self.meta.get("files", []))

    def model_file(self):
        """The file a runtime loads: the first with role 'model', else the first file."""
        files = self.files
        return next((f for f in files if f.role == "model"), files[0] if files else None)


class Store:
    """The content-addressed store. Every write goes through tmp/ and becomes visible with one
    rename or link, so a kill at any moment leaves either the old state or the new one."""

    def __init__(self, root: str, log=None, clock=time.time):
        self.root = os.path.abspath(root)
        self.clock = clock                      # what listing stamps are judged settled by
        self.blobs = os.path.join(self.root, "blobs", "sha256")
        self.repos = os.path.join(self.root, "repos")
        self.tmp = os.path.join(self.root, "tmp")
        self.locks = os.path.join(self.root, "locks")
        self.listing = os.path.join(self.root, "listing.json")
        self.log = log or (lambda msg: None)
        self._said_copy = False

    # -- layout and locks
    def ensure(self) -> "Store":
        try:
            for d in (self.blobs, self.repos, self.tmp, self.locks):
                os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise StoreError("cannot create the store at %s: %s" % (self.root, e.strerror or e))
        return self

    def exists(self) -> bool:
        return os.path.isdir(self.repos)

    def lock(self, name: str, shared: bool = False, on_wait=None):
        """flock on locks/<name>: pulls hold 'store' shared, rm/prune/fsck --repair exclusive."""
        return _FileLock(os.path.join(self.locks, name + ".lock"), shared, on_wait)

    def tmp_path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    # -- blobs
    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, parse_digest(digest))

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_path(digest))

    def publish_blob(self, tmp_file: str, hexdigest: str) -> str:
        """Move a verified file into blobs/ without ever replacing an existing blob (a link
        fails with EEXIST instead), so every model keeps sharing one inode."""
        final = os.path.join(self.blobs, hexdigest)
        if os.path.exists(final):
            os.unlink(tmp_file)
            return final
        fd = os.open(tmp_file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_file, 0o444)
        try:
            os.link(tmp_file, final)
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno not in _NO_LINK_ERRNOS:
                raise
            os.rename(tmp_file, final)     # a filesystem without hardlinks: rename is still atomic
            return final
        os.unlink(tmp_file)
        return final

    def import_file(self, src: str, progress=None, expect: str = None, link: bool = True) -> tuple:
        """Bring a local file in: hardlink it when it is ours and on our filesystem (no copy;
        the shared inode becomes the read-only blob), else (or with link=False) copy it.
        Returns (hexdigest, size); the bytes hashed are the bytes published. With `expect` (a
        digest), other bytes are refused with DigestMismatch and nothing is published."""
        tmp_file = os.path.join(self.tmp, "import-%d-%s" % (os.getpid(), os.urandom(6).hex()))
        try:
            if link and os.geteuid() in (0, os.stat(src).st_uid):
                self.link_or_copy(src, tmp_file)
            else:                       # another user's file: linking would chmod their inode
                self._copy(src, tmp_file)
            hexdigest = sha256_file(tmp_file, progress)
            size = os.stat(tmp_file).st_size
            if expect and "sha256:" + hexdigest != expect:
                raise DigestMismatch("%s hashes to sha256:%s, expected %s" % (src, hexdigest, expect))
            self.publish_blob(tmp_file, hexdigest)
            return hexdigest, size
        except BaseException:
            _unlink_quiet(tmp_file)
            raise

    def link_or_copy(self, src: str, dst: str) -> None:
        """Hardlink, or copy where the filesystem cannot link (EXDEV, EPERM, ...)."""
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in _NO_LINK_ERRNOS:
                raise
            self._copy(src, dst)

    def _copy(self, src: str, dst: str) -> None:
        import shutil
        if not self._said_copy:
            self.log("cannot hardlink %s into the store; copying" % src)
            self._said_copy = True
        shutil.copyfile(src, dst)       # sendfile/copy_file_range under the hood on Linux

    # -- model folders
    def folder(self, ref: Ref) -> str:
        parts = ref.folder()
        if any(p in ("", ".", "..", REF_FILE) or "\0" in p for p in parts):
            raise UsageError("cannot store %s: its name has a reserved path component" % (ref,))
        return os.path.join(self.repos, *parts)

    def publish_model(self, ref: Ref, files: list, meta: dict) -> Model:
        """Build the folder in tmp/ (links + .ref.json), then move it into place in one step:
        a new folder by rename, a replacement by an atomic exchange with the old one."""
        import tempfile
        import shutil
        dest = self.folder(ref)
        with self.lock("model-" + _sha256_bytes(dest.encode())[7:39]):
            self._refuse_nesting(dest)
            build = tempfile.mkdtemp(prefix="model-", dir=self.tmp)
            try:
                for spec in files:
                    target = os.path.join(build, safe_relpath(spec.name))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    self.link_or_copy(self.blob_path(spec.digest), target)
                record = dict(meta, version=REF_VERSION, ref=str(ref), pulled=time.time(),
                              files=[dict(name=f.name, digest=f.digest, size=f.size, role=f.role,
                                          media_type=f.media_type) for f in files])
                _write_json_atomic(os.path.join(build, REF_FILE), record, fsync=True)
                os.chmod(build, 0o755)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if os.path.lexists(dest):
                    _exchange(build, dest)      # build now holds the old folder
                else:
                    os.rename(build, dest)
            finally:
                shutil.rmtree(build, ignore_errors=True)
            return Model(str(ref), dest, record)

    def _refuse_nesting(self, dest: str) -> None:
        """Model folders never contain one another, so renaming one never moves another."""
        parent = os.path.dirname(dest)
        while len(parent) > len(self.repos):
            if os.path.exists(os.path.join(parent, REF_FILE)):
                raise StoreError("%s would be stored inside the folder of another model (%s)"
                                 % (dest, parent))
            parent = os.path.dirname(parent)
        if os.path.isdir(dest) and not os.path.exists(os.path.join(dest, REF_FILE)):
            for _dirpath, _dirs, names in os.walk(dest):
                if REF_FILE in names:
                    raise StoreError("%s would hide other models stored below it" % dest)

    def load(self, path: str):
        """The Model in folder `path`, or None when there is none. Everything a command will
        turn into a path or a number is checked here, so a damaged .ref.json is one error."""
        found = self._read_model(path)
        return found[0] if found else None

    def _read_model(self, path: str):
        """load()'s (Model, stat of the .ref.json it read), or None."""
        import json
        try:
            fd = os.open(path + "/" + REF_FILE, os.O_RDONLY)   # os.open: `list` does this for every folder
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise StoreError("%s: unreadable %s: %s" % (path, REF_FILE, e.strerror or e))
        try:
            meta, st = json.loads(_read_fd(fd)), os.fstat(fd)
        except IsADirectoryError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            raise StoreError("%s: unreadable %s: %s" % (path, REF_FILE, e))
        finally:
            os.close(fd)
        version = meta.get("version") if isinstance(meta, dict) else None
        if isinstance(version, int) and version > REF_VERSION:
            raise StoreError("%s was written by a newer ramalama.pyz (layout version %s)" % (path, version))
        if version is None and isinstance(meta, dict):
            version = meta["version"] = 0              # written before layouts carried a version: same fields
        if not _ref_json_ok(meta):
            raise StoreError("%s: malformed %s (run `ramalama fsck`, or pull the model again)"
                             % (path, REF_FILE))
        return Model.at(path, meta), st

    def find(self, ref: Ref):
        """Our model for ref, else one ramalama 0.25 pulled into the same directory, else None."""
        model = self.load(self.folder(ref)) if self.exists() else None
        if model is None:
            model = next((m for m in self.ramalama_models() if m.ref == str(ref)), None)
        return model

    def get(self, ref: Ref) -> Model:
        model = self.find(ref)
        if model is None:
            raise NotFound("%s is not in the store (pull it first)" % (ref,))
        return model

    def ramalama_models(self):
        return ramalama_models(self.root)

    def models(self, broken: list = None, remember: bool = False):
        """Every model folder below repos/. With a `broken` list, folders whose .ref.json cannot
        be read are appended there as (path, error) instead of raising. A folder is tried as a
        model before it is listed: model folders are never scanned.

        With `remember` (only `list`, which shows what it finds and acts on nothing), what was
        read is kept in listing.json with the stamp of each folder and .ref.json: an entry
        whose stamp still matches is taken from there, so an unchanged model costs two stats
        instead of a walk of its folders and a read of its .ref.json. The stamp is the inode,
        size, mtime and ctime: a folder's times change whenever an entry in it is added,
        removed or renamed, a file's ctime with every change to it, and no one can set a ctime.
        A stamp that has not settled yet (_settled) is not kept."""
        seen = self._listing() if remember else {}
        kept, now_ns = {}, int(self.clock() * 1e9)
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                found = self._folder(rel, seen, kept if remember else None, now_ns)
            except StoreError as e:
                if broken is None:
                    raise
                broken.append((self.repos + rel, str(e)))
                continue
            if isinstance(found, Model):
                yield found
            else:
                stack.extend(rel + "/" + name for name in reversed(found))
        if remember and any(seen.get(rel) is not entry for rel, entry in kept.items()):
            self._save_listing(kept)        # something was read: a listing that only lost entries can wait

    def _folder(self, rel: str, seen: dict, kept, now_ns: int):
        """What repos/<rel> holds: its Model, or the names of its subfolders ([] when it is
        gone). Taken from `seen` when the stamp matches; what is read goes into `kept`."""
        path = self.repos + rel
        known = seen.get(rel)
        if known is not None:
            try:
                stamp, content = known
                is_model = isinstance(content, dict)
                current = os.stat(path + "/" + REF_FILE if is_model else path, follow_symlinks=False)
                intact = _ref_json_ok(content) if is_model else _folder_names_ok(content)
                if intact and _stamp(current) == stamp:
                    kept[rel] = known
                    return Model.at(path, content) if is_model else content
            except (OSError, TypeError, ValueError):
                pass                                  # changed, gone, or not an entry we wrote
        read = self._read_model(path) if rel else None
        if read:
            found, st = read
            content = found.meta
        else:
            try:
                st = None if kept is None else os.stat(path, follow_symlinks=False)   # before the scan
                found = content = [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []
        if kept is not None and _settled(st, now_ns):
            kept[rel] = [_stamp(st), content]
        return found

    def _listing(self) -> dict:
        """listing.json's entries, or {} when it is missing, unreadable or of another layout."""
        import json
        try:
            with open(self.listing, "rb") as f:
                saved = json.loads(f.read())
            entries = saved["entries"] if saved["layout"] == REF_VERSION else {}
        except (OSError, ValueError, TypeError, KeyError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def _save_listing(self, entries: dict) -> None:
        """Best effort: a store this user cannot write is listed the slow way every time."""
        import json
        try:
            with atomic_file(self.listing, text=True) as f:
                f.write(json.dumps({"layout": REF_VERSION, "entries": entries}, separators=(",", ":")))
        except OSError:
            pass

    def referenced(self) -> set:
        return {f["digest"] for m in self.models() for f in m.meta["files"]}

    def remove(self, model: Model) -> int:
        """Delete a model folder, then the blobs nothing references any more. Caller holds the
        exclusive store lock. Returns the bytes freed."""
        import shutil
        import tempfile
        if model.meta.get("store") == "ramalama":
            raise StoreError("%s is in ramalama's store, which this tool never changes; "
                             "`ramalama rm` removes it" % model.ref)
        trash = tempfile.mkdtemp(prefix="rm-", dir=self.tmp)
        os.rename(model.path, os.path.join(trash, "m"))
        shutil.rmtree(trash, ignore_errors=True)
        self._remove_empty_parents(os.path.dirname(model.path))
        # The .ref.json files are the references: a blob's st_nlink also counts the user's own
        # file after a file:// pull, and copies made where hardlinks fail count nothing.
        still = self.referenced()
        return sum(self._delete_blob(d) for d in {f.digest for f in model.files} - still)

    def _remove_empty_parents(self, path: str) -> None:
        while len(path) > len(self.repos):
            try:
                os.rmdir(path)
            except OSError:
                return
            path = os.path.dirname(path)

    def _delete_blob(self, digest: str) -> int:
        path = self.blob_path(digest)
        try:
            st = os.stat(path)
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return st.st_size if st.st_nlink == 1 else 0

    def blob_digests(self) -> list:
        try:
            return ["sha256:" + n for n in sorted(os.listdir(self.blobs))
                    if len(n) == 64 and not n.strip("0123456789abcdef")]
        except FileNotFoundError:
            return []

    def prune(self) -> tuple:
        """Delete unreferenced blobs and every leftover in tmp/ (caller holds the exclusive
        lock, so no pull is running). Returns (bytes freed, blobs removed, tmp entries removed)."""
        import shutil
        still = self.referenced()
        freed, nblobs = 0, 0
        for digest in self.blob_digests():
            if digest not in still:
                freed += self._delete_blob(digest)
                nblobs += 1
        ntmp = 0
        for entry in os.scandir(self.tmp):
            if entry.is_dir(follow_symlinks=False):
                freed += _tree_size(entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                freed += entry.stat(follow_symlinks=False).st_size if _nlink(entry.path) == 1 else 0
                _unlink_quiet(entry.path)
            ntmp += 1
        return freed, nblobs, ntmp

    def usage(self) -> dict:
        """Disk use: blobs counted once per inode, plus everything else in the tree."""
        blob_bytes = sum(os.stat(self.blob_path(d)).st_size for d in self.blob_digests())
        return {"blobs": len(self.blob_digests()), "blob_bytes": blob_bytes,
                "disk_bytes": _tree_size(self.root)}

    def fsck(self, repair: bool = False, progress=None) -> list:
        """Re-hash every blob and check every model folder; returns one line per problem.
        With repair, corrupt blobs move to quarantine/ and the affected models are marked
        damaged (their broken files unlinked, so nothing runs them by accident)."""
        problems, bad = [], set()
        for digest in self.blob_digests():
            path = self.blob_path(digest)
            if progress:
                progress.start("verify " + digest[7:19], os.stat(path).st_size)
            actual = sha256_file(path, progress.update if progress else None)
            if progress:
                progress.finish(True)
            if "sha256:" + actual != digest:
                bad.add(digest)
                problems.append("blob %s is corrupt: its content hashes to sha256:%s" % (digest, actual))
        unreadable = []
        for model in self.models(unreadable):
            broken = []
            for f in model.files:
                where = os.path.join(model.path, f.name)
                if f.digest in bad or not self.has_blob(f.digest):
                    broken.append(f.name)
                    problems.append("%s: %s has %s blob %s" % (model.ref, f.name,
                                    "a corrupt" if f.digest in bad else "no", f.digest))
                elif not os.path.exists(where):
                    broken.append(f.name)
                    problems.append("%s: %s is missing from %s" % (model.ref, f.name, model.path))
                elif (not _same_file(where, self.blob_path(f.digest))
                      and "sha256:" + sha256_file(where) != f.digest):
                    broken.append(f.name)
                    problems.append("%s: %s differs from blob %s" % (model.ref, f.name, f.digest))
            if repair and broken:
                self._mark_damaged(model, broken)
        problems += [error for _path, error in unreadable]
        if repair:
            self._quarantine(bad, [path for path, _error in unreadable])
        return problems

    def _quarantine(self, digests, folders) -> None:
        """Move corrupt blobs and unreadable model folders aside into quarantine/."""
        qdir = os.path.join(self.root, "quarantine")
        os.makedirs(qdir, exist_ok=True)
        stamp = int(time.time())
        for digest in digests:
            os.rename(self.blob_path(digest), os.path.join(qdir, "sha256-%s-%d" % (digest[7:], stamp)))
        for path in folders:
            os.rename(path,
                      os.path.join(qdir, "model-%s-%d"
                                   % (os.path.relpath(path, self.repos).replace("/", "_"), stamp)))
            self._remove_empty_parents(os.path.dirname(path))

    def _mark_damaged(self, model: Model, names: list) -> None:
        for name in names:
            _unlink_quiet(os.path.join(model.path, safe_relpath(name)))
        meta = dict(model.meta, damaged=sorted(set(model.meta.get("damaged", [])) | set(names)))
        _write_json_atomic(os.path.join(model.path, REF_FILE), meta, fsync=True)


_NO_LINK_ERRNOS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS)


# -- models that ramalama 0.25 pulled into <root>/store/: read and adopted, never written

RAMALAMA_ROLES = {"gguf": "model", "mmproj": "mmproj", "chat_template": "template"}


def linkable_unchanged(path: str) -> bool:
    """Whether one of ramalama's files can be hardlinked as a blob without changing it: only
    when it is read-only already (publishing makes a blob's inode 0444); else it is copied."""
    import stat
    return stat.S_IMODE(os.stat(path).st_mode) == 0o444


def ramalama_name(source: str, path: str, tag: str) -> str:
    """The name ramalama 0.25 lists a model under (its trim_model_name)."""
    name = "%s%s%s:%s" % (source, ":///" if source == "file" else "://", path, tag)
    if name.startswith("huggingface://"):
        name = "hf://" + name[len("huggingface://"):]
    if tag == "latest" and source not in ("ollama", "oci"):
        name = name[:-len(":latest")]
    return name


def ramalama_models(root: str):
    """The complete models in ramalama's store under `root`: <transport>/<path>/refs/<tag>.json
    naming files in snapshots/<hash>/. Each is a Model whose path is the snapshot folder, with
    meta["store"] = "ramalama" and digests unknown (its blob names are not always content
    hashes). What cannot be read is skipped: ramalama's files are its own business."""
    import json
    base = os.path.join(root, "store")
    for dirpath, dirnames, _files in os.walk(base):
        if "refs" not in dirnames:
            continue
        dirnames[:] = []                               # a model folder: nothing below is a model
        rel = os.path.relpath(dirpath, base).split(os.sep)
        for tag_file in sorted(os.listdir(os.path.join(dirpath, "refs"))):
            if not tag_file.endswith(".json") or len(rel) < 2:
                continue
            try:
                with open(os.path.join(dirpath, "refs", tag_file), "rb") as f:
                    ref_json = json.loads(f.read())
                snapshot = os.path.join(dirpath, "snapshots", safe_relpath(str(ref_json["hash"])))
                files = []
                for entry in ref_json["files"]:
                    path = os.path.join(snapshot, safe_relpath(entry["name"]))
                    files.append({"name": entry["name"], "digest": "", "size": os.path.getsize(path),
                                  "role": RAMALAMA_ROLES.get(entry.get("type"), "other")})
                name = ramalama_name(rel[0], "/".join(rel[1:]), tag_file[:-len(".json")])
                mtime = os.path.getmtime(os.path.join(dirpath, "refs", tag_file))
            except (OSError, ValueError, KeyError, TypeError, FormatError, UsageError):
                continue                               # partial, or not what 0.25 writes
            try:
                ref = str(parse_ref(name))
            except RamalamaError:
                ref = name
            yield Model(ref, snapshot, {"ref": ref, "files": files, "pulled": mtime, "store": "ramalama",
                                        "ramalama_name": name})


def _read_fd(fd: int, size: int = 1 << 16) -> bytes:
    """All of a small regular file (a .ref.json) from an open descriptor: one read when it is
    shorter than `size` (a read of a regular file stops short only at its end)."""
    chunks = [os.read(fd, size)]
    while len(chunks[-1]) == size:
        chunks.append(os.read(fd, size))
    return b"".join(chunks)


def _stamp(st) -> list:
    """What tells a file or folder changed: inode, size, mtime and ctime."""
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _settled(st, now_ns: int) -> bool:
    """Whether a stamp is old enough to remember: a second change within the same tick of the
    filesystem's clock would leave it as it is. Times in whole seconds (ext3, FAT, some NFS
    servers) tick once a second or two; others within milliseconds (the kernel's clock tick)."""
    tick = 2_000_000_000 if st.st_ctime_ns % 1_000_000_000 == 0 else 100_000_000
    return st.st_ctime_ns < now_ns - tick


def _folder_names_ok(names) -> bool:
    """Whether a remembered folder listing holds only plain names: none leads out of repos/."""
    return isinstance(names, list) and all(
        isinstance(n, str) and n not in ("", ".", "..") and "/" not in n for n in names)


def _ref_json_ok(meta) -> bool:
    """Whether a .ref.json has every field a command turns into a path or a number."""
    if not (isinstance(meta, dict) and isinstance(meta.get("version"), int)
            and isinstance(meta.get("files"), list)
            and isinstance(meta.get("ref", ""), str) and isinstance(meta.get("pulled", 0), (int, float))):
        return False
    try:
        for f in meta["files"]:
            if not (isinstance(f, dict) and isinstance(f.get("size"), int)
                    and f.get("name") == safe_relpath(f["name"])):
                return False
            parse_digest(f["digest"])
    except (KeyError, TypeError, FormatError):
        return False
    return True


def _exchange(a: str, b: str) -> None:
    """Swap two paths atomically: renameat2(RENAME_EXCHANGE) on Linux. Where that is missing,
    two renames, putting b back if the second fails."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:    # AT_FDCWD, EXCHANGE
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), b)
    except AttributeError:
        pass                                  # no renameat2 in this libc
    aside = a + ".old"
    os.rename(b, aside)
    try:
        os.rename(a, b)
    except BaseException:
        os.rename(aside, b)
        raise
    os.rename(aside, a)


def _same_file(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _nlink(path: str) -> int:
    try:
        return os.stat(path).st_nlink
    except FileNotFoundError:
        return 0


def _tree_size(path: str) -> int:
    """Allocated bytes under path, each inode once (du semantics)."""
    seen, total = set(), 0
    for dirpath, dirs, names in os.walk(path):
        for n in names + dirs:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class _FileLock:
    """flock(2) on a file under locks/; on_wait is told once when we have to wait."""

    def __init__(self, path: str, shared: bool, on_wait):
        self.path, self.shared, self.on_wait, self.fd = path, shared, on_wait, None

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.on_wait:
                self.on_wait()
            fcntl.flock(self.fd, mode)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# ---------------------------------------------------------------------------
# 10. registries: credentials, the OCI distribution client, model formats
# ---------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_RAW = "application/vnd.cncf.model.weight.v1.raw"
MAX_MANIFEST = 4 << 20
UPLOAD_CHUNK = 64 << 20           # PATCH size for blobs above UPLOAD_MONOLITHIC
UPLOAD_MONOLITHIC = 256 << 20
# Ollama layer types -> the names their files get in a model folder
OLLAMA_LAYERS = {"model": "model.gguf", "projector": "mmproj.gguf", "adapter": "adapter.gguf",
                 "template": "template", "system": "system", "params": "params.json",
                 "license": "license", "messages": "messages.json"}
# Docker Model Runner layer types -> default names
DMR_LAYERS = {"gguf.v3": "model.gguf", "mmproj": "mmproj.gguf", "license": "LICENSE",
              "chat.template.jinja": "template.jinja", "safetensors": "model.safetensors"}


class AuthError(NetworkError):
    """Missing or rejected registry credentials."""


def auth_files(env: dict, authfile: str = None) -> list:
    """Credential files in the order podman reads them; --authfile replaces them all."""
    if authfile:
        return [authfile]
    home = env.get("HOME") or os.path.expanduser("~")
    paths = [env["REGISTRY_AUTH_FILE"]] if env.get("REGISTRY_AUTH_FILE") else []
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    paths.append(os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                              "containers", "auth.json"))
    paths.append(os.path.join(env.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json"))
    return paths


def auth_keys(host: str, repo: str = "") -> list:
    """Keys an auth file may use for host/repo, most specific first (namespaces win)."""
    parts = repo.split("/") if repo else []
    keys = ["/".join([host] + parts[:i]) for i in range(len(parts), 0, -1)] + [host]
    if host == DOCKER_HUB:
        keys += ["index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"]
    return keys


def _normalise_auth_key(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix) and key != "https://index.docker.io/v1/":
            key = key[len(prefix):]
    return key.rstrip("/")


def read_auth_file(path: str) -> dict:
    import json
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError("%s: unreadable credentials file: %s" % (path, e))
    if not isinstance(data, dict):
        raise ConfigError("%s: credentials file is not a JSON object" % path)
    return data


def find_credentials(env: dict, host: str, repo: str = "", authfile: str = None, run=None):
    """(user, secret) for host/repo from the first auth file that has them (including
    credHelpers/credsStore helpers, asked over stdin), or None."""
    import base64
    for path in auth_files(env, authfile):
        data = read_auth_file(path)
        auths = data.get("auths") or {}
        helpers = data.get("credHelpers") or {}
        if not isinstance(auths, dict) or not isinstance(helpers, dict):
            raise ConfigError("%s: 'auths' and 'credHelpers' must be JSON objects" % path)
        auths = {_normalise_auth_key(k): v for k, v in auths.items() if isinstance(v, dict)}
        for key in auth_keys(host, repo):
            entry = auths.get(_normalise_auth_key(key))
            if entry and isinstance(entry.get("auth"), str) and entry["auth"]:
                try:
                    user, _, secret = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ConfigError("%s: the entry for %s is not base64 user:password" % (path, key))
                return user, secret
        helper = helpers.get(host) or data.get("credsStore")
        if isinstance(helper, str) and helper:
            found = _credential_helper(helper, host, env, run)
            if found:
                return found
    return None


def _credential_helper(helper: str, host: str, env: dict, run=None):
    """docker-credential-<helper> get: the server on stdin, JSON {Username, Secret} out;
    secrets never appear in argv."""
    import json
    import shutil
    import subprocess
    exe = shutil.which("docker-credential-" + helper, path=env.get("PATH"))
    if not exe:
        return None
    server = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
    try:
        proc = (run or subprocess.run)([exe, "get"], input=server.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
        return data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        return None


def write_auth_entry(path: str, host: str, user: str = None, secret: str = None) -> bool:
    """Add (or, with user None, remove) host's entry in a podman-style auth file, written
    atomically with mode 0600. Returns whether anything changed."""
    import base64
    import json
    data = read_auth_file(path)
    auths = data.setdefault("auths", {})
    if user is None:
        keys = [k for k in auths
                if _normalise_auth_key(k) in [_normalise_auth_key(x) for x in auth_keys(host)]]
        if not keys:
            return False
        for k in keys:
            del auths[k]
    else:
        auths[host] = {"auth": base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_file(path, mode=0o600, text=True) as f:
        json.dump(data, f, indent=1)
    return True


def parse_challenge(value: str):
    """'Bearer realm="https://a/token",service="reg",scope="repository:x:pull"' ->
    ('bearer', {'realm': ..., 'service': ..., 'scope': ...})."""
    import re
    scheme, _, rest = (value or "").strip().partition(" ")
    params = {}
    for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest):
        params[key.lower()] = quoted.replace('\\"', '"') if quoted else bare
    return scheme.lower(), params


def _load_json(data: bytes, what: str):
    import json
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise FormatError("%s is not valid JSON" % what)
    if not isinstance(obj, dict):
        raise FormatError("%s is not a JSON object" % what)
    return obj


class Registry:
    """An OCI distribution client for one registry: scheme choice, auth challenges answered
    with cached tokens, manifests and blobs verified against their digests, uploads."""

    def __init__(self, session: HTTPSession, host: str, *, env: dict, tls_verify: bool = None,
                 authfile: str = None, log=None, warn=None):
        self.session, self.host, self.env = session, host, env
        self.api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        self.tls_verify, self.authfile = tls_verify, authfile
        self.log = log or (lambda msg: None)
        self.warn = warn or self.log
        self.upload_chunk, self.upload_monolithic = UPLOAD_CHUNK, UPLOAD_MONOLITHIC
        self._scheme = None
        self._auth = {}            # scope -> Authorization value
        self._creds = {}           # repository -> (user, secret) or None, looked up once

    @property
    def base(self) -> str:
        """https, except that loopback registries and --tls-verify=false may speak plain HTTP
        (as docker does): when the TLS handshake itself fails, plain HTTP is used from then on."""
        if self._scheme is None:
            import ssl
            import http.client
            self._scheme = "https"
            if self.tls_verify is False or _is_loopback(self.api_host):
                try:
                    self.session.request("GET", "https://%s/v2/" % self.api_host, ok=(200, 401, 404),
                                         retries=0).discard()
                except NetworkError as e:
                    cause = e.__cause__
                    if isinstance(cause, ssl.SSLCertVerificationError) or not isinstance(
                            cause, (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
                        raise
                    self.log("%s does not speak TLS; using plain HTTP" % self.api_host)
                    self._scheme = "http"
        return "%s://%s" % (self._scheme, self.api_host)

    def credentials(self, repo: str = ""):
        if repo not in self._creds:
            self._creds[repo] = find_credentials(self.env, self.host, repo, self.authfile)
        return self._creds[repo]

    def request(self, method: str, path: str, scope: str, headers: dict = None, ok=(200,), body=None,
                repo: str = "") -> Response:
        """One registry call; a 401 is answered from its challenge once, then retried."""
        url = path if "://" in path else self.base + path
        for attempt in (0, 1):
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self.session.request(method, url, headers, body, ok=tuple(ok) + (401,),
                                        auth=self._auth.get(scope))
            if resp.status != 401:
                return resp
            challenge = resp.header("WWW-Authenticate") or ""
            resp.read(1 << 16)
            if attempt:
                break
            self._auth[scope] = self._authorize(challenge, scope, repo)
        raise AuthError("%s: credentials rejected%s" % (
            self.host, "" if self.credentials(repo) else "; run `ramalama login %s`" % self.host))

    def _authorize(self, challenge: str, scope: str, repo: str) -> str:
        import base64
        from urllib.parse import urlencode
        scheme, params = parse_challenge(challenge)
        creds = self.credentials(repo)
        basic = "Basic " + base64.b64encode(("%s:%s" % creds).encode()).decode() if creds else None
        if scheme == "basic":
            if not basic:
                raise AuthError("%s requires authentication; run `ramalama login %s`"
                                % (self.host, self.host))
            return basic
        if scheme != "bearer" or not params.get("realm"):
            raise AuthError("%s: unsupported authentication challenge %r" % (self.host, challenge[:80]))
        if basic and not params["realm"].startswith("https://") and not (
                self.tls_verify is False or _is_loopback(self.api_host)):
            raise AuthError("%s: refusing to send credentials to a plain-HTTP token service" % self.host)
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        realm = params["realm"] + ("&" if "?" in params["realm"] else "?") + urlencode(query)
        resp = self.session.request("GET", realm, ok=(200, 401, 403), auth=basic)
        if resp.status != 200:
            resp.read(1 << 16)
            raise AuthError("%s: %s" % (self.host, "credentials rejected" if basic else
                                        "authentication required; run `ramalama login %s`" % self.host))
        data = _load_json(resp.read(1 << 20), "token response from %s" % redact(realm))
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str):
            raise AuthError("%s: token response without a token" % self.host)
        return "Bearer " + token

    def login_check(self) -> None:
        """Prove the stored credentials against /v2/ (and its token service)."""
        self.request("GET", "/v2/", "", ok=(200,)).read(1 << 16)
        if not self._auth.get(""):
            self.warn("%s did not ask for credentials; stored them anyway" % self.host)

    # -- reading
    def manifest(self, name: str, reference: str) -> tuple:
        """(parsed manifest, media type, digest) of name:reference, digest-checked."""
        resp = self.request("GET", "/v2/%s/manifests/%s" % (name, reference), _scope(name),
                            headers={"Accept": ", ".join(MANIFEST_TYPES)}, repo=name)
        data = resp.read(MAX_MANIFEST)
        digest = _sha256_bytes(data)
        announced = resp.header("Docker-Content-Digest") or ""
        if (reference.startswith("sha256:") and digest != reference) or (
                announced.startswith("sha256:") and announced != digest):
            raise DigestMismatch("%s/%s: manifest hashes to %s, expected %s"
                                 % (self.host, name, digest, reference if ":" in reference else announced))
        obj = _load_json(data, "manifest of %s/%s" % (self.host, name))
        mtype = obj.get("mediaType") or (resp.header("Content-Type") or "").split(";")[0]
        return obj, mtype, digest

    def single(self, name: str, found: tuple) -> tuple:
        """`found` (manifest, media type, digest) itself, or, when it is an index, the manifest
        choose_manifest() picks from it."""
        manifest, mtype, _digest = found
        if mtype in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
            return self.manifest(name, choose_manifest(manifest)["digest"])
        return found

    def small_blob(self, name: str, digest: str) -> bytes:
        """A small blob (an image config) read whole and checked against its digest."""
        data = self.request("GET", self.blob_url(name, digest), _scope(name), repo=name).read(MAX_MANIFEST)
        if _sha256_bytes(data) != digest:
            raise DigestMismatch("%s/%s: blob %s does not match its digest" % (self.host, name, digest))
        return data

    def blob_url(self, name: str, digest: str) -> str:
        parse_digest(digest)
        return "%s/v2/%s/blobs/%s" % (self.base, name, digest)

    def download(self, name: str, desc: dict, label: str, downloader: "Downloader", consume=None,
                 on_wait=None):
        """Fetch a blob (resumable, verified) and consume it under its lock: by default it is
        published into blobs/. An expired token mid-way is renewed once and the download resumes."""
        digest, size = desc["digest"], desc.get("size")
        url, scope = self.blob_url(name, digest), _scope(name)
        for attempt in (0, 1):
            # settles auth first; the redirect to a CDN is not followed here
            self.request("HEAD", url, scope, ok=(200, 301, 302, 303, 307, 308), repo=name)
            try:
                return downloader.fetch(url, "blob-" + parse_digest(digest), label, digest=digest, size=size,
                                        auth=self._auth.get(scope), consume=consume, on_wait=on_wait)
            except HTTPStatusError as e:
                if e.status != 401 or attempt:
                    raise
                self._auth.pop(scope, None)

    # -- writing
    def has_blob(self, name: str, digest: str) -> bool:
        resp = self.request("HEAD", self.blob_url(name, digest), _scope(name, push=True), ok=(200, 404),
                            repo=name)
        return resp.status == 200

    def upload(self, name: str, digest: str, size: int, path: str = None, data: bytes = None,
               mount_from: str = None, progress=None) -> str:
        """Upload one blob unless the registry has it: HEAD, cross-repo mount, then a
        monolithic PUT or PATCH chunks. Returns how: 'exists', 'mounted' or 'uploaded'."""
        from urllib.parse import urljoin
        scope = _scope(name, push=True)
        if self.has_blob(name, digest):
            return "exists"
        start = "/v2/%s/blobs/uploads/" % name
        if mount_from and mount_from != name:
            resp = self.request("POST", start + "?mount=%s&from=%s" % (digest, mount_from), scope,
                                ok=(201, 202), body=b"", headers={"Content-Length": "0"})
            resp.read(1 << 16)
            if resp.status == 201:
                return "mounted"
        else:
            resp = self.request("POST", start, scope, ok=(202,), body=b"", headers={"Content-Length": "0"})
            resp.read(1 << 16)
        location = urljoin(self.base + start, resp.header("Location") or "")
        f = open(path, "rb") if path else None
        try:
            if progress:
                progress.start("push " + digest[7:19], size)
            offset = 0
            if size > self.upload_monolithic and f is not None:
                while offset < size:
                    n = min(self.upload_chunk, size - offset)
                    f.seek(offset)
                    resp = self.request("PATCH", location, scope, ok=(202,), body=f.read(n), headers={
                        "Content-Type": "application/octet-stream", "Content-Length": str(n),
                        "Content-Range": "%d-%d" % (offset, offset + n - 1)})
                    resp.read(1 << 16)
                    location = urljoin(location, resp.header("Location") or location)
                    offset += n
                    if progress:
                        progress.update(offset)
                body, length = b"", 0
            else:
                body, length = (f if f is not None else data), size
            sep = "&" if "?" in location else "?"
            resp = self.request("PUT", location + sep + "digest=" + digest, scope, ok=(201,), body=body,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(length)})
            resp.read(1 << 16)
            if progress:
                progress.update(size)
                progress.finish(True)
        finally:
            if f is not None:
                f.close()
        return "uploaded"

    def put_manifest(self, name: str, tag: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", "/v2/%s/manifests/%s"
                            % (name, tag), _scope(name, push=True), ok=(200, 201),
                            body=data, headers={"Content-Type": media_type, "Content-Length": str(len(data))})
        resp.read(1 << 16)
        return _sha256_bytes(data)


def _scope(name: str, push: bool = False) -> str:
    return "repository:%s:%s" % (name, "pull,push" if push else "pull")


# -- model formats inside OCI artifacts and images

Layer = namedtuple("Layer", "desc kind name role")     # kind: raw | tar | tar+gzip | image | image+gzip


def choose_manifest(index: dict) -> dict:
    """From an index: the ModelPack artifact if there is one, else this machine's platform,
    else the first entry."""
    import platform
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]
    if not entries:
        raise FormatError("the index lists no manifests")
    for m in entries:
        if m.get("artifactType") == MODELPACK_ARTIFACT:
            return m
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for m in entries:
        plat = m.get("platform") or {}
        if plat.get("os") in (None, "linux") and plat.get("architecture") == arch:
            return m
    return entries[0]


def _annotated_name(desc: dict):
    ann = desc.get("annotations") or {}
    for key in ("org.cncf.model.filepath", "org.cnai.model.filepath", "org.opencontainers.image.title"):
        if ann.get(key):
            return safe_relpath(ann[key])
    return None


def _weight_role(name: str, kind: str) -> str:
    low = name.lower()
    if kind == "weight":
        return "mmproj" if "mmproj" in low else "model"
    return {"weight.config": "config", "doc": "doc", "code": "code", "dataset": "dataset"}.get(kind, "other")


def plan_layers(manifest: dict) -> tuple:
    """(format name, [Layer]) for a model artifact or image, from media types alone (the config
    blob is never needed); FormatError naming the media types when it is none of ModelPack,
    Docker Model Runner, Ollama, omlmd or ramalama image."""
    cfg_type = (manifest.get("config") or {}).get("mediaType", "")
    layers = manifest.get("layers") or []
    for d in layers:
        if not isinstance(d, dict) or not isinstance(d.get("size"), int) or d["size"] < 0 \
                or not isinstance(d.get("mediaType", ""), str):
            raise FormatError("malformed layer descriptor in the manifest")
        parse_digest(d.get("digest", ""))
    types = [d.get("mediaType", "") for d in layers]
    plans = []
    if (manifest.get("artifactType") == MODELPACK_ARTIFACT or cfg_type == MODELPACK_CONFIG
            or any(t.startswith(("application/vnd.cncf.model.", "application/vnd.cnai.model."))
                   for t in types)):
        for d in layers:
            t = d.get("mediaType", "")
            kind, _, packing = t.split(".model.", 1)[-1].partition(".v1.")
            name = _annotated_name(d)
            if packing not in ("raw", "tar", "tar+gzip"):
                raise FormatError("unsupported ModelPack layer %s" % t)
            if packing == "raw" and not name:
                name = "layer-" + parse_digest(d.get("digest", ""))[:12]
            plans.append(Layer(d, packing, name, _weight_role(name or "", kind)))
        return "modelpack", plans
    if cfg_type.startswith("application/vnd.docker.ai.") or any(t.startswith("application/vnd.docker.ai.")
                                                                for t in types):
        for d in layers:
            suffix = d.get("mediaType", "")[len("application/vnd.docker.ai."):]
            name = _annotated_name(d) or DMR_LAYERS.get(suffix)
            if name:
                role = {"gguf.v3": "model", "mmproj": "mmproj", "safetensors": "model"}.get(suffix, "other")
                plans.append(Layer(d, "raw", name, role))
        return "dmr", plans
    if any(t.startswith("application/vnd.ollama.image.") for t in types):
        for d in layers:
            kind = d.get("mediaType", "")[len("application/vnd.ollama.image."):]
            if kind in OLLAMA_LAYERS:
                role = {"model": "model", "projector": "mmproj"}.get(kind, kind)
                plans.append(Layer(d, "raw", OLLAMA_LAYERS[kind], role))
        return "ollama", plans
    if "application/x-mlmodel" in types:
        for d in layers:
            if d.get("mediaType") == "application/x-mlmodel":
                name = _annotated_name(d) or "model.file"
                plans.append(Layer(d, "raw", name, file_role(name)))
        return "omlmd", plans
    image_layers = {OCI_LAYER_TAR: "image", OCI_LAYER_TAR + "+gzip": "image+gzip",
                    "application/vnd.docker.image.rootfs.diff.tar": "image",
                    "application/vnd.docker.image.rootfs.diff.tar.gzip": "image+gzip"}
    if layers and all(t in image_layers for t in types):
        return "ramalama-image", [Layer(d, image_layers[d["mediaType"]], "", "") for d in layers]
    raise FormatError("not a model artifact this version can read (config %s; layers %s)"
                      % (cfg_type or "none", ", ".join(sorted(set(types))) or "none"))


def unpack_layer(store: Store, path: str, gzip: bool, models_only: bool) -> list:
    """Store the regular files of a tar layer under their own digests; returns
    [(name, hexdigest, size, role)]. Members are never written where their names point:
    each is streamed into tmp/, hashed and published, so '..', absolute paths and links out
    of the layer cannot escape; devices and links leaving the layer are refused.
    models_only (ramalama images): keep /models/*, resolving the model.file symlink there, and
    name the files below /models/<model name>/ as if that were /models."""
    import posixpath
    import shutil
    import tarfile
    import tempfile
    import zlib
    found, links = {}, {}
    try:
        with tarfile.open(path, "r:gz" if gzip else "r:") as tar:
            for m in tar:
                raw = m.name.lstrip("/") if models_only else m.name
                name = safe_relpath(raw) if raw.strip("./") else ""
                if models_only and not name.startswith("models/"):
                    continue
                if m.isdir() or not name:
                    continue
                if m.issym() or m.islnk():
                    target = m.linkname.lstrip("/") if m.issym() and m.linkname.startswith("/") else (
                        posixpath.join(posixpath.dirname(name), m.linkname) if m.issym() else m.linkname)
                    target = posixpath.normpath(target)
                    if target.startswith("../") or target == "..":
                        raise FormatError("layer entry %s links outside the layer" % name)
                    links[name] = target
                    continue
                if not m.isreg():
                    raise FormatError("layer entry %s is a device or special file" % name)
                fd, tmp_file = tempfile.mkstemp(prefix="unpack-", dir=store.tmp)
                try:
                    out = HashingWriter(fd)
                    shutil.copyfileobj(tar.extractfile(m), out, CHUNK)
                finally:
                    os.close(fd)
                store.publish_blob(tmp_file, out.hexdigest())
                found[name] = (out.hexdigest(), m.size)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise FormatError("layer is not a readable tar archive: %s" % e)
    for name, target in links.items():
        for _ in range(8):                      # links to links, within reason
            target = links.get(target, target)
        if target in found and name not in found:
            found[name] = found[target]
    files = []
    model_target = links.get("models/model.file")
    for name, (hexdigest, size) in sorted(found.items()):
        short = name[len("models/"):] if models_only else name
        if models_only and name == "models/model.file" and model_target:
            continue                            # the symlink: its target is listed itself
        if not models_only:
            role = file_role(short)
        elif name in ("models/model.file", model_target):
            role = "model"                      # the file model.file points at
        else:
            role = "other"
        files.append((short, hexdigest, size, role))
    # ramalama's images keep the files in /models/<model name>/: the model folder is that one
    tops = {f[0].split("/", 1)[0] for f in files}
    if models_only and len(tops) == 1 and all("/" in f[0] for f in files):
        files = [(f[0].split("/", 1)[1],) + f[1:] for f in files]
    return files


# ---------------------------------------------------------------------------
# 11. transports
# ---------------------------------------------------------------------------

# -- what the sections below the CLI are given

class Choices(namedtuple("Choices", "engine container pull ollama_registry mirrors all_files")):
    """What the CLI decided from flags, then config, then defaults, for the sections below it:
    the engine asked for (or ""), whether containers are allowed, the image pull policy, the
    Ollama registry to use, registry mirrors ({host: [mirror, ...]}), whole Hub snapshots."""
    __slots__ = ()


class Services:
    """What pulls, pushes and launches work with: the environment, the CLI's choices, the
    store, HTTP sessions and registry clients, downloads with their progress, and messages.
    Everything is made on first use, so a command that needs no network never checks the
    download settings. The CLI's Context is one."""

    def __init__(self, env: dict, choices: Choices, *, store_root: str, err, quiet: bool = False,
                 debug: bool = False, tls_verify: bool = None, cert_dir: str = None, authfile: str = None,
                 download: dict = None, parallel: int = None):
        self.env, self.choices, self.store_root = env, choices, store_root
        self.err, self.raw_err, self.quiet, self.debug = SafeStream(err), err, quiet, debug
        self.tls_verify, self.cert_dir, self.authfile = tls_verify, cert_dir, authfile
        self.download, self.parallel = download or {}, parallel
        self._store = self._session = self._board = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(os.path.expanduser(self.store_root), log=self.log)
        return self._store

    def session(self) -> HTTPSession:
        if self._session is None:
            timeout = self.download.get("timeout", 30)
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
                raise ConfigError("[ramalama.download] timeout must be a positive number of seconds, not %r"
                                  % (timeout,))
            self._session = self._http(float(timeout))
        return self._session

    def _http(self, timeout: float) -> HTTPSession:
        """A session with this command's TLS choice, CA certificates and proxies."""
        return HTTPSession(tls_verify=self.tls_verify is not False, timeout=timeout, cert_dir=self.cert_dir,
                           log=self.log, env=self.env)

    def connections(self) -> int:
        """--parallel, else [ramalama.download] connections, else 8: the budget of one pull."""
        n = self.parallel or self.download.get("connections") or CONNECTIONS
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError("[ramalama.download] connections must be a positive integer, not %r" % (n,))
        return n

    def registry(self, host: str) -> "Registry":
        """An OCI client for `host` with this command's session, credentials file and TLS choice."""
        return Registry(self.session(), host, env=self.env, tls_verify=self.tls_verify,
                        authfile=self.authfile, log=self.log, warn=self.warn)

    def api(self, url: str, api_key: str = None) -> "APIClient":
        """A client for an OpenAI-compatible API, with a session that waits as long as a model thinks."""
        return APIClient(url, api_key, self._http(API_TIMEOUT))

    def downloader(self, connections: int = None) -> "Downloader":
        budget = connections or self.connections()
        return Downloader(self.session(), self.store, self.progress(), connections=budget)

    def progress(self) -> "Progress":
        """A progress handle for one file; every file of this command shares one board."""
        if self._board is None:
            mode = "quiet" if self.quiet else ("bar" if self.err.isatty() else "lines")
            # the raw stream: labels are tty_safe, and the bars move the cursor
            self._board = ProgressBoard(self.raw_err, mode)
        return self._board.progress()

    def log(self, msg: str) -> None:
        if self.debug:
            self.err.write("debug: %s\n" % tty_safe(msg))

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.err.write(tty_safe(msg) + "\n")

    def warn(self, msg: str) -> None:
        self.err.write("Warning: %s\n" % tty_safe(msg))


def stored_unchanged(ctx: Services, ref: Ref, key: str, value, keep: tuple):
    """(files, meta) of the stored model when its meta[key] (a manifest digest, a commit, an
    ETag) is still `value` and all its blobs are there: a re-pull then moves nothing. None
    otherwise. `keep` names the meta fields the refreshed folder carries on."""
    store = ctx.store
    old = store.load(store.folder(ref)) if store.exists() else None
    if (not value or not old or old.meta.get(key) != value
            or not all(store.has_blob(f.digest) for f in old.files)):
        return None
    return old.files, {k: old.meta[k] for k in keep if k in old.meta}


def file_role(name: str) -> str:
    low = name.lower()
    return "mmproj" if "mmproj" in low else "model"


def pull_file(ctx: Services, ref: Ref) -> tuple:
    """file://: hardlink (or copy) the user's file into blobs/; the file itself is the model."""
    if not os.path.isfile(ref.name):
        raise NotFound("%s: no such file" % ref.name)
    name = ref.file_name()
    progress = ctx.progress()
    progress.start(name, os.stat(ref.name).st_size)
    hexdigest, size = ctx.store.import_file(ref.name, progress.update)
    progress.finish(True)
    return [FileSpec(name, "sha256:" + hexdigest, size, file_role(name), "")], {"source": ref.name}


def pull_url(ctx: Services, ref: Ref) -> tuple:
    """http(s)://: one file at a URL. A model pulled before is kept when the server's ETag or
    Last-Modified is unchanged (one HEAD, no body)."""
    import hashlib
    url, name, store = str(ref), ref.file_name(), ctx.store
    old = store.load(store.folder(ref)) if store.exists() else None
    if old and old.meta.get("validator"):
        try:
            head = ctx.session().request("HEAD", url)
            validator = head.header("ETag") or head.header("Last-Modified")
            unchanged = stored_unchanged(ctx, ref, "validator", validator, ("url", "validator"))
            if unchanged:
                ctx.info("%s: up to date" % name)
                return unchanged
        except NetworkError as e:
            ctx.log("HEAD %s failed (%s); downloading" % (redact(url), e))
    key = "url-" + hashlib.sha256(url.encode()).hexdigest()[:40]
    got = ctx.downloader().fetch(
        url, key, name, on_wait=lambda: ctx.info("%s: another pull is downloading it; waiting" % name))
    return ([FileSpec(name, "sha256:" + got.hexdigest, got.size, file_role(name), "")],
            {"url": url, "validator": got.validator})


# -- blobs that ollama or huggingface_hub already downloaded

def ollama_dirs(env: dict) -> list:
    home = env.get("HOME") or os.path.expanduser("~")
    dirs = [env["OLLAMA_MODELS"]] if env.get("OLLAMA_MODELS") else []
    return dirs + [os.path.join(home, ".ollama", "models"), "/usr/share/ollama/.ollama/models"]


def hf_home(env: dict) -> str:
    home = env.get("HOME") or os.path.expanduser("~")
    return env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
                                              "huggingface")


def hf_hub_cache(env: dict) -> str:
    return env.get("HF_HUB_CACHE") or os.path.join(hf_home(env), "hub")


def cached_blob_paths(env: dict, digest: str, root: str = None):
    """Where another tool may hold this blob: ramalama 0.25's <root>/store/.../blobs/sha256-<hex>,
    ollama's blobs/sha256-<hex>, and huggingface_hub's models--org--repo/blobs/<hex> (an LFS
    file's etag is its sha256). Every candidate is verified before it is used."""
    import glob
    hexdigest = parse_digest(digest)
    if root:
        pattern = os.path.join(glob.escape(root), "store", "**", "blobs", "sha256-" + hexdigest)
        yield from sorted(glob.glob(pattern, recursive=True))
    for d in ollama_dirs(env):
        yield os.path.join(d, "blobs", "sha256-" + hexdigest)
    try:
        repos = [e.path for e in os.scandir(hf_hub_cache(env))
                 if e.name.startswith(("models--", "datasets--"))]
    except OSError:
        repos = []
    for repo in sorted(repos):
        yield os.path.join(repo, "blobs", hexdigest)


def adopt_cached(ctx: Services, digest: str, size: int = None) -> bool:
    """True when the store has the blob, or now has it from a local ollama store or Hugging
    Face cache: hardlinked (copied across filesystems) after its bytes hash to `digest`."""
    store = ctx.store
    if store.has_blob(digest):
        return True
    ramalamas = os.path.join(store.root, "store") + os.sep
    for path in cached_blob_paths(ctx.env, digest, store.root):
        try:
            if not os.path.isfile(path) or (size is not None and os.path.getsize(path) != size):
                continue
            mine = not path.startswith(ramalamas) or linkable_unchanged(path)
            store.import_file(path, expect=digest, link=mine)
        except OSError as e:
            ctx.log("cannot reuse %s: %s" % (path, e.strerror or e))
            continue
        except DigestMismatch:
            ctx.warn("%s does not hash to its name; not reused" % path)
            continue
        ctx.info("%s: reused from %s" % (digest[7:19], os.path.dirname(os.path.dirname(path))))
        return True
    return False


def run_downloads(ctx: Services, jobs: list) -> None:
    """Run download jobs (each takes a Downloader) side by side, up to 4 at once, splitting
    the pull's connection budget among them. The first failure is raised once all have
    stopped; Ctrl-C does not wait for them."""
    import threading
    budget = ctx.connections()
    width = max(1, min(len(jobs), 4, budget))
    if width <= 1:
        for job in jobs:
            job(ctx.downloader(budget))
        return
    pending, errors, lock = list(jobs), [], threading.Lock()

    def worker():
        while not errors:
            with lock:
                if not pending:
                    return
                job = pending.pop(0)
            try:
                job(ctx.downloader(budget // width))
            except BaseException as e:   # noqa: BLE001 - handed to the main thread
                errors.append(e)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    if errors:
        raise errors[0]


# -- Ollama

def pull_ollama(ctx: Services, ref: Ref) -> tuple:
    """ollama://: the Ollama registry speaks the distribution API with Ollama layer types. The
    default host maps to `ollama_registry` (config, RAMALAMA_OLLAMA_REGISTRY) for mirrors. When
    the registry cannot be reached, a manifest in a local ollama store is used instead."""
    host = (ctx.choices.ollama_registry if ref.host == OLLAMA_HOST else None) or ref.host
    reg = None
    try:
        reg, found = registry_for(ctx, host, ref.name, ref.tag, mirror_of=ref.host)
    except HTTPStatusError:
        raise
    except NetworkError as e:
        found = _ollama_cached_manifest(ctx, ref)
        if found is None:
            raise
        ctx.warn("%s; using the manifest from the local ollama store" % e)
        reg = ctx.registry(host)
    return pull_from_registry(ctx, ref, reg, found)


def _ollama_cached_manifest(ctx: Services, ref: Ref):
    for d in ollama_dirs(ctx.env):
        path = os.path.join(d, "manifests", ref.host, *ref.name.split("/"), ref.tag)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_MANIFEST)
        except OSError:
            continue
        obj = _load_json(data, path)
        return obj, obj.get("mediaType", DOCKER_MANIFEST), _sha256_bytes(data)
    return None


# -- Hugging Face

def hf_endpoint(env: dict) -> str:
    return (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hf_token(env: dict):
    """HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the file at HF_TOKEN_PATH or $HF_HOME/token."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if env.get(var, "").strip():
            return env[var].strip()
    try:
        with open(env.get("HF_TOKEN_PATH") or os.path.join(hf_home(env), "token")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def parse_link_next(value: str):
    """The rel="next" URL of a Link header, or None."""
    import re
    for url, params in re.findall(r'<([^>]*)>\s*((?:;\s*[^,;]*)*)', value or ""):
        if re.search(r'rel\s*=\s*"?next"?', params):
            return url
    return None


_SPLIT = r"-(\d{5})-of-(\d{5})\.gguf$"


def choose_gguf(paths: list, quant: str = "", file: str = "") -> list:
    """The files to fetch for a GGUF model, by llama.cpp's -hf rules: an explicit file, else the
    first .gguf whose name carries the quant (followed by '.' or '-'); no quant means Q4_K_M,
    then Q8_0, then the first. mmproj and imatrix files are never the model. A split model
    brings all its parts; a sibling mmproj*.gguf (preferring the same quant, then F16) comes
    along for vision models. Returns [(path, role)]."""
    import posixpath
    import re
    base = lambda p: posixpath.basename(p).lower()   # noqa: E731
    ggufs = sorted(p for p in paths if base(p).endswith(".gguf")
                   and "mmproj" not in base(p) and "imatrix" not in base(p))

    def with_quant(q):
        return [p for p in ggufs if re.search(re.escape(q.lower()) + r"[.-]", base(p))]
    if file:
        if file not in paths:
            raise NotFound("no file %s in the repository" % file)
        first = file
    else:
        cands = with_quant(quant) if quant else (with_quant("Q4_K_M") or with_quant("Q8_0") or ggufs)
        if not cands:
            raise NotFound("no %sGGUF file in the repository (it has: %s)" % (
                quant + " " if quant else "", ", ".join(sorted(paths)[:12]) or "nothing"))
        first = cands[0]
    chosen = [(first, "model")]
    m = re.search(_SPLIT, first)
    if m:
        prefix, count = first[:m.start()], int(m.group(2))
        for i in range(2, count + 1):
            part = "%s-%05d-of-%s.gguf" % (prefix, i, m.group(2))
            if part not in paths:
                raise FormatError("split model %s lacks part %s" % (first, part))
            chosen.append((part, "shard"))
    if not file:
        folder = posixpath.dirname(first)
        projs = sorted((p for p in paths if "mmproj" in base(p) and base(p).endswith(".gguf")),
                       key=lambda p: (posixpath.dirname(p) != folder,
                                      not (quant and quant.lower() in base(p)), "f16" not in base(p), p))
        if projs:
            chosen.append((projs[0], "mmproj"))
    return chosen


def _hf_error(e: HTTPStatusError, ref: Ref, what: str) -> RamalamaError:
    """One clear line for the Hub's X-Error-Code answers."""
    page = "https://huggingface.co/" + ref.name
    if e.code == "GatedRepo":
        return AuthError("hf://%s is gated: accept its terms at %s, then set HF_TOKEN" % (ref.name, page))
    if e.code == "RepoNotFound" or (e.status == 401 and not e.code):
        return NotFound("hf://%s: repository not found (a private repository needs HF_TOKEN)" % ref.name)
    if e.code == "RevisionNotFound":
        return NotFound("hf://%s: revision %s not found" % (ref.name, ref.revision or "main"))
    if e.code == "EntryNotFound" or e.status == 404:
        return NotFound("hf://%s: %s not found" % (ref.name, what))
    if e.status == 429:
        return NetworkError("hf://%s: rate limited by the Hub; wait and retry, or set HF_TOKEN" % ref.name)
    return e


def pull_hf(ctx: Services, ref: Ref) -> tuple:
    """hf:// and huggingface://: resolve the revision to a commit (pinned in .ref.json), list
    the files with their LFS sha256, choose what to fetch, then download from /resolve/<commit>/
    (the Hub redirects to a CDN, which never sees the token). LFS files already stored, or in a
    local cache, are not downloaded; small git files are hashed as they arrive."""
    from urllib.parse import quote
    session = ctx.session()
    endpoint, token = hf_endpoint(ctx.env), hf_token(ctx.env)
    auth = "Bearer " + token if token else None
    rev = ref.revision or "main"
    try:
        resp = session.request("GET", "%s/api/models/%s/revision/%s"
                               % (endpoint, ref.name, quote(rev, safe="")),
                               auth=auth)
        commit = _load_json(resp.read(16 << 20), "revision answer").get("sha")
        if not isinstance(commit, str) or len(commit) != 40 or commit.strip("0123456789abcdef"):
            raise FormatError("hf://%s: the Hub answered no commit for %s" % (ref.name, rev))
        unchanged = stored_unchanged(ctx, ref, "commit", commit, ("commit", "revision", "repo"))
        if unchanged:
            ctx.info("%s: up to date (commit %s)" % (ref, commit[:12]))
            return unchanged
        entries = _hf_tree(session, "%s/api/models/%s/tree/%s?recursive=true" % (endpoint, ref.name, commit),
                           auth)
    except HTTPStatusError as e:
        raise _hf_error(e, ref, "revision " + rev)
    paths = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") == "file" and isinstance(entry.get("path"), str):
            paths[safe_relpath(entry["path"])] = entry
    if ctx.choices.all_files:
        wanted = [(p, "model" if p.endswith((".gguf", ".safetensors")) else "other") for p in sorted(paths)]
    else:
        wanted = choose_gguf(list(paths), ref.tag, ref.file)
    found = {}

    def fetch(dl, url, path, digest, size):
        """An LFS file, whose sha256 is known before the download, or a small git file,
        hashed as it arrives."""
        try:
            if digest:
                dl.fetch(url, "blob-" + digest[7:], path, digest=digest, size=size, auth=auth)
            else:
                got = dl.fetch(url, "hf-" + _sha256_bytes(url.encode())[7:47], path, auth=auth)
                found[path] = ("sha256:" + got.hexdigest, got.size)
        except HTTPStatusError as e:
            raise _hf_error(e, ref, path)
    jobs = []
    for path, _role in wanted:
        url = "%s/%s/resolve/%s/%s" % (endpoint, ref.name, commit, quote(path))
        lfs = paths[path].get("lfs") if isinstance(paths[path].get("lfs"), dict) else None
        digest, size = ("sha256:" + str(lfs.get("oid", "")), lfs.get("size")) if lfs else (None, None)
        if digest:
            parse_digest(digest)
            found[path] = (digest, size)
            if adopt_cached(ctx, digest, size if isinstance(size, int) else None):
                continue
        jobs.append(lambda dl, a=(url, path, digest, size): fetch(dl, *a))
    run_downloads(ctx, jobs)
    return ([FileSpec(path, found[path][0], found[path][1], role, "") for path, role in wanted],
            {"commit": commit, "revision": rev, "repo": ref.name})


def _hf_tree(session, url: str, auth: str) -> list:
    """Every entry of a (paginated) tree listing."""
    import json
    entries = []
    for _page in range(10000):
        resp = session.request("GET", url, auth=auth)
        link = resp.header("Link")
        page = resp.read(16 << 20)
        try:
            items = json.loads(page)
        except (ValueError, RecursionError):
            raise FormatError("the Hub's file listing is not JSON")
        if not isinstance(items, list):
            raise FormatError("the Hub's file listing is not a list")
        entries.extend(items)
        url = parse_link_next(link)
        if not url:
            return entries
    raise FormatError("the Hub's file listing does not end")


def registry_for(ctx: Services, host: str, name: str, reference: str, mirror_of: str = None) -> tuple:
    """(Registry, manifest) from the first of [ramalama.mirrors] for the host (a string or a
    list) that answers, then the host itself."""
    mirrors = ctx.choices.mirrors.get(mirror_of or host) or []
    candidates = ([mirrors] if isinstance(mirrors, str) else list(mirrors)) + [host]
    for i, candidate in enumerate(candidates):
        reg = ctx.registry(candidate)
        try:
            return reg, reg.manifest(name, reference)
        except NetworkError as e:
            if i == len(candidates) - 1:
                raise
            ctx.info("mirror %s: %s; trying %s" % (candidate, e, candidates[i + 1]))


def pull_oci(ctx: Services, ref: Ref) -> tuple:
    """oci:// and docker://: see pull_from_registry."""
    reg, found = registry_for(ctx, ref.host, ref.name, ref.digest or ref.tag)
    return pull_from_registry(ctx, ref, reg, found)


def _from_engine_image(ctx: Services, ref: Ref, digest: str):
    """(files, meta) copied out of the image ramalama pulled into podman with the manifest
    `digest` (podman verified that manifest and its layers), or None when there is none."""
    wanted = "%s/%s@%s" % (ref.host, ref.name, digest)
    model = next((m for m in engine_models(ctx) if wanted in m.meta["repo_digests"]), None)
    if model is None:
        return None
    models_dir = mount_image(ctx, model)
    try:
        path = os.path.realpath(os.path.join(models_dir, "model.file"))
        if not path.startswith(os.path.realpath(models_dir) + os.sep) or not os.path.isfile(path):
            return None                          # not a ramalama image we understand: pull it
        hexdigest, size = ctx.store.ensure().import_file(path, link=False)
    finally:
        unmount_image(ctx, model)
    name = os.path.basename(path)
    ctx.info("%s: taken from the image ramalama pulled (%s); no layer downloaded"
             % (ref, model.meta["image"][:12]))
    return [FileSpec(name, "sha256:" + hexdigest, size, file_role(name), "")], {"manifest_digest": digest}


def pull_from_registry(ctx: Services, ref: Ref, reg: Registry, found: tuple) -> tuple:
    """Given a manifest (choosing from an index), fetch each layer: raw
    layers are the files themselves (skipped when stored, hardlinked from an ollama or Hugging
    Face cache when one has them), tar layers are unpacked into their files."""
    store = ctx.store
    manifest, mtype, digest = reg.single(ref.name, found)
    unchanged = stored_unchanged(ctx, ref, "manifest_digest", digest, ("manifest_digest", "format", "layers"))
    if unchanged:
        ctx.info("%s: up to date" % (ref,))
        return unchanged
    from_image = _from_engine_image(ctx, ref, digest) if ref.transport == "oci" else None
    if from_image:                        # ramalama pulled this very manifest as an image: no layer moves
        return from_image
    fmt, plans = plan_layers(manifest)
    def waiting(label):
        return lambda: ctx.info("%s: another pull is downloading it; waiting" % label)
    run_downloads(ctx, [lambda dl, p=p: reg.download(ref.name, p.desc, p.name, dl, on_wait=waiting(p.name))
                        for p in plans
                        if p.kind == "raw" and not adopt_cached(ctx, p.desc["digest"], p.desc["size"])])

    def unpack(plan) -> list:
        unpacked = []
        label = plan.name or "layer " + plan.desc["digest"][7:19]
        reg.download(ref.name, plan.desc, label, ctx.downloader(), on_wait=waiting(label),
                     consume=lambda path, _hex: unpacked.extend(unpack_layer(
                         store, path, plan.kind.endswith("gzip"), plan.kind.startswith("image"))))
        return unpacked
    files, layers = assemble_files(ref, plans, unpack)
    return files, {"manifest_digest": digest, "format": fmt, "layers": layers}


def assemble_files(ref: Ref, plans: list, unpack) -> tuple:
    """A model's files from its layer plans, the same whatever the source (a registry, a layout):
    a raw layer is a file (its blob already stored); a tar layer's files, from unpack(plan) as
    (name, hex, size, role), keep the layer's annotated name when it holds one file and sit
    below that name when it holds several. No files, or one name twice, is refused. Returns
    (files, {tar layer digest: the digests of its files})."""
    files, layers = [], {}
    for plan in plans:
        desc = plan.desc
        if plan.kind == "raw":
            files.append(FileSpec(plan.name, desc["digest"], desc["size"], plan.role,
                                  desc.get("mediaType", "")))
            continue
        unpacked = unpack(plan)
        prefix = (plan.name + "/") if plan.name and len(unpacked) > 1 else ""
        for name, hexdigest, size, role in unpacked:
            if len(unpacked) == 1 and plan.name:
                name, role = plan.name, plan.role        # a one-file tar layer carries the annotated name
            files.append(FileSpec(prefix + name, "sha256:" + hexdigest, size, plan.role or role,
                                  desc.get("mediaType", "")))
        layers[desc["digest"]] = ["sha256:" + u[1] for u in unpacked]
    if not files:
        raise FormatError("%s holds no model files" % (ref,))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise FormatError("%s names the same file twice" % (ref,))
    return files, layers


def modelpack_manifest(model: Model, facts: dict) -> tuple:
    """(config bytes, manifest dict) of a ModelPack artifact whose raw layers are the model's
    files, so every layer digest is a file's sha256: the same blob that ollama, Hugging Face
    and other registries name, which lets registries mount and stores deduplicate it."""
    import json
    layers = []
    for f in model.files:
        kind = "weight" if f.role in ("model", "mmproj") else "doc"
        layers.append({"mediaType": "application/vnd.cncf.model.%s.v1.raw" % kind, "digest": f.digest,
                       "size": f.size, "annotations": {"org.cncf.model.filepath": f.name,
                                                       "org.opencontainers.image.title": f.name}})
    main_file = model.model_file()
    cfg = {"descriptor": {"name": model.ref, "createdAt": _iso(model.meta.get("pulled", 0))},
           "config": {k: v for k, v in (
               ("format", "gguf" if facts.get("format") == "GGUF" else (main_file.name.rsplit(".", 1)[-1]
                                                                       if main_file else "")),
               ("architecture", facts.get("architecture")), ("quantization", facts.get("quantization")),
               ("paramSize", human_count(facts["parameters"]) if facts.get("parameters") else None),
               ("contextLength", facts.get("context_length"))) if v},
           "modelfs": {"type": "layers", "diffIds": [f.digest for f in model.files]}}
    config = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return config, {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODELPACK_ARTIFACT,
                    "config": {"mediaType": MODELPACK_CONFIG, "digest": _sha256_bytes(config),
                               "size": len(config)},
                    "layers": layers}


# -- ramalama's model images (raw: the model alone; car: the model on a base image), written
#    straight to a registry, an OCI layout or the engine's storage: no `podman build`

IMAGE_TYPES = {"raw": "ai.image.model.raw", "car": "ai.image.model.car"}
DEFAULT_CARIMAGE = "registry.access.redhat.com/ubi10-micro:latest"    # ramalama 0.25's default
OCI_LAYER_TYPES = {"application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_TAR + "+gzip",
                   "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER_TAR}


class OCIImage(namedtuple("OCIImage", "manifest config blobs")):
    """An image ready to be written anywhere: manifest and config as bytes, and the path of every
    other blob it names ({digest: path})."""
    __slots__ = ()

    @property
    def digest(self) -> str:
        return _sha256_bytes(self.manifest)


def image_layer(store: Store, model: Model, name: str) -> tuple:
    """A deterministic tar layer laid out as ramalama 0.25 lays out its model images:
    /models/<name>/<files> and /models/model.file -> <name>/<the model file>. Returns (path in
    tmp/, digest, size)."""
    import tarfile
    import tempfile
    fd, path = tempfile.mkstemp(prefix="layer-", dir=store.tmp)
    out = HashingWriter(fd)                     # tarfile writes through it: the digest comes free
    top = "models/" + name
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"models", top} | {top + "/" + os.path.dirname(f.name) for f in model.files
                                         if "/" in f.name})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for f in model.files:
            info = tarfile.TarInfo(top + "/" + f.name)
            info.size, info.mode = f.size, 0o444
            with open(store.blob_path(f.digest), "rb") as src:
                tar.addfile(info, src)
        main_file = model.model_file()
        if main_file is not None:
            info = tarfile.TarInfo("models/model.file")
            info.type, info.linkname = tarfile.SYMTYPE, name + "/" + main_file.name
            tar.addfile(info)
    os.close(fd)
    return path, "sha256:" + out.hexdigest(), os.path.getsize(path)


def model_image(store: Store, model: Model, kind: str, base: tuple = None) -> tuple:
    """(OCIImage, the layer file to delete afterwards) of a raw image (FROM scratch) or, with
    base = (config, manifest) of a base image whose layers are in the store, a car image: the
    model's layer on top, the base's config kept, ramalama's org.containers.type label added."""
    import copy
    import json
    import platform
    path, layer_digest, layer_size = image_layer(store, model, served_name(model.ref))
    label = {"org.containers.type": IMAGE_TYPES[kind]}
    if base is None:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        cfg, layers = {"architecture": arch, "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": []}}, []
    else:
        cfg = copy.deepcopy(base[0])
        layers = [dict(d, mediaType=OCI_LAYER_TYPES.get(d.get("mediaType"), d.get("mediaType")))
                  for d in base[1].get("layers") or []]
    cfg.setdefault("config", {})["Labels"] = dict(cfg["config"].get("Labels") or {}, **label)
    cfg.setdefault("rootfs", {"type": "layers"}).setdefault("diff_ids", []).append(layer_digest)
    if base is not None:
        cfg.setdefault("history", []).append({"created_by": "ramalama.pyz convert --type car: /models"})
    config = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": _sha256_bytes(config),
                           "size": len(config)},
                "layers": layers + [{"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
                "annotations": dict(label, **{"org.opencontainers.image.title": model.ref})}
    blobs = {d["digest"]: store.blob_path(d["digest"]) for d in layers}
    blobs[layer_digest] = path
    return OCIImage(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), config, blobs), path


def base_image(ctx: Services, reference: str) -> tuple:
    """(config, manifest, registry Ref or None) of a car's base image, its layers brought into the
    store: from the engine's storage when it has the image (as `podman build` would take it),
    else from its registry by the manifest for this machine."""
    engine = find_engine(ctx, to_run=False)
    if engine and _engine_has_image(ctx, engine, reference):
        return _base_from_engine(ctx, engine, reference) + (None,)
    ref = parse_ref(reference if "://" in reference else "oci://" + reference)
    if ref.transport != "oci":
        raise UsageError("--carimage takes an image reference, not %s" % reference)
    reg, found = registry_for(ctx, ref.host, ref.name, ref.digest or ref.tag)
    manifest, mtype, _digest = reg.single(ref.name, found)
    config = _load_json(reg.small_blob(ref.name, manifest["config"]["digest"]), "config of %s" % reference)
    run_downloads(ctx, [lambda dl, d=d: reg.download(ref.name, d, "base layer " + d["digest"][7:19], dl)
                        for d in manifest.get("layers") or [] if not ctx.store.has_blob(d["digest"])])
    return config, dict(manifest, mediaType=mtype), ref


def _engine_has_image(ctx: Services, engine: str, reference: str) -> bool:
    import subprocess
    return subprocess.run([engine, "image", "inspect", reference], capture_output=True,
                          env=ctx.env).returncode == 0


def _base_from_engine(ctx: Services, engine: str, reference: str) -> tuple:
    """(config, manifest) of an image in the engine's storage, saved as an OCI archive and read
    back like any layout: every blob checked against its digest on the way into the store."""
    import shutil
    import tempfile
    store = ctx.store.ensure()
    tmpdir = tempfile.mkdtemp(prefix="base-", dir=store.tmp)
    try:
        archive = os.path.join(tmpdir, "base.tar")
        fmt = ["--format", "oci-archive"] if engine_kind(engine) == "podman" else []
        _engine_out(ctx, engine, "save", *fmt, "-o", archive, reference)
        layout = Layout(archive)
        index = _load_json(layout.read("index.json"), "index of %s" % reference)
        entry = (index.get("manifests") or [{}])[0]
        manifest = _load_json(layout.blob(entry.get("digest", "")), "manifest of %s" % reference)
        if "manifests" in manifest:
            manifest = _load_json(layout.blob(choose_manifest(manifest)["digest"]), "manifest of %s"
                                  % reference)
        config = _load_json(layout.blob(manifest["config"]["digest"]), "config of %s" % reference)
        for d in manifest.get("layers") or []:
            if not store.has_blob(d["digest"]):
                layout.into_store(store, d["digest"])
        return config, manifest
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def push_image(reg: Registry, name: str, reference: str, image: OCIImage, mounts: dict, progress, log) -> str:
    """Upload an image's blobs (cross-repo mounted where `mounts` names a repository of this
    registry that has one), its config, then its manifest under `reference`. Returns its digest."""
    import json
    for digest, path in image.blobs.items():
        how = reg.upload(name, digest, os.path.getsize(path), path=path, mount_from=mounts.get(digest),
                         progress=progress)
        log("blob %s: %s" % (digest, how))
    reg.upload(name, json.loads(image.manifest)["config"]["digest"], len(image.config), data=image.config)
    return reg.put_manifest(name, reference, image.manifest, OCI_MANIFEST)


def modelpack_image(store: Store, model: Model) -> OCIImage:
    """The model as a ModelPack artifact: its files are its layers."""
    import json
    config, manifest = modelpack_manifest(model, _model_facts(model))
    return OCIImage(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), config,
                    {f.digest: store.blob_path(f.digest) for f in model.files})


def model_as_image(ctx: Services, model: Model, kind: str, carimage: str = None) -> tuple:
    """(OCIImage, its layer file to delete afterwards or None, the base's registry Ref or None):
    a stored model as a ModelPack artifact (modelpack), or as ramalama's raw or car image (the
    car's base from the engine's storage or its registry)."""
    if kind == "modelpack":
        return modelpack_image(ctx.store, model), None, None
    base = base_image(ctx, carimage) if kind == "car" else None
    image, layer = model_image(ctx.store, model, kind, base and base[:2])
    return image, layer, base and base[2]


def push_model(ctx: Services, model: Model, target: Ref, kind: str, carimage: str = None) -> str:
    """Upload a stored model as a ModelPack artifact (modelpack) or as ramalama's raw or car
    image, and tag it. Returns the manifest digest."""
    import json
    store, reg = ctx.store, ctx.registry(target.host)
    mounts = _mount_sources(store, target)
    image, layer, base = model_as_image(ctx, model, kind, carimage)
    try:
        if base and base.host == target.host:     # the base's own registry: its layers are mounted
            mounts.update((d["digest"], base.name) for d in json.loads(image.manifest)["layers"][:-1])
        return push_image(reg, target.name, target.digest or target.tag, image, mounts, ctx.progress(),
                          ctx.log)
    finally:
        if layer:
            _unlink_quiet(layer)


def _model_facts(model: Model) -> dict:
    main_file = model.model_file()
    if main_file is None:
        return {}
    try:
        return describe_gguf(read_gguf(os.path.join(model.path, main_file.name)))
    except (FormatError, OSError):
        return {}


def _mount_sources(store: Store, target: Ref) -> dict:
    """digest -> another repository of the same registry we pulled it from (for mounts)."""
    sources = {}
    for m in store.models():
        try:
            r = parse_ref(m.ref)
        except RamalamaError:
            continue
        if r.transport == "oci" and r.host == target.host and r.name != target.name:
            for f in m.files:
                sources.setdefault(f.digest, r.name)
    return sources


# -- OCI image layouts on disk (air-gapped transfer): directories and .tar archives

class Layout:
    """An OCI image layout in a directory or a tar archive. Every blob read is checked
    against its digest; nothing is extracted where its name points."""

    def __init__(self, path: str):
        import tarfile
        self.path, self.tar, self.members = path, None, {}
        if os.path.isdir(path):
            return
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {m.name.lstrip("./"): m for m in self.tar.getmembers() if m.isreg()}
        except (OSError, tarfile.TarError) as e:
            raise NotFound("%s is neither an OCI layout directory nor a readable tar archive (%s)"
                           % (path, e))

    def _file(self, name: str):
        name = safe_relpath(name)
        if self.tar is None:
            try:
                return open(os.path.join(self.path, name), "rb")
            except FileNotFoundError:
                raise FormatError("%s: %s is missing" % (self.path, name))
        member = self.members.get(name)
        if member is None:
            raise FormatError("%s: %s is missing" % (self.path, name))
        return self.tar.extractfile(member)

    def read(self, name: str, limit: int = MAX_MANIFEST) -> bytes:
        with self._file(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FormatError("%s: %s is larger than %s" % (self.path, name, human_size(limit)))
        return data

    def blob(self, digest: str, limit: int = MAX_MANIFEST) -> bytes:
        data = self.read("blobs/sha256/" + parse_digest(digest), limit)
        if _sha256_bytes(data) != digest:
            raise DigestMismatch("%s: blob %s does not match its digest" % (self.path, digest))
        return data

    def into_store(self, store: Store, digest: str, consume=None) -> None:
        """Publish a blob (a directory layout's file is hardlinked when it can be), verified;
        or hand the verified temporary copy to `consume(path)` (tar layers)."""
        hexdigest = parse_digest(digest)
        if self.tar is None and consume is None:
            store.import_file(os.path.join(self.path, "blobs", "sha256", hexdigest), expect=digest)
            return
        import hashlib
        import tempfile
        fd, tmp = tempfile.mkstemp(prefix="layout-", dir=store.tmp)
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, self._file("blobs/sha256/" + hexdigest) as src:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != hexdigest:
                raise DigestMismatch("%s: blob %s hashes to sha256:%s" % (self.path, digest, h.hexdigest()))
            if consume is None:
                store.publish_blob(tmp, hexdigest)
            else:
                consume(tmp)
        finally:
            _unlink_quiet(tmp)


def pull_layout(ctx: Services, ref: Ref) -> tuple:
    """oci-layout:PATH[:tag] and oci-archive:FILE.tar: a layout that `export` (or skopeo)
    wrote, read like a registry, digests verified, files hardlinked in when they can be."""
    store = ctx.store
    layout = Layout(ref.name)
    index = _load_json(layout.read("index.json"), "%s/index.json" % ref.name)
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    tagged = [m for m in entries
              if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref.tag]
    if not tagged and len(entries) == 1 and ref.tag == "latest":
        tagged = entries
    if not tagged:
        names = sorted((m.get("annotations") or {}).get("org.opencontainers.image.ref.name", "?")
                       for m in entries)
        raise NotFound("%s has no tag %s (it has: %s)" % (ref.name, ref.tag, ", ".join(names) or "nothing"))
    digest = tagged[0].get("digest", "")
    manifest = _load_json(layout.blob(digest), "manifest in %s" % ref.name)
    if "manifests" in manifest:
        digest = choose_manifest(manifest)["digest"]
        manifest = _load_json(layout.blob(digest), "manifest in %s" % ref.name)
    fmt, plans = plan_layers(manifest)
    origin = None
    cfg = manifest.get("config") or {}
    if cfg.get("mediaType") == MODELPACK_CONFIG:
        origin = (_load_json(layout.blob(cfg["digest"]), "model config").get("descriptor") or {}).get("name")
    for plan in plans:
        if plan.kind == "raw" and not store.has_blob(plan.desc["digest"]):
            layout.into_store(store, plan.desc["digest"])

    def unpack(plan) -> list:
        unpacked = []
        layout.into_store(store, plan.desc["digest"], consume=lambda path: unpacked.extend(
            unpack_layer(store, path, plan.kind.endswith("gzip"), plan.kind.startswith("image"))))
        return unpacked
    files, layers = assemble_files(ref, plans, unpack)
    meta = {"manifest_digest": digest, "format": fmt, "source": ref.name, "layers": layers}
    if isinstance(origin, str):
        meta["exported_from"] = origin
    return files, meta


def write_layout(store: Store, path: str, tag: str, image: OCIImage, extra: dict = None,
                 archive: bool = None) -> str:
    """Write an image as an OCI image layout: a directory (blobs hardlinked from the store) or a
    tar archive (for a path ending in .tar, or with archive=True). `extra` adds files next to
    index.json (the runtime image). Returns the manifest digest."""
    import io
    import json
    import tarfile
    manifest = json.loads(image.manifest)
    entry = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    if manifest.get("artifactType"):
        entry["artifactType"] = manifest["artifactType"]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    small = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
             "index.json": json.dumps(index, indent=1).encode(),
             "blobs/sha256/" + parse_digest(image.digest): image.manifest,
             "blobs/sha256/" + parse_digest(manifest["config"]["digest"]): image.config}
    big = {"blobs/sha256/" + parse_digest(d): src for d, src in image.blobs.items()}
    big.update(extra or {})
    if path.endswith(".tar") if archive is None else archive:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_file(path) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for name, data in sorted(small.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            for name, src in sorted(big.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode = os.path.getsize(src), 0o644
                with open(src, "rb") as f:
                    tar.addfile(info, f)
        return image.digest
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for name, src in sorted(big.items()):
        target = os.path.join(path, name)
        if not os.path.exists(target):
            store.link_or_copy(src, target)
    for name in [n for n in small if n.startswith("blobs/")] + ["oci-layout", "index.json"]:
        _write_bytes_atomic(os.path.join(path, name), small[name])     # index.json last: the commit point
    return image.digest


def _write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


TRANSPORTS = {"file": pull_file, "http": pull_url, "https": pull_url, "oci": pull_oci,
              "ollama": pull_ollama, "huggingface": pull_hf, "oci-layout": pull_layout,
              "oci-archive": pull_layout}


def adopted(ctx: Services, model: Model) -> Model:
    """Our model for one of ramalama's (pushing and exporting need its digests): its files are
    hashed into blobs/ (linked when already read-only, else copied: theirs are never changed)."""
    if model.meta.get("store") != "ramalama":
        return model
    store = ctx.store.ensure()
    files = []
    with store.lock("store", shared=True):          # prune waits until the folder holds them
        for f in model.files:
            path = os.path.join(model.path, f.name)
            hexdigest, size = store.import_file(path, link=linkable_unchanged(path))
            files.append(FileSpec(f.name, "sha256:" + hexdigest, size, f.role, ""))
        adopted_model = store.publish_model(parse_ref(model.ref), files,
                                            {"adopted_from": model.meta["ramalama_name"]})
    ctx.info("%s: adopted from ramalama's store" % model.ref)
    return adopted_model


def pull_model(ctx: Services, ref: Ref) -> Model:
    """Fetch a model's files into blobs/, then publish its folder, holding the store lock
    shared so rm and prune cannot delete a blob between its download and its link."""
    puller = TRANSPORTS[ref.transport]
    store = ctx.store.ensure()
    folder_key = _sha256_bytes(store.folder(ref).encode())[7:39]
    with store.lock("store", shared=True, on_wait=lambda: ctx.info("waiting for rm/prune to finish")), \
            store.lock("pull-" + folder_key, on_wait=lambda: ctx.info("%s: another pull is running; waiting"
                                                                      % (ref,))):
        # one pull per model at a time: the second finds the first's result up to date
        files, meta = puller(ctx, ref)
        return store.publish_model(ref, files, meta)


# ---------------------------------------------------------------------------
# 12. gguf
# ---------------------------------------------------------------------------

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# llama.cpp's LLAMA_FTYPE values (general.file_type)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
              23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
              29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
              38: "MXFP4_MOE"}
# ggml tensor types, for files without general.file_type
TENSOR_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
                10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
                17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
                23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
                30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
MAX_GGUF_STRING = 64 << 20


class _GGUFReader:
    """Bounds-checked reads: every count and length is checked against the bytes left, so a
    hostile header fails with FormatError instead of allocating or looping."""

    def __init__(self, f, size: int, endian: str):
        self.f, self.left, self.e = f, size, endian

    def take(self, n: int) -> bytes:
        if n > self.left:
            raise FormatError("truncated GGUF header")
        data = self.f.read(n)
        if len(data) != n:
            raise FormatError("truncated GGUF header")
        self.left -= n
        return data

    def scalar(self, fmt: str):
        import struct
        return struct.unpack(self.e + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, min_item: int) -> int:
        n = self.scalar("Q")
        if n * min_item > self.left:
            raise FormatError("GGUF header announces %d items, more than the file holds" % n)
        return n

    def string(self) -> str:
        n = self.count(1)
        if n > MAX_GGUF_STRING:
            raise FormatError("GGUF string of %d bytes" % n)
        return self.take(n).decode("utf-8", "replace")

    def value(self, vtype: int, keep_arrays: bool):
        import struct
        if vtype in _GGUF_SCALARS:
            return self.scalar(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype != _GGUF_ARRAY:
            raise FormatError("unknown GGUF value type %d" % vtype)
        itype = self.scalar("I")
        if itype in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[itype]
            n = self.count(struct.calcsize(fmt))
            data = self.take(n * struct.calcsize(fmt))
            return list(struct.unpack("%s%d%s" % (self.e, n, fmt), data)) if keep_arrays else _Array(n)
        if itype == _GGUF_ARRAY:
            raise FormatError("nested GGUF arrays are not supported")
        n = self.count(8)
        items = [self.value(itype, keep_arrays) for _ in range(n)]
        return items if keep_arrays else _Array(n)


class _Array(int):
    """An array whose items were skipped: only its length is kept."""


def read_gguf(path: str, keep_arrays: bool = False) -> dict:
    """Parse a GGUF header: version, metadata, tensor infos. Long arrays (the tokenizer's
    vocabulary) are skipped unless keep_arrays."""
    import struct
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8 or head[:4] != b"GGUF":
            raise FormatError("%s is not a GGUF file" % os.path.basename(path))
        endian = "<"
        version = struct.unpack("<I", head[4:])[0]
        if version > 0xFFFF:                    # a big-endian file reads byte-swapped
            endian, version = ">", struct.unpack(">I", head[4:])[0]
        if version not in (2, 3):
            raise FormatError("unsupported GGUF version %d" % version)
        r = _GGUFReader(f, size - 8, endian)
        n_tensors, n_kv = r.count(8), r.count(12)
        meta = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.scalar("I"), keep_arrays)
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.scalar("I")
            if n_dims > 8:
                raise FormatError("tensor %r has %d dimensions" % (name[:60], n_dims))
            dims = [r.scalar("Q") for _ in range(n_dims)]
            tensors.append((name, dims, r.scalar("I"), r.scalar("Q")))
    return {"version": version, "endian": "little" if endian == "<" else "big",
            "metadata": meta, "tensors": tensors}


def describe_gguf(info: dict) -> dict:
    """The facts `inspect` shows, from read_gguf's result."""
    meta = info["metadata"]
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    params = 0
    counts = {}
    for _name, dims, ttype, _off in info["tensors"]:
        n = 1
        for d in dims:
            n *= d
        params += n
        counts[ttype] = counts.get(ttype, 0) + n
    ftype = meta.get("general.file_type")
    if isinstance(ftype, int) and ftype in FILE_TYPES:
        quant = FILE_TYPES[ftype]
    elif counts:
        quant = TENSOR_TYPES.get(max(counts, key=counts.get), "unknown")
    else:
        quant = "unknown"
    template = meta.get("tokenizer.chat_template")
    return {
        "format": "GGUF", "gguf_version": info["version"], "endianness": info["endian"],
        "architecture": arch, "model_name": meta.get("general.name", ""),
        "parameters": params, "quantization": quant,
        "context_length": meta.get(arch + ".context_length"),
        "embedding_length": meta.get(arch + ".embedding_length"),
        "block_count": meta.get(arch + ".block_count"),
        "chat_template": template if isinstance(template, str) else None,
        "metadata_count": len(meta), "tensor_count": len(info["tensors"]),
    }


# ---------------------------------------------------------------------------
# 13. launchers: engines, images pinned by digest, GPUs, argv builders, the API client,
#     deployment files, servers and tools
# ---------------------------------------------------------------------------

GPU_IMAGES = {"none": "quay.io/ramalama/ramalama", "nvidia": "quay.io/ramalama/cuda",
              "amd": "quay.io/ramalama/rocm", "intel": "quay.io/ramalama/intel-gpu"}
VLLM_IMAGE = "docker.io/vllm/vllm-openai"
CONTAINER_MODELS = "/mnt/models"
CONTAINER_SOCKET_DIR = "/run/ramalama"
LABEL = "ai.ramalama"
HEALTH_TIMEOUT = 300.0
API_TIMEOUT = 600.0         # a CPU can think for minutes before its first token


class ServeOptions(namedtuple("ServeOptions", "runtime model mmproj template alias host port ctx_size ngl "
                                              "threads temp seed extra max_tokens models_max rpc",
                              defaults=(None, None, None))):
    """What a runtime is told, with paths as the runtime sees them (host or container). With
    models_max, `model` is a directory of models that llama-server's router serves by name;
    rpc: llama.cpp RPC workers ('host:port,host:port') that hold the offloaded layers."""
    __slots__ = ()


def runtime_argv(o: ServeOptions) -> list:
    """The server command line for llama.cpp's llama-server or vLLM's OpenAI server."""
    import shlex
    if o.runtime == "vllm":
        argv = ["vllm", "serve", o.model, "--host", o.host, "--port", str(o.port), "--served-model-name",
                o.alias]
        for flag, value in (("--max-model-len", o.ctx_size), ("--seed", o.seed)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + shlex.split(o.extra or "")
    argv = ["llama-server", "--host", o.host, "--port", str(o.port)]
    if o.models_max:
        argv += ["--models-dir", o.model, "--models-max", str(o.models_max)]
    else:
        argv += ["--model", o.model, "--alias", o.alias]
    for flag, value in (("--ctx-size", o.ctx_size), ("--n-gpu-layers", o.ngl), ("--threads", o.threads),
                        ("--temp", o.temp), ("--seed", o.seed), ("--mmproj", o.mmproj),
                        ("--n-predict", o.max_tokens or None), ("--rpc", o.rpc)):
        if value is not None:
            argv += [flag, str(value)]
    if o.template:
        argv += ["--jinja", "--chat-template-file", o.template]
    return argv + shlex.split(o.extra or "")


def api_key_env(runtime: str) -> str:
    """The variable the runtime reads its API key from (both also take a flag, which would
    show the key in the process list)."""
    return "VLLM_API_KEY" if runtime == "vllm" else "LLAMA_API_KEY"


# Variables that choose GPUs (ramalama 0.25's list): the first one set picks the GPU kind, and
# every one set reaches the container
GPU_SELECT_VARS = (("CUDA_VISIBLE_DEVICES", "nvidia"), ("HIP_VISIBLE_DEVICES", "amd"),
                   ("HSA_VISIBLE_DEVICES", "amd"), ("INTEL_VISIBLE_DEVICES", "intel"))
ACCEL_VARS = ("ASAHI_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
              "GGML_VK_VISIBLE_DEVICES",
              "HIP_VISIBLE_DEVICES", "INTEL_VISIBLE_DEVICES", "MUSA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING",
              "HSA_VISIBLE_DEVICES", "HSA_OVERRIDE_GFX_VERSION", "MTHREADS_VISIBLE_DEVICES")


def accel_env(env: dict) -> dict:
    """The GPU selection variables set, as the container should see them: NVIDIA GPUs narrowed by
    CUDA_VISIBLE_DEVICES are passed in alone and numbered from zero there."""
    found = {k: env[k] for k in ACCEL_VARS if env.get(k)}
    ids = _cuda_ids(found.get("CUDA_VISIBLE_DEVICES"))
    if ids:
        found["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(ids)))
    return found


def _cuda_ids(value) -> list:
    """['0', '2'] for CUDA_VISIBLE_DEVICES=0,2; [] for anything else (all GPUs, UUIDs)."""
    ids = [v.strip() for v in (value or "").split(",") if v.strip()]
    return ids if ids and all(v.isdigit() for v in ids) else []


def gpu_devices(engine: str, gpu: str, env: dict = None) -> list:
    """Engine flags that give a container the GPU (only the NVIDIA GPUs CUDA_VISIBLE_DEVICES
    names, when it names some)."""
    if gpu == "nvidia":
        ids = _cuda_ids((env or {}).get("CUDA_VISIBLE_DEVICES"))
        if engine == "docker":
            return ["--gpus", "device=" + ",".join(ids) if ids else "all"]
        return [a for i in ids or ["all"] for a in ("--device", "nvidia.com/gpu=" + i)]
    if gpu == "amd":
        return ["--device", "/dev/kfd", "--device", "/dev/dri"]
    if gpu == "intel":
        return ["--device", "/dev/dri"]
    return []


def container_argv(engine: str, exe: str, image: str, command: list, mounts: list, *, name: str,
                   labels: dict, gpu: str, devices: list, publish: str = None, socket_dir: str = None,
                   detach: bool = True, env_names: tuple = (), accel: dict = None, host_env: dict = None,
                   extra: list = ()) -> list:
    """`podman|docker run` for a model server or tool: read-only model mounts, every capability
    dropped, no new privileges, an init process, our labels; a published port, or no network at
    all (with a unix socket in a mounted directory for a server). `env_names` pass variables by name only:
    their values (an API key) come from the engine's environment, never from argv; `accel`
    holds the GPU selection variables the container gets (see accel_env); `extra` are engine
    flags the user asked for (--env, --network, --privileged, ...)."""
    accel = accel or {}
    argv = [exe, "run", "--rm"] + (["-d"] if detach else []) + ["--name", name]
    if not detach and engine == "podman":
        # the tool writes to our pipes itself: podman's relay can drop the last lines at exit
        argv.append("--log-driver=passthrough")
    for var in env_names:
        argv += ["--env", var]
    for var, value in sorted(accel.items()):
        argv += ["--env", "%s=%s" % (var, value)]
    for key, value in sorted(labels.items()):
        argv += ["--label", "%s=%s" % (key, value)]
    argv += ["--cap-drop=all", "--security-opt=no-new-privileges", "--init"]
    if publish:
        argv += ["-p", publish]
    else:
        argv += [a for a in extra if a.startswith("--network=")] or ["--network=none"]
    if socket_dir:
        argv.append("--mount=type=bind,src=%s,destination=%s" % (socket_dir, CONTAINER_SOCKET_DIR))
    for src, dst in mounts:
        if src.startswith("image:"):            # a model ramalama keeps as an image
            argv.append("--mount=type=image,source=%s,destination=%s" % (src[len("image:"):], dst))
        else:
            argv.append("--mount=type=bind,src=%s,destination=%s,ro=true" % (src, dst))
    if "none" not in devices:                    # --device none: no GPU and no other device
        argv += gpu_devices(engine, gpu, host_env)
        for dev in devices:
            argv += ["--device", dev]
    argv += [a for a in extra if publish or not a.startswith("--network=")]
    return argv + [image] + command


def engine_flags(args, config: Config, engine: str) -> list:
    """The container flags ramalama 0.25's run/serve options ask for."""
    flags = ["--env=" + e for e in getattr(args, "env", None) or []]
    if getattr(args, "network", None):
        flags.append("--network=" + args.network)
    if getattr(args, "privileged", False):
        flags.append("--privileged")
    selinux = getattr(args, "selinux", None)
    if (config.get("selinux") if selinux is None else selinux) is False:
        flags.append("--security-opt=label=disable")
    keep = getattr(args, "keep_groups", None) or config.get("keep_groups")
    if keep and engine == "podman":
        flags.append("--group-add=keep-groups")
    if getattr(args, "oci_runtime", None):
        flags.append("--runtime=" + args.oci_runtime)
    return flags


def detect_gpu(env: dict, exists=os.path.exists, which=None, vendors=None) -> str:
    """nvidia, amd, intel or none, from RAMALAMA_GPU, a GPU selection variable that is set
    (CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, ...), device nodes and tools present."""
    import glob
    import shutil
    forced = env.get("RAMALAMA_GPU", "").lower()
    if forced in ("nvidia", "amd", "intel", "none"):
        return forced
    for var, kind in GPU_SELECT_VARS:
        if env.get(var):
            return kind
    which = which or (lambda tool: shutil.which(tool, path=env.get("PATH")))
    if exists("/dev/nvidia0") or which("nvidia-smi"):
        return "nvidia"
    if exists("/dev/kfd"):
        return "amd"
    if vendors is None:
        vendors = []
        for path in glob.glob("/sys/class/drm/renderD*/device/vendor"):
            try:
                with open(path) as f:
                    vendors.append(f.read().strip())
            except OSError:
                pass
    return "intel" if "0x8086" in vendors else "none"


def find_engine(ctx: Services, to_run: bool = True) -> str:
    """The container engine to use: --engine, RAMALAMA_CONTAINER_ENGINE, config, else podman,
    else docker; '' means natively (--nocontainer, or config container = false), unless the
    engine is wanted for its image store rather than to run containers (to_run False)."""
    import shutil
    if to_run and not ctx.choices.container:
        return ""
    if ctx.choices.engine:
        return ctx.choices.engine
    return next((e for e in ("podman", "docker") if shutil.which(e, path=ctx.env.get("PATH"))), "")


def engine_kind(engine: str) -> str:
    return "docker" if os.path.basename(engine).startswith("docker") else "podman"


# -- images: a tag is resolved to a digest once, recorded, and only the digest is run

def image_pins_path(store: Store) -> str:
    return os.path.join(store.root, "images.json")


def load_pins(store: Store) -> dict:
    import json
    try:
        with open(image_pins_path(store), "rb") as f:
            pins = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StoreError("%s: unreadable: %s" % (image_pins_path(store), e))
    return pins if isinstance(pins, dict) else {}


def _image_ref(image: str) -> Ref:
    try:
        return _parse_oci(image.split("://", 1)[-1], image)
    except (UsageError, FormatError) as e:
        raise UsageError("invalid image %r: %s" % (image, e))


def pin_key(ref: Ref) -> str:
    """host/name:tag, the form images.json records pins under."""
    return "%s/%s:%s" % (ref.host, ref.name, ref.tag)


def record_pin(store: Store, key: str, digest: str, via: str) -> None:
    with store.lock("images"):
        pins = load_pins(store)
        pins[key] = {"digest": digest, "via": via, "pinned": _iso(time.time())}
        _write_json_atomic(image_pins_path(store), pins)


def pinned_name(ref: Ref, digest: str) -> str:
    return "%s/%s@%s" % (ref.host, ref.name, digest)


def _engine_out(ctx: Services, engine: str, *argv) -> str:
    """Run an engine command; its stdout, or EngineError with its last error line."""
    import subprocess
    proc = subprocess.run([engine] + list(argv), capture_output=True, text=True, env=ctx.env)
    if proc.returncode != 0:
        raise EngineError("%s %s failed: %s"
                          % (engine, argv[0], (proc.stderr.strip().splitlines() or ["?"])[-1]))
    return proc.stdout.strip()


def resolve_image(ctx: Services, image: str, engine: str, offline: bool = False) -> str:
    """image@sha256:... for `image`. A pin recorded in the store is reused without network
    unless --pull=always|newer asks to refresh it; otherwise the engine's local store is asked
    first, then the registry (with our own client). A digest given is used as it is. New pins
    are recorded in <store>/images.json. Offline (--dryrun) nothing is asked or recorded: the
    recorded pin, else the engine's digest, else the tag itself, said to be unresolved."""
    ref = _image_ref(image)
    if ref.digest:
        return pinned_name(ref, ref.digest)
    store = ctx.store if offline else ctx.store.ensure()
    policy = ctx.choices.pull
    pins = load_pins(store) if store.exists() else {}
    key = pin_key(ref)
    pinned = pins.get(key, {}).get("digest")
    if pinned and (offline or policy in ("missing", "never")):
        return pinned_name(ref, pinned)
    if offline:
        digest = _engine_digest(engine, ref, ctx.env) if engine else None
        if digest:
            return pinned_name(ref, digest)
        ctx.warn("image %s is unresolved (no pin recorded); a run without --dryrun pins it to a digest first"
                 % key)
        return key
    digest, via = None, None
    if policy not in ("always", "newer") and engine:
        digest, via = _engine_digest(engine, ref, ctx.env), "engine"
    if digest is None and policy != "never":
        try:
            digest, via = ctx.registry(ref.host).manifest(ref.name, ref.tag)[2], "registry"
        except NetworkError as e:
            if pinned:
                ctx.warn("cannot refresh %s (%s); keeping %s" % (key, e, pinned))
                return pinned_name(ref, pinned)
            raise RamalamaError("cannot resolve image %s to a digest: %s. Pin one with --image "
                                "%s/%s@sha256:<digest> "
                                "or image = '...@sha256:...' in ramalama.conf" % (key, e, ref.host, ref.name))
    if digest is None:
        raise RamalamaError("image %s is not in the %s store and --pull=never forbids asking the registry; "
                            "pin one with --image %s/%s@sha256:<digest>"
                            % (key, engine or "local", ref.host, ref.name))
    if digest != pinned:
        record_pin(store, key, digest, via)
        ctx.info("pinned %s to %s" % (key, digest))
    return pinned_name(ref, digest)


def _engine_digest(engine: str, ref: Ref, env: dict):
    """The repo digest the engine's local store records for this image, if any."""
    import json
    import subprocess
    try:
        proc = subprocess.run([engine, "image", "inspect", "--format", "{{json .RepoDigests}}", pin_key(ref)],
                              capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        digests = json.loads(proc.stdout.strip().splitlines()[0]) or []
    except (ValueError, IndexError):
        return None
    for entry in digests:
        repo, _, digest = str(entry).partition("@")
        if repo.split("/", 1)[-1] in (ref.name, "library/" + ref.name) or repo.endswith("/" + ref.name):
            return digest if digest.startswith("sha256:") else None
    return None


# -- models ramalama 0.25 pulled as images into podman's store (label org.containers.type)

def engine_models(ctx: Services, to_run: bool = False) -> list:
    """Models that ramalama keeps as images in podman's store, as Models whose path is None and
    meta["image"] the image ID; with to_run, none under --nocontainer (as ramalama's list).
    Asked only where ramalama is installed: listing images costs a podman process."""
    import shutil
    engine = find_engine(ctx, to_run)
    ramalama_here = shutil.which("ramalama", path=ctx.env.get("PATH"))
    if not engine or engine_kind(engine) != "podman" or not ramalama_here:
        return []
    import json
    import subprocess
    proc = subprocess.run([engine, "images", "--filter", "label=org.containers.type", "--format", "json"],
                          capture_output=True, text=True, env=ctx.env)
    try:
        images = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    except ValueError:
        return []
    models = []
    for image in images if isinstance(images, list) else []:
        for name in image.get("Names") or []:
            try:
                ref = str(parse_ref("oci://" + name))
            except RamalamaError:
                continue
            models.append(Model(ref, None, {
                "ref": ref, "store": "ramalama-image", "image": image.get("Id", ""),
                "pulled": image.get("Created", 0),
                "repo_digests": image.get("RepoDigests") or [],
                "files": [{"name": "model.file", "digest": "", "size": image.get("Size", 0),
                           "role": "model"}]}))
    return models


def mount_image(ctx: Services, model: Model) -> str:
    """The image's /models directory on this host (podman image mount; root only)."""
    return os.path.join(_engine_out(ctx, find_engine(ctx, False), "image", "mount", model.meta["image"]),
                        "models")


def unmount_image(ctx: Services, model: Model) -> None:
    import subprocess
    subprocess.run([find_engine(ctx, False), "image", "unmount", model.meta["image"]], capture_output=True,
                   env=ctx.env)


def find_model(ctx: Services, ref: Ref):
    """The model for ref: ours, else one ramalama pulled into the same store directory, else one
    it keeps as an image in podman; None when there is none."""
    model = ctx.store.find(ref)
    if model is None and ref.transport == "oci":
        model = next((m for m in engine_models(ctx) if m.ref == str(ref)), None)
    return model


def get_model(ctx: Services, ref: Ref) -> Model:
    model = find_model(ctx, ref)
    if model is None:
        raise NotFound("%s is not in the store (pull it first)" % (ref,))
    return model


# -- the OpenAI-compatible API: health, models and chat, over TCP or a unix socket

def _http_connection(endpoint: str, timeout: float):
    """endpoint: 'http://host:port' or 'unix:/path/to.sock'."""
    import http.client
    import socket
    if endpoint.startswith("unix:"):
        path = endpoint[5:]

        class UnixConnection(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)
        return UnixConnection("localhost", timeout=timeout)
    from urllib.parse import urlsplit
    p = urlsplit(endpoint)
    return http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)


def wait_healthy(endpoint: str, alive, timeout: float = HEALTH_TIMEOUT, clock=time.monotonic,
                 sleep=time.sleep) -> None:
    """Poll /health until it answers 200 (llama-server says 503 while loading). `alive()`
    returning False means the server died: stop waiting."""
    import http.client
    deadline = clock() + timeout
    while clock() < deadline:
        if not alive():
            raise RamalamaError("the model server exited before it was ready")
        conn = _http_connection(endpoint, 2.0)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        sleep(0.05)
    raise RamalamaError("the model server was not ready after %d s" % timeout)


def api_base(url: str) -> str:
    """An OpenAI API base: 'http://h:8080' means 'http://h:8080/v1'; a URL with a path is the
    base as given ('https://example.com/openai/v1'); 'unix:/path' is a socket with the API at /v1."""
    from urllib.parse import urlsplit
    if url.startswith("unix:"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("not an http(s) URL: %r" % url)
    return url.rstrip("/") + ("/v1" if parts.path.strip("/") == "" else "")


def api_error_message(status: int, body: bytes, key_sent: bool) -> str:
    """One line for an API error: the server's own message ({"error": {"message": ...}} as
    OpenAI and llama-server send it, {"error": "..."}, or plain text) and what to do about a 401."""
    import json
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        detail = err.get("message") or err.get("detail") or "" if isinstance(err, dict) else str(err)
    except ValueError:
        detail = text
    detail = " ".join(str(detail).split())[:300]
    hint = ""
    if status in (401, 403):
        hint = ("the server refused the API key" if key_sent else
                "the server wants an API key: pass --api-key or set RAMALAMA_API_KEY")
    return "HTTP %d%s%s" % (status, ": " + detail if detail else "", " (%s)" % hint if hint else "")


class APIClient:
    """One OpenAI-compatible endpoint (ours, llama-server's, vLLM's or a hosted one): the models
    it offers and streamed chat. HTTP(S) goes through an HTTPSession (proxies, TLS, the key
    sent to that origin only); a unix socket is dialled directly."""

    def __init__(self, base: str, api_key: str = None, session: "HTTPSession" = None):
        self.base, self.api_key, self.session = api_base(base), api_key, session

    def _send(self, method: str, path: str, body: bytes = None, stream: bool = False):
        """(status, http.client.HTTPResponse, close) for base + path."""
        import http.client
        import socket
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        auth = "Bearer " + self.api_key if self.api_key else None
        if self.base.startswith("unix:"):
            conn = _http_connection(self.base, API_TIMEOUT)
            if auth:
                headers["Authorization"] = auth
            try:
                conn.request(method, "/v1" + path, body=body, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise NetworkError("%s: %s" % (self.base, _describe_oserror(e))) from e
            return resp.status, resp, conn.close
        try:
            resp = self.session.request(method, self.base + path, headers=headers, body=body, auth=auth,
                                        ok=API_STATUSES)
        except NetworkError as e:
            # the server itself refused or has no address; a proxy's failure says so itself
            if isinstance(e, ProxyError) or not isinstance(e.__cause__, (ConnectionError, socket.gaierror)):
                raise
            raise NetworkError("no model server answers at %s (%s); start one with "
                               "`ramalama serve -d MODEL`, or pass --url"
                               % (redact(self.base), _describe_oserror(e.__cause__))) from e
        return resp.status, resp.raw, lambda: resp.close(reuse=False)

    def _fail(self, status: int, raw, path: str):
        message = "%s%s: %s" % (redact(self.base), path,
                                api_error_message(status, raw.read(1 << 16), bool(self.api_key)))
        raise NotFound(message) if status == 404 else HTTPStatusError(message, status)

    def models(self) -> list:
        """The /models list: dicts with at least "id"."""
        import json
        status, raw, close = self._send("GET", "/models")
        try:
            if status != 200:
                self._fail(status, raw, "/models")
            try:
                data = json.loads(raw.read(16 << 20)).get("data")
            except (ValueError, AttributeError):
                data = None
            if not isinstance(data, list):
                raise RamalamaError("%s/models: the answer is not an OpenAI model list" % redact(self.base))
            return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        finally:
            close()

    def chat(self, model: str, messages: list, out, **options) -> str:
        """One streamed /chat/completions exchange: tokens are written to `out` as they arrive;
        returns the whole reply. `options` (max_tokens, temperature) go into the request."""
        import json
        import http.client
        request = {"messages": messages, "stream": True}
        request.update((k, v) for k, v in options.items() if v is not None)
        if model:
            request["model"] = model
        status, raw, close = self._send("POST", "/chat/completions", json.dumps(request).encode(),
                                        stream=True)
        try:
            if status != 200:
                self._fail(status, raw, "/chat/completions")
            if (raw.getheader("Content-Type") or "").startswith("application/json"):
                reply = _message_content(raw.read(64 << 20))      # a server that does not stream
                out.write(reply + "\n")
                return reply
            reply = []
            while True:
                line = raw.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                reply.append(delta)
                out.write(delta)
                out.flush()
            out.write("\n")
            return "".join(reply)
        except (OSError, http.client.HTTPException) as e:
            raise NetworkError("lost the model server: %s" % _describe_oserror(e)) from e
        finally:
            close()


def _message_content(body: bytes) -> str:
    """The reply in a whole (not streamed) chat completion: choices[0].message.content."""
    import json
    try:
        return json.loads(body)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise RamalamaError("the model server's answer is not a chat completion") from None


def free_port(host: str = "127.0.0.1") -> int:
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- deployment files

def publish_spec(host: str, port: int) -> str:
    """`-p` for a served port: every address for 0.0.0.0 (or ''), else only `host`."""
    if host in ("0.0.0.0", ""):
        return "%d:%d" % (port, port)
    return "%s:%d:%d" % (host, port, port)


def to_yaml(obj, indent: int = 0) -> str:
    """Block-style YAML of dicts, lists and scalars; scalars (and empty dicts and lists) are
    written as JSON, which YAML reads."""
    import json
    import re
    pad = "  " * indent
    if isinstance(obj, dict) and obj:
        lines = []
        for key, value in obj.items():
            key = key if re.fullmatch(r"[A-Za-z0-9_./-]+", key) else json.dumps(key)
            if isinstance(value, (dict, list)) and value:
                lines.append("%s%s:\n%s" % (pad, key, to_yaml(value, indent + 1)))
            else:
                lines.append("%s%s: %s" % (pad, key, to_yaml(value)))
        return "\n".join(lines)
    if isinstance(obj, list) and obj:
        # an item's first line follows its dash; its other lines keep their indentation
        return "\n".join(pad + "- " + to_yaml(item, indent + 1).lstrip() for item in obj)
    return json.dumps(obj)


# The init container of the cluster form: fetch each file by digest from the registry (anonymous,
# or with the anonymous bearer token a registry hands out), check its sha256, rename it in place.
FETCH_BY_DIGEST = r'''
import hashlib, json, os, re, sys, urllib.parse, urllib.request, urllib.error
base, repo, dest, files = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
def get(url, auth=None):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=auth or {}), timeout=60)
    except urllib.error.HTTPError as e:
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', e.headers.get("WWW-Authenticate", "")))
        if e.code != 401 or auth or "realm" not in challenge:
            raise
        query = urllib.parse.urlencode({k: v for k, v in challenge.items() if k in ("service", "scope")})
        token = json.load(urllib.request.urlopen(challenge["realm"] + "?" + query, timeout=60))
        return get(url, {"Authorization": "Bearer " + (token.get("token") or token["access_token"])})
for name, digest in files:
    path = os.path.join(dest, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h = hashlib.sha256()
    with get("%s/v2/%s/blobs/%s" % (base, repo, digest)) as r, open(path + ".part", "wb") as f:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    if "sha256:" + h.hexdigest() != digest:
        sys.exit("%s: the registry sent bytes that do not hash to %s" % (name, digest))
    os.rename(path + ".part", path)
    print("%s %s" % (digest, name))
'''.strip()


class RegistryModel(namedtuple("RegistryModel", "base repo reference files size")):
    """Where a cluster node gets the model: registry base URL ('https://host'), repository, the
    manifest by digest ('host/repo@sha256:...'), the files as (name, blob digest), total bytes."""
    __slots__ = ()


def kube_manifests(name: str, image: str, argv: list, mounts: list, port: int, host: str = "127.0.0.1",
                   key_var: str = None, source: RegistryModel = None, volume: str = "host",
                   replicas: int = None) -> list:
    """A Deployment and a Service (as dicts) that run the server. volume "host": the model files
    come from this node's store by hostPath, and the port is also a hostPort on `host` (a
    one-node deployment, as `podman kube play` runs it); "image": a Kubernetes image volume of
    `source` by digest (Kubernetes 1.35, or 1.31 with the ImageVolume gate, and a runtime that
    mounts artifacts); "init": an init container fetches `source`'s files by digest into an
    emptyDir (any Kubernetes); None: no model (an RPC worker is given its layers over the
    network). With replicas: a StatefulSet and a headless Service, so that each worker is
    NAME-<i>.NAME:PORT to the model server."""
    secure = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    container = {"name": "rpc-worker" if replicas else "model-server", "image": image, "command": argv}
    if key_var:
        container["env"] = [{"name": key_var, "valueFrom": {"secretKeyRef": {"name": name + "-api-key",
                                                                              "key": "api-key"}}}]
    container["ports"] = [{"containerPort": port}]
    pod = {"containers": [container]}
    if volume == "host":
        container["ports"][0]["hostPort"] = port
        if host not in ("0.0.0.0", ""):
            container["ports"][0]["hostIP"] = host
        container["volumeMounts"] = [{"name": "model-%d" % i, "mountPath": dst, "readOnly": True}
                                     for i, (_src, dst) in enumerate(mounts)]
        pod["volumes"] = [{"name": "model-%d" % i, "hostPath": {"path": src, "type": "File"}}
                          for i, (src, _dst) in enumerate(mounts)]
    elif volume == "image":
        container["volumeMounts"] = [{"name": "model", "mountPath": CONTAINER_MODELS, "readOnly": True}]
        pod["volumes"] = [{"name": "model",
                           "image": {"reference": source.reference, "pullPolicy": "IfNotPresent"}}]
    elif volume == "init":
        import json
        fetch = {"name": "fetch-model", "image": image,
                 "command": ["python3", "-c", FETCH_BY_DIGEST, source.base, source.repo, CONTAINER_MODELS,
                             json.dumps([list(f) for f in source.files])],
                 "securityContext": dict(secure),
                 "volumeMounts": [{"name": "model", "mountPath": CONTAINER_MODELS}]}
        pod["initContainers"] = [fetch]
        container["volumeMounts"] = [{"name": "model", "mountPath": CONTAINER_MODELS, "readOnly": True}]
        pod["volumes"] = [{"name": "model",
                           "emptyDir": {"sizeLimit": "%dMi" % (source.size // (1 << 20) + 64)}}]
    container["securityContext"] = secure
    meta = {"name": name, "labels": {"app": name}}
    if source:
        meta["annotations"] = {"ai.ramalama.model": source.reference}
    spec = {"replicas": replicas or 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]}}
    if replicas:
        spec["serviceName"] = name
        service["spec"]["clusterIP"] = "None"
    return [{"apiVersion": "apps/v1", "kind": "StatefulSet" if replicas else "Deployment", "metadata": meta,
             "spec": spec}, service]


def generate_files(kind: str, name: str, image: str, argv: list, mounts: list, port: int, labels: dict,
                   host: str = "127.0.0.1", key_var: str = None, source: "RegistryModel" = None,
                   volume: str = "host", replicas: int = None) -> dict:
    """{file name: text} that run the same server on Kubernetes (kube), systemd + podman
    (quadlet) or compose; the image is pinned by digest and the model mounted read-only; the
    port is published on `host` (every address for 0.0.0.0). With key_var the runtime's API key
    comes from a secret named <name>-api-key (kube, quadlet) or from $RAMALAMA_API_KEY (compose),
    never from the file. Kubernetes files take the model as kube_manifests() says."""
    publish = publish_spec(host, port)
    secret = name + "-api-key"
    if kind == "kube":
        docs = kube_manifests(name, image, argv, mounts, port, host, key_var, source, volume, replicas)
        return {name + ".yaml": "---\n".join(to_yaml(doc) + "\n" for doc in docs)}
    if kind == "quadlet":
        lines = ["[Unit]", "Description=ramalama %s" % name, "", "[Container]",
                 "ContainerName=%s" % name, "Image=%s" % image, "PublishPort=%s" % publish,
                 "DropCapability=all", "NoNewPrivileges=true", "RunInit=true"]
        lines += ["Label=%s=%s" % kv for kv in sorted(labels.items())]
        lines += ["Mount=type=bind,src=%s,destination=%s,ro=true" % m for m in mounts]
        lines += ["Secret=%s,type=env,target=%s" % (secret, key_var)] if key_var else []
        lines += ["Exec=%s" % " ".join(_systemd_quote(a) for a in argv), "", "[Service]",
                  "Restart=on-failure",
                  "", "[Install]", "WantedBy=default.target", ""]
        return {name + ".container": "\n".join(lines)}
    if kind == "compose":
        service = {"image": image, "command": argv, "ports": [publish], "cap_drop": ["ALL"],
                   "security_opt": ["no-new-privileges"], "init": True}
        if key_var:
            service["environment"] = {key_var: "${RAMALAMA_API_KEY}"}
        service["labels"] = dict(sorted(labels.items()))
        if mounts:
            service["volumes"] = [{"type": "bind", "source": src, "target": dst, "read_only": True}
                                  for src, dst in mounts]
        return {"compose.yaml": to_yaml({"services": {name: service}}) + "\n"}
    raise UsageError("--generate takes kube, quadlet or compose, not %r" % kind)


def _systemd_quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@%+," for c in arg) else '"%s"' % arg.replace(
        "\\", "\\\\").replace('"', '\\"')


# -- running a server: natively or in a container, until healthy

def _model_paths(model: Model) -> dict:
    """Which of a model's files are the model, the projector and a Jinja chat template."""
    main_file = model.model_file()
    if main_file is None:
        raise StoreError("%s has no files" % model.ref)
    mmproj = next((f.name for f in model.files if f.role == "mmproj"), None)
    template = next((f.name for f in model.files if f.name.endswith(".jinja")), None)
    return {"model": main_file.name, "mmproj": mmproj, "template": template}


def serve_options(model: Model, runtime: str, host: str, port: int, gpu: str, root: str,
                  settings: dict, models_max: int = None) -> ServeOptions:
    """Options for the runtime, with file paths below `root` (the model folder natively,
    /mnt/models in a container). vLLM is given the folder when the model is not a GGUF. With
    models_max (model None), root is the folder of models llama-server's router serves.
    `settings`: ctx_size, ngl, threads, temp, seed, runtime_args, max_tokens, rpc as chosen."""
    s = settings
    tuned = dict(ctx_size=s["ctx_size"] or None, ngl=gpu_layers(s["ngl"], gpu, s["rpc"]),
                 threads=s["threads"], temp=s["temp"], seed=s["seed"], extra=s["runtime_args"],
                 max_tokens=s["max_tokens"], rpc=s["rpc"])
    if models_max:
        return ServeOptions(runtime, root, None, None, None, host, port, models_max=models_max, **tuned)
    paths = _model_paths(model)
    under = {k: (root + "/" + v if v else None) for k, v in paths.items()}
    if runtime == "vllm" and not paths["model"].endswith(".gguf"):
        under["model"] = root
    return ServeOptions(runtime, under["model"], under["mmproj"], under["template"], model.ref, host, port,
                        **tuned)


def gpu_layers(ngl, gpu: str, rpc: str = None) -> int:
    """Layers to offload: a number as given; all; auto (the default, as -1): all when a GPU
    was found or RPC workers are to hold them, none otherwise."""
    if ngl == "all":
        return 999
    if ngl in (None, "auto") or ngl < 0:
        return 999 if gpu != "none" or rpc else 0
    return ngl


def rpc_nodes(text: str) -> str:
    """'host:port,host:port' as llama-server's --rpc takes it; one clear error otherwise."""
    nodes = [n.strip() for n in (text or "").split(",") if n.strip()]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError("RPC workers are HOST:PORT[,HOST:PORT...], not %r" % node)
    if not nodes:
        raise UsageError("RPC workers are HOST:PORT[,HOST:PORT...], not %r" % text)
    return ",".join(nodes)


RPC_WORKERS = ("ggml-rpc-server", "rpc-server")     # llama.cpp's RPC worker, new name first
RPC_PORT = 50052


def rpc_worker_argv(exe: str, host: str, port: int, threads: int = None, cache: bool = False,
                    extra: str = None) -> list:
    """llama.cpp's RPC worker: it holds the layers a llama-server gives it, on this host's
    devices, and answers anyone who connects (it has no authentication). `extra`: its own
    flags, one string ('--device CUDA0')."""
    import shlex
    argv = [exe, "--host", host, "--port", str(port)]
    if threads:
        argv += ["--threads", str(threads)]
    return argv + (["--cache"] if cache else []) + shlex.split(extra or "")


def model_mounts(model: Model) -> list:
    """(host file, container path) for every file: hardlinks, so each mount is a plain file."""
    return [(os.path.join(model.path, f.name), CONTAINER_MODELS + "/" + f.name) for f in model.files]


def served_name(ref: str) -> str:
    """The name a model answers to among several: its reference (as typed, or as stored)
    without the scheme, in characters a file and a mount option take
    ('ollama://smollm:135m' -> 'smollm:135m',
    'hf://org/repo:Q4_K_M' -> 'org-repo:Q4_K_M'); a file or URL model by its file name."""
    import re
    scheme, _, rest = ref.rpartition("://")
    if scheme in ("file", "http", "https"):
        rest = rest.rstrip("/").rsplit("/", 1)[-1]
        rest = rest[:-5] if rest.endswith(".gguf") else rest
    return re.sub(r"[^A-Za-z0-9._:+-]", "-", rest).lstrip(".-") or "model"


def router_files(models: list, names: list = None) -> list:
    """(host file, 'name/file.gguf') for every GGUF file of each model: llama-server's router
    serves each folder of its --models-dir as one model (shards and projector included) under
    the folder's name: served_name() of `names` (what the user typed), else of the references.
    Two models with one name get '-2', '-3', ..."""
    entries, taken = [], set()
    for model, text in zip(models, names or [m.ref for m in models]):
        name = base = served_name(text)
        n = 1
        while name in taken:
            n += 1
            name = "%s-%d" % (base, n)
        taken.add(name)
        entries += [(os.path.join(model.path, f.name), name + "/" + f.name)
                    for f in model.files if f.name.endswith(".gguf")]
    return entries


def _tail(path: str) -> str:
    """Why a server's log says it failed (see last_words)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return last_words(text.splitlines())


def last_words(lines: list) -> str:
    """The lines of a log's end that say what went wrong (an error, a failed assertion, a
    crashed RPC worker; not the backtrace a crash prints after them), else its last lines."""
    import re
    lines = [line.strip() for line in lines[-80:] if line.strip()]
    why = [line for line in lines
           if re.search(r"error|fail|crash|abort|assert|exception|cannot|unable", line, re.I)
           and not re.match(r"#\d|\[Inferior|\d+\s", line)]
    return " | ".join(why[:2] or lines[-5:])


class EngineError(RamalamaError):
    """A container engine that is present but cannot run containers."""


class Server:
    """A model server we started: endpoint, liveness probe, stop, recent log lines, and the
    API key its clients send (None when it requires none)."""

    def __init__(self, endpoint: str, alive, stop, logs, proc=None, name: str = None, image: str = None,
                 api_key: str = None):
        self.endpoint, self.alive, self.stop, self.logs = endpoint, alive, stop, logs
        self.proc, self.name, self.image, self.api_key = proc, name, image, api_key

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        try:
            wait_healthy(self.endpoint, self.alive, timeout)
        except RamalamaError as e:
            tail = self.logs()
            raise RamalamaError("%s%s" % (e, (": " + tail) if tail else ""))


# never passed on from our environment: tokens are ours to use; the runtime's API key is set
# by launch() itself, from --api-key / RAMALAMA_API_KEY / config
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RAMALAMA_API_KEY", "LLAMA_API_KEY", "VLLM_API_KEY")


def start_native(argv: list, endpoint: str, log_path: str, env: dict, api_key: str = None) -> Server:
    """Start the runtime as our child in its own session; `env` is exactly its environment."""
    import shutil
    import subprocess
    if not shutil.which(argv[0], path=env.get("PATH")):
        raise RamalamaError("%s is not installed (not on PATH); install it, or run in a container with "
                            "podman or docker" % argv[0])
    log = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent())
    log.close()

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return Server(endpoint, lambda: proc.poll() is None, stop, lambda: _tail(log_path), proc, api_key=api_key)


def _die_with_parent():
    """A preexec_fn that has Linux send the child SIGTERM when we die, even by SIGKILL
    (PR_SET_PDEATHSIG); None where libc's prctl cannot be had."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    import signal
    return lambda: prctl(1, signal.SIGTERM)


def remove_container(exe: str, name: str, env: dict) -> None:
    """Stop the container and remove it: --rm removes it a moment after it stops; rm -f makes
    that done when we return."""
    import subprocess
    subprocess.run([exe, "stop", "-t", "3", name], capture_output=True, env=env)
    subprocess.run([exe, "rm", "-f", name], capture_output=True, env=env)


def start_container(exe: str, argv: list, name: str, endpoint: str, image: str, env: dict,
                    api_key: str = None) -> Server:
    """Start a detached container; a RamalamaError when the engine cannot run it. Stopped
    while the engine starts it, the container is removed before the stop goes on."""
    import subprocess
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    except BaseException:
        subprocess.run([exe, "rm", "-f", name], capture_output=True, env=env)
        raise
    if proc.returncode != 0:
        raise EngineError("%s could not start the container: %s"
                          % (os.path.basename(exe),
                             (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]))
    checked = [0.0]

    def alive():                       # asking the engine costs a process: once a second
        if time.monotonic() - checked[0] < 1.0:
            return True
        checked[0] = time.monotonic()
        state = subprocess.run([exe, "inspect", "--format", "{{.State.Running}}", name],
                               capture_output=True, text=True, env=env)
        return state.returncode == 0 and state.stdout.strip() == "true"

    def stop():
        remove_container(exe, name, env)

    def logs():
        out = subprocess.run([exe, "logs", "--tail", "80", name], capture_output=True, text=True, env=env)
        return last_words((out.stdout + out.stderr).splitlines())
    return Server(endpoint, alive, stop, logs, name=name, image=image, api_key=api_key)


# -- running a tool to its end: llama-bench, llama-perplexity

def bench_argv(model: str, ngl: int, threads: int = None, fmt: str = "table", extra: str = None) -> list:
    """llama-bench on one model: its markdown table, or its JSON with fmt json."""
    import shlex
    argv = ["llama-bench", "-m", model, "-ngl", str(ngl)]
    if threads:
        argv += ["-t", str(threads)]
    return argv + (["-o", "json"] if fmt == "json" else []) + shlex.split(extra or "")


def perplexity_argv(model: str, text: str, ngl: int, threads: int = None, ctx_size: int = None,
                    extra: str = None) -> list:
    """llama-perplexity of one model over a text file."""
    import shlex
    argv = ["llama-perplexity", "-m", model, "-f", text, "-ngl", str(ngl)]
    for flag, value in (("--threads", threads), ("--ctx-size", ctx_size)):
        if value:
            argv += [flag, str(value)]
    return argv + shlex.split(extra or "")


def run_to_end(argv: list, env: dict, out, err, stop=None) -> int:
    """Run argv to its end, copying its stdout to `out` and stderr to `err` as they come
    (through SafeStreams: what a tool prints of a model's metadata is not ours to trust). A
    stop signal stops it: `stop(proc)`, else SIGTERM. Returns its exit status."""
    import codecs
    import subprocess
    import threading
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, preexec_fn=_die_with_parent())

    def copy(pipe, stream):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for chunk in iter(lambda: os.read(pipe.fileno(), 1 << 16), b""):
            stream.write(decoder.decode(chunk))
            stream.flush()
        stream.write(decoder.decode(b"", final=True))
    errors = threading.Thread(target=copy, args=(proc.stderr, err), daemon=True)
    errors.start()
    try:
        copy(proc.stdout, out)
        status = proc.wait()
        errors.join()
        return status
    except BaseException:
        (stop or (lambda p: p.terminate()))(proc)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()


# ---------------------------------------------------------------------------
# 14. output
# ---------------------------------------------------------------------------

class ProgressBoard:
    """Where per-file progress goes (stderr): on a TTY one redrawn bar per file in flight,
    each file's last frame kept when it ends; one line per finished file otherwise; nothing
    when quiet. Several downloads may report at once: drawing is serialised here."""

    def __init__(self, stream, mode: str, clock=time.monotonic):
        import threading
        self.stream, self.mode, self.clock = stream, mode, clock
        self.lock = threading.Lock()
        self.active, self.drawn, self.last = [], 0, 0.0

    def progress(self) -> "Progress":
        return Progress(self)

    def _redraw(self, finished: "Progress" = None, force: bool = False) -> None:
        """Called with the lock held. On a TTY: move up over the bars drawn last time, print
        the finished file's final frame (it stays), then the bars of the files in flight."""
        now = self.clock()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        out = ["\x1b[%dA" % self.drawn] if self.drawn else []
        frames = ([finished] if finished else []) + self.active
        out += ["\r\x1b[K" + p.frame(now)[:120] + "\n" for p in frames]
        self.drawn = len(self.active)
        self.stream.write("".join(out))
        self.stream.flush()


class Progress:
    """One file's progress on a ProgressBoard: start, update with bytes done, finish."""

    def __init__(self, board: ProgressBoard):
        self.board = board
        self.label, self.total, self.done, self.first, self.t0 = "", None, 0, 0, 0.0

    def start(self, label: str, total, done: int = 0) -> None:
        self.label, self.total, self.done, self.first = tty_safe(label), total, done, done
        self.t0 = self.board.clock()
        if self.board.mode == "bar":
            with self.board.lock:
                self.board.active.append(self)
                self.board._redraw(force=True)

    def update(self, done: int) -> None:
        self.done = done
        if self.board.mode == "bar":
            with self.board.lock:
                self.board._redraw()

    def finish(self, ok: bool) -> None:
        board = self.board
        with board.lock:
            if board.mode == "bar" and self in board.active:
                board.active.remove(self)
                board._redraw(finished=self, force=True)
            elif board.mode == "lines" and ok:
                took = max(board.clock() - self.t0, 1e-6)
                board.stream.write("%s: %s in %.1f s (%s/s)%s\n" % (
                    self.label, human_size(self.done), took, human_size((self.done - self.first) / took),
                    " resumed at %s" % human_size(self.first) if self.first else ""))
                board.stream.flush()

    def frame(self, now: float) -> str:
        took = max(now - self.t0, 1e-6)
        rate = (self.done - self.first) / took
        if self.total:
            frac = min(1.0, self.done / self.total)
            eta = (self.total - self.done) / rate if rate > 0 else 0
            return "%-28.28s %3d%% [%-24s] %s/%s %s/s ETA %ds" % (
                self.label, frac * 100, "#" * int(frac * 24), human_size(self.done), human_size(self.total),
                human_size(rate), eta)
        return "%-28.28s %s %s/s" % (self.label, human_size(self.done), human_size(rate))


class SafeStream:
    """What commands write to: control characters are shown as escapes (line breaks and tabs
    stay), so nothing a server, a file or a name carries can drive the terminal. Values that
    must stay on one line also go through tty_safe(). Only the progress board writes its own
    cursor movements, on the raw stream."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, text: str) -> int:
        if not text.replace("\n", "").isprintable():
            text = text.translate(_ESCAPES_TEXT)
        return self.raw.write(text)

    def __getattr__(self, name):             # flush, isatty, fileno, ...
        return getattr(self.raw, name)


def write_json(out, obj, **kw) -> None:
    """JSON that a terminal shows as it is: json escapes C0 controls and non-ASCII; DEL too."""
    import json
    out.write(json.dumps(obj, indent=2, **kw).replace("\x7f", "\\u007f") + "\n")


def fill_template(fmt: str, fields: dict) -> str:
    """podman-style --format: {{.Name}} takes fields["name"] (any case); unknown keys are empty.
    Values are one line each, whatever they hold."""
    import re
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: tty_safe(fields.get(m.group(1).lower(), "")), fmt)


def print_table(stream, headers: list, rows: list, noheading: bool = False) -> None:
    rows = [[tty_safe(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [] if noheading else [headers]
    stream.write("".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in lines
                         + rows))


# ---------------------------------------------------------------------------
# 15. cli
# ---------------------------------------------------------------------------

# -- commands: each one's flags, examples and handler sit together, registered by @command

Command = namedtuple("Command", "names handler help args examples")
COMMANDS = []          # in the order they are defined, which is the order --help lists them


def command(*names, help: str, args=None, examples=()):
    """Register the function below as the command `names[0]` (the others are aliases). `args`
    adds its flags to a parser; it runs only when that command is used, so start-up stays cheap."""
    def register(handler):
        COMMANDS.append(Command(names, handler, help, args, list(examples)))
        return handler
    return register


# -- flags that several commands share

def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    import argparse
    raise argparse.ArgumentTypeError("expected true or false, not %r" % text)


def _layers(text: str):
    try:
        return coerce(text, "layers")
    except ValueError as e:
        import argparse
        raise argparse.ArgumentTypeError("expected %s, not %r" % (e, text))


def _add_authfile_flag(p) -> None:
    p.add_argument("--authfile", metavar="PATH", help="registry credentials file (default: "
                   "$REGISTRY_AUTH_FILE, then the podman and docker files)")


def _add_tls_flags(p, off: str = "") -> None:
    """--tls-verify and --cert-dir; `off` says what false also allows."""
    p.add_argument("--tls-verify", type=_bool, metavar="BOOL", default=None,
                   help="verify TLS certificates (default true%s)" % off)
    p.add_argument("--cert-dir", metavar="DIR", help="directory of CA certificates for TLS")


def _add_registry_flags(p) -> None:
    _add_authfile_flag(p)
    _add_tls_flags(p, "; false also allows plain HTTP")


def _add_launch_flags(p, layers: bool = True) -> None:
    """Flags of every command that starts a runtime or a tool: how it runs and where (and, with
    layers, how many of the model's layers go to the GPU)."""
    p.add_argument("--name", "-n", help="container name (default: ramalama-<random>)")
    if layers:
        p.add_argument("--ngl", type=_layers, metavar="N|all|auto",
                       help="layers to offload to the GPU (config ngl; default auto: all when a GPU is "
                            "found, else 0)")
    p.add_argument("--threads", "-t", type=int, metavar="N",
                   help="CPU threads (config threads; default: the runtime's)")
    p.add_argument("--device", action="append", metavar="DEV",
                   help="device for the container (repeatable); none: no device, not even the GPU")
    p.add_argument("--pull", choices=("always", "missing", "never", "newer"), default=None,
                   help="image digest policy (config pull; default missing: reuse the recorded pin; "
                        "always/newer: ask the registry again; never: no registry)")
    p.add_argument("--runtime-args", metavar="ARGS",
                   help="extra runtime arguments, one string: '--flash-attn on'")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment variable for the runtime (repeatable)")
    p.add_argument("--network", metavar="MODE",
                   help="container network (default: none unless a port is served)")
    p.add_argument("--privileged", action="store_true", help="give the container extended privileges")
    p.add_argument("--selinux", type=_bool, metavar="BOOL", default=None,
                   help="SELinux container separation (config selinux; false disables labels; "
                        "default: the engine's)")
    p.add_argument("--keep-groups", action="store_true", default=None,
                   help="keep the user's supplementary groups in the container (podman; config keep_groups)")
    p.add_argument("--oci-runtime", metavar="NAME", help="OCI runtime the engine uses (crun, runc, ...)")
    _add_registry_flags(p)


def _add_runtime_flags(p) -> None:
    """Flags of the commands that start a model server (run, serve)."""
    p.add_argument("--ctx-size", "-c", type=int, metavar="N",
                   help="context size (config ctx_size; default: the runtime's)")
    p.add_argument("--temp", type=float, metavar="T",
                   help="sampling temperature (config temp; default: the runtime's)")
    p.add_argument("--seed", type=int, help="random seed (default: the runtime's)")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="most tokens to generate per answer, 0 = unlimited (config max_tokens)")
    p.add_argument("--api-key", metavar="KEY", help="API clients must send this key (config api_key; env "
                   "RAMALAMA_API_KEY keeps it out of the process list). The runtime gets it by environment, "
                   "never in its argv; generated files refer to a secret")
    p.add_argument("--rpc", metavar="HOST:PORT[,...]", help="llama.cpp RPC workers (`ramalama rpc-server` on "
                   "each host) that hold the model's layers (env RAMALAMA_LLAMACPP_RPC_NODES); a container "
                   "then shares this host's network to reach them")
    _add_launch_flags(p)


class _Parser:
    """argparse with errors turned into UsageError (one 'Error:' line, exit 2)."""

    @staticmethod
    def make(**kw):
        import argparse

        class P(argparse.ArgumentParser):
            def error(self, message):
                raise UsageError("%s: %s (see '%s --help')" % (self.prog, message, self.prog))
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        return P(**kw)


class Context(Services):
    """What a command needs: its parsed flags, the config, its output stream, and the Services
    the sections below are given, built from those flags and that config."""

    def __init__(self, args, env, config: Config, out, err, clock=time.time):
        def flag(name):
            return getattr(args, name, None)
        container = not flag("nocontainer") and config.get("container") is not False
        choices = Choices(args.engine or config.get("engine") or "", container,
                          flag("pull") or config.get("pull") or "missing", config.get("ollama_registry"),
                          config.get("mirrors") or {}, bool(flag("all_files")))
        super().__init__(env, choices, store_root=args.store or config.get("store") or default_store(env),
                         err=err, quiet=args.quiet, debug=args.debug, tls_verify=flag("tls_verify"),
                         cert_dir=flag("cert_dir"), authfile=flag("authfile"),
                         download=config.get("download"), parallel=flag("parallel"))
        self.args, self.config, self.clock = args, config, clock
        self.out = SafeStream(out)

    def resolve(self, text: str) -> Ref:
        bare = "://" not in text
        return parse_ref(text, self.config.shortnames if bare else None,
                         self.config.get("transport"))

    def error(self, e: BaseException) -> None:
        """An error of one of several items; main() prints the one that ends a command."""
        self.err.write("Error: %s\n" % tty_safe(e))


def _pull_args(p) -> None:
    p.description = (
        "pull models into the store. Blobs that a local ollama store ($OLLAMA_MODELS, "
        "~/.ollama/models) or Hugging Face cache ($HF_HUB_CACHE, ~/.cache/huggingface/hub) "
        "already holds are hardlinked in after their sha256 is verified, never downloaded again.")
    p.add_argument("MODEL", nargs="+", help="models to pull")
    p.add_argument("--all-files", action="store_true",
                   help="hf:// only: fetch every file of the repository snapshot (e.g. safetensors for vLLM)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="connections per download (config [ramalama.download] connections; default %d)"
                   % CONNECTIONS)
    _add_registry_flags(p)


@command("pull", help="pull models into the store", args=_pull_args,
         examples=["ramalama pull ollama://smollm:135m",
                   "ramalama pull hf://bartowski/SmolLM2-135M-Instruct-GGUF:Q8_0",
                   "ramalama pull --parallel 16 oci://registry.example.com/models/smollm:135m"])
def cmd_pull(ctx) -> int:
    failed = None
    for text in ctx.args.MODEL:
        try:
            ref = ctx.resolve(text)
            if ctx.args.dryrun:
                ctx.out.write("would pull %s into %s\n" % (tty_safe(ref), tty_safe(ctx.store.folder(ref))))
                continue
            model = pull_model(ctx, ref)
            ctx.info("Pulled %s (%s)" % (model.ref, human_size(model.size)))
        except RamalamaError as e:
            if len(ctx.args.MODEL) == 1:
                raise
            ctx.error(e)
            failed = failed or e
    return failed.exit_code if failed else 0


def _sorted(models: list, by: str, order: str = None) -> list:
    """Names A to Z, sizes and times largest and newest first, unless --order says otherwise."""
    key = {"name": lambda m: m.ref, "size": lambda m: m.size,
           "modified": lambda m: m.meta.get("pulled", 0)}[by]
    return sorted(models, key=key, reverse=(order or ("asc" if by == "name" else "desc")) == "desc")


def shortnames_by_model(config: Config) -> dict:
    """{model reference: its shortname} (the first in name order), as ramalama's list shows them."""
    found = {}
    for name, target in sorted(config.shortnames.items(), reverse=True):
        try:
            found[str(parse_ref(target))] = name
        except RamalamaError:
            continue
    return found


def _list_args(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--noheading", "-n", action="store_true", help="omit the header line")
    p.add_argument("--sort", choices=("name", "size", "modified"), default="name",
                   help="sort order (default: name)")
    p.add_argument("--order", choices=("asc", "desc"),
                   help="sort direction (default: names A-Z, sizes and times largest and newest first)")
    p.add_argument("--all", action="store_true",
                   help="also partially downloaded models (ramalama's flag; downloads in progress never "
                   "count as models here, so it changes nothing)")
    p.add_argument("--format", help="one line per model from a template: {{.Name}} {{.Size}} {{.Modified}}")


@command("list", "ls", help="list the models in the store", args=_list_args,
         examples=["ramalama list --sort size", "ramalama list --json",
                   "ramalama list --format '{{.Name}} {{.Size}}'"])
def cmd_list(ctx) -> int:
    """Our models and those ramalama 0.25 pulled into the same directory (marked as its)."""
    store = ctx.store
    ours = list(store.models(remember=True)) if store.exists() else []
    names = {o.ref for o in ours}
    theirs = [m for m in list(store.ramalama_models()) + engine_models(ctx, to_run=True)
              if m.ref not in names]                                            # adopted ones: once
    models = _sorted(ours + theirs, ctx.args.sort, ctx.args.order)
    if ctx.args.json:                   # ramalama 0.25's keys and formats, then ours
        short = shortnames_by_model(ctx.config)
        write_json(ctx.out, [{"name": m.ref, "shortname": short.get(m.ref, ""), "size": m.size,
                              "modified": _local_iso(m.meta.get("pulled", 0)),
                              "path": m.path, "damaged": m.meta.get("damaged", []),
                              "store": m.meta.get("store", "ramalama.pyz")} for m in models])
        return 0
    if ctx.quiet and not ctx.args.format:
        ctx.out.write("".join(tty_safe(m.ref) + "\n" for m in models))      # names only, as ramalama -q
        return 0
    now = ctx.clock()
    if ctx.args.format:
        for m in models:
            ctx.out.write(fill_template(ctx.args.format, {"name": m.ref, "size": str(m.size),
                                                          "modified": _iso(m.meta.get("pulled", 0))}) + "\n")
        return 0
    rows = [[m.ref + (" (damaged)" if m.meta.get("damaged") else "")
             + {"ramalama": " (ramalama)",
                "ramalama-image": " (ramalama, podman image)"}.get(m.meta.get("store"), ""),
             human_age(now - m.meta.get("pulled", now)), human_size(m.size)] for m in models]
    print_table(ctx.out, ["NAME", "MODIFIED", "SIZE"], rows, ctx.args.noheading)
    return 0


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _local_iso(epoch: float) -> str:
    """ISO 8601 with this host's offset, as ramalama's `list --json` writes `modified`."""
    from datetime import datetime
    return datetime.fromtimestamp(epoch).astimezone().isoformat()


def _rm_args(p) -> None:
    p.add_argument("MODEL", nargs="*", help="models to remove")
    p.add_argument("--all", "-a", action="store_true", help="remove every model")
    p.add_argument("--ignore", action="store_true", help="ignore models that are not in the store")


@command("rm", help="remove models from the store", args=_rm_args,
         examples=["ramalama rm llama3.2:1b", "ramalama rm --all"])
def cmd_rm(ctx) -> int:
    args, store = ctx.args, ctx.store
    if not args.all and not args.MODEL:
        raise UsageError("rm needs at least one MODEL, or --all")
    if args.all and args.MODEL:
        raise UsageError("rm takes MODEL names or --all, not both")
    refs = [ctx.resolve(text) for text in args.MODEL]       # bad names fail before anything is removed
    if not store.exists() and (args.all or args.ignore):
        return 0
    failed = None
    with store.ensure().lock("store", on_wait=lambda: ctx.info("waiting for running pulls to finish")):
        targets = list(store.models()) if args.all else []
        for ref in refs:
            try:
                targets.append(store.get(ref))
            except NotFound as e:
                if not args.ignore:
                    ctx.error(e)
                    failed = failed or e
        for model in {m.path: m for m in targets}.values():       # each folder once
            try:
                freed = store.remove(model)
            except StoreError as e:                 # one of ramalama's: never touched
                ctx.error(e)
                failed = failed or e
                continue
            ctx.info("Removed %s%s" % (model.ref, " (freed %s)" % human_size(freed) if freed else ""))
    if args.all:
        _say_ramalamas_left_alone(ctx)
    return failed.exit_code if failed else 0


def _say_ramalamas_left_alone(ctx) -> None:
    theirs = sum(1 for _ in ctx.store.ramalama_models())
    if theirs:
        ctx.info("%d model%s in ramalama's store (%s) left alone: `ramalama rm` removes them"
                 % (theirs, "" if theirs == 1 else "s", os.path.join(ctx.store.root, "store")))


def _inspect_args(p) -> None:
    p.add_argument("MODEL", help="model in the store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all", action="store_true", help="include all metadata and every tensor")
    p.add_argument("--get", metavar="KEY", help="print one GGUF metadata value (e.g. general.architecture)")


@command("inspect", help="show a model's metadata", args=_inspect_args,
         examples=["ramalama inspect llama3.2:1b", "ramalama inspect --all --json llama3.2:1b"])
def cmd_inspect(ctx) -> int:
    model = get_model(ctx, ctx.resolve(ctx.args.MODEL))
    if model.meta.get("store") == "ramalama-image":        # read from the image, mounted for the while
        try:
            return _inspect(ctx, model._replace(path=mount_image(ctx, model)))
        finally:
            unmount_image(ctx, model)
    return _inspect(ctx, model)


def _inspect(ctx, model: Model) -> int:
    main_file = model.model_file()
    facts = {"name": model.ref, "path": model.path,
             "files": [dict(f._asdict()) for f in model.files], "pulled": _iso(model.meta.get("pulled", 0))}
    for key in ("url", "source", "commit", "revision", "manifest_digest", "damaged"):
        if model.meta.get(key):
            facts[key] = model.meta[key]
    info = None
    if main_file is not None:
        path = os.path.join(model.path, main_file.name)
        facts.update(model_file=path, digest=main_file.digest, size=main_file.size)
        try:
            info = read_gguf(path, keep_arrays=ctx.args.all)
        except FormatError as e:
            facts["format"] = "unknown (%s)" % e
        except FileNotFoundError:
            raise StoreError("%s: %s is missing; run `ramalama fsck`" % (model.ref, main_file.name))
    if ctx.args.get:
        value = (info or {}).get("metadata", {}).get(ctx.args.get)
        if value is None:
            raise NotFound("%s: no GGUF metadata key %r" % (model.ref, ctx.args.get))
        ctx.out.write("%s\n" % (value,))
        return 0
    if info is not None:
        facts.update(describe_gguf(info))
        if ctx.args.all:
            facts["metadata"] = info["metadata"]
            facts["tensors"] = [{"name": n, "shape": d, "type": TENSOR_TYPES.get(t, t), "offset": o}
                                for n, d, t, o in info["tensors"]]
    if ctx.args.json:
        write_json(ctx.out, facts, default=str)
        return 0
    _print_facts(ctx.out, facts)
    return 0


def _print_facts(out, facts: dict) -> None:
    labels = (("name", "Name"), ("path", "Path"), ("url", "URL"), ("source", "Source"),
              ("revision", "Revision"), ("commit", "Commit"), ("manifest_digest", "Manifest"),
              ("digest", "Digest"), ("size", "Size"), ("format", "Format"), ("model_name", "Model name"),
              ("architecture", "Architecture"),
              ("parameters", "Parameters"), ("quantization", "Quantization"),
              ("context_length", "Context length"), ("embedding_length", "Embedding length"),
              ("block_count", "Blocks"), ("metadata_count", "Metadata"), ("tensor_count", "Tensors"),
              ("chat_template", "Chat template"), ("damaged", "Damaged"))
    for key, label in labels:
        value = facts.get(key)
        if value in (None, "", []):
            continue
        if key == "size":
            value = "%s (%d bytes)" % (human_size(value), value)
        elif key == "parameters":
            value = human_count(value)
        elif key == "format" and "gguf_version" in facts:
            value = "GGUF v%d (%s-endian)" % (facts["gguf_version"], facts["endianness"])
        elif key == "chat_template":
            value = "%d characters: %s" % (len(value), " ".join(value.split())[:60] + "...")
        elif key == "metadata_count":
            value = "%d keys" % value
        out.write("%-17s %s\n" % (label + ":", tty_safe(value)))
    for key, value in sorted(facts.get("metadata", {}).items()):
        text = repr(value) if not isinstance(value, str) else value
        out.write("  %s = %s\n" % (tty_safe(key), tty_safe(text if len(text) < 200 else text[:200] + "...")))
    for t in facts.get("tensors", []):
        out.write("  tensor %s %s %s\n"
                  % (tty_safe(t["name"]), "x".join(map(str, t["shape"])), tty_safe(t["type"])))


ACCELERATORS = {"nvidia": "cuda", "amd": "hip", "intel": "intel", "none": "none"}   # ramalama's words


def _info_args(p) -> None:
    p.add_argument("--shortnames", action="store_true", help="list the shortnames and where each came from")


@command("info", help="show configuration, store and engine as JSON", args=_info_args)
def cmd_info(ctx) -> int:
    import platform
    store, config = ctx.store, ctx.config
    names = config.shortnames
    if ctx.args.shortnames:                        # as `ramalama info --shortnames` prints them
        ctx.out.write("".join("%s=%s (%s)\n" % (tty_safe(n), tty_safe(names[n]), config.shortname_sources[n])
                              for n in sorted(names)))
        return 0
    found = {}
    if store.exists():
        found = dict(store.usage(), models=sum(1 for _ in store.models()))
    engine, runtime, gpu = find_engine(ctx) or None, _runtime(ctx), detect_gpu(ctx.env)
    settings = {k: "***" if k in SECRET_KEYS else v for k, v in config.settings.items()}
    image = _image(ctx, runtime, gpu)
    info = {
        # ramalama 0.25's keys, with its meaning (what it has and this tool has not is null)
        "Accelerator": ACCELERATORS[gpu],
        "Config": dict(settings, settings={"config_files": config.files}),
        "Engine": {"Name": engine},
        "Image": image,
        "RagImage": None,
        "Runtimes": {"Default": runtime, "Available": ["llama.cpp", "vllm"]},
        "Selinux": bool(config.get("selinux", False)),
        "Shortnames": {"Files": config_files(config.dirs, "shortnames"), "Names": names,
                       "Sources": sorted(set(config.shortname_sources.values()))},
        "Store": store.root,
        "Toolbox": os.path.exists("/run/.toolboxenv"),
        "ToolsImage": None,
        "UseContainer": engine is not None,
        "Version": __version__,
        # ours
        "version": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "code": globals().get("__cached__")},        # the archive's pyc for this Python, if used
        "platform": platform.platform(),
        "store": dict(path=store.root, **found),
        "config": {"files": config.files, "unknown_keys": config.unknown_keys(), "settings": settings},
        "engine": engine,
        "runtime": runtime,
        "image": image,
        "images": load_pins(store) if store.exists() else {},
        "gpu": gpu,
        "transport": config.get("transport") or DEFAULT_TRANSPORT,
        "mirrors": config.get("mirrors") or {},
        "proxy": proxies_in_use(ctx.env),
    }
    write_json(ctx.out, info, sort_keys=True)
    return 0


@command("version", help="show the version")
def cmd_version(ctx) -> int:
    ctx.out.write("ramalama version %s\n" % __version__)
    return 0


def _fsck_args(p) -> None:
    p.add_argument("--repair", action="store_true",
                   help="quarantine corrupt blobs and mark the models that use them")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("fsck", help="verify every blob and model folder", args=_fsck_args,
         examples=["ramalama fsck", "ramalama fsck --repair"])
def cmd_fsck(ctx) -> int:
    store = ctx.store
    if not store.exists():
        ctx.info("store %s is empty" % store.root)
        return 0
    progress = ctx.progress() if not ctx.args.json else ProgressBoard(ctx.err, "quiet").progress()
    # --repair changes models, so it waits for pulls; a check only keeps rm and prune out
    with store.ensure().lock("store", shared=not ctx.args.repair,
                             on_wait=lambda: ctx.info("waiting for other ramalama commands to finish")):
        problems = store.fsck(ctx.args.repair, progress)
    _say_ramalamas_left_alone(ctx)
    if ctx.args.json:
        write_json(ctx.out, {"problems": problems, "repaired": bool(ctx.args.repair and problems)})
    else:
        for line in problems:
            ctx.out.write(tty_safe(line) + "\n")
        ctx.info("%d problem%s found%s" % (len(problems), "" if len(problems) == 1 else "s",
                                          "; corrupt blobs quarantined, damaged models marked"
                                          if ctx.args.repair and problems else ""))
    return 1 if problems else 0


@command("prune", help="delete unreferenced blobs and leftover temporary files")
def cmd_prune(ctx) -> int:
    store = ctx.store
    if not store.exists():
        ctx.out.write("Freed 0 B\n")
        return 0
    with store.ensure().lock("store", on_wait=lambda: ctx.info("waiting for running pulls to finish")):
        freed, nblobs, ntmp = store.prune()
    _say_ramalamas_left_alone(ctx)
    ctx.out.write("Freed %s (%d unreferenced blob%s, %d temporary file%s)\n"
                  % (human_size(freed), nblobs, "" if nblobs == 1 else "s", ntmp, "" if ntmp == 1 else "s"))
    return 0


def _registry_host(text: str) -> str:
    """'https://quay.io/v1/' -> 'quay.io'; docker.io's aliases -> docker.io."""
    host = (text or DOCKER_HUB).split("://", 1)[-1].split("/", 1)[0].lower()
    if not host or " " in host:
        raise UsageError("invalid registry %r" % text)
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


# ramalama 0.25's --type words: an artifact is our ModelPack, raw an image holding the model
PUSH_TYPES = {"modelpack": "modelpack", "artifact": "modelpack", "ramalama": "raw", "raw": "raw",
              "car": "car"}


def _image_type_flags(p, default: str) -> None:
    p.add_argument("--type", choices=sorted(PUSH_TYPES), default=None,
                   help="artifact (= modelpack): a ModelPack artifact whose layers are the model's files; "
                        "raw (= ramalama): an image holding only the model, in /models as ramalama 0.25 lays "
                        "it out; car: the same on top of a base image (--carimage). Default: %s" % default)
    p.add_argument("--carimage", metavar="IMAGE",
                   help="base image of a car (config carimage; default %s); taken "
                   "from the engine's storage when it has it, else from its registry" % DEFAULT_CARIMAGE)


def _image_type(ctx, default: str) -> str:
    kind = ctx.args.type or default
    if kind not in PUSH_TYPES:
        raise ConfigError("convert_type must be artifact, raw or car, not %r" % kind)
    return PUSH_TYPES[kind]


def _carimage(ctx) -> str:
    return ctx.args.carimage or ctx.config.get("carimage") or DEFAULT_CARIMAGE


def _stored_for_push(ctx, text: str) -> Model:
    """The stored model to push or convert: local files and URLs are pulled on the way; a model
    in ramalama's store is adopted (its digests are needed)."""
    store, source = ctx.store, ctx.resolve(text)
    if source.transport in ("file", "http", "https") and (
            not store.exists() or store.load(store.folder(source)) is None):
        pull_model(ctx, source)
    return adopted(ctx, store.get(source))


def _push_args(p) -> None:
    p.add_argument("SOURCE", help="model in the store (or a file://, http(s):// reference)")
    p.add_argument("TARGET", nargs="?",
                   help="oci://registry/name:tag (default: SOURCE, an oci:// model in the store)")
    _image_type_flags(p, "config convert_type, else artifact")
    _add_registry_flags(p)


@command("push", help="push a model to an OCI registry", args=_push_args,
         examples=["ramalama push ollama://smollm:135m oci://registry.example.com/models/smollm:135m",
                   "ramalama push --type raw file:///srv/m.gguf oci://registry.example.com/images/m:1",
                   "ramalama push --type car --carimage registry.example.com/base/ubi:10 llama3.2:1b "
                   "oci://registry.example.com/images/llama:car"])
def cmd_push(ctx) -> int:
    args, store = ctx.args, ctx.store
    kind = _image_type(ctx, ctx.config.get("convert_type") or "modelpack")    # as ramalama when set
    target_text = args.TARGET or args.SOURCE             # one name: push the stored model to where it names
    target = parse_ref(target_text if "://" in target_text else "oci://" + target_text)
    if target.transport != "oci":
        raise UsageError("push needs an oci:// target, not %s" % (target,))
    source = ctx.resolve(args.SOURCE)
    if args.dryrun:
        ctx.out.write("would push %s to %s as %s\n" % (tty_safe(source), tty_safe(target), kind))
        return 0
    model = _stored_for_push(ctx, args.SOURCE)
    with store.ensure().lock("store", shared=True):
        digest = push_model(ctx, model, target, kind, _carimage(ctx))
    ctx.info("Pushed %s to %s" % (source, target))
    ctx.out.write(digest + "\n")
    return 0


def _convert_args(p) -> None:
    p.add_argument("SOURCE", help="model in the store (or a file://, http(s):// reference)")
    p.add_argument("TARGET", help="registry/name:tag (or oci://...): into the engine's storage, as ramalama "
                   "convert does; oci-layout:DIR[:tag] or oci-archive:FILE.tar[:tag]: an OCI layout")
    _image_type_flags(p, "raw (config convert_type)")
    _add_registry_flags(p)


@command("convert", help="write a model as ramalama's model image (raw or car) or a ModelPack artifact",
         args=_convert_args,
         examples=["ramalama convert llama3.2:1b oci://registry.example.com/models/llama:1b",
                   "ramalama convert --type car llama3.2:1b oci://registry.example.com/models/llama:car",
                   "ramalama convert --type raw llama3.2:1b oci-archive:/media/usb/llama.tar"])
def cmd_convert(ctx) -> int:
    import json
    import shutil
    import tempfile
    args = ctx.args
    kind = _image_type(ctx, ctx.config.get("convert_type") or "raw")
    target_text = args.TARGET
    layout = target_text.split(":", 1)[0] in ("oci-layout", "oci-archive")
    target = parse_ref(target_text if "://" in target_text or layout else "oci://" + target_text)
    if target.transport not in ("oci", "oci-layout", "oci-archive"):
        raise UsageError("convert writes to the engine's storage (registry/name:tag), oci-layout:DIR or "
                         "oci-archive:FILE.tar, not %s" % (target,))
    engine = find_engine(ctx, to_run=False) if target.transport == "oci" else None
    if target.transport == "oci" and not engine:
        raise UsageError("convert into the engine's storage needs podman or docker; write "
                         "oci-archive:FILE.tar "
                         "(or push --type %s to a registry) instead" % (args.type or "raw"))
    if args.dryrun:
        ctx.out.write("would convert %s to %s as %s\n"
                      % (tty_safe(ctx.resolve(args.SOURCE)), tty_safe(target), kind))
        return 0
    model = _stored_for_push(ctx, args.SOURCE)
    store, layer, tmpdir = ctx.store.ensure(), None, None
    try:
        with store.lock("store", shared=True):
            image, layer, _base = model_as_image(ctx, model, kind, _carimage(ctx))
            if target.transport != "oci":
                digest = write_layout(store, target.name, target.tag or "latest", image,
                                      archive=target.transport == "oci-archive")
            else:
                tmpdir = tempfile.mkdtemp(prefix="convert-", dir=store.tmp)
                archive = os.path.join(tmpdir, "image.tar")
                name = "%s/%s:%s" % (target.host, target.name, target.tag or "latest")
                digest = write_layout(store, archive, name, image, archive=True)       # load names it so
                _engine_out(ctx, engine, "load", "-q", "-i", archive)
                # an engine that ignores the archive's name still knows the image by its config digest
                _engine_out(ctx, engine, "tag", parse_digest(json.loads(image.manifest)["config"]["digest"]),
                            name)
    finally:
        if layer:
            _unlink_quiet(layer)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    ctx.info("Converted %s to %s (%s)" % (model.ref, target, kind))
    ctx.out.write(digest + "\n")
    return 0


def _read_secret(prompt: str) -> str:
    import getpass
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the %s; use --password-stdin" % prompt)
    return getpass.getpass(prompt.capitalize() + ": ")


def _login_args(p) -> None:
    p.add_argument("REGISTRY", nargs="?", help="registry host (default docker.io)")
    p.add_argument("--username", "-u", help="user name")
    p.add_argument("--password", "-p", help="password (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _add_registry_flags(p)


@command("login", help="log in to a registry", args=_login_args,
         examples=["echo $TOKEN | ramalama login -u me --password-stdin quay.io"])
def cmd_login(ctx) -> int:
    args = ctx.args
    host = _registry_host(args.REGISTRY)
    user = args.username
    if not user:
        if not sys.stdin.isatty():
            raise UsageError("login needs --username (no terminal to ask)")
        try:
            user = input("Username: ")
        except EOFError:
            raise UsageError("login needs --username")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    else:
        password = _read_secret("password")
    if not user or not password:
        raise UsageError("login needs a user name and a password")
    reg = ctx.registry(host)
    reg._creds[""] = (user, password)
    reg.login_check()
    path = auth_files(ctx.env, args.authfile)[0]
    write_auth_entry(path, host, user, password)
    ctx.out.write("Login Succeeded!\n")
    ctx.log("credentials for %s written to %s" % (host, path))
    return 0


def _logout_args(p) -> None:
    p.add_argument("REGISTRY", nargs="?", help="registry host (default docker.io)")
    _add_authfile_flag(p)
    p.add_argument("--all", "-a", action="store_true", help="remove every stored credential")


@command("logout", help="log out of a registry", args=_logout_args,
         examples=["ramalama logout quay.io", "ramalama logout --all"])
def cmd_logout(ctx) -> int:
    args = ctx.args
    paths = auth_files(ctx.env, args.authfile)
    if args.all:
        for path in paths[:1]:
            if os.path.exists(path):
                data = read_auth_file(path)
                for host in list(data.get("auths") or {}):
                    write_auth_entry(path, _normalise_auth_key(host), None)
        ctx.out.write("Removed login credentials for all registries\n")
        return 0
    host = _registry_host(args.REGISTRY)
    removed = [p for p in paths if os.path.exists(p) and write_auth_entry(p, host, None)]
    if not removed:
        raise NotFound("not logged in to %s" % host)
    ctx.out.write("Removed login credentials for %s\n" % tty_safe(host))
    return 0


def _runtime(ctx) -> str:
    runtime = ctx.args.runtime or ctx.config.get("runtime") or "llama.cpp"
    if runtime not in ("llama.cpp", "vllm"):
        raise ConfigError("runtime must be llama.cpp or vllm, not %r" % runtime)
    return runtime


def _model_for(ctx, text: str) -> Model:
    """The stored model, pulled first when it is not in the store yet."""
    ref = ctx.resolve(text)
    model = find_model(ctx, ref)
    if model is None:
        if ctx.args.dryrun:
            raise NotFound("%s is not in the store (pull it first)" % (ref,))
        ctx.info("%s is not in the store; pulling it" % (ref,))
        model = pull_model(ctx, ref)
    if model.meta.get("damaged"):
        raise StoreError("%s is damaged (%s); pull it again" % (model.ref, ", ".join(model.meta["damaged"])))
    return model


def _image(ctx, runtime: str, gpu: str) -> str:
    return ctx.args.image or ctx.config.get("image") or (
        VLLM_IMAGE if runtime == "vllm" else GPU_IMAGES[gpu]) + ":latest"


def _show_command(ctx, argv: list) -> None:
    """What --dryrun prints instead of running: the command line, quoted for a shell."""
    import shlex
    ctx.out.write(tty_safe(shlex.join(argv)) + "\n")


def launch(ctx, models: list, *, host: str, port: int, socket_dir: str = None, names: list = None):
    """Start a server for one model, or llama-server's router for several (each answering to
    the served_name of its entry in `names`, else of its reference), in the chosen engine or
    natively; an engine that cannot run containers (a docker client without a daemon) falls
    back to native with one warning. With socket_dir (llama.cpp under `run`), the server
    listens on a unix socket there and a container gets no network at all; with RPC workers a
    container shares this host's network, to reach them where this host does. Returns the
    Server, or None after --dryrun printed it."""
    runtime, engine, gpu = _runtime(ctx), find_engine(ctx), detect_gpu(ctx.env)
    sock = (socket_dir + "/llama.sock") if socket_dir else None
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host
    endpoint = "unix:" + sock if sock else "http://%s:%d" % (local, port)
    # the API key reaches the runtime by environment only: never argv, labels or logs
    key = _api_key(ctx)
    key_var = api_key_env(runtime)
    env = {k: v for k, v in ctx.env.items() if k not in SECRET_ENV}
    if key:
        env[key_var] = key
    settings = _settings(ctx, runtime)
    command_at = _server_command(ctx, models, runtime, port, gpu, settings)
    if engine:
        name = _container_name(ctx)
        root, mounts = _container_files(models, names)
        shared = bool(settings["rpc"])              # this host's network: no port to publish
        listen = CONTAINER_SOCKET_DIR + "/llama.sock" if sock else host if shared else "0.0.0.0"
        argv, image = _in_container(
            ctx, engine, gpu, command_at(root, listen), mounts,
            name=name, labels=_labels(models, runtime, endpoint if sock else endpoint + "/v1"),
            publish=None if sock or shared else publish_spec(host, port), socket_dir=socket_dir,
            env_names=(key_var,) if key else (), network="host" if shared else None)
        if ctx.args.dryrun:
            _show_command(ctx, argv)
            return None
        try:
            return start_container(engine, argv, name, endpoint, image, env, key)
        except EngineError as e:
            ctx.warn("%s; running natively instead" % e)
    env.update(e.partition("=")[::2] for e in getattr(ctx.args, "env", None) or [] if "=" in e)
    root, release = _native_files(ctx, models, names)
    server = None
    try:
        argv = command_at(root, sock or host)
        if ctx.args.dryrun:
            _show_command(ctx, argv)
            return None
        log_path = os.path.join(socket_dir or ctx.store.ensure().tmp, "server-%d.log" % os.getpid())
        server = start_native(argv, endpoint, log_path, env, key)
    finally:
        if server is None:
            release()
    stop = server.stop

    def stop_and_release():
        stop()
        release()
    server.stop = stop_and_release
    return server


def _server_command(ctx, models: list, runtime: str, port: int, gpu: str, settings: dict):
    """command_at(root, listen): the server's argv with the models' files below root."""
    if settings["rpc"] and runtime != "llama.cpp":
        raise UsageError("--rpc spreads a model over llama.cpp RPC workers; vLLM has its own "
                         "distributed serving")
    several = len(models) > 1                      # run serves one model and has no --models-max
    if several and runtime != "llama.cpp":
        raise UsageError("several models are served by llama.cpp's router; vLLM serves one model at a time")
    model, models_max = (None, getattr(ctx.args, "models_max", None) or 4) if several else (models[0], None)
    return lambda root, listen: runtime_argv(serve_options(model, runtime, listen, port, gpu, root, settings,
                                                           models_max))


def _container_files(models: list, names: list = None) -> tuple:
    """(root, mounts): where a container sees the models' files, and the read-only mounts that
    put them there. A model ramalama keeps as an image is that image, mounted."""
    if len(models) != 1:
        return CONTAINER_MODELS, [(src, CONTAINER_MODELS + "/" + rel)
                                  for src, rel in router_files(models, names)]
    if models[0].meta.get("store") == "ramalama-image":
        return "/mnt/image/models", [("image:" + models[0].meta["image"], "/mnt/image")]
    return CONTAINER_MODELS, model_mounts(models[0])


def _native_files(ctx, models: list, names: list = None) -> tuple:
    """(root, release): where a native runtime finds the models' files, and what undoes that: a
    folder of links for the router, the mounted image of a model ramalama keeps as one."""
    import shutil
    import tempfile
    if len(models) != 1:
        root = tempfile.mkdtemp(prefix="ramalama-models-")
        for src, rel in router_files(models, names):
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            os.symlink(src, os.path.join(root, rel))
        return root, lambda: shutil.rmtree(root, ignore_errors=True)
    if models[0].meta.get("store") == "ramalama-image":
        return mount_image(ctx, models[0]), lambda: unmount_image(ctx, models[0])
    return models[0].path, lambda: None


def _settings(ctx, runtime: str) -> dict:
    """What the runtime is told: each flag, else [ramalama.runtimes.<runtime>], else [ramalama]."""
    args = ctx.args
    rpc = getattr(args, "rpc", None) or ctx.env.get("RAMALAMA_LLAMACPP_RPC_NODES")
    chosen = {"seed": getattr(args, "seed", None), "runtime_args": getattr(args, "runtime_args", None),
              "rpc": rpc_nodes(rpc) if rpc else None}
    for key in ("ctx_size", "ngl", "threads", "temp", "max_tokens"):
        value = getattr(args, key, None)
        chosen[key] = value if value is not None else ctx.config.runtime_get(runtime, key)
    return chosen


def _container_name(ctx) -> str:
    return ctx.args.name or "ramalama-" + os.urandom(4).hex()


def _labels(models: list, runtime: str, url: str = None) -> dict:
    """What marks a container as ours, and what `ps` and `chat` read back."""
    labels = {LABEL: "true", LABEL + ".model": ",".join(m.ref for m in models), LABEL + ".runtime": runtime}
    return dict(labels, **{LABEL + ".url": url}) if url else labels


def _in_container(ctx, engine: str, gpu: str, command: list, mounts: list, *, name: str, labels: dict,
                  publish: str = None, socket_dir: str = None, detach: bool = True, env_names: tuple = (),
                  network: str = None, image: str = None) -> tuple:
    """(argv, image) of `engine run` for a command on models: the pinned image (unless `image`
    is one already resolved), the model files mounted read-only, run's device, GPU and engine
    options; `network` unless --network says."""
    image = image or resolve_image(ctx, _image(ctx, _runtime(ctx), gpu), engine, offline=ctx.args.dryrun)
    kind = engine_kind(engine)
    extra = engine_flags(ctx.args, ctx.config, kind)
    if network and not any(a.startswith("--network=") for a in extra):
        extra.append("--network=" + network)
    argv = container_argv(kind, engine, image, command, mounts, name=name, labels=labels,
                          gpu=gpu, devices=ctx.args.device or [], publish=publish, socket_dir=socket_dir,
                          detach=detach, env_names=env_names, accel=accel_env(ctx.env), host_env=ctx.env,
                          extra=extra)
    return argv, image


def _api_key(ctx):
    """--api-key, else RAMALAMA_API_KEY or config api_key: what API clients must send."""
    return getattr(ctx.args, "api_key", None) or ctx.config.get("api_key") or None


def _run_args(p) -> None:
    p.add_argument("MODEL", help="model to run (pulled when missing)")
    p.add_argument("PROMPT", nargs="*",
                   help="answer this prompt once and exit (also read from a non-TTY stdin)")
    _add_runtime_flags(p)


@command("run", help="run a model and chat with it", args=_run_args,
         examples=["ramalama run llama3.2:1b", "ramalama run llama3.2:1b 'summarise this' < notes.txt",
                   "ramalama --nocontainer run --ctx-size 8192 hf://bartowski/SmolLM2-135M-Instruct-GGUF"])
def cmd_run(ctx) -> int:
    import shutil
    import tempfile
    model = _model_for(ctx, ctx.args.MODEL)
    # llama-server can listen on a unix socket: no port, and no network for the container
    socket_dir = tempfile.mkdtemp(prefix="ramalama-") if _runtime(ctx) == "llama.cpp" else None
    port = free_port()
    server = None
    try:
        server = launch(ctx, [model], host="127.0.0.1", port=port, socket_dir=socket_dir)
        if server is None:                      # --dryrun
            return 0
        server.wait_healthy()
        return converse(ctx, ctx.api(server.endpoint, server.api_key), model.ref, ctx.args.PROMPT)
    finally:
        if server is not None:
            server.stop()
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


def converse(ctx, client: APIClient, model: str, words: list, **options) -> int:
    """Answer the prompt in `words` (or a non-TTY stdin) once; else chat on the terminal, the
    history kept, until /bye or EOF."""
    prompt = " ".join(words)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise UsageError("no prompt: give one as an argument or on stdin")
    if prompt:
        client.chat(model, [{"role": "user", "content": prompt}], ctx.out, **options)
        return 0
    history = []
    while True:
        try:
            line = input("> ")
        except EOFError:
            ctx.out.write("\n")
            return 0
        if line.strip() in ("/bye", "/exit", "/quit"):
            return 0
        if line.strip():
            history.append({"role": "user", "content": line})
            reply = client.chat(model, history, ctx.out, **options)
            history.append({"role": "assistant", "content": reply})


def run_tool(ctx, model: Model, command_at, inputs: tuple = (), out=None, err=None) -> int:
    """A llama.cpp tool on the model, to its end: in the pinned image with run's device, GPU
    and engine options (no network), or natively. `command_at(root, paths, settings, ngl)` is
    its command with the model's files below root, the host files `inputs` at `paths`, the
    runtime settings and the layers to offload. Its output goes to `out` and `err` (default:
    ours)."""
    import shutil
    runtime = _runtime(ctx)
    if runtime != "llama.cpp":
        raise UsageError("%s runs llama.cpp's tools; vLLM has its own (`vllm bench`): use --runtime llama.cpp"
                         % ctx.args.command)
    engine, gpu, settings = find_engine(ctx), detect_gpu(ctx.env), _settings(ctx, runtime)
    ngl = gpu_layers(settings["ngl"], gpu)
    env = {k: v for k, v in ctx.env.items() if k not in SECRET_ENV}
    if engine:
        name = _container_name(ctx)
        inside = ["/data/%d-%s" % (i, os.path.basename(p)) for i, p in enumerate(inputs)]
        root, mounts = _container_files([model])
        argv, _image_used = _in_container(ctx, engine, gpu, command_at(root, inside, settings, ngl), mounts
                                          + list(zip(inputs, inside)),
                                          name=name, labels=_labels([model], runtime), detach=False)
        if ctx.args.dryrun:
            _show_command(ctx, argv)
            return 0
        return run_to_end(argv, env, out or ctx.out, err or ctx.err,
                          stop=lambda _proc: remove_container(engine, name, env))
    env.update(e.partition("=")[::2] for e in ctx.args.env or [] if "=" in e)
    root, release = _native_files(ctx, [model])
    try:
        argv = command_at(root, list(inputs), settings, ngl)
        if ctx.args.dryrun:
            _show_command(ctx, argv)
            return 0
        if not shutil.which(argv[0], path=env.get("PATH")):
            raise RamalamaError("%s is not installed (not on PATH); install llama.cpp's tools, or run in a "
                                "container with podman or docker" % argv[0])
        return run_to_end(argv, env, out or ctx.out, err or ctx.err)
    finally:
        release()


def _bench_args(p) -> None:
    p.add_argument("MODEL", help="model to benchmark (pulled when missing)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="llama-bench's markdown table (default), or its JSON as it prints it")
    _add_launch_flags(p)


@command("bench", "benchmark", help="measure a model's prompt and generation speed (llama-bench)",
         args=_bench_args,
         examples=["ramalama bench llama3.2:1b",
                   "ramalama --nocontainer bench --format json llama3.2:1b > bench.json",
                   "ramalama bench --runtime-args '-p 256 -n 64 -r 3' llama3.2:1b"])
def cmd_bench(ctx) -> int:
    model = _model_for(ctx, ctx.args.MODEL)
    model_file = _model_paths(model)["model"]
    return run_tool(ctx, model, lambda root, _inputs, s, ngl: bench_argv(
        root + "/" + model_file, ngl, s["threads"], ctx.args.format, s["runtime_args"]))


def _perplexity_args(p) -> None:
    p.add_argument("MODEL", help="model to measure (pulled when missing)")
    p.add_argument("--file", "-f", metavar="TEXT",
                   help="the text to score (default: standard input, when it is "
                   "not a terminal); it needs at least twice the context size in tokens")
    p.add_argument("--ctx-size", "-c", type=int, metavar="N",
                   help="context size (config ctx_size; default: the tool's)")
    _add_launch_flags(p)


@command("perplexity", help="measure how well a model predicts a text (llama-perplexity)",
         args=_perplexity_args,
         examples=["ramalama perplexity --file wiki.test.raw llama3.2:1b",
                   "ramalama --nocontainer perplexity llama3.2:1b < notes.txt"])
def cmd_perplexity(ctx) -> int:
    import shutil
    import tempfile
    text, temporary = ctx.args.file, None
    if text is None:
        if sys.stdin.isatty():
            raise UsageError("perplexity needs a text to score: --file TEXT, or the text on standard input")
        with tempfile.NamedTemporaryFile("wb", prefix="ramalama-text-", suffix=".txt", delete=False) as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
            text = temporary = f.name
    elif not os.path.isfile(text):
        raise UsageError("--file %s: no such file" % text)
    try:
        if os.path.getsize(text) == 0:
            raise UsageError("the text to score is empty")
        model = _model_for(ctx, ctx.args.MODEL)
        model_file = _model_paths(model)["model"]
        # llama-perplexity exits 0 when the text is too short for its context, and its log thread
        # can lose its last lines at exit: a run that printed neither a chunk's value nor the
        # estimate computed nothing
        chunks, estimate = _Seen(ctx.out, "[1]"), _Seen(ctx.err, "Final estimate")
        status = run_tool(ctx, model, lambda root, inputs, s, ngl: perplexity_argv(
            root + "/" + model_file, inputs[0], ngl, s["threads"], s["ctx_size"], s["runtime_args"]),
            inputs=(os.path.abspath(text),), out=chunks, err=estimate)
        if status == 0 and not (chunks.seen or estimate.seen or ctx.args.dryrun):
            raise RamalamaError("llama-perplexity computed nothing: a text needs at least twice the context "
                                "size in tokens (--ctx-size; the model's own by default)")
        if status == 0 and chunks.seen and not estimate.seen:
            import re
            last = re.findall(r"\[(\d+)\](\d+(?:\.\d+)?)", chunks.tail)
            ctx.warn("llama-perplexity's closing lines were lost at its exit (llama.cpp's log thread); its "
                     "running estimate%s is the last value above"
                     % (" after %s chunks: PPL = %s" % last[-1] if last else ""))
        return status
    finally:
        if temporary:
            os.unlink(temporary)


class _Seen:
    """A stream that notes whether `marker` went through it, across the chunks it comes in."""

    def __init__(self, stream, marker: str):
        self.stream, self.marker, self.seen, self.tail = stream, marker, False, ""

    def write(self, text: str) -> int:
        self.seen = self.seen or self.marker in self.tail + text
        self.tail = (self.tail + text)[-200:]               # the last words said
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _serve_args(p) -> None:
    p.add_argument("MODEL", nargs="*",
                   help="model to serve (pulled when missing); several, or none for every "
                   "GGUF model in the store, are served by llama-server's router, each under its own name")
    p.add_argument("--models-max", type=int, metavar="N",
                   help="several models: how many the router keeps loaded at once (default 4)")
    p.add_argument("--port", "-p", type=int, help="port to serve on (config port; default 8080)")
    p.add_argument("--host", help="address to listen on (config host; default 127.0.0.1, this host only; "
                   "0.0.0.0 for every interface)")
    p.add_argument("--detach", "-d", action="store_true", help="run the container in the background")
    p.add_argument("--generate", metavar="KIND[:DIR]",
                   help="write kube, quadlet or compose files instead of running")
    p.add_argument("--kube-volume", choices=KUBE_VOLUMES, default=None,
                   help="--generate kube: where pods get the model (config kube_volume). host: this node's "
                        "store (hostPath; the default for local models); init: an init container fetches it "
                        "from its registry by digest (the default for models pulled from one; any "
                        "Kubernetes); image: an image volume of the artifact by digest (Kubernetes 1.35, or "
                        "1.31 with the ImageVolume gate)")
    _add_runtime_flags(p)


@command("serve", help="serve a model over an OpenAI-compatible API", args=_serve_args,
         examples=["ramalama serve -d --port 8080 llama3.2:1b",
                   "ramalama serve --generate kube:deploy/ llama3.2:1b"])
def cmd_serve(ctx) -> int:
    import subprocess
    args = ctx.args
    models = [_model_for(ctx, text) for text in args.MODEL] if args.MODEL else _every_gguf_model(ctx)
    names = args.MODEL or [m.ref for m in models]           # what each model answers to among several
    port = args.port or ctx.config.get("port") or 8080
    host = args.host or ctx.config.get("host") or "127.0.0.1"       # reachable from elsewhere only when asked
    if args.generate:
        return _generate(ctx, models, names, host, port)
    if args.detach and not find_engine(ctx):
        raise UsageError("--detach needs a container engine (podman or docker)")
    server = launch(ctx, models, host=host, port=port, names=names)
    if server is None:
        return 0
    url = "http://%s:%d/v1" % ("127.0.0.1" if host in ("0.0.0.0", "") else host, port)
    what = models[0].ref if len(models) == 1 else "%d models (%s)" % (
        len(models), ", ".join(sorted({rel.split("/")[0] for _src, rel in router_files(models, names)})))
    detached = False
    # everything after the start is covered: a stop signal right after the announcement (whose
    # reader may act on it at once) still stops the server
    try:
        server.wait_healthy()
        if server.name and args.detach:
            ctx.out.write("%s\n" % tty_safe(server.name))
            ctx.info("Serving %s at %s in container %s (image %s)" % (what, url, server.name, server.image))
            detached = True
            return 0
        ctx.info("Serving %s at %s (OpenAI API%s)%s; Ctrl-C stops it"
                 % (what, url, ", API key required" if server.api_key else "",
                    " in container %s, image %s" % (server.name, server.image) if server.name else ""))
        if server.proc is not None:
            status = server.proc.wait()
        else:                                   # `engine wait` prints the container's exit status
            waited = subprocess.run([find_engine(ctx), "wait", server.name], capture_output=True, text=True,
                                    env=ctx.env).stdout.strip()
            status = int(waited) if waited.lstrip("-").isdigit() else 0
        if status not in (0, 130, 143, -2, -15):      # stopped from elsewhere (ramalama stop, kill)
            raise RamalamaError("the model server stopped with exit status %d: %s" % (status, server.logs()))
        return 0
    finally:
        if not detached:
            server.stop()


def _every_gguf_model(ctx) -> list:
    """`serve` without a model: every model in the store (ours, then ramalama's) that is a GGUF."""
    store = ctx.store
    stored = list(store.models()) + list(store.ramalama_models()) if store.exists() else []
    models = [m for m in stored if m.model_file() is not None and m.model_file().name.endswith(".gguf")
              and not m.meta.get("damaged")]
    if not models:
        raise NotFound("no GGUF model in the store to serve; pull one first (ramalama pull MODEL)")
    return models


def deployment_name(ref: str) -> str:
    """A name Kubernetes (a Service's name is a DNS label), systemd and compose all take, from a
    model reference: 'ollama://tiny:latest' -> 'tiny-latest', 'file:///m/tiny.gguf' ->
    'm-tiny-gguf' (lowercase letters, digits and '-', at most 40)."""
    import re
    return re.sub(r"[^a-z0-9]+", "-", ref.split("://", 1)[-1].lower())[:40].strip("-") or "model"


def _generate(ctx, models: list, names: list, host: str, port: int) -> int:
    kind, _, outdir = ctx.args.generate.partition(":")
    runtime, gpu = _runtime(ctx), detect_gpu(ctx.env)
    engine = find_engine(ctx) or "podman"
    if any(m.meta.get("store") == "ramalama-image" for m in models):
        raise UsageError("--generate needs the model's files; this model is kept as an image by ramalama: "
                         "pull it into our store first")
    volume, source = _kube_volume(ctx, models) if kind == "kube" else ("host", None)
    image = resolve_image(ctx, _image(ctx, runtime, gpu), engine, offline=ctx.args.dryrun)
    root, mounts = _container_files(models, names)
    argv = _server_command(ctx, models, runtime, port, gpu, _settings(ctx, runtime))(root, "0.0.0.0")
    name = ctx.args.name or "ramalama-" + deployment_name(models[0].ref if len(models) == 1 else "models")
    key_var = api_key_env(runtime) if _api_key(ctx) else None
    files = generate_files(kind, name, image, argv, mounts, port, _labels(models, runtime), host=host,
                           key_var=key_var, source=source, volume=volume)
    if key_var:
        ctx.info({"kube": "the API key is read from the secret %s-api-key (key api-key): kubectl create "
                          "secret generic %s-api-key --from-literal=api-key=..." % (name, name),
                  "quadlet": "the API key is read from the podman secret %s-api-key: printf %%s "
                             "\"$RAMALAMA_API_KEY\" "
                             "| podman secret create %s-api-key -" % (name, name),
                  "compose": "the API key is read from $RAMALAMA_API_KEY when compose starts the "
                             "service"}.get(kind, ""))
    return _write_generated(ctx, files, outdir)


def _write_generated(ctx, files: dict, outdir: str) -> int:
    """Write generated files into outdir (default: here), or show them with --dryrun."""
    outdir = outdir or "."
    for fname, text in files.items():
        path = os.path.join(outdir, fname)
        if ctx.args.dryrun:
            ctx.out.write("# %s\n%s" % (tty_safe(path), text))
            continue
        os.makedirs(outdir, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        ctx.out.write(tty_safe(path) + "\n")
    return 0


KUBE_VOLUMES = ("host", "init", "image")


def _kube_volume(ctx, models: list) -> tuple:
    """(volume, RegistryModel or None) for --generate kube: a model pulled from a registry (or
    pushed and pulled back) as raw layers comes from there by digest on any node (--kube-volume,
    config kube_volume: init by default, or image); any other model from this node (host)."""
    chosen = ctx.args.kube_volume or ctx.config.get("kube_volume")
    if chosen not in (None,) + KUBE_VOLUMES:
        raise ConfigError("kube_volume must be host, init or image, not %r" % chosen)
    model = models[0]
    ref = parse_ref(model.ref) if len(models) == 1 and "://" in model.ref else None
    digest, fmt = model.meta.get("manifest_digest"), model.meta.get("format")
    raw_layers = fmt in ("modelpack", "dmr", "omlmd")            # each file is a blob of the registry
    from_registry = ref is not None and ref.transport == "oci" and digest and raw_layers
    volume = chosen or ("init" if from_registry else "host")
    if volume == "host":
        return "host", None
    if not from_registry:
        raise UsageError("--kube-volume %s takes the model from a registry by digest: push it (ramalama push "
                         "MODEL oci://REGISTRY/NAME:TAG), then generate for oci://REGISTRY/NAME:TAG" % volume)
    if volume == "image" and fmt != "modelpack":
        raise UsageError("an image volume mounts a ModelPack artifact by its file names; this model is %s: "
                         "use --kube-volume init" % fmt)
    scheme = "http" if getattr(ctx.args, "tls_verify", None) is False else "https"
    source = RegistryModel("%s://%s" % (scheme, ref.host), ref.name, "%s/%s@%s"
                           % (ref.host, ref.name, digest),
                           [(f.name, f.digest) for f in model.files], model.size)
    return volume, source


def _api_flags(p) -> None:
    p.add_argument("--url",
                   help="the API's base URL, e.g. http://127.0.0.1:8080/v1 or https://host/v1 "
                   "(default: the one model container `serve -d` started, else "
                   "http://127.0.0.1:PORT/v1 with config port)")
    p.add_argument("--name", help="a model container of ours (see `ramalama ps`) whose API to use")
    p.add_argument("--api-key", metavar="KEY",
                   help="key sent as a bearer token (config api_key; env RAMALAMA_API_KEY)")
    _add_tls_flags(p)


def _api_client(ctx) -> tuple:
    """(APIClient, the container's model or None): --url; else --name's container, or the only
    model container serving over HTTP; else this host's configured port."""
    args = ctx.args
    if args.url:
        return ctx.api(args.url, _api_key(ctx)), None
    try:
        serving = [r for r in _our_containers(ctx) if r["url"].startswith("http")]
    except RamalamaError:
        if args.name:
            raise
        serving = []
    if args.name:
        serving = [r for r in serving if r["name"] == args.name]
        if not serving:
            raise NotFound("no model container named %s is serving (see `ramalama ps`)" % args.name)
    if len(serving) > 1:
        raise UsageError("%d model containers are serving (%s): choose one with --name or --url"
                         % (len(serving), ", ".join(sorted(r["name"] for r in serving))))
    if serving:
        return ctx.api(serving[0]["url"], _api_key(ctx)), serving[0]["model"] or None
    return ctx.api("http://127.0.0.1:%d/v1" % (ctx.config.get("port") or 8080), _api_key(ctx)), None


def _chat_args(p) -> None:
    p.add_argument("PROMPT", nargs="*",
                   help="answer this prompt once and exit (also read from a non-TTY stdin)")
    _api_flags(p)
    p.add_argument("--model", "-m", help="a model the server offers (default: its only one)")
    p.add_argument("--list", "--ls", action="store_true",
                   help="list the server's models and exit (as `models`)")
    p.add_argument("--max-tokens", type=int, metavar="N", help="most tokens per answer (config max_tokens)")
    p.add_argument("--temp", type=float, metavar="T", help="sampling temperature (default: the server's)")


@command("chat", help="chat with an OpenAI-compatible server (ours, or any other)", args=_chat_args,
         examples=["ramalama chat", "ramalama chat --url http://127.0.0.1:8080/v1 'why is the sky blue?'",
                   "ramalama chat --name ramalama-1a2b3c4d",
                   "ramalama chat --url https://api.example.com/v1 --model NAME   # key from "
                   "$RAMALAMA_API_KEY"])
def cmd_chat(ctx) -> int:
    args = ctx.args
    client, served = _api_client(ctx)
    if args.list:
        ctx.out.write("".join(tty_safe(m["id"]) + "\n" for m in client.models()))
        return 0
    model = args.model or _only_model(client, served)
    max_tokens = args.max_tokens if args.max_tokens is not None else ctx.config.get("max_tokens")
    return converse(ctx, client, model, args.PROMPT, max_tokens=max_tokens or None, temperature=args.temp)


def _only_model(client: APIClient, served: str):
    """The model to ask for: the container's, else the server's only one. None when the server
    lists none (it then answers with the one it has); several mean the user must choose."""
    try:
        ids = [m["id"] for m in client.models()]
    except NotFound:                         # no /models here: the server answers with its model
        return served
    if served in ids or not ids:
        return served
    if len(ids) == 1:
        return ids[0]
    raise UsageError("the server offers %d models (%s): choose one with --model"
                     % (len(ids), ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")))


def _models_args(p) -> None:
    _api_flags(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of model names")
    p.add_argument("--noheading", "-n", action="store_true", help="omit the header line")


@command("models", help="list the models an OpenAI-compatible server offers", args=_models_args,
         examples=["ramalama models", "ramalama models --url http://127.0.0.1:8080/v1 --json"])
def cmd_models(ctx) -> int:
    return _print_models(ctx, _api_client(ctx)[0].models(), ctx.args.json, ctx.args.noheading)


def _print_models(ctx, models: list, as_json: bool, noheading: bool) -> int:
    if as_json:
        write_json(ctx.out, [m["id"] for m in models])
    else:
        print_table(ctx.out, ["MODEL", "OWNED BY"], [[m["id"], str(m.get("owned_by") or "")] for m in models],
                    noheading)
    return 0


def _rpc_server_args(p) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this host only; "
                   "RPC has no authentication: open it only to a network you trust)")
    p.add_argument("--port", "-p", type=int, default=RPC_PORT, help="port to listen on (default %d)"
                   % RPC_PORT)
    p.add_argument("--cache", action="store_true",
                   help="keep received tensors in a local cache (faster restarts)")
    p.add_argument("--detach", "-d", action="store_true", help="run the container in the background")
    p.add_argument("--generate", metavar="KIND[:DIR]",
                   help="write kube (a StatefulSet of --replicas workers, "
                   "NAME-0.NAME:PORT, ...), quadlet or compose files instead of running")
    p.add_argument("--replicas", type=int, default=2, metavar="N",
                   help="--generate kube: how many workers (2)")
    _add_launch_flags(p, layers=False)


@command("rpc-server", help="start a llama.cpp RPC worker that holds layers for a model served elsewhere",
         args=_rpc_server_args,
         examples=["ramalama rpc-server --host 10.0.0.2 --port 50052",
                   "ramalama serve --rpc 10.0.0.2:50052,10.0.0.3:50052 llama3.2:1b"])
def cmd_rpc_server(ctx) -> int:
    """The worker runs in the pinned image (GPU devices as for run) or natively, in the
    foreground until stopped, or detached with -d. --debug makes it log what it is given."""
    import shutil
    args = ctx.args
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ctx.warn("the RPC worker listens on %s without authentication: anyone who reaches it can use it"
                 % args.host)
    threads = _settings(ctx, "llama.cpp")["threads"]

    def worker(exe: str, host: str) -> list:
        return rpc_worker_argv(exe, host, args.port, threads, args.cache, args.runtime_args)
    env = {k: v for k, v in ctx.env.items() if k not in SECRET_ENV}
    if ctx.debug:
        env["GGML_RPC_DEBUG"] = "1"
    engine, gpu = find_engine(ctx), detect_gpu(ctx.env)
    if args.generate:
        return _generate_workers(ctx, engine, gpu, worker)
    if engine:
        name = _container_name(ctx)
        image = resolve_image(ctx, _image(ctx, "llama.cpp", gpu), engine, offline=ctx.args.dryrun)
        exe = RPC_WORKERS[0] if ctx.args.dryrun else _image_command(ctx, engine, image, RPC_WORKERS)
        argv, _image_used = _in_container(
            ctx, engine, gpu, worker(exe, "0.0.0.0"), [], name=name,
            labels={LABEL: "true", LABEL + ".runtime": "rpc-server", LABEL + ".url": "rpc://%s:%d" % (
                "127.0.0.1" if args.host == "0.0.0.0" else args.host, args.port)},
            publish=publish_spec(args.host, args.port), detach=args.detach,
            env_names=("GGML_RPC_DEBUG",) if ctx.debug else (), image=image)
        if ctx.args.dryrun:
            _show_command(ctx, argv)
            return 0
        if args.detach:
            start_container(engine, argv, name, "", image, env)
            ctx.out.write(tty_safe(name) + "\n")
            return 0
        ctx.info("RPC worker in container %s listening on %s:%d; Ctrl-C stops it"
                 % (name, args.host, args.port))
        return run_to_end(argv, env, ctx.out, ctx.err, stop=lambda _proc: remove_container(engine, name, env))
    if args.detach:
        raise UsageError("--detach needs a container engine (podman or docker)")
    exe = next((w for w in RPC_WORKERS if shutil.which(w, path=env.get("PATH"))), None)
    argv = worker(exe or RPC_WORKERS[0], args.host)
    if ctx.args.dryrun:
        _show_command(ctx, argv)
        return 0
    if exe is None:
        raise RamalamaError("llama.cpp's RPC worker (%s) is not installed (not on PATH); install llama.cpp "
                            "built with -DGGML_RPC=ON, or run in a container with podman or docker"
                            % " or ".join(RPC_WORKERS))
    ctx.info("RPC worker listening on %s:%d; Ctrl-C stops it" % (args.host, args.port))
    return run_to_end(argv, env, ctx.out, ctx.err)


def _generate_workers(ctx, engine: str, gpu: str, worker) -> int:
    """Deployment files for RPC workers: the pinned image, `worker(exe, host)` listening on every
    address of its pod or host (published on --host for quadlet and compose). With an engine
    here, the image is asked which name its worker has; else the current name is written."""
    args = ctx.args
    kind, _, outdir = args.generate.partition(":")
    image = resolve_image(ctx, _image(ctx, "llama.cpp", gpu), engine or "podman", offline=ctx.args.dryrun)
    probe = engine and not ctx.args.dryrun
    exe = _image_command(ctx, engine, image, RPC_WORKERS) if probe else RPC_WORKERS[0]
    name = args.name or "ramalama-rpc"
    argv = worker(exe, "0.0.0.0")
    files = generate_files(kind, name, image, argv, [], args.port,
                           {LABEL: "true", LABEL + ".runtime": "rpc-server"},
                           host=args.host, volume=None, replicas=max(1, args.replicas))
    if kind == "kube":
        ctx.info("the workers are %s: give them to serve --rpc" % ",".join(
            "%s-%d.%s:%d" % (name, i, name, args.port) for i in range(max(1, args.replicas))))
    return _write_generated(ctx, files, outdir)


def _image_command(ctx, engine: str, image: str, names: tuple) -> str:
    """The first of `names` the image can run (llama.cpp renamed some of its programs)."""
    import subprocess
    for exe in names:
        probe = subprocess.run([engine, "run", "--rm", "--network=none", "--entrypoint", exe, image,
                                "--help"],
                               capture_output=True, env=ctx.env)
        if probe.returncode in (0, 1):
            return exe
    raise EngineError("the image %s has none of %s" % (image, ", ".join(names)))


def _our_containers(ctx, every: bool = False) -> list:
    """Labelled containers as dicts: name, model, image, url, status; running ones unless every."""
    import json
    import subprocess
    engine = find_engine(ctx)
    if not engine:
        raise RamalamaError("no container engine (podman or docker) found")
    docker = engine_kind(engine) == "docker"
    fmt = "{{json .}}" if docker else "json"
    proc = subprocess.run([engine, "ps", "--filter", "label=" + LABEL, "--format", fmt] + ["-a"] * every,
                          capture_output=True, text=True, env=ctx.env)
    if proc.returncode != 0:
        raise EngineError("%s ps failed: %s" % (engine, (proc.stderr.strip().splitlines() or ["?"])[-1]))
    try:
        raw = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()] if docker else (
            json.loads(proc.stdout or "[]"))
    except ValueError:
        raise EngineError("%s ps printed something that is not JSON" % engine)
    rows = []
    for c in raw:
        labels = c.get("Labels") or {}
        if isinstance(labels, str):
            labels = dict(kv.partition("=")[::2] for kv in labels.split(",") if kv)
        names = c.get("Names")
        rows.append({"name": names[0] if isinstance(names, list) and names else str(names or ""),
                     "model": labels.get(LABEL + ".model", ""), "url": labels.get(LABEL + ".url", ""),
                     "image": c.get("Image", ""), "status": c.get("Status") or c.get("State", "")})
    return rows


OUR_PS_FIELDS = {"names", "name", "model", "url", "image", "status"}


def _containers_args(p) -> None:
    p.add_argument("--format",
                   help="a Go template: {{.Names}} {{.Model}} {{.URL}} {{.Image}} {{.Status}} are "
                   "filled here, any other ({{.ID}}, {{.Ports}}, ...) by the engine's own ps")
    p.add_argument("--noheading", "-n", action="store_true", help="omit the header line")
    p.add_argument("--all", "-a", action="store_true", help="also created and exited containers")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs (engine templates)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("containers", "ps", help="list running model containers", args=_containers_args,
         examples=["ramalama ps", "ramalama ps --format '{{.Names}} {{.URL}}'"])
def cmd_containers(ctx) -> int:
    import re
    args = ctx.args
    if args.format and not {f.lower() for f in re.findall(r"\{\{\s*\.(\w+)", args.format)} <= OUR_PS_FIELDS:
        # any other Go template ({{.ID}}, {{.Ports}}, ...) is the engine's to fill
        engine = find_engine(ctx)
        if not engine:
            raise RamalamaError("no container engine (podman or docker) found")
        argv = ["ps", "--filter", "label=" + LABEL, "--format", args.format]
        listed = _engine_out(ctx, engine,
                             *(argv + ["-a"] * bool(args.all) + ["--no-trunc"] * bool(args.no_trunc)))
        ctx.out.write(listed + "\n" if listed else "")
        return 0
    rows = _our_containers(ctx, every=args.all)
    if args.json:
        write_json(ctx.out, rows)
    elif args.format:
        for row in rows:                 # {{.Names}} {{.Model}} {{.URL}} {{.Image}} {{.Status}}
            ctx.out.write(fill_template(args.format, dict(row, names=row["name"])) + "\n")
    else:
        print_table(ctx.out, ["NAME", "MODEL", "URL", "STATUS"],
                    [[r["name"], r["model"], r["url"], r["status"]] for r in rows], ctx.args.noheading)
    return 0


def _stop_args(p) -> None:
    p.add_argument("NAME", nargs="?", help="container name")
    p.add_argument("--all", "-a", action="store_true", help="stop every model container")
    p.add_argument("--ignore", action="store_true", help="ignore containers that do not exist")


@command("stop", help="stop a model container", args=_stop_args,
         examples=["ramalama stop ramalama-1a2b3c4d", "ramalama stop --all"])
def cmd_stop(ctx) -> int:
    import subprocess
    args = ctx.args
    if bool(args.NAME) == bool(args.all):
        raise UsageError("stop takes a container NAME or --all")
    ours = {r["name"] for r in _our_containers(ctx)}
    names = sorted(ours) if args.all else [args.NAME]
    for name in names:
        if name not in ours:
            if args.ignore:
                continue
            raise NotFound("no running ramalama container named %s" % name)
        proc = subprocess.run([find_engine(ctx), "stop", name], capture_output=True, text=True, env=ctx.env)
        if proc.returncode != 0:
            raise EngineError("could not stop %s: %s" % (name, proc.stderr.strip()))
        ctx.out.write(tty_safe(name) + "\n")
    return 0


def _export_args(p) -> None:
    p.add_argument("MODEL", help="model in the store")
    p.add_argument("PATH", help="a directory (an OCI image layout), or FILE.tar for an archive")
    p.add_argument("--tag", default="latest", help="tag inside the layout (default: latest)")
    p.add_argument("--image", action="store_true", dest="save_image",
                   help="also save the pinned runtime image (podman/docker save), for hosts with no "
                        "registry; the global --image (before the command) chooses which")


@command("export", help="write a model as an OCI layout directory or .tar (air-gapped transfer)",
         args=_export_args,
         examples=["ramalama export llama3.2:1b /media/usb/llama.tar",
                   "ramalama export --image llama3.2:1b /media/usb/llama"])
def cmd_export(ctx) -> int:
    import json
    import shutil
    args, store = ctx.args, ctx.store
    model = adopted(ctx, store.get(ctx.resolve(args.MODEL)))
    extra, tmpdir = {}, None
    try:
        if args.save_image:
            engine = find_engine(ctx)
            if not engine:
                raise UsageError("export --image needs podman or docker to save the image")
            runtime, gpu = _runtime(ctx), detect_gpu(ctx.env)
            wanted = _image_ref(_image(ctx, runtime, gpu))
            image = resolve_image(ctx, _image(ctx, runtime, gpu), engine)
            import tempfile
            tmpdir = tempfile.mkdtemp(prefix="export-", dir=store.ensure().tmp)
            archive = os.path.join(tmpdir, "runtime-image.tar")
            ctx.info("saving %s" % image)
            # saved by image ID: a digest reference does not survive the format conversion of save
            image_id = _engine_out(ctx, engine, "image", "inspect", "--format", "{{.Id}}", image)
            _engine_out(ctx, engine, *(["save", "--format", "oci-archive"] if engine_kind(engine) == "podman"
                                       else ["save"]), "-o", archive, image_id)
            note = os.path.join(tmpdir, "runtime-image.json")
            with open(note, "w") as f:
                json.dump({"image": image, "id": image_id,
                           "key": pin_key(wanted)}, f)
            extra = {"runtime-image.tar": archive, "runtime-image.json": note}
        digest = write_layout(store, args.PATH, args.tag, modelpack_image(store, model), extra)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    ctx.info("Exported %s to %s (%s)" % (model.ref, args.PATH, "oci-archive" if args.PATH.endswith(".tar")
                                         else "oci layout"))
    ctx.out.write(digest + "\n")
    return 0


def _import_args(p) -> None:
    p.add_argument("PATH", help="an OCI layout directory or .tar written by export (or skopeo)")
    p.add_argument("NAME", nargs="?", help="name in the store (default: the exported model's name)")
    p.add_argument("--tag", default="latest", help="tag inside the layout (default: latest)")


@command("import", help="bring a model (and its runtime image) in from an exported layout", args=_import_args,
         examples=["ramalama import /media/usb/llama.tar",
                   "ramalama import /media/usb/llama ollama://llama3.2:1b"])
def cmd_import(ctx) -> int:
    """A layout written by export: the model under its original name (or NAME), and the
    runtime image, when the layout carries one, loaded into the engine and pinned."""
    args, store = ctx.args, ctx.store
    path = os.path.abspath(args.PATH)
    source = Ref("oci-layout" if os.path.isdir(path) else "oci-archive", "", path, args.tag)
    with store.ensure().lock("store", shared=True):
        files, meta = pull_layout(ctx, source)
        name = args.NAME or meta.get("exported_from")
        target = ctx.resolve(name) if name else source
        model = store.publish_model(target, files, meta)
    ctx.info("Imported %s (%s)" % (model.ref, human_size(model.size)))
    _import_runtime_image(ctx, Layout(path))
    ctx.out.write(tty_safe(model.ref) + "\n")
    return 0


def _import_runtime_image(ctx, layout: "Layout") -> None:
    """Load the runtime image an export carried and pin its tag to the digest the engine now
    holds, so `run` works with no registry at all."""
    import shutil
    import tempfile
    try:
        note = _load_json(layout.read("runtime-image.json"), "runtime-image.json")
    except FormatError:
        return                                      # the export carried no image
    engine = find_engine(ctx)
    if not engine:
        ctx.warn("the export carries the runtime image %s, but there is no podman or docker to load it into"
                 % note.get("image"))
        return
    store = ctx.store
    with tempfile.TemporaryDirectory(dir=store.tmp) as tmp:
        archive = os.path.join(tmp, "image.tar")
        with layout._file("runtime-image.tar") as src, open(archive, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        _engine_out(ctx, engine, "load", "-i", archive)
    key = str(note.get("key") or note["image"])
    _engine_out(ctx, engine, "tag", str(note["id"]), key)
    digest = _engine_out(ctx, engine, "image", "inspect", "--format", "{{.Digest}}", key)
    if not digest.startswith("sha256:"):
        raise EngineError("%s loaded the runtime image but does not report its digest" % engine)
    record_pin(store, key, digest, "import")
    ctx.info("loaded the runtime image into %s; %s is pinned to %s" % (engine, key, digest))


def _completion_args(p) -> None:
    p.add_argument("SHELL", choices=("bash", "zsh", "fish"), help="shell to complete for")


@command("completion", help="print a bash, zsh or fish completion script", args=_completion_args,
         examples=["source <(ramalama completion bash)",
                   "ramalama completion fish > ~/.config/fish/completions/ramalama.fish"])
def cmd_completion(ctx) -> int:
    ctx.out.write(completion_script(ctx.args.SHELL))
    return 0


def completion_script(shell: str) -> str:
    """A completion script generated from the parsers: commands, their flags, and model names
    asked from `ramalama list` when a model is expected."""
    commands, flags = [], {}
    for names, *_ in COMMANDS:
        parser, _h, _n = command_parser(names[0])
        commands.extend(names)
        for name in names:
            flags[name] = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))
    top = sorted(o for a in build_parser()._actions for o in a.option_strings if o.startswith("--"))
    takes_model = "run serve rm inspect push export"
    if shell == "bash":
        cases = "".join("        %s) flags=%r ;;\n" % (c, " ".join(flags[c])) for c in commands)
        return BASH_COMPLETION % {"commands": " ".join(commands), "top": " ".join(top), "cases": cases,
                                  "models": takes_model.replace(" ", "|")}
    if shell == "zsh":
        return "#compdef ramalama\nautoload -U +X bashcompinit && bashcompinit\n" + completion_script("bash")
    if shell == "fish":
        lines = ["complete -c ramalama -f"]
        for names, _handler, text, *_ in COMMANDS:
            for name in names:
                lines.append("complete -c ramalama -n __fish_use_subcommand -a %s -d %s"
                             % (name, _fish_quote(text)))
                lines += ["complete -c ramalama -n '__fish_seen_subcommand_from %s' -l %s" % (name, f[2:])
                          for f in flags[name]]
        lines += ["complete -c ramalama -n __fish_use_subcommand -l %s" % f[2:] for f in top]
        lines.append("complete -c ramalama -n '__fish_seen_subcommand_from %s' -a '(ramalama list --format "
                     "\"{{.Name}}\" 2>/dev/null)'" % takes_model)
        return "\n".join(lines) + "\n"
    raise UsageError("completion takes bash, zsh or fish, not %r" % shell)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


BASH_COMPLETION = """\
# bash completion for ramalama: source <(ramalama completion bash)
_ramalama() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" i flags=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --store|--engine|--runtime|--image) ((i++)) ;;
            -*) ;;
            *) cmd="${COMP_WORDS[i]}"; break ;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "%(commands)s %(top)s" -- "$cur"))
        return
    fi
    case "$cmd" in
%(cases)s    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        case "$cmd" in
            %(models)s) COMPREPLY=($(compgen -W "$(ramalama list --format '{{.Name}}' 2>/dev/null)" \
                                      -- "$cur")) ;;
            *) COMPREPLY=($(compgen -f -- "$cur")) ;;
        esac
        declare -F __ltrim_colon_completions >/dev/null && __ltrim_colon_completions "$cur"
    fi
}
complete -F _ramalama ramalama
"""


def _help_args(p) -> None:
    p.add_argument("COMMAND", nargs="?", help="the command to show the flags of")


@command("help", help="show this help, or a command's", args=_help_args)
def cmd_help(ctx) -> int:
    parser = command_parser(ctx.args.COMMAND)[0] if ctx.args.COMMAND else build_parser()
    ctx.out.write(parser.format_help())
    return 0



EPILOG = """\
examples:
  ramalama pull ollama://smollm:135m
  ramalama run ollama://smollm:135m
  ramalama pull file:///srv/models/granite.gguf
  ramalama list
  ramalama inspect ollama://smollm:135m
  ramalama rm --all

model names: ollama://[host/][ns/]model[:tag], hf://org/repo[:QUANT][@rev],
hf://org/repo/file.gguf, oci://registry/name[:tag|@sha256:...], file:///path,
https://host/file.gguf; bare names use shortnames, then RAMALAMA_TRANSPORT (default ollama).
"""


def _add_global_flags(p, after_command: bool = False) -> None:
    """Global flags; also accepted after COMMAND, where they only override when given (except
    where the command has a flag of that name: export --image)."""
    import argparse
    g = p.add_argument_group("global flags") if after_command else p
    kw = {"default": argparse.SUPPRESS} if after_command else {}
    g.add_argument("--store", metavar="DIR", **kw, help="store directory (env RAMALAMA_STORE; default "
                   "~/.local/share/ramalama, /var/lib/ramalama for root)")
    g.add_argument("--engine", metavar="NAME", **kw, help="container engine: podman or docker "
                   "(env RAMALAMA_CONTAINER_ENGINE; default: podman, else docker, else none)")
    g.add_argument("--nocontainer", action="store_true", **kw, help="run natively, not in a container")
    g.add_argument("--runtime", choices=("llama.cpp", "vllm"), **kw,
                   help="inference runtime (default llama.cpp)")
    if "--image" not in p._option_string_actions:
        g.add_argument("--image", metavar="IMAGE", **kw, help="container image (env RAMALAMA_IMAGE; default "
                       "quay.io/ramalama/ramalama, or its cuda/rocm/intel-gpu variant)")
    g.add_argument("--dryrun", "--dry-run", action="store_true", **kw,
                   help="print what would run; change nothing")
    g.add_argument("--debug", action="store_true", **kw, help="log requests and decisions to stderr")
    g.add_argument("-q", "--quiet", action="store_true", **kw, help="print no progress")


def build_parser():
    """The top-level parser: global flags, then COMMAND and everything after it, which
    command_parser(COMMAND) parses. Only the chosen command's flags are ever built, which
    keeps startup (and --help) close to a bare interpreter's."""
    import argparse
    commands = "\n".join("  %-18s %s" % (" (".join(names) + (")" if len(names) > 1 else ""), text)
                         for names, _handler, text, _args, _examples in COMMANDS)
    p = _Parser.make(prog="ramalama", usage="ramalama [global flags] COMMAND [flags] [args]",
                     description="Pull AI models into one content-addressed store and run them with "
                     "llama.cpp or vLLM, in podman, docker or natively.",
                     epilog="commands:\n%s\n\n%s\nrun 'ramalama COMMAND --help' for a command's flags."
                     % (commands, EPILOG))
    p.add_argument("-v", "--version", action="store_true", help="show the version and exit")
    _add_global_flags(p)
    p.add_argument("command", nargs="?", metavar="COMMAND", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p




def command_parser(name: str):
    """(parser, handler, canonical name) of one command, or a UsageError for an unknown one."""
    for c in COMMANDS:
        if name in c.names:
            p = _Parser.make(prog="ramalama " + c.names[0], description=c.help,
                             epilog="examples:\n" + "\n".join("  " + e for e in c.examples) if c.examples
                             else None)
            if c.args:
                c.args(p)
            _add_global_flags(p, after_command=True)
            return p, c.handler, c.names[0]
    raise UsageError("unknown command %r (see 'ramalama --help')" % name)


def parse_args(argv: list):
    args = build_parser().parse_args(argv)
    if args.command:
        sub, args.handler, args.command = command_parser(args.command)
        sub.parse_args(args.rest, namespace=args)
    return args


STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")     # what systemd, kill, timeout and a closed terminal send


def _on_stop_signal(signum, frame):
    """The first stop signal unwinds the command; later ones are ignored, so the cleanup on
    the way out (stopping a server or container) is not cut short."""
    import signal
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Signalled(signum)


def _stop_signals_unwind() -> dict:
    """Route the stop signals to _on_stop_signal; the old handlers. Outside the main thread
    (main() called by another program) handlers cannot be set, and none are."""
    import signal
    old = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name)
        try:
            old[signum] = signal.signal(signum, _on_stop_signal)
        except ValueError:                      # "signal only works in main thread"
            break
    return old


def main(argv=None, env=None, stdout=None, stderr=None) -> int:
    """Run one command; returns the exit code (never raises for user errors). Stop signals
    unwind it once a command is chosen (--help has nothing to clean up)."""
    env = os.environ if env is None else env
    out, err = stdout or sys.stdout, stderr or sys.stderr
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    old_handlers = {}
    try:
        shown, sys.stdout = sys.stdout, out      # argparse prints --help to sys.stdout
        try:
            args = parse_args(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout = shown
        if args.version:
            out.write("ramalama version %s\n" % __version__)
            return 0
        if not args.command:
            err.write("Error: no command given (see 'ramalama --help')\n")
            return 2
        old_handlers = _stop_signals_unwind()
        ctx = Context(args, env, load_config(env), out, err)
        for warning in ctx.config.warnings:
            ctx.log(warning)
        if ctx.config.unknown_keys():
            ctx.log("config keys not used by this version: " + ", ".join(ctx.config.unknown_keys()))
        return args.handler(ctx)
    except SystemExit as e:                   # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt as e:
        import signal
        signum = getattr(e, "signum", signal.SIGINT)
        err.write("\nInterrupted\n" if signum == signal.SIGINT else "\nStopped by %s\n"
                  % signal.Signals(signum).name)
        return 128 + signum
    except RamalamaError as e:
        if debug:
            import traceback
            traceback.print_exc(file=err)
        err.write("Error: %s\n" % tty_safe(e))
        return e.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if debug:
            import traceback
            traceback.print_exc(file=err)
        where = (": " + e.filename) if getattr(e, "filename", None) else ""
        err.write("Error: %s%s\n" % (tty_safe(e.strerror or e), tty_safe(where)))
        return 1
    finally:
        if old_handlers:
            import signal
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
