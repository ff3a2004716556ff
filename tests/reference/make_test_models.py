#!/usr/bin/env python3
"""Generate small random-weight GGUF test models plus golden outputs.

    python make_test_models.py --out DIR [--stories PATH_TO_stories260K.gguf]

For every model NAME it writes
    NAME.gguf          the model (GGUFWriter)
    NAME.logits.f32    raw little-endian float32 [n_tokens x n_vocab] logits
    NAME.golden.json   {"tokens", "n_vocab", "n_tokens", "logits", "greedy", ...}
and a manifest.json listing every model.  Goldens come from llama_ref.py
(float64 numpy forward pass of the dequantised weights), so they are valid for
whatever values are actually stored in the file, including quantised ones.

Deterministic: fixed seeds, so reruns produce identical files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFWriter
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402

QK_K = 256
N_PROMPT = 32       # tokens in each golden prompt (including BOS)
N_GREEDY = 16
BOS, EOS, UNK = 1, 2, 0

DTYPES = {
    "f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0,
    "q4_0": QT.Q4_0, "q4_1": QT.Q4_1, "q4_k": QT.Q4_K, "q6_k": QT.Q6_K,
}


# --------------------------------------------------------------------------
# Simple K-quant quantisers (gguf-py has dequantise only for these).
# Not llama.cpp's optimal search, just straightforward min/max scaling; the
# file contents are what matter, goldens dequantise whatever is stored.
# --------------------------------------------------------------------------
def _f16_round(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quantize_q4_k(w: np.ndarray) -> np.ndarray:
    """w: [rows, n] float32 (n % 256 == 0) -> uint8 [rows, n/256*144]."""
    rows, n = w.shape
    x = w.reshape(-1, 8, 32).astype(np.float32)                 # blocks x subblocks x 32
    nb = x.shape[0]
    mn = np.minimum(x.min(axis=-1), 0.0)                        # [nb, 8]
    mx = x.max(axis=-1)
    sub_scale = (mx - mn) / 15.0
    sub_min = -mn                                               # >= 0
    d = _f16_round(sub_scale.max(axis=-1) / 63.0)               # [nb]
    dmin = _f16_round(sub_min.max(axis=-1) / 63.0)
    df, dminf = d.astype(np.float32), dmin.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df[:, None] > 0, np.rint(sub_scale / df[:, None]), 0)
        m = np.where(dminf[:, None] > 0, np.rint(sub_min / dminf[:, None]), 0)
    sc = np.clip(sc, 0, 63).astype(np.uint8)
    m = np.clip(m, 0, 63).astype(np.uint8)
    eff_scale = df[:, None] * sc                                # [nb, 8]
    eff_min = dminf[:, None] * m
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(eff_scale[..., None] > 0,
                     np.rint((x + eff_min[..., None]) / eff_scale[..., None]), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)                      # [nb, 8, 32]

    # 12-byte packed 6-bit scales/mins
    scales = np.zeros((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 0x3F) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    # qs: byte 32*j + l = sub-block 2j (low nibble) | sub-block 2j+1 (high nibble)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(nb, 128)
    blk = np.concatenate([d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8),
                          scales, qs], axis=1)
    return blk.reshape(rows, -1)


def quantize_q6_k(w: np.ndarray) -> np.ndarray:
    """w: [rows, n] float32 (n % 256 == 0) -> uint8 [rows, n/256*210]."""
    rows, n = w.shape
    x = w.reshape(-1, 16, 16).astype(np.float32)                # blocks x groups x 16
    nb = x.shape[0]
    amax_i = np.abs(x).argmax(axis=-1)
    vmax = np.take_along_axis(x, amax_i[..., None], axis=-1)[..., 0]  # signed extreme
    grp_scale = -vmax / 32.0                                    # maps extreme to -32
    d = _f16_round(np.abs(grp_scale).max(axis=-1) / 127.0)
    df = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df[:, None] > 0, np.rint(grp_scale / df[:, None]), 0)
    sc = np.clip(sc, -128, 127).astype(np.int8)
    eff = df[:, None] * sc.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(eff[..., None] != 0, np.rint(x / eff[..., None]), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(nb, 256)

    # element index = h*128 + s*64 + l  -> ql[h*64 + l] nibble s
    qh_src = q.reshape(nb, 2, 4, 32)        # h, k, l  (index h*128 + k*32 + l)
    ql_src = q.reshape(nb, 2, 2, 64)        # h, s, l
    ql = ((ql_src[:, :, 0, :] & 0x0F) | ((ql_src[:, :, 1, :] & 0x0F) << 4)).reshape(nb, 128)
    hi = (qh_src >> 4) & 0x03
    qh = (hi[:, :, 0, :] | (hi[:, :, 1, :] << 2) | (hi[:, :, 2, :] << 4) | (hi[:, :, 3, :] << 6))
    qh = qh.reshape(nb, 64).astype(np.uint8)
    blk = np.concatenate([ql, qh, sc.view(np.uint8), d.reshape(nb, 1).view(np.uint8)], axis=1)
    return blk.reshape(rows, -1)


def encode_tensor(w: np.ndarray, qtype: QT):
    """Return (array, raw_dtype) for GGUFWriter.add_tensor."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == QT.F32:
        return w, None
    if qtype == QT.F16:
        return w.astype(np.float16), None
    if qtype == QT.Q4_K:
        return quantize_q4_k(w), qtype
    if qtype == QT.Q6_K:
        return quantize_q6_k(w), qtype
    return quantize(w, qtype), qtype        # bf16, q8_0, q4_0, q4_1 via gguf-py


