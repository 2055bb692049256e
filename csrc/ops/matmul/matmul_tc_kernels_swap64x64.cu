// Variant swap64x64 (REDUCTION_ORDER.md §5): D^T = W · X^T, one CTA per 64 features x 64 rows tile, one consumer warpgroup.
#include "matmul_tc_kernels.cuh"
namespace {
using Tile = cute::Shape<cute::Int<detops::kTcSwapTileFeatures>, cute::Int<detops::kTcSwap64TileRows>, cute::Int<detops::kTcKBlock>>;
using Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
}  // namespace
DETOPS_TC_DEFINE(swap64x64, Tile, Cluster, true, false, false, false)
