"""The native GGUF reader against files written by the gguf package, and hostile headers."""
import struct

import gguf
import pytest

from gguf_maker import write_tiny_llama

import ramalama


def test_reader_agrees_with_the_gguf_package(tiny_gguf):
    info = ramalama.read_gguf(str(tiny_gguf), keep_arrays=True)
    ref = gguf.GGUFReader(str(tiny_gguf))
    assert info["version"] == 3 and info["endian"] == "little"
    assert [t[0] for t in info["tensors"]] == [t.name for t in ref.tensors]
    assert [list(t[1]) for t in info["tensors"]] == [[int(d) for d in t.shape] for t in ref.tensors]
    assert sum(int(t.n_elements) for t in ref.tensors) == ramalama.describe_gguf(info)["parameters"]
    meta = info["metadata"]
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert len(meta["tokenizer.ggml.scores"]) == len(meta["tokenizer.ggml.tokens"])


def test_describe(tiny_gguf, tmp_path):
    d = ramalama.describe_gguf(ramalama.read_gguf(str(tiny_gguf)))
    assert (d["architecture"], d["model_name"], d["context_length"], d["embedding_length"],
            d["block_count"], d["quantization"]) == ("llama", "tiny-llama", 512, 64, 2, "F32")
    assert d["chat_template"].startswith("{% for message in messages %}")
    f16 = tmp_path / "f16.gguf"
    write_tiny_llama(str(f16), file_type=1)
    assert ramalama.describe_gguf(ramalama.read_gguf(str(f16)))["quantization"] == "F16"


def test_skipped_arrays_keep_their_length(tiny_gguf):
    meta = ramalama.read_gguf(str(tiny_gguf))["metadata"]
    full = ramalama.read_gguf(str(tiny_gguf), keep_arrays=True)["metadata"]
    assert meta["tokenizer.ggml.tokens"] == len(full["tokenizer.ggml.tokens"])


def gguf_bytes(n_tensors, kvs, tail=b""):
    out = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs))
    for key, vtype, payload in kvs:
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", vtype) + payload
    return out + tail


@pytest.mark.parametrize("data, message", [
    (b"", "not a GGUF file"),
    (b"GGML" + b"\0" * 20, "not a GGUF file"),
    (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2 ** 62, 0), "more than the file holds"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 2 ** 40), "more than the file holds"),
    (gguf_bytes(0, [(b"k", 8, struct.pack("<Q", 2 ** 60))]), "more than the file holds"),
    (gguf_bytes(0, [(b"k", 9, struct.pack("<IQ", 4, 2 ** 61))]), "more than the file holds"),
    (gguf_bytes(0, [(b"k", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1))]), "nested GGUF arrays"),
    (gguf_bytes(0, [(b"k", 77, b"")]), "unknown GGUF value type 77"),
    (gguf_bytes(1, [], struct.pack("<Q", 1) + b"t" + struct.pack("<I", 4000)), "4000 dimensions"),
    (gguf_bytes(0, [(b"k", 4, b"\1")]), "truncated GGUF header"),
])
def test_hostile_headers_fail_cleanly(tmp_path, data, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data + b"\0" * 16 if message != "truncated GGUF header" else data)
    with pytest.raises(ramalama.FormatError, match=message):
        ramalama.read_gguf(str(path))


def test_big_endian_header(tmp_path):
    path = tmp_path / "be.gguf"
    key = b"general.architecture"
    path.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + struct.pack(">Q", len(key)) + key
                     + struct.pack(">I", 8) + struct.pack(">Q", 5) + b"llama")
    info = ramalama.read_gguf(str(path))
    assert info["endian"] == "big" and info["metadata"] == {"general.architecture": "llama"}


def test_inspect_cli(cli, model_file):
    assert cli("pull", "file://%s" % model_file).code == 0
    r = cli("inspect", "file://%s" % model_file)
    assert r.code == 0
    lines = dict(line.split(":", 1) for line in r.out.splitlines())
    assert lines["Architecture"].strip() == "llama" and lines["Quantization"].strip() == "F32"
    assert lines["Format"].strip() == "GGUF v3 (little-endian)"
    assert lines["Name"].strip() == "file://%s" % model_file
    r = cli("inspect", "--all", "--json", "file://%s" % model_file)
    import json
    facts = json.loads(r.out)
    assert facts["metadata"]["tokenizer.ggml.bos_token_id"] == 1
    assert len(facts["tensors"]) == facts["tensor_count"] and facts["tensors"][0]["type"] in ("F32", "F16")


def test_inspect_a_non_gguf_file(cli, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello")
    assert cli("pull", "file://%s" % f).code == 0
    r = cli("inspect", "file://%s" % f)
    assert r.code == 0 and "Format:" in r.out and "not a GGUF file" in r.out
