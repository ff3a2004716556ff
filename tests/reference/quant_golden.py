#!/usr/bin/env python3
"""Golden data for tests/unit/test_quants.cpp, from an independent implementation: gguf-py.

Writes tests/unit/data/quant_golden.bin (little-endian):
  header   b"RQG1", u32 record_count
  record   u32 kind, u32 ggml_type, u32 n_elems, u32 n_bytes, then
             kind 0 (dequantize): n_bytes raw blocks, n_elems float32 = gguf.quants.dequantize(blocks)
             kind 1 (quantize):   n_elems float32 input, n_bytes = gguf.quants.quantize(input)
The blocks are random bytes with sane fp16 scales, so every bit of the layout is exercised.
Run: python3 tests/reference/quant_golden.py [--out PATH] (deterministic: fixed seed).
"""
import argparse
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20240611)


def f16_scales(count):
    """Random fp16 scales with random sign, magnitudes 2^-12 .. 2^2 (no inf/NaN)."""
    mag = np.exp2(rng.uniform(-12, 2, count)) * rng.choice([-1.0, 1.0], count)
    return mag.astype(np.float16).view(np.uint8).reshape(count, 2)


def random_blocks(qtype, nblocks):
    """Random bytes of the type's layout with the fp16 scale fields replaced by sane values."""
    _, type_size = quants.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    if qtype in (T.Q4_0, T.Q8_0):
        b[:, 0:2] = f16_scales(nblocks)  # d
    elif qtype == T.Q4_1:
        b[:, 0:2] = f16_scales(nblocks)  # d
        b[:, 2:4] = f16_scales(nblocks)  # m
    elif qtype == T.Q4_K:
        b[:, 0:2] = f16_scales(nblocks)  # d
        b[:, 2:4] = f16_scales(nblocks)  # dmin
    elif qtype == T.Q6_K:
        b[:, 208:210] = f16_scales(nblocks)  # d is the last field
    return b


def f16_bit_patterns(count):
    """All kinds of halves except NaN (NaN payload handling is checked separately)."""
    bits = rng.integers(0, 0x10000, size=count, dtype=np.uint32)
    bits = bits[((bits & 0x7C00) != 0x7C00) | ((bits & 0x03FF) == 0)]  # drop NaNs, keep inf
    special = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                        0x3C00, 0x3555], dtype=np.uint32)
    return np.concatenate([special, bits]).astype(np.uint16)


def bf16_bit_patterns(count):
    bits = rng.integers(0, 0x10000, size=count, dtype=np.uint32)
    bits = bits[((bits & 0x7F80) != 0x7F80) | ((bits & 0x007F) == 0)]
    special = np.array([0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0x7F80, 0xFF80, 0x3F80],
                       dtype=np.uint32)
    return np.concatenate([special, bits]).astype(np.uint16)


def float_inputs(nblocks, block):
    """Activations/weights-like float32 rows: varied scales per block, some degenerate blocks."""
    x = rng.standard_normal((nblocks, block)).astype(np.float32)
    x *= np.exp2(rng.uniform(-8, 4, (nblocks, 1))).astype(np.float32)
    x[0] = 0.0                     # all-zero block
    x[1] = np.float32(0.75)        # constant block
    x[2] = np.abs(x[2])            # all positive
    x[3] = -np.abs(x[3])           # all negative
    return x.reshape(-1)


def f16_ties(count):
    """Float32 values exactly halfway between neighbouring halves (normal and subnormal)."""
    h = rng.integers(0, 0x7BFF, size=count, dtype=np.uint16)
    h[: count // 4] = rng.integers(0, 0x3FF, size=count // 4, dtype=np.uint16)  # subnormal range
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)
    assert np.all(mid.astype(np.float64) == (lo + hi) / 2)
    sign = rng.choice([-1.0, 1.0], count).astype(np.float32)
    return mid * sign


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "unit", "data", "quant_golden.bin"))
    args = ap.parse_args()

    records = []

    def dequant_record(qtype, raw):
        raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
        if qtype == T.BF16:
            vals = quants.dequantize(raw.reshape(-1), qtype)
        else:
            vals = quants.dequantize(raw, qtype)
        vals = np.asarray(vals, dtype=np.float32).reshape(-1)
        records.append((0, int(qtype), vals.size, raw.tobytes(), vals.tobytes()))

    def quant_record(qtype, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        q = np.asarray(quants.quantize(x, qtype))
        raw = q.view(np.uint8).reshape(-1)
        records.append((1, int(qtype), x.size, raw.tobytes(), x.tobytes()))

    dequant_record(T.F16, f16_bit_patterns(512).view(np.uint8))
    dequant_record(T.BF16, bf16_bit_patterns(512).view(np.uint8))
    for qtype, nb in ((T.Q8_0, 32), (T.Q4_0, 32), (T.Q4_1, 32), (T.Q4_K, 8), (T.Q6_K, 8)):
        dequant_record(qtype, random_blocks(qtype, nb))

    ties = f16_ties(256)
    quant_record(T.F16, np.concatenate([float_inputs(8, 32), ties]))
    quant_record(T.BF16, float_inputs(16, 32))
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
        quant_record(qtype, float_inputs(48, 32))

    with open(args.out, "wb") as f:
        f.write(b"RQG1" + struct.pack("<I", len(records)))
        for kind, qtype, n, raw, vals in records:
            f.write(struct.pack("<IIII", kind, qtype, n, len(raw)))
            if kind == 0:
                f.write(raw + vals)
            else:
                f.write(vals + raw)
    print(f"wrote {len(records)} records, {os.path.getsize(args.out)} bytes to {args.out}")


if __name__ == "__main__":
    main()
