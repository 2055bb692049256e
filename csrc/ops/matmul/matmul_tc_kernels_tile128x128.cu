// Variant tile128x128 (REDUCTION_ORDER.md §5): C = X · W^T, persistent cooperative 128 rows x 128 features tiles, clusters of 2 along rows.
#include "matmul_tc_kernels.cuh"
namespace {
using Tile = cute::Shape<cute::Int<detops::kTcTileRows>, cute::Int<detops::kTcTile128Features>, cute::Int<detops::kTcKBlock>>;
using Cluster = cute::Shape<cute::Int<detops::kTcClusterRows>, cute::_1, cute::_1>;
}  // namespace
DETOPS_TC_DEFINE(tile128x128, Tile, Cluster, false, true, false, false)
