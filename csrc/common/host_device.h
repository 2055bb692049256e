// Macros that let one source serve the host compiler and nvcc. Pure C++: no torch, no CUDA headers.
#pragma once

#if defined(__CUDACC__)
#define DETOPS_HD __host__ __device__ __forceinline__
#else
#define DETOPS_HD inline
#endif
