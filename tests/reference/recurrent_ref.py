#!/usr/bin/env python3
"""float64 numpy reference of the RecurFormer recurrent head (DESIGN.md §3, recurrent_head.h).

Written from the recurrence, not from the C++ code:
    dt_t = softplus(dt_w · xn_t + dt_b)
    a_t  = exp(-dt_t * exp(a_log))
    S_t  = a_t S_{t-1} + dt_t k_t v_tᵀ          S: (hd, hd), row = k dim, column = v dim
    y_t  = S_tᵀ q_t / sqrt(hd) + d ⊙ v_t

Writes tests/unit/data/recurrent_golden.bin (little-endian), read by tests/unit/test_recurrent_head.cpp:
  header  b"RRH1", u32 hd, u32 n_embd, u32 n_tokens
  inputs  stored as bfloat16 (u16 each; the float64 reference uses exactly those values, so the
          file stays < 300 KB):
            xn [T][n_embd], dt_w [n_embd], dt_b, a_log, d [hd], q [T][hd], k [T][hd], v [T][hd], state0 [hd][hd]
  outputs float32 (rounded from float64): dt [T], y [T][hd], state [hd][hd]
Run: python3 tests/reference/recurrent_ref.py [--out PATH] [--check] (deterministic: fixed seed).
--delta writes tests/unit/data/recurrent_delta_golden.bin (magic b"RRD1", same layout) for the
delta-rule read-out instead (recurrent_head_weights::delta_rule):
    k̂_t = k_t / sqrt(‖k_t‖² + 1e-6),  β_t = 1 − exp(−dt_t)
    S_t = a_t (I − β_t k̂_t k̂_tᵀ) S_{t-1} + β_t k̂_t v_tᵀ
    y_t = S_tᵀ q_t / sqrt(hd) + d ⊙ v_t
--check also runs the chunked (SSD) form in float64 and prints its difference from the sequential one.
"""
import argparse
import os
import struct

import numpy as np


def softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def compute_dt(xn, dt_w, dt_b):
    """xn: (T, n_embd) -> dt: (T,)"""
    return softplus(xn @ dt_w + dt_b)


def scan(q, k, v, dt, a_log, d, state0, delta=False, eps=1e-6):
    """Sequential recurrence. q, k, v: (T, hd); dt: (T,); d: (hd,); state0: (hd, hd).
    delta: the delta rule, with the projector (I - beta kh kh^T) formed as a matrix.
    Returns y: (T, hd) and the final state (hd, hd)."""
    T, hd = q.shape
    scale = 1.0 / np.sqrt(hd)
    A = np.exp(a_log)
    S = state0.astype(np.float64).copy()
    y = np.empty((T, hd))
    for t in range(T):
        a = np.exp(-dt[t] * A)
        if delta:
            beta = 1.0 - np.exp(-dt[t])
            kh = k[t] / np.sqrt(k[t] @ k[t] + eps)
            S = a * (np.eye(hd) - beta * np.outer(kh, kh)) @ S + beta * np.outer(kh, v[t])
        else:
            S = a * S + dt[t] * np.outer(k[t], v[t])
        y[t] = scale * (S.T @ q[t]) + d * v[t]
    return y, S


def scan_chunked(q, k, v, dt, a_log, d, state0, chunk):
    """The SSD block form, as a check of its algebra: inside a chunk,
    y = scale·diag(exp(seg(i,-1)))·Q·S + (scale·exp(seg(i,j))·dt_j·[j<=i] ⊙ Q·Kᵀ)·V + d ⊙ V,
    S <- exp(seg(L-1,-1))·S + Σ_j exp(seg(L-1,j))·dt_j k_j v_jᵀ, with seg(i,j) = Σ_{j<m<=i} la_m."""
    T, hd = q.shape
    scale = 1.0 / np.sqrt(hd)
    la = -dt * np.exp(a_log)
    S = state0.astype(np.float64).copy()
    y = np.empty((T, hd))
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(T, c0 + chunk))
        Q, K, V, lc, dc = q[sl], k[sl], v[sl], la[sl], dt[sl]
        n = len(lc)
        # seg[i, j] = Σ_{j<m<=i} la_m as a masked sum (no differences of cumulative sums).
        seg = np.full((n, n), -np.inf)
        for i in range(n):
            for j in range(i + 1):
                seg[i, j] = lc[j + 1:i + 1].sum()
        W = scale * np.exp(seg) * dc[None, :] * (Q @ K.T)
        y[sl] = scale * np.exp(np.cumsum(lc))[:, None] * (Q @ S) + W @ V + d[None, :] * V
        tail = np.array([lc[j + 1:].sum() for j in range(n)])
        S = np.exp(lc.sum()) * S + (K * (np.exp(tail) * dc)[:, None]).T @ V
    return y, S


def to_bf16(x):
    """Round float64 -> bfloat16 (round to nearest even), returned as (u16 bits, float64 values)."""
    f = np.asarray(x, dtype=np.float32).reshape(-1)
    u = f.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    back = (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return u, back.reshape(np.shape(x))


def make_case(rng, hd, n_embd, T):
    """Seeded inputs with a non-zero initial state and decays ~exp(-0.06) (memory of ~16 tokens)."""
    case = {
        "xn": rng.standard_normal((T, n_embd)),
        "dt_w": rng.standard_normal(n_embd) * (0.5 / np.sqrt(n_embd)),
        "dt_b": np.array(-2.0),
        "a_log": np.array(np.log(0.5)),
        "d": rng.standard_normal(hd) * 0.5,
        "q": rng.standard_normal((T, hd)),
        "k": rng.standard_normal((T, hd)),
        "v": rng.standard_normal((T, hd)),
        "state0": rng.standard_normal((hd, hd)) * 0.5,
    }
    bits = {}
    for name, x in case.items():
        bits[name], case[name] = to_bf16(x)
    return case, bits


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "unit", "data", "recurrent_golden.bin"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--delta", action="store_true")
    args = ap.parse_args()
    if args.delta and args.out == ap.get_default("out"):
        args.out = os.path.join(here, "..", "unit", "data", "recurrent_delta_golden.bin")

    hd, n_embd, T = 64, 96, 200
    rng = np.random.default_rng(20250301)
    c, bits = make_case(rng, hd, n_embd, T)
    dt = compute_dt(c["xn"], c["dt_w"], float(c["dt_b"]))
    y, S = scan(c["q"], c["k"], c["v"], dt, float(c["a_log"]), c["d"], c["state0"], delta=args.delta)

    if args.check and not args.delta:
        for chunk in (1, 16, 64, 100):
            yc, Sc = scan_chunked(c["q"], c["k"], c["v"], dt, float(c["a_log"]), c["d"], c["state0"], chunk)
            print(f"chunk {chunk}: max|y diff| {np.abs(yc - y).max():.3e}  max|S diff| {np.abs(Sc - S).max():.3e}")
        print(f"dt range {dt.min():.4f}..{dt.max():.4f}, max|y| {np.abs(y).max():.3f}, max|S| {np.abs(S).max():.3f}")

    with open(args.out, "wb") as f:
        f.write((b"RRD1" if args.delta else b"RRH1") + struct.pack("<3I", hd, n_embd, T))
        for name in ("xn", "dt_w", "dt_b", "a_log", "d", "q", "k", "v", "state0"):
            f.write(bits[name].astype("<u2").tobytes())
        for arr in (dt, y, S):
            f.write(np.asarray(arr, dtype="<f4").tobytes())
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
