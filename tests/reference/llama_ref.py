#!/usr/bin/env python3
"""Independent numpy reference forward pass for GGUF `llama` / `qwen2` models.

Written from the GGUF / ggml conventions only (not from RecurDesk's C++ code).
All arithmetic is float64: every tensor is dequantised with gguf-py
(gguf.quants.dequantize) and then promoted to float64.

Conventions
-----------
* GGUF shapes list ne[0] first; ne[0] is the *input* dimension.  A weight of
  GGUF shape [n_in, n_out] therefore arrives from GGUFReader as a numpy array
  of shape (n_out, n_in) and is applied as  y = W @ x  (here: X @ W.T).
* RoPE: `llama` files use ggml "normal" mode (the converter has permuted Q/K
  rows), i.e. the rotated pairs are (2i, 2i+1).  `qwen2` uses "NeoX" mode:
  pairs (i, i + n_rot/2).  theta_i = pos * freq_base^(-2i/n_rot), with
  n_rot = `{arch}.rope.dimension_count` (default head_dim); dimensions of a
  head beyond n_rot are left unrotated.  Linear rope scaling
  (`{arch}.rope.scaling.type` == "linear") divides positions by the factor.

API:  logits(path, tokens) -> np.ndarray [n_tokens, n_vocab] (float64)
CLI:  python llama_ref.py MODEL.gguf --tokens 1,2,3 [--greedy N]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

# ggml rope modes
ROPE_NORMAL = 0
ROPE_NEOX = 2


# --------------------------------------------------------------------------
# GGUF loading
# --------------------------------------------------------------------------
def _field_value(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return default if v is None else v


@dataclass
class Model:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    rms_eps: float
    rope_base: float
    rope_dim: int
    rope_mode: int
    rope_pos_scale: float  # positions are multiplied by this (1/linear factor)
    tensors: dict = field(default_factory=dict)  # name -> float64 ndarray
    tokens: list | None = None  # vocab strings, if present
    bos_id: int | None = None
    eos_id: int | None = None
    tokenizer_model: str | None = None
    # RecurFormer hybrid: layer -> replaced KV groups (ascending); empty for a plain model
    replaced: dict = field(default_factory=dict)
    # layer -> {group: W} for groups served by exact attention over the last W tokens
    # (kinds window and window + recurrent)
    windows: dict = field(default_factory=dict)
    # layer -> groups with recurrent heads (kinds recurrent and window + recurrent), ascending:
    # the index into the blk.N.rec.* tensors
    rec_groups: dict = field(default_factory=dict)
    # layer -> {group: S}: window groups that also keep positions 0..S-1 (attention sinks)
    sinks: dict = field(default_factory=dict)
    # recurformer.read_out = "delta": the recurrent heads use the delta rule (docs/FORMAT.md)
    delta: bool = False

    def w(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def has(self, name: str) -> bool:
        return name in self.tensors


def tensor_to_f64(t) -> np.ndarray:
    """Dequantise one ReaderTensor into a float64 numpy array.

    The result has the numpy shape of the reversed GGUF shape, i.e. for a 2-D
    tensor (ne[1], ne[0]) = (n_out, n_in)."""
    qtype = GGMLQuantizationType(int(t.tensor_type))
    arr = dequantize(np.asarray(t.data), qtype)
    shape = tuple(int(x) for x in reversed([int(s) for s in t.shape]))
    return np.asarray(arr, dtype=np.float64).reshape(shape)


_MODEL_CACHE: dict[str, Model] = {}


def load_model(path: str, use_cache: bool = True) -> Model:
    if use_cache and path in _MODEL_CACHE:
        return _MODEL_CACHE[path]
    r = GGUFReader(path)
    arch = _field_value(r, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"unsupported architecture {arch!r}")

    def kv(suffix, default=None):
        return _field_value(r, f"{arch}.{suffix}", default)

    tensors = {t.name: tensor_to_f64(t) for t in r.tensors}

    n_embd = int(kv("embedding_length"))
    n_head = int(kv("attention.head_count"))
    n_head_kv = int(kv("attention.head_count_kv", n_head))
    head_dim = n_embd // n_head
    # key_length may override head_dim (not used by our targets, but honour it)
    head_dim = int(kv("attention.key_length", head_dim))
    rope_dim = int(kv("rope.dimension_count", head_dim))

    scale_type = kv("rope.scaling.type")
    pos_scale = 1.0
    if scale_type == "linear":
        factor = float(kv("rope.scaling.factor", 1.0))
        if factor > 0:
            pos_scale = 1.0 / factor
    elif scale_type not in (None, "none"):
        raise ValueError(f"unsupported rope scaling type {scale_type!r}")

    n_vocab = tensors["token_embd.weight"].shape[0]
    toks = _field_value(r, "tokenizer.ggml.tokens")
    m = Model(
        arch=arch,
        n_embd=n_embd,
        n_layer=int(kv("block_count")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=int(kv("feed_forward_length")),
        n_vocab=n_vocab,
        rms_eps=float(kv("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(kv("rope.freq_base", 10000.0)),
        rope_dim=rope_dim,
        rope_mode=ROPE_NEOX if arch == "qwen2" else ROPE_NORMAL,
        rope_pos_scale=pos_scale,
        tensors=tensors,
        tokens=list(toks) if toks is not None else None,
        bos_id=_field_value(r, "tokenizer.ggml.bos_token_id"),
        eos_id=_field_value(r, "tokenizer.ggml.eos_token_id"),
        tokenizer_model=_field_value(r, "tokenizer.ggml.model"),
    )
    if _field_value(r, "recurformer.version"):
        m.delta = _field_value(r, "recurformer.read_out") == "delta"
        for l in range(m.n_layer):
            groups = _field_value(r, f"recurformer.blk.{l}.replaced_groups")
            if groups:
                kinds = _field_value(r, f"recurformer.blk.{l}.group_kinds") or [0] * len(groups)
                wins = _field_value(r, f"recurformer.blk.{l}.group_windows") or [0] * len(groups)
                m.replaced[l] = [int(g) for g, k in zip(groups, kinds) if int(k) == 0]
                m.windows[l] = {int(g): int(w) for g, k, w in zip(groups, kinds, wins) if int(k) in (1, 2)}
                m.rec_groups[l] = [int(g) for g, k in zip(groups, kinds) if int(k) in (0, 2)]
                sk = _field_value(r, f"recurformer.blk.{l}.group_sinks") or [0] * len(groups)
                m.sinks[l] = {int(g): int(s) for g, s in zip(groups, sk) if int(s) > 0}
    if use_cache:
        _MODEL_CACHE[path] = m
    return m


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: [T, D]; normalise each row by its RMS then scale by weight."""
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * weight


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x: [T, n_in], w: [n_out, n_in] -> [T, n_out]."""
    y = x @ w.T
    if b is not None:
        y = y + b
    return y


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rope(x: np.ndarray, positions: np.ndarray, m: Model) -> np.ndarray:
    """Rotate x: [T, n_heads, head_dim] by position.

    normal mode: pairs (2i, 2i+1);  neox mode: pairs (i, i + n_rot/2).
    Only the first n_rot dims of each head are rotated."""
    n_rot = m.rope_dim
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = m.rope_base ** (-2.0 * i / n_rot)                    # [half]
    pos = positions.astype(np.float64) * m.rope_pos_scale            # [T]
    theta = pos[:, None] * inv_freq[None, :]                         # [T, half]
    cos = np.cos(theta)[:, None, :]                                  # [T, 1, half]
    sin = np.sin(theta)[:, None, :]

    out = x.copy()
    if m.rope_mode == ROPE_NORMAL:
        a = x[..., 0:n_rot:2]
        b = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = a * cos - b * sin
        out[..., 1:n_rot:2] = a * sin + b * cos
    else:
        a = x[..., 0:half]
        b = x[..., half:n_rot]
        out[..., 0:half] = a * cos - b * sin
        out[..., half:n_rot] = a * sin + b * cos
    return out


def recurrent_head(q, k, v, xn, dt_w, dt_b, a_log, d, delta=False, a_chan=None):
    """The RecurFormer recurrent head (DESIGN §3), sequentially, float64.

    q, k, v: [T, hd] (no RoPE); xn: [T, n_embd] the attention-normed layer input.
      dt_t = softplus(dt_w . xn_t + dt_b);  a_t = exp(-dt_t * exp(a_log))
      S_t  = a_t S_{t-1} + dt_t k_t v_t^T    (S: [hd, hd], S_{-1} = 0)
      y_t  = S_t^T q_t / sqrt(hd) + d * v_t
    delta: the delta rule instead of the additive update (docs/FORMAT.md "Delta rule"):
      S_t = a_t (I - beta_t kh_t kh_t^T) S_{t-1} + beta_t kh_t v_t^T,
      kh_t = k_t / sqrt(|k_t|^2 + 1e-6),  beta_t = 1 - exp(-dt_t)
    a_chan: per-channel decay offsets [hd] (docs/FORMAT.md "Per-channel decay"): row r of S decays
      by exp(-dt_t * exp(a_log + a_chan[r])), i.e. a_t becomes the diagonal matrix D_t in
      S_t = D_t S_{t-1} + ... (additive) and S_t = D_t (I - beta kh kh^T) S_{t-1} + ... (delta)"""
    T, hd = q.shape
    z = xn @ dt_w + dt_b
    dt = np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20))))
    rates = np.exp(a_log + (np.zeros(hd) if a_chan is None else a_chan))
    a = np.exp(-dt[:, None] * rates[None, :])  # [T, hd]: the decay of each row of S
    S = np.zeros((hd, hd))
    y = np.empty((T, hd))
    for t in range(T):
        if delta:
            kh = k[t] / np.sqrt(k[t] @ k[t] + 1e-6)
            beta = 1.0 - np.exp(-dt[t])
            S = np.diag(a[t]) @ (np.eye(hd) - beta * np.outer(kh, kh)) @ S + beta * np.outer(kh, v[t])
        else:
            S = np.diag(a[t]) @ S + dt[t] * np.outer(k[t], v[t])
        y[t] = S.T @ q[t] / np.sqrt(hd) + d * v[t]
    return y


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head_kv: int, windows=None, sinks=None,
              lse_out=None) -> np.ndarray:
    """Causal softmax attention with GQA; windows {kv_group: W} limit a group to the last W keys,
    and sinks {kv_group: S} give such a group keys 0..S-1 as well (attention sinks).

    q: [T, n_head, hd], k/v: [T, n_head_kv, hd] -> [T, n_head*hd]
    lse_out: optional [T, n_head] array that receives each query's log-sum-exp of its scores."""
    T, n_head, hd = q.shape
    group = n_head // n_head_kv  # query heads per kv head
    scale = 1.0 / np.sqrt(hd)
    idx = np.arange(T)
    for h in range(n_head):
        kvh = h // group
        W = (windows or {}).get(kvh)
        mask = idx[None, :] > idx[:, None]                      # True = future (masked)
        if W:
            S = (sinks or {}).get(kvh, 0)
            old = (idx[None, :] <= idx[:, None] - W) & (idx[None, :] >= S)  # older than the window, not a sink
            mask = mask | old
        if h == 0:
            out = np.empty_like(q)
        s = (q[:, h, :] @ k[:, kvh, :].T) * scale     # [T, T]
        s = np.where(mask, -np.inf, s)
        mx = s.max(axis=-1, keepdims=True)
        s = s - mx
        p = np.exp(s)
        if lse_out is not None:
            lse_out[:, h] = mx[:, 0] + np.log(p.sum(axis=-1))
        p /= p.sum(axis=-1, keepdims=True)
        out[:, h, :] = p @ v[:, kvh, :]
    return out.reshape(T, n_head * hd)


