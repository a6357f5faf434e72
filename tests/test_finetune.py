"""finetune's own checks (the stage itself runs in the end-to-end tests)."""

from __future__ import annotations

import pytest


def test_diverged_training_is_an_error(tmp_path):
    """The HF Trainer logs a NaN gradient as loss 0 and goes on; finetune must fail instead."""
    import numpy as np
    from safetensors.numpy import save_file

    from tasks.errors import StageError
    from tasks.finetune import check_trained

    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file({"a": np.ones((2, 2), np.float32)}, str(good))
    save_file({"a": np.full((2, 2), np.nan, np.float32)}, str(bad))
    check_trained([{"step": 1, "loss": 2.0, "grad_norm": 0.5}, {"step": 2, "loss": 1.9, "grad_norm": None}], good)
    with pytest.raises(StageError, match="diverged at step 2 \\(loss 0.0, grad norm nan\\)"):
        check_trained(
            [{"step": 1, "loss": 11.0, "grad_norm": 3.0}, {"step": 2, "loss": 0.0, "grad_norm": float("nan")}], good
        )
    with pytest.raises(StageError, match="the adapter is not finite"):
        check_trained([{"step": 1, "loss": 2.0, "grad_norm": 0.5}], bad)
