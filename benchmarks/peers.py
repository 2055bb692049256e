"""Peers' batch-invariant matmul configurations, for benchmarks only (bench_matmul.py --peers); detops never
calls them.

- `persistent_linear`: a Triton persistent matmul with the configuration of thinking-machines-lab's
  batch_invariant_ops for bf16 (written here from its description: 128 x 128 x 64 tiles, grouped tile order
  GROUP_SIZE_M = 8, 3 stages, 8 warps, one program per SM up to the tile count, a K loop from 0 in BLOCK_K
  steps, no split-K). Its published kernel rounds the fp32 accumulator to float16 before storing to a bf16
  output (`via_fp16=True` reproduces that: a double rounding, and overflow past 65504); `via_fp16=False`
  rounds once.
- cuBLAS with split-K discouraged (the configuration serving engines rely on on Hopper): reduced-precision
  bf16 reductions off and the cuBLAS / cuBLASLt workspaces limited, which leaves split-K kernels that need a
  workspace out; nothing guarantees no other split (in-place split-K needs none), which the rows check shows.
  The workspace sizes are read once per process, so bench_matmul.py times it in a child process started with
  `CUBLAS_NO_SPLIT_K_ENV`.

`rows_change_at` is detops' L1 check (docs/CONTRACT.md) applied to any provider: the M values at which the
first rows' bits differ from the same rows computed in a batch of M_max rows.
"""
import torch

CUBLAS_NO_SPLIT_K_ENV = {"CUBLASLT_WORKSPACE_SIZE": "1", "CUBLAS_WORKSPACE_CONFIG": ":16:8"}

PERSISTENT_BF16 = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_stages=3, num_warps=8)

_kernel = None


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def persistent_matmul(a, b, c, M, N, K, s_am, s_ak, s_bk, s_bn, s_cm, s_cn,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_M: tl.constexpr, PROGRAMS: tl.constexpr, VIA_FP16: tl.constexpr):
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        for tile in range(tl.program_id(0), tiles_m * tiles_n, PROGRAMS):
            # grouped order: GROUP_M row tiles share each column tile before the next column tile
            first_m = (tile // per_group) * GROUP_M
            group_m = tl.minimum(tiles_m - first_m, GROUP_M)
            tm = first_m + tile % group_m
            tn = (tile % per_group) // group_m
            rm = tm * BLOCK_M + tl.arange(0, BLOCK_M)
            rn = tn * BLOCK_N + tl.arange(0, BLOCK_N)
            rm_in = tl.where(rm < M, rm, 0)     # rows past M read row 0 (never stored)
            rn_in = tl.where(rn < N, rn, 0)
            rk = tl.arange(0, BLOCK_K)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):     # one chain over K blocks from 0, whatever M is
                k_in = (k0 + rk) < K
                x = tl.load(a + rm_in[:, None] * s_am + (k0 + rk)[None, :] * s_ak, mask=k_in[None, :], other=0.0)
                y = tl.load(b + (k0 + rk)[:, None] * s_bk + rn_in[None, :] * s_bn, mask=k_in[:, None], other=0.0)
                acc = tl.dot(x, y, acc)
            if VIA_FP16:
                out = acc.to(tl.float16)
            else:
                out = acc
            tl.store(c + rm[:, None] * s_cm + rn[None, :] * s_cn, out.to(c.dtype.element_ty),
                     mask=(rm[:, None] < M) & (rn[None, :] < N))

    return persistent_matmul


def persistent_linear(x: torch.Tensor, w: torch.Tensor, via_fp16: bool = True, programs: int = 0) -> torch.Tensor:
    """x (M, K) @ w (N, K)ᵀ with the persistent Triton kernel; `programs`: how many (default: the SM count, as
    the peer does, capped at the tile count)."""
    global _kernel
    if _kernel is None:
        _kernel = _build_kernel()
    import triton
    M, K = x.shape
    N = w.shape[0]
    cfg = PERSISTENT_BF16
    tiles = triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"])
    if not programs:
        programs = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    programs = max(1, min(programs, tiles))
    c = torch.empty((M, N), device=x.device, dtype=x.dtype)
    _kernel[(programs,)](x, w, c, M, N, K, x.stride(0), x.stride(1), w.stride(1), w.stride(0), c.stride(0),
                         c.stride(1), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                         GROUP_M=cfg["GROUP_M"], PROGRAMS=programs, VIA_FP16=via_fp16,
                         num_stages=cfg["num_stages"], num_warps=cfg["num_warps"])
    return c


def rows_change_at(fn, x: torch.Tensor, w: torch.Tensor, ms) -> list:
    """detops' L1 check on `fn(x, w)`: the M in `ms` at which rows 0..M-1 of fn(x[:M], w) differ (any bit) from
    the same rows of fn(x, w) over all of x's rows."""
    full = fn(x, w)
    return [m for m in ms if not torch.equal(fn(x[:m], w), full[:m])]