# --------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------
def forward(m: Model, tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    if T == 0:
        return np.zeros((0, m.n_vocab))
    if tokens.min() < 0 or tokens.max() >= m.n_vocab:
        raise ValueError("token id out of range")
    positions = np.arange(T)
    x = m.w("token_embd.weight")[tokens].copy()          # [T, n_embd]
    hd = m.head_dim

    def opt(name):
        return m.tensors.get(name)

    for l in range(m.n_layer):
        p = f"blk.{l}."
        # --- attention ---
        h = rms_norm(x, m.w(p + "attn_norm.weight"), m.rms_eps)
        q = linear(h, m.w(p + "attn_q.weight"), opt(p + "attn_q.bias"))
        k = linear(h, m.w(p + "attn_k.weight"), opt(p + "attn_k.bias"))
        v = linear(h, m.w(p + "attn_v.weight"), opt(p + "attn_v.bias"))
        q_raw, k_raw = q.reshape(T, m.n_head, hd), k.reshape(T, m.n_head_kv, hd)
        q = rope(q_raw, positions, m)
        k = rope(k_raw, positions, m)
        v = v.reshape(T, m.n_head_kv, hd)
        lse = np.empty((T, m.n_head))
        a = attention(q, k, v, m.n_head_kv, m.windows.get(l), m.sinks.get(l), lse).reshape(T, m.n_head, hd)
        # Hybrid: the query heads of replaced groups are recurrent heads on the unrotated q/k.
        group = m.n_head // m.n_head_kv
        rec_groups = m.rec_groups.get(l, m.replaced.get(l, []))
        for r, (g, j) in enumerate((g, j) for g in rec_groups for j in range(group)):
            head = g * group + j
            qh, kh, vh = q_raw[:, head, :], k_raw[:, g, :], v[:, g, :]
            if m.has(p + "rec.q_proj"):   # trained per-head transforms, [R, out, in]
                qh = qh @ m.w(p + "rec.q_proj")[r].T
                kh = kh @ m.w(p + "rec.k_proj")[r].T
                vh = vh @ m.w(p + "rec.v_proj")[r].T
            args = (m.w(p + "rec.dt_w")[r], m.w(p + "rec.dt_b")[r], m.w(p + "rec.a_log")[r], m.w(p + "rec.d")[r],
                    m.delta, m.w(p + "rec.a_chan")[r] if m.has(p + "rec.a_chan") else None)
            W = m.windows.get(l, {}).get(g)
            if W:
                # Window + recurrent: the window's softmax output is already in a[:, head]; token
                # e enters the recurrent state when it leaves the window, at query t = e + W, so
                # the head runs over the evicted stream (k, v, xn of e) with the evicting query's q.
                # Sink tokens 0..S-1 never leave the window: the evicted stream starts at e = S.
                S = m.sinks.get(l, {}).get(g, 0)
                if T > W + S:
                    r_out = recurrent_head(qh[W + S:], kh[S:T - W], vh[S:T - W], h[S:T - W], *args)
                    if m.has(p + "rec.gate_w"):
                        # Shared normaliser: the read-out stands for the mass outside the window,
                        # g = sigmoid(gate_w . xn_t + gate_b + gate_n log(n_out_t) - lse_window_t)
                        # of it, n_out_t = t - W - S + 1 tokens having left the window at t.
                        n_out = np.arange(W + S, T) - W - S + 1
                        z = (h[W + S:] @ m.w(p + "rec.gate_w")[r] + m.w(p + "rec.gate_b")[r]
                             + m.w(p + "rec.gate_n")[r] * np.log(n_out) - lse[W + S:, head])
                        gate = (1.0 / (1.0 + np.exp(-z)))[:, None]
                        a[W + S:, head, :] = (1.0 - gate) * a[W + S:, head, :] + gate * r_out
                    else:
                        a[W + S:, head, :] += r_out
            else:
                a[:, head, :] = recurrent_head(qh, kh, vh, h, *args)
        a = a.reshape(T, m.n_head * hd)
        x = x + linear(a, m.w(p + "attn_output.weight"), opt(p + "attn_output.bias"))
        # --- SwiGLU FFN ---
        h = rms_norm(x, m.w(p + "ffn_norm.weight"), m.rms_eps)
        g = linear(h, m.w(p + "ffn_gate.weight"))
        u = linear(h, m.w(p + "ffn_up.weight"))
        x = x + linear(silu(g) * u, m.w(p + "ffn_down.weight"))

    x = rms_norm(x, m.w("output_norm.weight"), m.rms_eps)
    out_w = m.tensors.get("output.weight")
    if out_w is None:
        out_w = m.w("token_embd.weight")                  # tied embeddings
    return linear(x, out_w)                               # [T, n_vocab]


def logits(path: str, tokens) -> np.ndarray:
    """Logits (float64) for every position: shape [n_tokens, n_vocab]."""
    return forward(load_model(path), tokens)


def greedy(path: str, tokens, n: int, stop_at_eos: bool = False) -> list[int]:
    """Greedy continuation of n tokens (full recompute each step)."""
    m = load_model(path)
    seq = list(tokens)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(forward(m, seq)[-1]))
        out.append(nxt)
        seq.append(nxt)
        if stop_at_eos and m.eos_id is not None and nxt == m.eos_id:
            break
    return out


