"""Build tiny but genuine llama GGUF files for tests.

The models are random-weight llama architectures small enough to write in
milliseconds, yet complete enough (hyper-parameters, SentencePiece-style
vocabulary, chat template, every tensor llama.cpp expects) that a real
llama.cpp runtime loads and runs them.  Output is deterministic: the same
arguments always give a byte-identical file, so tests can predict digests.

Needs the ``gguf`` package (a test-only dependency, it pulls in numpy).

Command line:  python tests/gguf_maker.py OUT.gguf [--pad-to N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import gguf

N_CTX = 512
N_EMBD = 64
N_BLOCKS = 2
N_FF = 128
N_HEAD = 2
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD

# A metadata string rather than a tensor: llama.cpp rejects models with
# unexpected tensors but ignores unknown keys.
PAD_KEY = "ramalama.test.padding"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
    "endif %}"
)

WORDS = [
    "▁the", "▁a", "▁hello", "▁world", "▁is", "▁of", "▁and", "▁to", "▁in",
    "▁it", "▁model", "▁tiny", "▁llama", "▁test", "▁yes", "▁no", "▁ok",
    "▁I", "▁you", "▁.", "▁,", "▁",
]


def _vocab() -> tuple[list[str], list[float], list[int]]:
    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL]
    scores = [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(T.BYTE)
        scores.append(0.0)
    # SentencePiece builds pieces by merging adjacent symbols whose
    # concatenation is in the vocabulary, so every prefix ("▁h", "▁he", ...)
    # must exist for "▁hello" to be reachable; without them all text falls
    # back to byte tokens.
    pieces = list(WORDS)
    for w in WORDS:
        pieces += [w[:n] for n in range(2, len(w)) if w[:n] not in pieces]
    for i, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(T.NORMAL)
        scores.append(-1.0 - i / 10)
    return tokens, scores, [int(t) for t in types]


def _add_kv(w: gguf.GGUFWriter, key: str, val) -> None:
    # Drop any earlier value first: GGUFWriter logs a warning on overwrite.
    w.kv_data[0].pop(key, None)
    VT = gguf.GGUFValueType
    if isinstance(val, bool):
        w.add_key_value(key, val, VT.BOOL)
    elif isinstance(val, int):
        if 0 <= val < 2**32:
            w.add_key_value(key, val, VT.UINT32)
        elif -(2**31) <= val < 2**31:
            w.add_key_value(key, val, VT.INT32)
        else:
            w.add_key_value(key, val, VT.INT64 if val < 0 else VT.UINT64)
    elif isinstance(val, float):
        w.add_key_value(key, val, VT.FLOAT32)
    elif isinstance(val, str):
        # add_string() silently skips "", which a test may want to write.
        w.add_key_value(key, val, VT.STRING)
    else:
        raise TypeError(f"unsupported metadata value for {key!r}: {type(val).__name__}")


def _write(path: str, *, seed: int, name: str, file_type: int | None,
           extra_kv: dict | None, padding: int) -> None:
    rng = np.random.RandomState(seed)
    wdtype = np.float16 if file_type == int(gguf.LlamaFileType.MOSTLY_F16) else np.float32
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    if file_type is not None:
        w.add_file_type(int(file_type))
    w.add_vocab_size(n_vocab)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_BLOCKS)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    for k, v in (extra_kv or {}).items():
        _add_kv(w, k, v)
    if padding:
        _add_kv(w, PAD_KEY, "x" * padding)

    # numpy shapes are (out, in); GGUFWriter stores dims reversed, i.e. the
    # ggml order llama.cpp checks ({in, out}).
    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(wdtype)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)  # 1-D tensors stay F32

    w.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for i in range(N_BLOCKS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm())
        w.add_tensor(p + "attn_q.weight", weight(N_HEAD * HEAD_DIM, N_EMBD))
        w.add_tensor(p + "attn_k.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        w.add_tensor(p + "attn_v.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        w.add_tensor(p + "attn_output.weight", weight(N_EMBD, N_HEAD * HEAD_DIM))
        w.add_tensor(p + "ffn_norm.weight", norm())
        w.add_tensor(p + "ffn_gate.weight", weight(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", weight(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", weight(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", weight(n_vocab, N_EMBD))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tiny_llama(path, *, seed: int = 0, name: str = "tiny-llama",
                     file_type: int | None = None, pad_to: int | None = None,
                     extra_kv: dict | None = None) -> str:
    """Write a tiny llama GGUF to ``path`` and return the path as a str.

    file_type: sets general.file_type; 1 (MOSTLY_F16) stores 2-D weights
        as float16, anything else keeps F32.
    pad_to: grow the file to at least pad_to bytes with a metadata string
        llama.cpp ignores, for cheap large files.  The size is pad_to rounded
        up to a multiple of 32 (the GGUF alignment), except within 64 bytes
        of the unpadded size (~470 KiB), where the entry's own cost rules.
    extra_kv: additional metadata (str, int, float or bool values); may
        override the built-in keys.
    """
    path = os.fspath(path)
    kw = dict(seed=seed, name=name, file_type=file_type, extra_kv=extra_kv)
    _write(path, padding=0, **kw)
    if pad_to and os.path.getsize(path) < pad_to:
        _write(path, padding=_padding_for(path, pad_to), **kw)
    return path


def _padding_for(path: str, pad_to: int) -> int:
    """Length of the padding string that brings the file written at ``path``
    (unpadded) to pad_to bytes, rounded up to the 32-byte GGUF alignment."""
    r = gguf.GGUFReader(path)
    last = r.tensors[-1].field
    meta_end = last.offset + sum(p.nbytes for p in last.parts)  # before alignment
    data_size = os.path.getsize(path) - r.data_offset  # each tensor is padded to 32
    del r, last  # release the memory map before the file is rewritten
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    target_meta = -(-pad_to // align) * align - data_size
    # The entry costs its key (u64 length + bytes), a u32 type tag and the
    # string's u64 length on top of the string itself.
    overhead = 8 + len(PAD_KEY.encode()) + 4 + 8
    return max(1, target_meta - meta_end - overhead)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a tiny random-weight llama GGUF.")
    ap.add_argument("out")
    ap.add_argument("--pad-to", type=int, default=None, help="minimum file size in bytes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tiny-llama")
    ap.add_argument("--file-type", type=int, default=None)
    args = ap.parse_args(argv)
    write_tiny_llama(args.out, seed=args.seed, name=args.name,
                     file_type=args.file_type, pad_to=args.pad_to)
    print(f"{args.out}: {os.path.getsize(args.out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