# --------------------------------------------------------------------------
# Minimal SentencePiece-style ("llama") vocab
# --------------------------------------------------------------------------
_WORDS = ["the", "a", "and", "to", "of", "in", "is", "it", "was", "on", "he", "she",
          "that", "for", "with", "you", "they", "at", "be", "this", "had", "not",
          "but", "one", "day", "time", "upon", "once", "there", "little", "girl",
          "boy", "big", "red", "cat", "dog"]


def make_spm_vocab(n_vocab: int):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256       # UNKNOWN, CONTROL, CONTROL, BYTE
    normal = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
        ["\u2581" + w for w in _WORDS]
    seen = set(tokens)
    pieces = []
    for p in normal:
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    i = 0
    while len(tokens) + len(pieces) < n_vocab:   # pad with two-letter pieces
        p = chr(ord("a") + i // 26) + chr(ord("a") + i % 26)
        i += 1
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    pieces = pieces[: n_vocab - len(tokens)]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    assert len(tokens) == n_vocab
    return tokens, scores, types


# --------------------------------------------------------------------------
# Model writer
# --------------------------------------------------------------------------
def write_model(path: str, spec: dict, seed: int) -> None:
    arch = spec["arch"]
    n_embd, n_ff, n_layer = spec["n_embd"], spec["n_ff"], spec["n_layer"]
    n_head, n_head_kv, n_vocab = spec["n_head"], spec["n_head_kv"], spec["n_vocab"]
    head_dim = n_embd // n_head
    qtype = DTYPES[spec["dtype"]]
    rng = np.random.default_rng(seed)

    def mat(n_out, n_in, gain=1.0):
        # numpy (n_out, n_in) == GGUF shape [n_in, n_out]
        return (rng.standard_normal((n_out, n_in)) * (gain / np.sqrt(n_in))).astype(np.float32)

    def norm_w(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = GGUFWriter(path, arch)
    w.add_name(spec["name"])
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(spec.get("eps", 1e-5))
    w.add_rope_freq_base(spec.get("rope_base", 10000.0))
    if spec.get("rope_linear"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(spec["rope_linear"])
    w.add_file_type(int(qtype) if qtype in (QT.F32, QT.F16) else 0)  # informational only

    toks, scores, types = make_spm_vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)

    def add2d(name, arr):
        data, raw = encode_tensor(arr, qtype)
        if raw is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=raw)

    # Token embedding: N(0,1) rows (the first RMSNorm normalises them anyway).
    # When tied, the same matrix is the output projection, so scale it like an
    # output weight (gain 2/sqrt(n_embd)) to keep logits O(1).
    emb_scale = 2.0 / np.sqrt(n_embd) if spec.get("tied") else 1.0
    add2d("token_embd.weight", (emb_scale * rng.standard_normal((n_vocab, n_embd))).astype(np.float32))
    for l in range(n_layer):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", norm_w(n_embd))
        # gain 2 on q/k so attention patterns are not uniform
        add2d(p + "attn_q.weight", mat(n_head * head_dim, n_embd, 2.0))
        add2d(p + "attn_k.weight", mat(n_head_kv * head_dim, n_embd, 2.0))
        add2d(p + "attn_v.weight", mat(n_head_kv * head_dim, n_embd))
        if spec.get("qkv_bias"):
            w.add_tensor(p + "attn_q.bias", (0.5 * rng.standard_normal(n_head * head_dim)).astype(np.float32))
            w.add_tensor(p + "attn_k.bias", (0.5 * rng.standard_normal(n_head_kv * head_dim)).astype(np.float32))
            w.add_tensor(p + "attn_v.bias", (0.2 * rng.standard_normal(n_head_kv * head_dim)).astype(np.float32))
        add2d(p + "attn_output.weight", mat(n_embd, n_head * head_dim))
        w.add_tensor(p + "ffn_norm.weight", norm_w(n_embd))
        add2d(p + "ffn_gate.weight", mat(n_ff, n_embd))
        add2d(p + "ffn_up.weight", mat(n_ff, n_embd))
        add2d(p + "ffn_down.weight", mat(n_embd, n_ff))
    w.add_tensor("output_norm.weight", norm_w(n_embd))
    if not spec.get("tied"):
        add2d("output.weight", mat(n_vocab, n_embd, 2.0))

    # RecurFormer hybrid (docs/FORMAT.md): replaced KV groups per layer and random recurrent
    # head parameters (a trained head's values are of this order).
    hybrid = spec.get("hybrid")
    if hybrid is not None:
        group = n_head // n_head_kv
        w.add_uint32("recurformer.version", 1)
        w.add_uint32("recurformer.window", 32)
        if spec.get("delta"):  # delta-rule read-out of every recurrent head (docs/FORMAT.md)
            w.add_string("recurformer.read_out", "delta")
        hrng = np.random.default_rng(seed + 7)
        windows = spec.get("windows", {})  # layer -> {group: W}: window kind instead of recurrent
        winrec = spec.get("winrec", {})    # layer -> {group: W}: window + recurrent
        sinks = spec.get("sinks", {})      # layer -> {group: S}: attention-sink rows of a window group
        for l in range(n_layer):
            groups = sorted(hybrid.get(l, []))
            w.add_array(f"recurformer.blk.{l}.replaced_groups", [int(g) for g in groups] or [])
            wl, wr = windows.get(l, {}), winrec.get(l, {})
            if wl or wr:
                w.add_array(f"recurformer.blk.{l}.group_kinds",
                            [1 if g in wl else 2 if g in wr else 0 for g in groups])
                w.add_array(f"recurformer.blk.{l}.group_windows",
                            [int(wl.get(g, wr.get(g, 0))) for g in groups])
            if sinks.get(l):
                w.add_array(f"recurformer.blk.{l}.group_sinks", [int(sinks[l].get(g, 0)) for g in groups])
            groups = [g for g in groups if g not in wl]  # recurrent and window + recurrent have heads
            if not groups:
                continue
            R = len(groups) * group
            p = f"blk.{l}.rec."
            w.add_tensor(p + "dt_w", (hrng.standard_normal((R, n_embd)) * 0.3 / np.sqrt(n_embd)).astype(np.float32))
            w.add_tensor(p + "dt_b", hrng.uniform(-3.0, 0.0, R).astype(np.float32))
            w.add_tensor(p + "a_log", hrng.uniform(-1.0, 1.0, R).astype(np.float32))
            w.add_tensor(p + "d", (0.5 * hrng.standard_normal((R, head_dim))).astype(np.float32))
            if spec.get("gate"):  # shared-normaliser gate of window + recurrent heads
                # gate_b near the window's log-sum-exp, so g spans (0, 1) rather than saturating.
                w.add_tensor(p + "gate_w", (hrng.standard_normal((R, n_embd)) * 1.0 / np.sqrt(n_embd)).astype(np.float32))
                w.add_tensor(p + "gate_b", hrng.uniform(0.0, 2.0, R).astype(np.float32))
                w.add_tensor(p + "gate_n", hrng.uniform(0.3, 1.2, R).astype(np.float32))
            if spec.get("a_chan"):  # per-channel decay offsets: rows decay up to ~20x faster or slower
                w.add_tensor(p + "a_chan", hrng.uniform(-1.5, 1.5, (R, head_dim)).astype(np.float32))
            if spec.get("proj"):  # trained transforms q' = Mq q etc.: numpy [R, out, in]
                for nm in ("q_proj", "k_proj", "v_proj"):
                    mtx = np.eye(head_dim)[None] + 0.3 * hrng.standard_normal((R, head_dim, head_dim)) / np.sqrt(head_dim)
                    w.add_tensor(p + nm, mtx.astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------
def write_golden(out_dir: str, name: str, gguf_path: str, tokens, n_greedy: int,
                 greedy_prompt=None, extra=None) -> dict:
    m = llama_ref.load_model(gguf_path)
    lg = llama_ref.forward(m, tokens)
    logits_file = f"{name}.logits.f32"
    lg.astype("<f4").tofile(os.path.join(out_dir, logits_file))
    gp = list(tokens) if greedy_prompt is None else list(greedy_prompt)
    gr = llama_ref.greedy(gguf_path, gp, n_greedy)
    # top1 - top2 logit gap at each greedy step: a test should only demand an
    # exact token match while the gap exceeds its logit tolerance.
    lg_g = llama_ref.forward(m, gp + gr[:-1])[len(gp) - 1:]
    srt = np.sort(lg_g, axis=-1)
    margins = [round(float(v), 6) for v in (srt[:, -1] - srt[:, -2])]
    golden = {
        "model": os.path.basename(gguf_path),
        "tokens": [int(t) for t in tokens],
        "n_tokens": len(tokens),
        "n_vocab": int(m.n_vocab),
        "logits": logits_file,
        "logits_dtype": "float32-le",
        "greedy_prompt": [int(t) for t in gp],
        "greedy": [int(t) for t in gr],
        "greedy_margins": margins,
        "reference": "tests/reference/llama_ref.py (float64)",
    }
    if extra:
        golden.update(extra)
    with open(os.path.join(out_dir, f"{name}.golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    return golden


def spm_tokenize(gguf_path: str, text: str) -> list[int]:
    """Tiny SentencePiece-BPE style tokenizer from GGUF vocab/scores (for the
    stories260K golden prompt only): prefix a space, spaces -> U+2581, then
    repeatedly merge the adjacent pair whose concatenation is a vocab piece
    with the highest score (leftmost on ties); unknown chars -> byte tokens."""
    r = gguf.GGUFReader(gguf_path)
    scores = list(r.fields["tokenizer.ggml.scores"].contents())
    vocab = {t: i for i, t in enumerate(r.fields["tokenizer.ggml.tokens"].contents())}
    s = ("\u2581" + text).replace(" ", "\u2581")
    syms = list(s)
    while True:
        best, best_i = None, -1
        for i in range(len(syms) - 1):
            cand = syms[i] + syms[i + 1]
            if cand in vocab:
                sc = scores[vocab[cand]]
                if best is None or sc > best:
                    best, best_i = sc, i
        if best_i < 0:
            break
        syms[best_i: best_i + 2] = [syms[best_i] + syms[best_i + 1]]
    ids = []
    for sym in syms:
        if sym in vocab:
            ids.append(vocab[sym])
        else:
            ids += [vocab[f"<0x{b:02X}>"] for b in sym.encode("utf-8")]
    return ids


MODELS = []
_base = dict(arch="llama", n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_vocab=320)
MODELS.append(dict(_base, name="llama-f32", dtype="f32", n_head_kv=4))
MODELS.append(dict(_base, name="llama-gqa-f32", dtype="f32"))
for _dt in ["f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q6_k"]:
    MODELS.append(dict(_base, name=f"llama-gqa-{_dt}", dtype=_dt))
MODELS.append(dict(_base, name="llama-tied", dtype="f32", tied=True, n_layer=3))
MODELS.append(dict(_base, name="qwen2-gqa-f32", arch="qwen2", dtype="f32", qkv_bias=True,
                   rope_base=1e6, eps=1e-6))
MODELS.append(dict(_base, name="llama-ropescale", dtype="f32", rope_linear=2.0))
# Hybrids of the GQA model: every group of layer 0 recurrent and none of layer 1; and one group
# in each layer. The qwen2 one checks that recurrent heads skip RoPE and keep the q/k biases.
MODELS.append(dict(_base, name="hybrid-mixed", dtype="f32", n_head_kv=2, hybrid={0: [0, 1]}))
MODELS.append(dict(_base, name="hybrid-partial", dtype="f32", n_head_kv=2, hybrid={0: [1], 1: [0]}))
MODELS.append(dict(_base, name="hybrid-trained", dtype="f32", n_head_kv=2, hybrid={0: [1], 1: [0, 1]}, proj=True))
MODELS.append(dict(_base, name="hybrid-window", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [1]},
                   windows={0: {0: 5}, 1: {1: 12}}))
# Window + recurrent groups (kind 2) next to recurrent and window ones, with trained transforms;
# windows shorter than the 32-token prompt, so tokens leave the window inside a batch and from the ring.
MODELS.append(dict(_base, name="hybrid-winrec", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [0, 1]},
                   windows={1: {1: 6}}, winrec={0: {0: 4, 1: 9}, 1: {0: 7}}, proj=True))
MODELS.append(dict(_base, name="qwen2-winrec", arch="qwen2", dtype="f32", n_head_kv=2, qkv_bias=True,
                   rope_base=1e6, eps=1e-6, hybrid={1: [0]}, winrec={1: {0: 5}}))
# Attention sinks (docs/FORMAT.md "Attention sinks"): window and window + recurrent groups that keep
# their first S positions besides the ring. S = 7 > the test's batch of 5, so sink rows come from
# the batch and from storage in the same query; windows shorter than the prompt.
MODELS.append(dict(_base, name="hybrid-sinks", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [0, 1]},
                   windows={0: {0: 5}, 1: {1: 4}}, winrec={0: {1: 4}, 1: {0: 6}},
                   sinks={0: {0: 2, 1: 3}, 1: {0: 1, 1: 7}}, proj=True))
# Window + recurrent with the shared-normaliser gate (docs/FORMAT.md "Window + recurrent"), with
# and without sinks; layer 1 also has a plain recurrent group (its gate rows are unused).
MODELS.append(dict(_base, name="hybrid-gated", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [0, 1]},
                   winrec={0: {0: 4, 1: 9}, 1: {0: 6}}, sinks={0: {1: 2}}, proj=True, gate=True))
