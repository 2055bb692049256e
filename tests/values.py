"""Seeded test tensors in the value profiles of CONTRACT.md, and the thresholds to draw sizes from.

Every threshold below is derived from the extension's own constants (detops.constants(), i.e.
csrc/common/constants.h), never repeated as a number; tests/test_constants.py pins today's values so that a change
of a constant is a visible change of the tested sizes, not a silent shift.
"""
import math

import torch
from hypothesis import strategies as st

import detops

C = detops.constants()  # {C++ name: value} of csrc/common/constants.h


def around(*xs):
    """x - 1, x, x + 1 for each threshold x (ascending, each once)."""
    return tuple(sorted({v for x in xs for v in (x - 1, x, x + 1)}))


def pow2_range(lo, hi):
    """The powers of two lo, 2 lo, ..., hi."""
    return tuple(2 ** i for i in range(int(math.log2(lo)), int(math.log2(hi)) + 1))


LANE_VECTOR = C["kLaneVector"]                        # 8: lanes a thread owns (§2)
MIN_LANES = C["kLaneVector"] * C["kMinLaneThreads"]   # 256: lanes(N) of every N <= 256 (§2)
MAX_LANES = C["kMaxLanes"]                            # 4096: lanes(N) of every N > 2048 (§2)
TOKEN_ALIGN = C["kGradTokenAlign"]                    # 32: §10's document alignment = §5's K block
ATTN_BLOCK = C["kAttnBlockKeys"]                      # 64: §6 key block
ATTN_CHUNK = C["kAttnChunkKeys"]                      # 1024: §6 chunk

PROFILES = ("normal", "integer", "outliers", "tiny", "mixed")
# Row counts across the thresholds where kernels in this field switch tiles or block sizes: every power of two from
# the smallest tensor-core row tile (kTcSwap16MaxRows = 2 * kLaneVector = 16) to the largest row threshold
# (kTcTile128MaxRows = 2048), each +-1.
ROW_COUNTS = (1, 2, 3) + around(*pow2_range(C["kTcSwap16MaxRows"], C["kTcTile128MaxRows"]))
# Row lengths N around the §2 lane edges: a thread's vector (7, 9), lanes(N) leaving its minimum (255, 257), reaching
# kMaxLanes (2049: N > kMaxLanes / 2) and a second chunk (4097).
LANE_EDGE_SIZES = (1, LANE_VECTOR - 1, LANE_VECTOR + 1, MIN_LANES - 1, MIN_LANES + 1, MAX_LANES // 2 + 1,
                   MAX_LANES + 1)
# Key counts around the §6 block and chunk edges (and two chunks), for the attention tests.
ATTN_KEY_EDGES = (1,) + around(ATTN_BLOCK, ATTN_CHUNK, 2 * ATTN_CHUNK)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

rows_st = st.sampled_from(ROW_COUNTS)
profile_st = st.sampled_from(PROFILES)
dtype_st = st.sampled_from(DTYPES)
seed_st = st.integers(0, 2**31 - 1)


def make(shape, dtype=torch.float32, device="cpu", profile="normal", seed=0, scale=1.0):
    """A tensor of `shape` drawn from a seeded CPU generator (same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    if profile == "normal":
        x = torch.randn(shape, generator=g, dtype=torch.float64)
    elif profile == "integer":  # exact in any summation order: isolates indexing bugs
        x = torch.randint(-4, 5, shape, generator=g).to(torch.float64)
    elif profile == "outliers":
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        mask = torch.rand(shape, generator=g) < 0.01
        x = torch.where(mask, x * 1e3, x)
    elif profile == "tiny":
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 1e-3
    elif profile == "mixed":
        e = torch.randint(-8, 9, shape, generator=g).to(torch.float64)
        x = torch.randn(shape, generator=g, dtype=torch.float64) * torch.pow(2.0, e)
    else:
        raise ValueError(profile)
    return (x * scale).to(dtype).to(device)


def at_offset(t: torch.Tensor, offset: int) -> torch.Tensor:
    """The same values stored at an odd storage offset (misaligned for vector loads)."""
    buf = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    out = buf[offset:].view(t.shape)
    out.copy_(t)
    return out


def row_layouts(x: torch.Tensor, offset: int) -> dict:
    """The same (rows, n) values in other storage layouts: each must give the contiguous result's bits."""
    rows, n = x.shape
    wide = torch.zeros(rows, n + 3, dtype=x.dtype, device=x.device)
    wide[:, 1:n + 1] = x
    every_other = torch.zeros(2 * rows, n, dtype=x.dtype, device=x.device)
    every_other[::2] = x
    return {
        "odd storage offset": at_offset(x, offset),
        "column-major storage": x.t().contiguous().t(),
        "row stride > n (slice of a wider tensor)": wide[:, 1:n + 1],
        "every other row": every_other[::2],
    }


def draw_batch_positions(data, n: int, budget: int):
    """For the L1 tests: a batch size `rows` and another `others` (row counts across the thresholds whose
    rows * n fit the element budget), a row i of the first and a position j in the second."""
    fits = [m for m in ROW_COUNTS if m * n <= budget]
    rows = data.draw(st.sampled_from(fits), label="rows")
    others = data.draw(st.sampled_from(fits), label="rows of x'")
    i = data.draw(st.integers(0, rows - 1), label="i")
    j = data.draw(st.integers(0, others - 1), label="j")
    return rows, others, i, j
