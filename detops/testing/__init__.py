"""Test fixtures shipped with detops (the library itself never imports them): `reference` (plain-Python
implementations of docs/REDUCTION_ORDER.md, the bitwise oracle of the CPU kernels, and the error bounds the
tests check) and `models` (tiny random-weight Hugging Face models of every supported family)."""