# The delta-rule read-out (docs/FORMAT.md "Delta rule") on every kind with recurrent heads: plain
# recurrent groups and gated window + recurrent ones, with sinks and trained transforms.
MODELS.append(dict(_base, name="hybrid-delta", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [0, 1]},
                   winrec={0: {0: 4}, 1: {0: 6}}, sinks={0: {0: 2}}, proj=True, gate=True, delta=True))
# Per-channel decay (docs/FORMAT.md "Per-channel decay") with the additive read-out, on a plain
# recurrent group and a gated window + recurrent one.
MODELS.append(dict(_base, name="hybrid-chan", dtype="f32", n_head_kv=2, hybrid={0: [0, 1], 1: [0, 1]},
                   winrec={0: {0: 4}, 1: {1: 5}}, proj=True, gate=True, a_chan=True))
MODELS.append(dict(_base, name="qwen2-sinks", arch="qwen2", dtype="f32", n_head_kv=2, qkv_bias=True,
                   rope_base=1e6, eps=1e-6, hybrid={1: [0, 1]}, windows={1: {1: 4}}, winrec={1: {0: 5}},
                   sinks={1: {0: 2, 1: 3}}))
MODELS.append(dict(_base, name="qwen2-hybrid", arch="qwen2", dtype="f32", n_head_kv=2, qkv_bias=True,
                   rope_base=1e6, eps=1e-6, hybrid={1: [1]}))


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_stories = os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "models", "stories260K.gguf"))
    if not os.path.exists(default_stories):
        default_stories = "/work/shared/models/stories260K.gguf"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stories", default=default_stories,
                    help="path to stories260K.gguf (skipped if missing)")
    ap.add_argument("--only", default=None, help="comma-separated model names to build")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    manifest = {"generator": "tests/reference/make_test_models.py",
                "gguf_py_version": _gguf_version(), "numpy_version": np.__version__,
                "models": []}
    t_all = time.time()
    for i, spec in enumerate(MODELS):
        if only and spec["name"] not in only:
            continue
        t0 = time.time()
        name = spec["name"]
        path = os.path.join(args.out, f"{name}.gguf")
        # The weights seed depends only on the architecture variant, so e.g.
        # all llama-gqa-* dtypes quantise the SAME underlying float weights
        # (their logits can be compared against llama-gqa-f32).
        seed_key = name.rsplit("-", 1)[0] if name.startswith("llama-gqa-") else name
        write_model(path, spec, seed=_stable_seed(seed_key))
        prng = np.random.default_rng(1234)
        tokens = [BOS] + [int(t) for t in prng.integers(3, spec["n_vocab"], N_PROMPT - 1)]
        g = write_golden(args.out, name, path, tokens, N_GREEDY)
        manifest["models"].append({
            "name": name, "arch": spec["arch"], "dtype": spec["dtype"],
            "gguf": f"{name}.gguf", "golden": f"{name}.golden.json",
            "n_vocab": g["n_vocab"], "n_tokens": g["n_tokens"],
            "n_embd": spec["n_embd"], "n_layer": spec["n_layer"], "n_head": spec["n_head"],
            "n_head_kv": spec["n_head_kv"], "n_ff": spec["n_ff"],
            "tied": bool(spec.get("tied")), "qkv_bias": bool(spec.get("qkv_bias")),
            "rope_base": spec.get("rope_base", 10000.0),
            "rope_linear_factor": spec.get("rope_linear"),
            "same_weights_as": "llama-gqa-f32" if name.startswith("llama-gqa-") else None,
        })
        print(f"{name:18s} {time.time() - t0:6.2f}s")

    if args.stories and os.path.exists(args.stories) and (not only or "stories260K" in only):
        t0 = time.time()
        m = llama_ref.load_model(args.stories)
        prompt = "Once upon a time, there was a little girl"
        ids = spm_tokenize(args.stories, prompt)
        assert llama_ref.detokenize(m, ids) == " " + prompt, ids
        g = write_golden(args.out, "stories260K", args.stories, [BOS] + ids, 40,
                         greedy_prompt=[BOS],
                         extra={"prompt_text": prompt,
                                "model_path_hint": "shared/models/stories260K.gguf"})
        g_text = llama_ref.detokenize(m, g["greedy"])
        with open(os.path.join(args.out, "stories260K.golden.json")) as f:
            gj = json.load(f)
        gj["greedy_text"] = g_text
        with open(os.path.join(args.out, "stories260K.golden.json"), "w") as f:
            json.dump(gj, f, indent=1)
        manifest["models"].append({
            "name": "stories260K", "arch": "llama", "dtype": "f32",
            "gguf": None, "gguf_external": "shared/models/stories260K.gguf",
            "golden": "stories260K.golden.json", "n_vocab": g["n_vocab"], "n_tokens": g["n_tokens"],
        })
        print(f"{'stories260K':18s} {time.time() - t0:6.2f}s  greedy: {g_text!r}")

    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"total {time.time() - t_all:.2f}s -> {args.out}")
    return 0


def _stable_seed(s: str) -> int:
    h = 0
    for ch in s.encode():
        h = (h * 131 + ch) % (2 ** 31)
    return h


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
