#!/usr/bin/env python3
"""Recency statistics reference (DESIGN §4) that materialises every attention matrix.

For each layer and query head, with causal weights a_ij of the model's own forward pass:
  recency(k) = sum_{i-k < j <= i} a_ij, sink = a_i0, hist[b] = mass at distance d = i-j in bin b
  ({0}, {1}, [2,3], [4,7], ...), averaged over query positions i >= k; and copy = the sum of a_ij
  for a few positions i >= k with a copy target t(i) < i (in the JSON: copy_positions, copy_keys),
  averaged over those positions (a target is a key range [lo, hi), in the JSON copy_keys and
  copy_key_ends).
Written from the definition, independently of the engine. Reuses llama_ref's layers.

Usage: recency_ref.py --out DIR  (writes NAME.recency.json for a few models, 512 tokens each)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402


def bin_of(d: np.ndarray) -> np.ndarray:
    """0 for d = 0, else the bit length of d."""
    out = np.zeros_like(d)
    nz = d > 0
    out[nz] = np.floor(np.log2(d[nz])).astype(d.dtype) + 1
    return out


def recency_stats(path: str, tokens, window: int, n_bins: int) -> dict:
    m = ref.load_model(path)
    T = len(tokens)
    positions = np.arange(T)
    x = m.w("token_embd.weight")[np.asarray(tokens)].copy()
    hd, group = m.head_dim, m.n_head // m.n_head_kv
    dist = positions[:, None] - positions[None, :]            # [T, T] i - j
    causal = dist >= 0
    bins = np.where(causal, bin_of(np.maximum(dist, 0)), -1)
    rows = positions >= window                                 # queries that count
    # Copy targets: every third counted position, keys [lo, hi) starting 1 to 97 tokens back,
    # 1 to 6 keys long (clipped to the keys the query sees: j <= i).
    targets = []
    for i in range(window, T):
        lo = i - 1 - (i * 7) % 97
        if i % 3 == 0 and lo >= 0:
            targets.append((i, lo, lo + 1 + (i % 6)))
    in_target = np.zeros((T, T), dtype=bool)
    for i, lo, hi in targets:
        in_target[i, lo:min(hi, i + 1)] = True
    t_rows = np.array([i for i, _, _ in targets])
    layers = []
    for l in range(m.n_layer):
        p = f"blk.{l}."
        h = ref.rms_norm(x, m.w(p + "attn_norm.weight"), m.rms_eps)
        q = ref.linear(h, m.w(p + "attn_q.weight"), m.tensors.get(p + "attn_q.bias"))
        k = ref.linear(h, m.w(p + "attn_k.weight"), m.tensors.get(p + "attn_k.bias"))
        v = ref.linear(h, m.w(p + "attn_v.weight"), m.tensors.get(p + "attn_v.bias"))
        q = ref.rope(q.reshape(T, m.n_head, hd), positions, m)
        k = ref.rope(k.reshape(T, m.n_head_kv, hd), positions, m)
        v = v.reshape(T, m.n_head_kv, hd)
        heads = []
        out = np.empty_like(q)
        for hh in range(m.n_head):
            kvh = hh // group
            s = (q[:, hh, :] @ k[:, kvh, :].T) / np.sqrt(hd)
            s = np.where(causal, s, -np.inf)
            a = np.exp(s - s.max(axis=-1, keepdims=True))
            a /= a.sum(axis=-1, keepdims=True)                 # the full attention matrix [T, T]
            out[:, hh, :] = a @ v[:, kvh, :]
            ar = a[rows]
            rec = np.where((dist[rows] >= 0) & (dist[rows] < window), ar, 0).sum(axis=1).mean()
            sink = ar[:, 0].mean()
            hist = [float(np.where(bins[rows] == b, ar, 0).sum(axis=1).mean()) for b in range(n_bins)]
            copy = float(np.where(in_target, a, 0).sum(axis=1)[t_rows].mean())
            heads.append({"head": hh, "group": kvh, "recency": float(rec), "sink": float(sink), "hist": hist,
                          "copy": copy})
        layers.append({"layer": l, "heads": heads})
        x = x + ref.linear(out.reshape(T, m.n_head * hd), m.w(p + "attn_output.weight"))
        h = ref.rms_norm(x, m.w(p + "ffn_norm.weight"), m.rms_eps)
        x = x + ref.linear(ref.silu(ref.linear(h, m.w(p + "ffn_gate.weight"))) * ref.linear(h, m.w(p + "ffn_up.weight")),
                           m.w(p + "ffn_down.weight"))
    return {"window": window, "n_bins": n_bins, "tokens": [int(t) for t in tokens],
            "copy_positions": [int(i) for i, _, _ in targets], "copy_keys": [int(lo) for _, lo, _ in targets],
            "copy_key_ends": [int(hi) for _, _, hi in targets],
            "layers": layers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    models = {
        "stories260K": os.path.join(args.shared, "models", "stories260K.gguf"),
        "llama-gqa-f32": os.path.join(args.out, "llama-gqa-f32.gguf"),
        "qwen2-gqa-f32": os.path.join(args.out, "qwen2-gqa-f32.gguf"),
    }
    rng = np.random.default_rng(2024)
    for name, path in models.items():
        if not os.path.exists(path):
            print(f"recency_ref: {path} missing", file=sys.stderr)
            return 1
        n_vocab = ref.load_model(path).n_vocab
        tokens = [1] + list(rng.integers(3, n_vocab, size=511))
        stats = recency_stats(path, tokens, window=32, n_bins=11)  # bins up to distance 1023
        with open(os.path.join(args.out, f"{name}.recency.json"), "w") as f:
            json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