# --------------------------------------------------------------------------
# Minimal detokeniser (for checking, not a tokenizer implementation)
# --------------------------------------------------------------------------
def _gpt2_byte_decoder() -> dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def detokenize(m: Model, ids) -> str:
    if m.tokens is None:
        return " ".join(str(i) for i in ids)
    buf = bytearray()
    if m.tokenizer_model == "gpt2":
        dec = _gpt2_byte_decoder()
        for i in ids:
            for ch in m.tokens[i]:
                if ch in dec:
                    buf.append(dec[ch])
                else:
                    buf += ch.encode("utf-8")
        return buf.decode("utf-8", errors="replace")
    for i in ids:
        piece = m.tokens[i]
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            buf.append(int(piece[3:5], 16))
        elif piece in ("<s>", "</s>", "<unk>"):
            continue
        else:
            buf += piece.replace("\u2581", " ").encode("utf-8")
    return buf.decode("utf-8", errors="replace")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", default=None, help="comma-separated token ids (default: BOS)")
    ap.add_argument("--greedy", type=int, default=0, help="generate N greedy tokens")
    ap.add_argument("--top", type=int, default=5, help="top-k to print for the last position")
    args = ap.parse_args(argv)

    m = load_model(args.model)
    if args.tokens:
        toks = [int(t) for t in args.tokens.split(",") if t.strip()]
    else:
        toks = [m.bos_id if m.bos_id is not None else 1]
    print(f"arch={m.arch} n_embd={m.n_embd} n_layer={m.n_layer} n_head={m.n_head} "
          f"n_head_kv={m.n_head_kv} head_dim={m.head_dim} n_ff={m.n_ff} n_vocab={m.n_vocab} "
          f"rope_dim={m.rope_dim} rope_base={m.rope_base} pos_scale={m.rope_pos_scale} "
          f"eps={m.rms_eps}")
    lg = forward(m, toks)
    print(f"tokens={toks}")
    print(f"logits shape={lg.shape} mean={lg.mean():.6f} std={lg.std():.6f} "
          f"min={lg.min():.6f} max={lg.max():.6f}")
    last = lg[-1]
    top = np.argsort(-last)[: args.top]
    print("last position top: " + ", ".join(f"{int(i)}:{last[i]:.5f}" for i in top))
    print("last position first 8 logits: " + " ".join(f"{v:.6f}" for v in last[:8]))
    if args.greedy > 0:
        ids = greedy(args.model, toks, args.greedy)
        print(f"greedy ids: {','.join(str(i) for i in ids)}")
        print(f"greedy text: {detokenize(m, ids)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
