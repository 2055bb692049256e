"""detops.constants(): every constant of csrc/common/constants.h, from the compiled library, as one table; and the
test thresholds derived from it (tests/values.py and the test files) equal the numbers they replaced, so a change of
a constant shows up here as a changed expectation instead of silently moving what the other tests cover."""
import importlib
import os
import re

import detops
from values import ATTN_KEY_EDGES, LANE_EDGE_SIZES, ROW_COUNTS

HEADER = os.path.join(os.path.dirname(__file__), "..", "csrc", "common", "constants.h")
DECL = re.compile(r"^constexpr\s+(?:int|int64_t)\s+(\w+)(?:\[(\d+)\])?\s*=\s*(.*?);", re.M | re.S)


def header_constants():
    """{name or name[i]: the initializer text} of every constexpr int / int64_t in constants.h."""
    out = {}
    for name, n, init in DECL.findall(open(HEADER, encoding="utf-8").read()):
        if n:
            items = [x.strip() for x in init.strip().strip("{}").split(",")]
            assert len(items) == int(n)
            out.update({f"{name}[{i}]": x for i, x in enumerate(items)})
        else:
            out[name] = init.strip()
    return out


def test_table_has_every_constant():
    table, header = detops.constants(), header_constants()
    assert len(header) > 60
    assert set(table) == set(header), (set(header) - set(table), set(table) - set(header))
    assert all(isinstance(v, int) for v in table.values())


def test_table_values_match_the_header():
    """Plain literals equal the header's text; derived ones equal the header's expression evaluated over the table."""
    table, header = detops.constants(), header_constants()
    env = dict(table)
    for name, init in header.items():
        expr = re.sub(r"int64_t\((\w+)\)", r"\1", init)  # int64_t(1) << 31, int64_t(kLaneVector) * ...
        expr = expr.replace("int64_t(", "(")
        expr = re.sub(r"(\w+)\[(\d+)\]", r"\1_\2", expr)
        local = {k.replace("[", "_").replace("]", ""): v for k, v in env.items()}
        assert eval(expr, {}, local) == table[name], (name, init)  # noqa: S307 (our own header)


def test_table_is_a_copy_and_matches_build_info():
    t = detops.constants()
    t["kLaneVector"] = -1
    assert detops.constants()["kLaneVector"] == detops.build_info()["constants"]["lane_vector"]
    assert detops.constants()["kAttnBlockKeys"] == detops.build_info()["constants"]["attn_block_keys"]
    assert detops.constants()["kMatmulKBlock"] == detops.build_info()["constants"]["matmul_k_block"]


# Today's values of every derived threshold: the literals the test files held before they were derived.
def test_derived_thresholds_equal_todays_values():
    assert ROW_COUNTS == (1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513,
                          1023, 1024, 1025, 2047, 2048, 2049)
    assert LANE_EDGE_SIZES == (1, 7, 9, 255, 257, 2049, 4097)
    assert ATTN_KEY_EDGES == (1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049)

    nsc = importlib.import_module("test_norm_softmax_cuda")
    assert nsc.LENGTHS == (1, 7, 8, 9, 128, 255, 256, 257, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8192,
                           32000, 128256, 152064)
    assert nsc.GPU_ROWS == (1, 2, 7, 8, 9, 255, 256, 257, 2047, 2048, 2049, 65536)
    assert nsc.RMS_SLOT_ROWS == (1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 2047, 2048, 2049)
    assert sorted({r for r, _ in nsc.SPLIT_ROW_CASES}) == [1, 2, 15, 16, 17, 255, 256, 257, 2047, 2048, 2049]

    ac = importlib.import_module("test_attention_cuda")
    assert ac.KEY_LENS == (1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 4097, 8192)
    assert ac.QUERY_LENS == (1, 2, 15, 16, 17, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049)
    atc = importlib.import_module("test_attention_tc")
    assert atc.KEY_LENS == (1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3000, 8192)
    assert atc.TC_Q_LENS == (1, 5, 16, 17, 32, 33, 64, 65, 127, 128, 129, 200)

    mc = importlib.import_module("test_matmul_cuda")
    assert mc.SWEEP_M == (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 383,
                          384, 385, 511, 512, 513, 1024, 2047, 2048, 2049, 4096, 8192, 16384)
    m = importlib.import_module("test_matmul")
    assert (m.MICRO_COLS, m.PANEL_COLS - 1, m.PANEL_COLS, m.PANEL_COLS + 1, 2 * m.PANEL_COLS + 2) == (16, 63, 64, 65, 130)
