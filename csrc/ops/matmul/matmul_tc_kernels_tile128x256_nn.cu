// Variant tile128x256 (REDUCTION_ORDER.md §5) with P and Q MN-major: dW = dYᵀ · X of the backward; the chain is
// the K-major variant's (docs/ops/matmul.md "Operand layouts").
#include "matmul_tc_kernels.cuh"
namespace {
using Tile = cute::Shape<cute::Int<detops::kTcTileRows>, cute::Int<detops::kTcTile256Features>, cute::Int<detops::kTcKBlock>>;
using Cluster = cute::Shape<cute::Int<detops::kTcClusterRows>, cute::_1, cute::_1>;
}  // namespace
DETOPS_TC_DEFINE(tile128x256_nn, Tile, Cluster, false, true, true, true)
