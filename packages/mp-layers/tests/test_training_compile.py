"""`TrainerConfig(compile=True)`: the training step and the sampler's network calls go through
`torch.compile`; results and saved weights are those of the uncompiled run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("accelerate")

from safetensors.torch import load_file

from mp_layers.training import latest_checkpoint

from .conftest import load_training_worker as _worker

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="torch.compile does not support this Python yet"
)


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path: Path) -> None:
    worker = _worker()
    seen: list[nn.Module] = []

    def sample_fn(model: nn.Module) -> torch.Tensor:
        seen.append(model)
        return torch.sigmoid(model(torch.randn(3, 4))).reshape(1, 1, 3, 1, 1).expand(1, 3, 3, 4, 4)

    settings = {"steps": 6, "optimizer": "adam", "ema_beta": 0.9, "max_grad_norm": 1.0}
    eager, eager_run = worker.run(out=tmp_path / "eager", **settings)
    compiled, compiled_run = worker.run(
        out=tmp_path / "compiled",
        compile=True,
        compile_backend="aot_eager",  # AOTAutograd without code generation: no C++ compiler
        sample_every=3,
        sample_fn=sample_fn,
        **settings,
    )
    assert compiled_run.losses == pytest.approx(eager_run.losses, abs=1e-6)
    # The loss went through the compiled module; the sampler got a compiled EMA network, the same
    # compiled wrapper at each sampling.
    assert isinstance(compiled._train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert isinstance(seen[0], torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.ema is not None
    assert seen[0]._orig_mod is compiled.ema.ema_model
    assert (tmp_path / "compiled" / "samples" / "step-000000006.gif").is_file()
    # Checkpoints hold the plain module's names (no `_orig_mod.` prefix) and the same values.
    names = {
        run: set(load_file(latest_checkpoint(tmp_path / run / "checkpoints") / "model.safetensors"))  # type: ignore[operator]
        for run in ("eager", "compiled")
    }
    assert names["compiled"] == names["eager"] == set(eager.unwrapped_model.state_dict())
    for name, value in eager.unwrapped_model.state_dict().items():
        assert torch.allclose(compiled.unwrapped_model.state_dict()[name], value, atol=1e-6)


def test_compiled_run_resumes_into_an_eager_one(tmp_path: Path) -> None:
    """A checkpoint of a compiled run is an ordinary checkpoint: an eager run resumes it."""
    worker = _worker()
    worker.run(out=tmp_path, steps=3, compile=True, compile_backend="aot_eager")
    _, resumed = worker.run(out=tmp_path, steps=5, resume="latest")
    assert resumed.step == 5
    assert len(resumed.losses) == 2
