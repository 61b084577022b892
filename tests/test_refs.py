"""Model reference parsing: every form users type or paste, and the store folder it maps to."""
import pytest

from ramalama import Ref, UsageError, FormatError, parse_ref

HEX = "a" * 64


@pytest.mark.parametrize("text, want, canonical", [
    ("ollama://tinyllama", Ref("ollama", "registry.ollama.ai", "library/tinyllama", "latest"),
     "ollama://tinyllama:latest"),
    ("ollama://llama3.1:7B", Ref("ollama", "registry.ollama.ai", "library/llama3.1", "7B"),
     "ollama://llama3.1:7B"),
    ("ollama://user/m:q4", Ref("ollama", "registry.ollama.ai", "user/m", "q4"), "ollama://user/m:q4"),
    ("ollama://localhost:5000/library/m:1", Ref("ollama", "localhost:5000", "library/m", "1"),
     "ollama://localhost:5000/m:1"),
    ("https://ollama.com/library/smollm:135m", Ref("ollama", "registry.ollama.ai", "library/smollm", "135m"),
     "ollama://smollm:135m"),
    ("oci://quay.io/org/model:1.0", Ref("oci", "quay.io", "org/model", "1.0"), "oci://quay.io/org/model:1.0"),
    ("docker://foo/bar:1.25", Ref("oci", "docker.io", "foo/bar", "1.25"), "oci://docker.io/foo/bar:1.25"),
    ("oci://busybox", Ref("oci", "docker.io", "library/busybox", "latest"),
     "oci://docker.io/library/busybox:latest"),
    ("oci://localhost:5000/m@sha256:" + HEX, Ref("oci", "localhost:5000", "m", "latest", "sha256:" + HEX),
     "oci://localhost:5000/m@sha256:" + HEX),
    ("hf://org/repo", Ref("huggingface", "", "org/repo"), "hf://org/repo"),
    ("huggingface://org/repo:Q8_0", Ref("huggingface", "", "org/repo", "Q8_0"), "hf://org/repo:Q8_0"),
    ("hf://org/repo/sub/file.gguf@v1", Ref("huggingface", "", "org/repo", "", "", "v1", "sub/file.gguf"),
     "hf://org/repo/sub/file.gguf@v1"),
    ("https://huggingface.co/org/repo", Ref("huggingface", "", "org/repo"), "hf://org/repo"),
    ("hf.co/org/repo:Q8_0", Ref("huggingface", "", "org/repo", "Q8_0"), "hf://org/repo:Q8_0"),
    ("https://huggingface.co/org/repo/blob/main/m.gguf",
     Ref("huggingface", "", "org/repo", "", "", "main", "m.gguf"), "hf://org/repo/m.gguf@main"),
    ("file:///srv/models/../m.gguf", Ref("file", "", "/srv/m.gguf"), "file:///srv/m.gguf"),
    ("/srv/m.gguf", Ref("file", "", "/srv/m.gguf"), "file:///srv/m.gguf"),
    ("https://Example.COM/a/b/m.gguf?x=1", Ref("https", "example.com", "/a/b/m.gguf?x=1"),
     "https://example.com/a/b/m.gguf?x=1"),
    ("http://127.0.0.1:8080/m.gguf", Ref("http", "127.0.0.1:8080", "/m.gguf"),
     "http://127.0.0.1:8080/m.gguf"),
])
def test_parse_forms(text, want, canonical):
    ref = parse_ref(text)
    assert ref == want
    assert str(ref) == canonical
    assert parse_ref(canonical) == ref            # what `list` prints parses back to the same model


def test_bare_names_use_shortnames_then_default_transport():
    names = {"tiny": "hf://org/tiny-GGUF:Q8_0"}
    assert parse_ref("tiny", names) == Ref("huggingface", "", "org/tiny-GGUF", "Q8_0")
    assert parse_ref("granite", names).transport == "ollama"
    assert parse_ref("granite", names, "oci") == Ref("oci", "docker.io", "library/granite", "latest")
    assert parse_ref("org/m", None, "huggingface") == Ref("huggingface", "", "org/m")


def test_folders_follow_the_store_layout():
    assert parse_ref("oci://docker.io/foo/bar:1.25").folder() == ("oci", "docker.io", "foo", "bar", "1.25")
    assert parse_ref("ollama://llama3.1:7B").folder() == ("ollama", "registry.ollama.ai", "library",
                                                          "llama3.1", "7B")
    assert parse_ref("huggingface://julien-c/EsperBERTo-small").folder()[:3] == (
        "huggingface", "julien-c", "EsperBERTo-small")
    assert parse_ref("file:///srv/m.gguf").folder() == ("file", "srv", "m.gguf")
    a = parse_ref("https://h/m.gguf?a=1").folder()
    b = parse_ref("https://h/m.gguf?a=2").folder()
    assert a[:2] == ("https", "h") and a != b      # queries give distinct folders, never '?' in a path


@pytest.mark.parametrize("text", [
    "", "   ", "bogus://x", "ollama://a/b/c/d", "ollama://m:bad tag", "oci://Quay.io/UPPER/x:1",
    "oci://r.io/n@sha256:short", "oci://r.io/n@md5:" + HEX, "hf://onlyorg", "hf://o/r/../../etc/passwd",
    "https:///nohost", "https://user:pw@host/x", "x\0y", "file://",
])
def test_bad_references_are_usage_errors(text):
    with pytest.raises((UsageError, FormatError)) as e:
        parse_ref(text)
    assert "\n" not in str(e.value)


def test_unknown_default_transport_is_a_config_error():
    with pytest.raises(UsageError, match="unknown default transport"):
        parse_ref("m", None, "ftp")
