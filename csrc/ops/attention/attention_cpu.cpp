// attention on the CPU: docs/REDUCTION_ORDER.md §6 with the shared per-row arithmetic of attention_math.h.
// One (batch, query head, query) row at a time, rows in parallel; a row's order depends only on its own
// (anchor, lo, hi) and K-independent constants, never on the other rows.
#include <ATen/Parallel.h>
#include <vector>
#include "attention_backends.h"
#include "attention_math.h"

namespace detops {

template <typename T>
static void attention_rows(const AttentionParams& p) {
  const int64_t group = p.Hq / p.Hk;
  const int64_t n_rows = p.B * p.Hq * p.Q;
  at::parallel_for(0, n_rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> qf(p.D), O(p.Dv), o(p.Dv), t(p.Dv);
    float s[kAttnBlockKeys];
    for (int64_t r = r0; r < r1; ++r) {
      // out is (B, Hq, Q, Dv) contiguous: r = (b * Hq + h) * Q + i.
      const int64_t i = r % p.Q;
      const int64_t h = (r / p.Q) % p.Hq;
      const int64_t b = r / (p.Q * p.Hq);
      const int32_t* row = p.rows + (b * p.Q + i) * 3;
      const AttnRowBlocks rb = attn_row_blocks(row[0], row[1], row[2], p.K);
      T* y = static_cast<T*>(p.out) + r * p.Dv;

      const T* q = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs + i * p.q_ss;
      for (int64_t d = 0; d < p.D; ++d) qf[d] = to_float(q[d]);  // exact widening
      const int64_t hk = h / group;
      const T* k = static_cast<const T*>(p.k) + b * p.k_bs + hk * p.k_hs;
      const T* v = static_cast<const T*>(p.v) + b * p.v_bs + hk * p.v_hs;

      AttnState run;
      for (int64_t d = 0; d < p.Dv; ++d) O[d] = 0.0f;
      AttnState chunk;
      for (int64_t d = 0; d < p.Dv; ++d) o[d] = 0.0f;
      for (int64_t blk = rb.first_block; blk <= rb.last_block; ++blk) {
        const int64_t start = rb.block_start(blk);
        const int first = rb.first_slot(blk), last = rb.last_slot(blk);
        attn_dots(qf.data(), k + (start + first) * p.k_ss, p.k_ss, p.D, s + first, last - first);
        for (int j = first; j < last; ++j) s[j] = attn_score(s[j], p.scale, p.softcap);
        attn_block_update(chunk, o.data(), t.data(), p.Dv, s, first, last, v + (start + first) * p.v_ss, p.v_ss);
        // Chunk boundary (or the row's last block): merge the chunk, ascending, and start an empty one.
        if (blk == rb.last_block || rb.chunk_of(blk + 1) != rb.chunk_of(blk)) {
          attn_merge_chunk(run, O.data(), chunk, o.data(), p.Dv);
          chunk = AttnState();
          for (int64_t d = 0; d < p.Dv; ++d) o[d] = 0.0f;
        }
      }
      for (int64_t d = 0; d < p.Dv; ++d) y[d] = from_float<T>(attn_output(run, O[d]));
    }
  });
}

void attention_cpu(const AttentionParams& p, at::ScalarType dtype) {
  dispatch_float(dtype, "attention", [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    attention_rows<T>(p);
  });
}

}  // namespace detops
