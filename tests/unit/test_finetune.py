"""finetune's own checks (the stage itself runs in the end-to-end tests)."""

from __future__ import annotations

import pytest


def test_diverged_training_is_an_error(tmp_path):
    """The HF Trainer logs a NaN gradient as loss 0 and goes on; finetune must fail instead."""
    import numpy as np
    from safetensors.numpy import save_file

    from tasks.errors import StageError
    from tasks.stages.finetune import check_trained

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


def test_a_step_with_a_non_finite_gradient_is_skipped_not_applied():
    import torch

    from tasks.stages.finetune import skip_nonfinite_steps

    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    skipped, step = [], [0]
    skip_nonfinite_steps(optimizer, skipped, lambda: step[0])
    before = [p.detach().clone() for p in layer.parameters()]
    for step[0], scale in [(1, float("inf")), (2, 1.0)]:
        layer(torch.ones(1, 4) * scale).sum().backward()  # inf input: inf/NaN gradient at step 1
        optimizer.step()
        if step[0] == 1:
            assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))  # not applied
            assert all(p.grad is None for p in layer.parameters())
        optimizer.zero_grad()
    assert skipped == [1]
    assert not any(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))  # step 2 applied
    assert all(torch.isfinite(p).all() for p in layer.parameters())


def test_skipped_steps_are_tolerated_up_to_a_share(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from tasks.errors import StageError
    from tasks.stages.finetune import check_trained

    good = tmp_path / "good.safetensors"
    save_file({"a": np.ones((2, 2), np.float32)}, str(good))
    losses = [{"step": i, "loss": 2.0, "grad_norm": 0.5} for i in range(1, 21)]
    losses[18] = {"step": 19, "loss": 9.7, "grad_norm": float("nan"), "skipped": True}
    check_trained(losses, good)  # one skipped step of 20: trained
    for i in (3, 5, 7):
        losses[i] = {"step": i + 1, "loss": 9.7, "grad_norm": float("nan"), "skipped": True}
    with pytest.raises(StageError, match=r"4 of 20 steps had a non-finite gradient \(steps \[4, 6, 8, 19\]\)"):
        check_trained(losses, good)
