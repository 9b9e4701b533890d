"""A tiny training run shared by the training tests: imported in-process, or run as a script
(by `torchrun` for the multi-process test, as a subprocess for the SIGKILL test).

Not collected by pytest (its name does not start with `test_`).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mp_layers.training import FitResult, Trainer, TrainerConfig, TrainingPhase


class PairDataset:
    """`n` deterministic (x, y) pairs of a noisy linear map; items are dicts."""

    def __init__(self, n: int = 64) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x @ torch.randn(4, 1, generator=generator) + 0.1 * torch.randn(
            n, 1, generator=generator
        )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


def make_model() -> nn.Module:
    """A deterministic MLP without dropout, identical for every caller."""
    torch.manual_seed(1234)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


class TwoPart(nn.Module):
    """`make_model`'s MLP as a body and a head, for the `TrainingPhase` runs: the main optimizer
    trains the body, the phase the head (on the body's detached features, so under DDP the body
    is unused in the phase's graph)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1234)
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, detach_body: bool = False) -> torch.Tensor:
        features = self.body(x)
        out: torch.Tensor = self.head(features.detach() if detach_body else features)
        return out


def head_loss(model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> Any:
    """The phase's loss: a per-sample mean (so two processes' average equals the doubled batch),
    with an output penalty on even steps."""
    out = model(batch["x"], detach_body=True)
    loss = (out - batch["y"]).abs().mean()
    return loss + 0.1 * out.pow(2).mean() if step % 2 == 0 else loss


def _body_parameters(model: Any) -> Any:
    return model.body.parameters()


def _head_parameters(model: Any) -> Any:
    return model.head.parameters()


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor], *, noise: float, sleep: float) -> Any:
    if sleep:
        time.sleep(sleep)
    x = batch["x"]
    if noise:  # draws from the global RNG, so resume must restore it
        x = x + noise * torch.randn_like(x)
    return ((model(x) - batch["y"]) ** 2).mean()


def run(
    *,
    out: str | Path,
    steps: int,
    batch_size: int = 4,
    optimizer: str = "sgd",
    noise: float = 0.0,
    sleep: float = 0.0,
    resume: str | None = None,
    phase: bool = False,
    sample_fn: Any = None,
    **config: Any,
) -> tuple[Trainer, FitResult]:
    factory = (
        functools.partial(torch.optim.SGD, lr=0.1)
        if optimizer == "sgd"
        else functools.partial(torch.optim.Adam, lr=1e-2)
    )
    settings: dict[str, Any] = {"ema_beta": None, "progress_bar": False, "cpu": True}
    settings.update(config)
    phases: dict[str, Any] = {}
    if phase:  # the body is the main optimizer's, the head a TrainingPhase's
        phases["parameters"] = _body_parameters
        phases["phases"] = [
            TrainingPhase(
                name="head",
                parameters=_head_parameters,
                optimizer_factory=factory,
                loss_fn=head_loss,
                max_grad_norm=1.0,
            )
        ]
    trainer = Trainer(
        model=TwoPart() if phase else make_model(),
        data=PairDataset(),
        optimizer_factory=factory,
        config=TrainerConfig(out_dir=str(out), steps=steps, batch_size=batch_size, **settings),
        loss_fn=functools.partial(loss_fn, noise=noise, sleep=sleep),
        sample_fn=sample_fn,
        **phases,
    )
    return trainer, trainer.fit(resume=resume)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--max-time", type=float, default=None)
    parser.add_argument("--phase", action="store_true", help="train the head as a TrainingPhase")
    parser.add_argument("--distributed", default="ddp", help="ddp or fsdp")
    parser.add_argument("--ema-beta", type=float, default=None)
    parser.add_argument("--max-grad-norm", type=float, default=None)
    args = parser.parse_args(argv)
    trainer, _ = run(
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        noise=args.noise,
        sleep=args.sleep,
        resume=args.resume,
        save_every=args.save_every,
        max_time_s=args.max_time,
        phase=args.phase,
        distributed=args.distributed,
        ema_beta=args.ema_beta,
        max_grad_norm=args.max_grad_norm,
    )
    # Test output: every rank holding whole weights (all under DDP, the main one under FSDP)
    # dumps them, so the test can compare them across ranks.
    rank = trainer.accelerator.process_index
    model = trainer.full_model()
    if model is not None:
        params = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(params, Path(args.out) / f"params-rank{rank}.pt")
    print(f"rank {rank} of {trainer.accelerator.num_processes}: done at step {trainer.step}")


if __name__ == "__main__":
    main()
