"""examples/ run as a user runs them (short)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))


def test_sft_packing_curves_identical(capsys):
    """Trainer, padded vs packed, and SFTTrainer(packing=True) vs the same packed rows padded:
    detops' loss curves are the same floats at every step (the example's exit status), stock's are not (the
    printed controls)."""
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (setup_env.sh installs it)")
    import sft_packing
    assert sft_packing.main(["--steps", "4"]) == 0
    out = capsys.readouterr().out
    import importlib.util
    # scripts/setup_env.sh installs trl; where it is missing the example says so and skips that comparison
    runs = ("Trainer", "SFTTrainer(packing=True)") if importlib.util.find_spec("trl") else ("Trainer",)
    if len(runs) == 1:
        assert "TRL is not installed" in out
    for run in runs:
        assert f"{run} detops: padded == packed at every step: True" in out
        assert f"{run} stock:  padded == packed at every step: False" in out
