// Input validation with reasons (host only, uses torch). Every op refuses loudly: no silent fallback.
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>
#include <string>
#include "numeric.h"

namespace detops {

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

inline void check_float_dtype(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(is_float_dtype(t.scalar_type()), "detops.", op, ": ", name,
              " must be float32, bfloat16 or float16, got ", t.scalar_type());
}

inline void check_device(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu() || t.device().is_cuda(), "detops.", op, ": ", name,
              " must be on the CPU or a CUDA device, got ", t.device());
#ifndef DETOPS_WITH_CUDA
  TORCH_CHECK(!t.device().is_cuda(), "detops.", op, ": ", name,
              " is on CUDA but this detops build has no CUDA kernels (see `python -m detops info`)");
#endif
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* an,
                              const char* bn) {
  TORCH_CHECK(a.device() == b.device(), "detops.", op, ": ", an, " is on ", a.device(), " but ", bn,
              " is on ", b.device());
}

// `documents` (REDUCTION_ORDER.md §10): the segment ids of a gradient's token reduction, integer, on `like`'s
// device, shaped like the op's token dims. The forward never reads them; the backward (detops/ops/) does.
inline void check_documents(const std::optional<at::Tensor>& documents, at::IntArrayRef token_shape,
                            const at::Tensor& like, const char* op) {
  if (!documents.has_value()) return;
  const at::Tensor& d = *documents;
  TORCH_CHECK(d.scalar_type() == at::kInt || d.scalar_type() == at::kLong, "detops.", op,
              ": documents must be int32 or int64 segment ids (-1 = pad), got ", d.scalar_type());
  check_same_device(like, d, op, "input", "documents");
  TORCH_CHECK(d.sizes().equals(token_shape), "detops.", op, ": documents must have the input's token shape ",
              token_shape, " (one segment id per token), got ", d.sizes());
}

inline Storage storage_of(at::ScalarType t) {
  return t == at::kBFloat16 ? Storage::kBFloat16 : t == at::kHalf ? Storage::kFloat16 : Storage::kFloat32;
}

// Calls fn with a typed null pointer of the storage type (float / bf16_t / fp16_t) for dtype t.
template <typename Fn>
void dispatch_float(at::ScalarType t, const char* op, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(static_cast<float*>(nullptr)); break;
    case at::kBFloat16: fn(static_cast<bf16_t*>(nullptr)); break;
    case at::kHalf: fn(static_cast<fp16_t*>(nullptr)); break;
    default: TORCH_CHECK(false, "detops.", op, ": unsupported dtype ", t);
  }
}

}  // namespace detops
