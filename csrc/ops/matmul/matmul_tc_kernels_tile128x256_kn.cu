// Variant tile128x256 (REDUCTION_ORDER.md §5) with Q (the weights) MN-major: dX = dY · W of linear's
// backward, mm(a, b) with a row-major b; the chain is the K-major variant's (docs/ops/matmul.md "Operand layouts").
#include "matmul_tc_kernels.cuh"
namespace {
using Tile = cute::Shape<cute::Int<detops::kTcTileRows>, cute::Int<detops::kTcTile256Features>, cute::Int<detops::kTcKBlock>>;
using Cluster = cute::Shape<cute::Int<detops::kTcClusterRows>, cute::_1, cute::_1>;
}  // namespace
DETOPS_TC_DEFINE(tile128x256_kn, Tile, Cluster, false, true, false, true)
