"""Seeded test tensors in the value profiles of CONTRACT.md, and the row-count thresholds to draw from."""
import torch
from hypothesis import strategies as st

PROFILES = ("normal", "integer", "outliers", "tiny", "mixed")
# Row counts across the thresholds where kernels in this field switch tiles or block sizes.
ROW_COUNTS = (1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513,
              1023, 1024, 1025, 2047, 2048, 2049)
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
