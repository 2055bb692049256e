"""Tools on top of the library: `verify` (the invariance matrix, stock vs detops), `demo` (the seed experiment)
and `audit` (which floating-point reductions of a forward ran outside detops). `python -m detops` runs them."""
