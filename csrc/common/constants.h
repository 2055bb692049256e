// Every tile / lane / block constant of detops, once. Keyed by op (and dtype where it matters), never by
// the number of rows, the batch or the device. The meaning of each is in docs/REDUCTION_ORDER.md.
#pragma once
#include <cstdint>
#include "host_device.h"

namespace detops {

// §2: lanes(N) = kLaneVector * clamp(pow2ceil(ceil(N / kLaneVector)), kMinLaneThreads, kMaxLaneThreads).
// On CUDA one row is one block of lanes(N) / kLaneVector threads, each owning kLaneVector adjacent lanes.
constexpr int kLaneVector = 8;
constexpr int kMinLaneThreads = 32;
constexpr int kMaxLaneThreads = 512;

DETOPS_HD int64_t lane_threads(int64_t n) {
  int64_t want = (n + kLaneVector - 1) / kLaneVector;
  int64_t t = kMinLaneThreads;
  while (t < want && t < kMaxLaneThreads) t *= 2;
  return t;
}
DETOPS_HD int64_t lanes(int64_t n) { return kLaneVector * lane_threads(n); }

// §5: fp32 matmul K blocks.
constexpr int kMatmulKBlock = 32;

// §6: attention key blocks and chunks, measured from each sequence's anchor.
constexpr int kAttnBlockKeys = 64;
constexpr int kAttnChunkKeys = 1024;
static_assert(kAttnChunkKeys % kAttnBlockKeys == 0, "chunks hold whole blocks");

}  // namespace detops
