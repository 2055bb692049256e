"""The tile / lane / block constants of the compiled library (csrc/common/constants.h), as one table.

`detops.constants()` returns {C++ name: int} for every constexpr in constants.h (array elements as "name[i]"), read
from the extension itself, so Python and the tests never repeat a number: thresholds such as 2 * kLaneVector or
kAttnChunkKeys are derived from it. Their meaning (and which fix an order, which are speed only) is documented next
to each constant in constants.h and in docs/REDUCTION_ORDER.md.
"""
from ._lib import constants_table

__all__ = ["constants"]


def constants() -> dict:
    """{name: value} of every constant in csrc/common/constants.h (a fresh copy; edits do not reach the library)."""
    return dict(constants_table())
