"""The train state: what a checkpoint of a `Trainer` holds, and writing, reading and choosing
checkpoints (`TrainState`, a mixin of `Trainer`).

A checkpoint folder (`checkpoint.py` writes it atomically and verifies it) holds the whole model
(`model.safetensors`, or FSDP shards), the EMA copies, each optimizer's state, the scheduler, the
loss scaler, every process's RNG state, and `state.json`: the step, the data position, the skipped
steps, the world size, the `TrainerConfig`, the phases and the distribution strategy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import save_model
from torch import nn

from mp_layers.training import checkpoint as ckpt
from mp_layers.training import sharding
from mp_layers.training.config import TrainerConfig
from mp_layers.training.metrics import MetricsLog
from mp_layers.training.phases import TrainingPhase

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer
    from ema_pytorch import EMA, PostHocEMA
    from torch.optim.lr_scheduler import LRScheduler

_FORMAT_VERSION = 1


class TrainState:
    """Checkpointing of a `Trainer`: the attributes below are what a checkpoint saves and
    restores; `Trainer` sets them up."""

    accelerator: Accelerator
    config: TrainerConfig
    model: nn.Module
    optimizer: AcceleratedOptimizer
    phase_optimizers: dict[str, AcceleratedOptimizer]
    phases: tuple[TrainingPhase, ...]
    scheduler: LRScheduler | None
    ema: EMA | None
    post_hoc_ema: PostHocEMA | None
    metrics: MetricsLog
    checkpoint_dir: Path
    step: int
    batches_consumed: int
    skipped_steps: int
    consecutive_nonfinite: int
    _fsdp: bool
    _gathered: nn.Module | None  # under FSDP: the main process's whole copy

    @property
    def unwrapped_model(self) -> nn.Module:
        """The bare model (without DDP or other wrappers). Under FSDP its parameters are this
        process's shards (DTensors); `full_model()` gives whole weights."""
        model: nn.Module = self.accelerator.unwrap_model(self.model)
        return model

    def full_model(self) -> nn.Module | None:
        """The model with whole weights: the bare model, or under FSDP the main process's copy
        refreshed from the shards (collective under FSDP: call on every process; `None` on the
        other processes)."""
        if not self._fsdp:
            return self.unwrapped_model
        state = sharding.gather_full_state(self.model)
        if self._gathered is None:
            return None
        self._gathered.load_state_dict(state)
        return self._gathered

    def _state(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "step": self.step,
            "batches_consumed": self.batches_consumed,
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "world_size": self.accelerator.num_processes,
            "config": self.config.to_dict(),
            "phases": [phase.name for phase in self.phases],
            "distributed": "fsdp" if self._fsdp else "ddp",
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (collective: call on every process).

        Returns its folder on the main process and `None` elsewhere."""
        accelerator = self.accelerator
        rng_states = gather_object([ckpt.capture_rng_state()])
        shards = self._save_shards() if self._fsdp else None
        whole = self.full_model()
        path = None
        if accelerator.is_main_process:
            self.metrics.flush()

            def write(folder: Path) -> None:
                assert whole is not None  # the main process holds whole weights
                save_model(whole, str(folder / "model.safetensors"))
                if shards is not None:  # model and optimizer shards, for resuming
                    os.replace(shards, folder / sharding.SHARDED_DIR)
                if self.ema is not None:
                    save_model(self.ema, str(folder / "ema.safetensors"))
                if self.post_hoc_ema is not None:
                    save_model(self.post_hoc_ema, str(folder / "post_hoc_ema.safetensors"))
                if shards is None:
                    torch.save(self.optimizer.optimizer.state_dict(), folder / "optimizer.pt")
                for name, optimizer in self.phase_optimizers.items():
                    torch.save(optimizer.optimizer.state_dict(), folder / f"optimizer-{name}.pt")
                if self.scheduler is not None:
                    torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
                if accelerator.scaler is not None:
                    torch.save(accelerator.scaler.state_dict(), folder / "scaler.pt")
                torch.save(rng_states, folder / "rng.pt")

            path = ckpt.write_checkpoint(
                self.checkpoint_dir,
                step=self.step,
                write=write,
                state=self._state(),
                keep_last=self.config.keep_last,
            )
        accelerator.wait_for_everyone()
        return path

    def _save_shards(self) -> Path:
        """Every process writes its model and optimizer shards into one staging folder (named by
        the step, so all processes agree; a crash leaves a `.tmp-` folder that the next start
        removes); the main process then moves it into the checkpoint. Collective."""
        staging = self.checkpoint_dir / f".tmp-shards-{ckpt.checkpoint_name(self.step)}"
        if self.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        sharding.save_sharded(staging, self.model, self.optimizer.optimizer)
        self.accelerator.wait_for_everyone()
        return staging

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore model, EMA, optimizers (the main one and each phase's), scheduler, scaler, RNG
        and data position from `path`."""
        accelerator = self.accelerator
        path = Path(path)
        state = ckpt.read_state(path)
        for name in self.phase_optimizers:
            file = path / f"optimizer-{name}.pt"
            if not file.is_file():
                raise ValueError(
                    f"checkpoint {path}: expected {file} (the optimizer state of TrainingPhase "
                    f"{name!r}), got no such file; was the checkpoint written without this phase?"
                )
        saved_phases = list(state.get("phases", []))
        unknown = [name for name in saved_phases if name not in self.phase_optimizers]
        if unknown:
            raise ValueError(
                f"checkpoint {path}: written with phases {saved_phases}; expected this Trainer to "
                f"have them too, got phases {list(self.phase_optimizers)}"
            )
        written_under = state.get("distributed", "ddp")
        if written_under != ("fsdp" if self._fsdp else "ddp"):
            raise ValueError(
                f"checkpoint {path}: written under distributed={written_under!r} by "
                f"{state['world_size']} processes; expected distributed="
                f"{'fsdp' if self._fsdp else 'ddp'!r} here ({accelerator.num_processes} processes):"
                f" resume with --distributed {written_under} on several processes"
            )
        if self._fsdp:
            sharding.load_sharded(path / sharding.SHARDED_DIR, self.model, self.optimizer.optimizer)
        else:
            ckpt.load_safetensors_into(self.unwrapped_model, path / "model.safetensors")
        for module, name in ((self.ema, "ema"), (self.post_hoc_ema, "post_hoc_ema")):
            file = path / f"{name}.safetensors"
            if module is not None:
                if not file.is_file():
                    raise ValueError(f"checkpoint {path}: {name} is enabled but {file} is missing")
                ckpt.load_safetensors_into(module, file, device=accelerator.device)
        if not self._fsdp:
            self.optimizer.optimizer.load_state_dict(ckpt.load_tensors(path / "optimizer.pt"))
        for name, optimizer in self.phase_optimizers.items():
            optimizer.optimizer.load_state_dict(ckpt.load_tensors(path / f"optimizer-{name}.pt"))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt.load_tensors(path / "scheduler.pt"))
        if accelerator.scaler is not None and (path / "scaler.pt").is_file():
            accelerator.scaler.load_state_dict(ckpt.load_tensors(path / "scaler.pt"))
        rng_states = ckpt.load_tensors(path / "rng.pt")
        if state["world_size"] != accelerator.num_processes:
            accelerator.print(
                f"warning: checkpoint written by {state['world_size']} processes, resuming on "
                f"{accelerator.num_processes}: data order and RNG streams will differ"
            )
        ckpt.restore_rng_state(rng_states[accelerator.process_index % len(rng_states)])
        self.step = int(state["step"])
        self.batches_consumed = int(state["batches_consumed"])
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_nonfinite = int(state["consecutive_nonfinite"])

    def _resolve_resume(self, resume: str | Path | None) -> Path | None:
        """`checkpoint.resolve_resume` (verified; 'latest' skips damaged checkpoints with a
        warning), run on the main process and its outcome (folder or error) sent to the others,
        so the files are hashed once and every process resumes from the same folder or raises."""
        from accelerate.utils import broadcast_object_list

        accelerator = self.accelerator
        outcome: list[Path | Exception | None] = [None]
        if accelerator.is_main_process:
            try:
                outcome[0] = ckpt.resolve_resume(
                    self.checkpoint_dir, resume, warn=accelerator.print
                )
            except Exception as error:  # e.g. CheckpointError: raised on every process below
                outcome[0] = error
        if accelerator.num_processes > 1:
            broadcast_object_list(outcome)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]
