"""`Trainer(phases=...)`: extra optimizers stepped after the main one (a toy GAN on the CPU)."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("accelerate")

from mp_layers.training import (
    NonFiniteLossError,
    Trainer,
    TrainerConfig,
    TrainingPhase,
    read_metrics,
)
from mp_layers.training.metrics import FIELDS

Batch = dict[str, torch.Tensor]


class GanData:
    """`n` deterministic items: generator input `z`, a `real` sample, and the item's `index`."""

    def __init__(self, n: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.z = torch.randn(n, 4, generator=generator)
        self.real = torch.randn(n, 4, generator=generator) + 2.0

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, index: int) -> Batch:
        return {"z": self.z[index], "real": self.real[index], "index": torch.tensor(index)}


class ToyGAN(nn.Module):
    """A linear generator and a linear critic (non-saturating GAN losses); identical for every
    caller."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(99)
        self.generator = nn.Linear(4, 4)
        self.critic = nn.Linear(4, 1)

    def forward(self, batch: Batch, role: str, noise: float = 0.0, penalty: float = 0.0) -> Any:
        z = batch["z"]
        if noise:  # draws from the global RNG, so resume must restore it
            z = z + noise * torch.randn_like(z)
        fake = self.generator(z)
        if role == "generator":
            return F.softplus(-self.critic(fake)).mean()  # reaches the critic's parameters too
        loss = F.softplus(self.critic(fake.detach())).mean()
        loss = loss + F.softplus(-self.critic(batch["real"])).mean()
        return loss + penalty * self.critic.weight.pow(2).sum()


def generator_loss(model: nn.Module, batch: Batch, *, noise: float = 0.0) -> torch.Tensor:
    loss: torch.Tensor = model(batch, "generator", noise=noise)
    return loss


def critic_loss(model: nn.Module, batch: Batch, step: int, *, noise: float = 0.0) -> torch.Tensor:
    """The critic loss with a weight penalty on even steps (what `step` is for)."""
    loss: torch.Tensor = model(batch, "critic", noise=noise, penalty=0.1 if step % 2 == 0 else 0.0)
    return loss


def _generator(model: Any) -> Any:
    return model.generator.parameters()


def _critic(model: Any) -> Any:
    return model.critic.parameters()


def _phase(**kwargs: Any) -> TrainingPhase:
    settings: dict[str, Any] = {
        "name": "critic",
        "parameters": _critic,
        "optimizer_factory": functools.partial(torch.optim.SGD, lr=0.05),
        "loss_fn": critic_loss,
    }
    settings.update(kwargs)
    return TrainingPhase(**settings)


def _trainer(out: Path, **kwargs: Any) -> Trainer:
    """A Trainer on the toy GAN; `kwargs` split into Trainer and config arguments."""
    trainer_keys = {"loss_fn", "optimizer_factory", "parameters", "phases", "model"}
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in trainer_keys}
    extra.setdefault("model", ToyGAN())
    extra.setdefault("loss_fn", generator_loss)
    extra.setdefault("optimizer_factory", functools.partial(torch.optim.SGD, lr=0.1))
    extra.setdefault("parameters", _generator)
    extra.setdefault("phases", [_phase()])
    settings: dict[str, Any] = {
        "ema_beta": None,
        "progress_bar": False,
        "cpu": True,
        "batch_size": 4,
        "save_every": 0,
    }
    settings.update(kwargs)
    return Trainer(data=GanData(), config=TrainerConfig(out_dir=str(out), **settings), **extra)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive bit-exact equality of nested dicts / lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        assert sorted(a, key=str) == sorted(b, key=str), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert repr(a) == repr(b), where


def _column(out: Path, name: str) -> list[str]:
    return [row[name] for row in read_metrics(out / "metrics.csv")]


def test_each_optimizer_updates_only_its_parameters(tmp_path: Path) -> None:
    # The main (generator) loss does send gradients into the critic ...
    model, data = ToyGAN(), GanData()
    generator_loss(model, {"z": data.z[:4], "real": data.real[:4]}).backward()
    assert model.critic.weight.grad is not None
    assert model.critic.weight.grad.abs().sum() > 0

    # ... yet with a critic loss of zero (plain SGD) the critic must not move: the main step's
    # critic gradients are cleared before the phase, and the main optimizer does not hold it.
    def zero_critic_loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        return 0.0 * critic_loss(model, batch, step)

    trainer = _trainer(tmp_path / "a", steps=3, phases=[_phase(loss_fn=zero_critic_loss)])
    initial = _weights(trainer.unwrapped_model)
    trainer.fit()
    bare: Any = trainer.unwrapped_model
    assert [id(p) for p in trainer.optimizer.param_groups[0]["params"]] == [
        id(p) for p in bare.generator.parameters()
    ]
    critic_optimizer = trainer.phase_optimizers["critic"]
    assert [id(p) for p in critic_optimizer.param_groups[0]["params"]] == [
        id(p) for p in bare.critic.parameters()
    ]
    after = _weights(bare)
    for name in ("generator.weight", "generator.bias"):
        assert not torch.equal(after[name], initial[name]), f"{name} did not train"
    for name in ("critic.weight", "critic.bias"):
        assert torch.equal(after[name], initial[name]), f"{name} moved without a critic loss"

    # The other way round: no generator loss, so only the critic moves.
    def zero_generator_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return 0.0 * generator_loss(model, batch)

    trainer = _trainer(tmp_path / "b", steps=3, loss_fn=zero_generator_loss)
    initial = _weights(trainer.unwrapped_model)
    trainer.fit()
    after = _weights(trainer.unwrapped_model)
    for name in ("generator.weight", "generator.bias"):
        assert torch.equal(after[name], initial[name]), f"{name} moved without a generator loss"
    for name in ("critic.weight", "critic.bias"):
        assert not torch.equal(after[name], initial[name]), f"{name} did not train"


def test_every_step_argument_micro_batches_and_metrics(tmp_path: Path) -> None:
    seen: dict[str, list[Any]] = {"main": [], "phase": [], "steps": []}

    def main_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        seen["main"].append(batch["index"].tolist())
        return generator_loss(model, batch)

    def phase_loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        seen["phase"].append(batch["index"].tolist())
        seen["steps"].append(step)
        return critic_loss(model, batch, step)

    trainer = _trainer(
        tmp_path,
        steps=5,
        grad_accum_steps=2,
        loss_fn=main_loss,
        phases=[_phase(loss_fn=phase_loss, every=2)],
        ema_beta=0.5,
        ema_update_after_step=0,
        ema_update_every=1,
    )
    result = trainer.fit()
    assert seen["steps"] == [0, 0, 2, 2, 4, 4]  # twice per step: two micro-batches
    main_by_step = [seen["main"][2 * s : 2 * s + 2] for s in range(5)]
    assert seen["phase"] == main_by_step[0] + main_by_step[2] + main_by_step[4]

    assert all(math.isfinite(x) for x in result.losses)
    assert list(result.phase_losses) == ["critic"]
    phase_losses = result.phase_losses["critic"]
    assert [math.isnan(x) for x in phase_losses] == [False, True, False, True, False]
    assert result.skipped_steps == 0
    assert trainer.ema is not None
    assert int(trainer.ema.step) == 5  # one EMA update per step, after the phases

    rows = read_metrics(tmp_path / "metrics.csv")
    assert tuple(rows[0]) == (*FIELDS, "loss_critic")
    assert [row["loss_critic"] != "" for row in rows] == [True, False, True, False, True]
    assert [float(row["loss_critic"]) for row in rows[::2]] == phase_losses[::2]
    assert [row["skipped"] for row in rows] == list("00000")
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_phase_gradient_accumulation_matches_large_batch(tmp_path: Path) -> None:
    big = _trainer(tmp_path / "big", steps=4, batch_size=8)
    big.fit()
    small = _trainer(tmp_path / "small", steps=4, batch_size=4, grad_accum_steps=2)
    small.fit()
    for name, value in big.unwrapped_model.state_dict().items():
        assert torch.allclose(value, small.unwrapped_model.state_dict()[name], atol=1e-6), name


def test_resume_after_a_crash_is_exact(tmp_path: Path) -> None:
    """Adam on both sides, RNG noise in both losses, accumulation, clipping and `every=2`: a run
    that crashes after its step-3 checkpoint and resumes equals an uninterrupted one bit for bit."""

    class Crash(Exception):
        pass

    def trainer(out: Path, *, crash_at: int | None = None) -> Trainer:
        def phase_loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
            if step == crash_at:
                raise Crash
            return critic_loss(model, batch, step, noise=0.1)

        phase = _phase(
            loss_fn=phase_loss,
            optimizer_factory=functools.partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.9)),
            max_grad_norm=0.5,
            every=2,
        )
        return _trainer(
            out,
            steps=6,
            save_every=3,
            grad_accum_steps=2,
            max_grad_norm=1.0,
            loss_fn=functools.partial(generator_loss, noise=0.1),
            optimizer_factory=functools.partial(torch.optim.Adam, lr=1e-2),
            phases=[phase],
        )

    full_trainer = trainer(tmp_path / "full")
    full = full_trainer.fit()

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        trainer(crashed, crash_at=4).fit()
    assert len(read_metrics(crashed / "metrics.csv")) == 4  # logged past the step-3 checkpoint
    checkpoint = crashed / "checkpoints" / "step-000000003"
    assert (checkpoint / "optimizer-critic.pt").is_file()

    resumed_trainer = trainer(crashed)
    resumed = resumed_trainer.fit(resume="latest")
    assert resumed.resumed_from == checkpoint
    assert resumed.losses == full.losses[3:]
    assert repr(resumed.phase_losses["critic"]) == repr(full.phase_losses["critic"][3:])
    for column in ("loss", "loss_critic", "grad_norm", "skipped"):
        assert _column(crashed, column) == _column(tmp_path / "full", column), column
    _assert_same(
        resumed_trainer.unwrapped_model.state_dict(), full_trainer.unwrapped_model.state_dict()
    )
    _assert_same(
        resumed_trainer.optimizer.optimizer.state_dict(),
        full_trainer.optimizer.optimizer.state_dict(),
        "optimizer",
    )
    _assert_same(
        resumed_trainer.phase_optimizers["critic"].optimizer.state_dict(),
        full_trainer.phase_optimizers["critic"].optimizer.state_dict(),
        "optimizer-critic",
    )


def test_nonfinite_phase_skips_only_its_own_update(tmp_path: Path) -> None:
    bad_steps: set[int] = {1}

    def phase_loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        loss = critic_loss(model, batch, step)
        return loss * math.nan if step in bad_steps else loss

    critic_before: dict[int, torch.Tensor] = {}
    generator_before: dict[int, torch.Tensor] = {}

    def main_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        bare: Any = model.module if hasattr(model, "module") else model
        critic_before[len(critic_before)] = bare.critic.weight.detach().clone()
        generator_before[len(generator_before)] = bare.generator.weight.detach().clone()
        return generator_loss(model, batch)

    trainer = _trainer(
        tmp_path / "skip", steps=3, loss_fn=main_loss, phases=[_phase(loss_fn=phase_loss)]
    )
    result = trainer.fit()
    assert torch.equal(critic_before[1], critic_before[2])  # the NaN critic step changed nothing
    assert not torch.equal(generator_before[1], generator_before[2])  # the generator still stepped
    assert not torch.equal(critic_before[0], critic_before[1])
    assert all(math.isfinite(x) for x in result.losses)
    assert [math.isnan(x) for x in result.phase_losses["critic"]] == [False, True, False]
    assert result.skipped_steps == 1
    assert _column(tmp_path / "skip", "skipped") == list("010")
    assert _column(tmp_path / "skip", "loss_critic")[1] == "nan"

    bad_steps.update(range(100))
    trainer = _trainer(
        tmp_path / "stop", steps=10, phases=[_phase(loss_fn=phase_loss)], max_nonfinite_steps=2
    )
    with pytest.raises(NonFiniteLossError, match=r"2 consecutive steps.*loss_critic nan"):
        trainer.fit()
    assert trainer.step == 2


def _phase_with(**kwargs: Any) -> Callable[[Path], Any]:
    return lambda out: _trainer(out, phases=[_phase(**kwargs)])


_ERRORS: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    (
        "bad-name",
        _phase_with(name="Critic"),
        ValueError,
        r"TrainingPhase\.name: expected a name matching \[a-z\]\[a-z0-9_\]\*, got 'Critic'",
    ),
    ("empty-name", _phase_with(name=""), ValueError, "TrainingPhase.name: expected a name"),
    ("name-type", _phase_with(name=3), TypeError, r"TrainingPhase.__init__\(\) parameter name=3"),
    (
        "duplicate-names",
        lambda out: _trainer(out, phases=[_phase(), _phase(parameters=lambda m: [m.critic.bias])]),
        ValueError,
        r"phases: expected unique names, got \['critic', 'critic'\]",
    ),
    (
        "empty-phase-selection",
        _phase_with(parameters=lambda m: []),
        ValueError,
        "TrainingPhase 'critic': parameters: expected at least one parameter, got none",
    ),
    (
        "empty-main-selection",
        lambda out: _trainer(out, parameters=lambda m: iter(())),
        ValueError,
        "the main optimizer: parameters: expected at least one parameter, got none",
    ),
    (
        "shared-with-main-by-default",
        lambda out: _trainer(out, parameters=None),
        ValueError,
        r"expected no parameter shared between optimizers, got 'critic\.weight' selected by both "
        r"the main optimizer and TrainingPhase 'critic'; the main optimizer takes every parameter",
    ),
    (
        "shared-with-main",
        lambda out: _trainer(out, parameters=lambda m: [*m.generator.parameters(), m.critic.bias]),
        ValueError,
        r"got 'critic\.bias' selected by both the main optimizer and TrainingPhase 'critic'$",
    ),
    (
        "shared-between-phases",
        lambda out: _trainer(out, phases=[_phase(), _phase(name="critic2")]),
        ValueError,
        r"got 'critic\.weight' selected by both TrainingPhase 'critic' and TrainingPhase 'critic2'",
    ),
    (
        "selected-twice",
        _phase_with(parameters=lambda m: [m.critic.weight, m.critic.weight]),
        ValueError,
        r"got 'critic\.weight' selected twice by TrainingPhase 'critic'",
    ),
    (
        "not-a-model-parameter",
        _phase_with(parameters=lambda m: [nn.Parameter(torch.zeros(2))]),
        ValueError,
        r"expected parameters of the model, got a tensor of shape \(2,\) that is not in",
    ),
    (
        "selection-is-a-tensor",
        _phase_with(parameters=lambda m: m.critic.weight),
        TypeError,
        "TrainingPhase 'critic': parameters: expected an iterable of the model's parameters, "
        "got Parameter",
    ),
    (
        "every-zero",
        _phase_with(every=0),
        ValueError,
        "TrainingPhase 'critic': every: expected an int >= 1, got 0",
    ),
    (
        "every-float",
        _phase_with(every=2.0),
        TypeError,
        r"TrainingPhase.__init__\(\) parameter every=2\.0 violates",
    ),
    (
        "max-grad-norm-zero",
        _phase_with(max_grad_norm=0.0),
        ValueError,
        "TrainingPhase 'critic': max_grad_norm: expected None or a float > 0, got 0.0",
    ),
    (
        "max-grad-norm-negative",
        _phase_with(max_grad_norm=-1.0),
        ValueError,
        "max_grad_norm: expected None or a float > 0, got -1.0",
    ),
    (
        "fp16",
        lambda out: _trainer(out, mixed_precision="fp16"),
        ValueError,
        r"mixed_precision: expected 'bf16' or 'no' with phases .*use bf16 or no\), got 'fp16'",
    ),
    (
        "not-a-phase",
        lambda out: _trainer(out, phases=[_phase(), object()]),
        TypeError,
        # beartype checks one random item of a sequence; the Trainer then checks every item
        r"phases\[1\]: expected a TrainingPhase, got object|parameter phases=.* violates",
    ),
    (
        "a-single-phase",
        lambda out: _trainer(out, phases=_phase()),
        TypeError,
        r"Trainer.__init__\(\) parameter phases=.* violates",
    ),
    (
        "parameters-not-callable",
        lambda out: _trainer(out, parameters="generator"),
        TypeError,
        r"Trainer.__init__\(\) parameter parameters='generator' violates",
    ),
    (
        "phase-loss-not-callable",
        _phase_with(loss_fn=None),
        TypeError,
        r"TrainingPhase.__init__\(\) parameter loss_fn=.*None.* violates",
    ),
    (
        "phase-optimizer-factory-result",
        _phase_with(optimizer_factory=list),
        TypeError,
        "TrainingPhase 'critic': optimizer_factory: expected it to return a torch Optimizer, "
        "got list",
    ),
    (
        "phase-loss-not-scalar",
        lambda out: _trainer(
            out, steps=1, phases=[_phase(loss_fn=lambda m, b, s: m.critic(b["real"]))]
        ).fit(),
        ValueError,
        r"TrainingPhase 'critic' loss: expected a scalar tensor, got \(4, 1\)",
    ),
]


@pytest.mark.parametrize(
    ("build", "error", "message"), [case[1:] for case in _ERRORS], ids=[c[0] for c in _ERRORS]
)
def test_argument_errors(
    tmp_path: Path, build: Callable[[Path], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build(tmp_path)


def test_checkpoint_without_phase_optimizer_state_is_refused(tmp_path: Path) -> None:
    _trainer(tmp_path / "run", steps=2).fit()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000000002"
    (checkpoint / "optimizer-critic.pt").unlink()
    with pytest.raises(ValueError, match=r"step-000000002: optimizer-critic\.pt: missing"):
        _trainer(tmp_path / "run", steps=4).fit(resume="latest")  # the digests miss it
    state_file = checkpoint / "state.json"  # a checkpoint from before digests were recorded
    state = json.loads(state_file.read_text())
    del state["files"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"expected .*step-000000002/optimizer-critic\.pt \(the"):
        _trainer(tmp_path / "run", steps=4).fit(resume="latest")

    # A checkpoint of a run without phases, resumed with one.
    _trainer(tmp_path / "plain", steps=2, parameters=None, phases=[]).fit()
    assert not list((tmp_path / "plain" / "checkpoints").glob("*/optimizer-*.pt"))
    assert tuple(read_metrics(tmp_path / "plain" / "metrics.csv")[0]) == FIELDS
    with pytest.raises(ValueError, match=r"optimizer-critic\.pt"):
        _trainer(tmp_path / "plain", steps=4).fit(resume="latest")

    # And a checkpoint with a phase, resumed without it.
    _trainer(tmp_path / "gan", steps=2).fit()
    with pytest.raises(ValueError, match=r"written with phases \['critic'\]; expected"):
        _trainer(tmp_path / "gan", steps=4, phases=[]).fit(resume="latest")
