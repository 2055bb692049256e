// Variant tile128x256 (REDUCTION_ORDER.md §5): C = X · W^T, persistent cooperative 128 rows x 256 features tiles, clusters of 2 along rows.
#include "matmul_tc_kernels.cuh"
namespace {
using Tile = cute::Shape<cute::Int<detops::kTcTileRows>, cute::Int<detops::kTcTile256Features>, cute::Int<detops::kTcKBlock>>;
using Cluster = cute::Shape<cute::Int<detops::kTcClusterRows>, cute::_1, cute::_1>;
}  // namespace
DETOPS_TC_DEFINE(tile128x256, Tile, Cluster, false, true, false, false)
