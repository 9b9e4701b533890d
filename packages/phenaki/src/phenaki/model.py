"""`Phenaki`: text to video with a frozen C-ViViT tokenizer, MaskGit and an optional token critic.

Training (`forward`) masks a random fraction of a video's tokens, drawn from a mask schedule
(cosine by default: `γ(r) = cos(π r / 2)`, MaskGIT, Chang et al. 2022, eq. 3, with `r` uniform over
`{0, 1/T, ..., (T-1)/T}` as the reference), and trains MaskGit to predict them (cross-entropy on the
masked valid tokens), with the text dropped for a fraction `cond_drop_prob` of the clips so that
classifier-free guidance has a trained unconditional branch (the reference zeroed that fraction,
defect P2). A critic (Token-Critic, Lezama et al. 2022) learns which tokens of a MaskGit sample
are wrong.

Sampling (`sample`, `sample_images`) decodes the tokens iteratively with MaskGit (two rules,
"reference" and "maskgit"), optionally after fixed prime frames: `phenaki.sampling`. Multi-scene
stories (`make_video`) are in `phenaki.story`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mp_layers.hub import CONFIG_NAME, HubModel, resolve_folder
from mp_layers.hub import WEIGHTS_NAME as WEIGHTS_NAME
from mp_layers.typecheck import typechecked
from phenaki.cvivit import CViViT
from phenaki.maskgit import MaskGit, SelfCritic
from phenaki.masking import critic_labels, get_mask_subset_with_prob, gumbel_sample, mask_schedule
from phenaki.pretrained import FORMAT as FORMAT
from phenaki.pretrained import FORMAT_VERSION as FORMAT_VERSION
from phenaki.pretrained import (
    checked_tokenizer,
    file_sha256,
    load_v010,
    recorded_tokenizer,
    tokenizer_digest,
)
from phenaki.sampling import TokenDecoder, sample_video
from phenaki.token_critic import TokenCritic

__all__ = ["DEFAULT_T5_NAME", "Phenaki", "file_sha256"]

DEFAULT_T5_NAME = "google/t5-v1_1-base"
TextFunction = Callable[[Sequence[str], torch.device], tuple[Tensor, Tensor]]
Schedule = Literal["cosine", "linear", "sqrt"]


class _Frozen:
    """Holds the tokenizer outside the module tree: never in `state_dict()`, `parameters()` or a
    checkpoint (`save_pretrained` writes it to its own `cvivit/` subfolder instead), and
    shared, not copied, by `copy.deepcopy` (EMA copies)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict[int, Any]) -> _Frozen:
        return self


class Phenaki(nn.Module, HubModel):
    """Text-to-video with a frozen `CViViT` and a `MaskGit` (see the module docstring).

    Args:
        maskgit: the token transformer; `num_tokens` must equal the tokenizer's codebook size.
        cvivit: the trained tokenizer; an evaluation copy is kept, frozen.
        critic: a `TokenCritic`, or None (`self_token_critic=True` builds a `SelfCritic`).
        steps: sampling iterations (and the granularity of the training mask ratios).
        t5_name: the text encoder to load on first use (a Hugging Face name or a local folder;
            extra `phenaki[text]`) when `text_encoder` is None and MaskGit is conditional.
        text_encoder: `f(texts, device) -> (embeddings (b, m, d), mask (b, m) bool)`, e.g. a
            `phenaki.text.TextEncoder`; never called at construction.
        text_embed_dim: the encoder's width, checked against MaskGit's `dim_context` now (else at
            the first encoding).
        cond_drop_prob: fraction of training clips whose text is dropped (> 0 to train guidance).
        self_token_critic: use a `SelfCritic` on MaskGit's embeddings.
        critic_loss_weight: weight of the critic's binary cross-entropy.
        critic_noise_anneal_schedule: "fixed", "decay" or "increase" noise on the critic's scores.
        critic_train_sample_temperature: temperature of the MaskGit samples the critic judges.
        schedule: the mask schedule ("cosine", "linear", "sqrt"), for training and sampling.
        decoding: the default sampling rule, "reference" or "maskgit".

    Files (`mp_layers.hub.HubModel`, a composite as diffusers pipelines): `save_pretrained(folder,
    tokenizer=None)` writes Phenaki's arguments and the subfolders `maskgit/`, `cvivit/` and
    `critic/`; `from_pretrained(folder_or_repo_id, tokenizer=None, text_encoder=None)` reads them
    (or a folder of phenaki 0.1.0, `phenaki.pretrained`); `push_to_hub(repo_id)` publishes.
    """

    _hub_parts: ClassVar[tuple[str, ...]] = ("maskgit", "cvivit", "critic")

    @typechecked
    def __init__(
        self,
        *,
        maskgit: MaskGit,
        cvivit: CViViT,
        critic: TokenCritic | None = None,
        steps: int = 18,
        t5_name: str = DEFAULT_T5_NAME,
        text_encoder: Any = None,
        text_embed_dim: int | None = None,
        cond_drop_prob: float = 0.25,
        self_token_critic: bool = False,
        critic_loss_weight: float = 1.0,
        critic_noise_anneal_schedule: Literal["fixed", "decay", "increase"] = "decay",
        critic_train_sample_temperature: float = 1.0,
        schedule: Schedule = "cosine",
        decoding: Literal["reference", "maskgit"] = "reference",
    ) -> None:
        super().__init__()
        if maskgit.num_tokens != cvivit.codebook_size:
            raise ValueError(
                f"maskgit.num_tokens: expected the tokenizer's codebook size "
                f"{cvivit.codebook_size}, got {maskgit.num_tokens}"
            )
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob: expected a value in [0, 1), got {cond_drop_prob}")
        if critic is not None and self_token_critic:
            raise ValueError("critic and self_token_critic: expected at most one, got both")
        if text_encoder is not None and not callable(text_encoder):
            raise TypeError(f"text_encoder: expected a callable, got {type(text_encoder).__name__}")
        conditional = not maskgit.unconditional
        if conditional and text_embed_dim is not None and text_embed_dim != maskgit.dim_context:
            raise ValueError(
                f"text_embed_dim: expected MaskGit's dim_context {maskgit.dim_context}, got "
                f"{text_embed_dim}"
            )
        if critic is not None and critic.has_cross_attn and not conditional:
            raise ValueError("critic: has cross-attention but MaskGit is unconditional")
        if (
            critic is not None
            and critic.has_cross_attn
            and critic.dim_context != maskgit.dim_context
        ):
            raise ValueError(
                f"critic.dim_context: expected MaskGit's {maskgit.dim_context}, got "
                f"{critic.dim_context}"
            )
        self.maskgit = maskgit
        self._tokenizer = _Frozen(cvivit.copy_for_eval().requires_grad_(False))
        # the tokenizer's folder and the SHA-256 of its weights (`save_pretrained(tokenizer=)`)
        self.tokenizer_folder: Path | None = None
        self.tokenizer_sha256: str | None = None
        if self_token_critic:  # the SelfCritic's head is saved with Phenaki's own weights
            self._hub_parts = ("maskgit", "cvivit")  # type: ignore[misc]
        self.critic: nn.Module | None = SelfCritic(maskgit) if self_token_critic else critic
        self.steps = steps
        self.t5_name = t5_name
        self.text_encoder = text_encoder  # a plain attribute: never saved or optimised
        self.cond_drop_prob = cond_drop_prob
        self.critic_loss_weight = critic_loss_weight
        self.critic_noise_anneal_schedule = critic_noise_anneal_schedule
        self.critic_train_sample_temperature = critic_train_sample_temperature
        self.schedule: Schedule = schedule
        self.decoding = decoding
        self.config: dict[str, Any] = {
            "steps": steps,
            "t5_name": t5_name,
            "cond_drop_prob": cond_drop_prob,
            "self_token_critic": self_token_critic,
            "critic_loss_weight": critic_loss_weight,
            "critic_noise_anneal_schedule": critic_noise_anneal_schedule,
            "critic_train_sample_temperature": critic_train_sample_temperature,
            "schedule": schedule,
            "decoding": decoding,
        }

    @property
    def cvivit(self) -> CViViT:
        """The frozen evaluation copy of the tokenizer (moved along by `.to()`, never saved)."""
        module = self._tokenizer.module
        assert isinstance(module, CViViT)
        return module

    def _apply(self, fn: Any, recurse: bool = True) -> Phenaki:
        super()._apply(fn, recurse)
        self._tokenizer.module._apply(fn, recurse)
        return self

    # ------------------------------------------------------------------ text

    def _device(self) -> torch.device:
        return next(self.maskgit.parameters()).device

    def encode_text(
        self, texts: Sequence[str] | None, text_embeds: Tensor | None, text_mask: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Text embeddings `(b, m, dim_context)` and mask `(b, m)` for a conditional MaskGit (from
        `text_embeds`, or from `texts` through the text encoder), or `(None, None)`."""
        if self.maskgit.unconditional:
            if texts is not None or text_embeds is not None:
                raise ValueError("texts: MaskGit is unconditional, expected no texts or embeddings")
            return None, None
        device = self._device()
        if text_embeds is None:
            if texts is None:
                raise ValueError("texts: a conditional Phenaki needs texts or text_embeds")
            if self.text_encoder is None:
                from phenaki.text import TextEncoder  # extra phenaki[text]; loads on first call

                self.text_encoder = TextEncoder(self.t5_name)
            text_embeds, text_mask = self.text_encoder(list(texts), device)
        elif texts is not None:
            raise ValueError("texts and text_embeds: expected one of them, got both")
        assert text_embeds is not None
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != self.maskgit.dim_context:
            raise ValueError(
                f"text embeddings: expected (b, m, {self.maskgit.dim_context}), got "
                f"{tuple(text_embeds.shape)}"
            )
        if text_mask is None:
            text_mask = torch.ones(text_embeds.shape[:2], dtype=torch.bool, device=device)
        return text_embeds.to(device), text_mask.to(device).bool()

    # ------------------------------------------------------------------ training

    def _critic_logits(
        self,
        ids: Tensor,
        grid: tuple[int, ...],
        context: Tensor | None,
        text_mask: Tensor | None,
        video_mask: Tensor | None,
        cond_drop_prob: float,
    ) -> Tensor:
        critic: Any = self.critic
        text = {"context": context, "text_mask": text_mask} if critic.has_cross_attn else {}
        logits: Tensor = critic(
            ids,
            video_patch_shape=grid,
            video_mask=video_mask,
            cond_drop_prob=cond_drop_prob,
            **text,
        )
        return logits

    def _check_inputs(
        self,
        videos: Tensor | None,
        video_codebook_ids: Tensor | None,
        only_train_generator: bool,
        only_train_critic: bool,
    ) -> None:
        """The checks of `forward`'s arguments (the tokenizer checks the videos, MaskGit the text)."""
        if (videos is None) == (video_codebook_ids is None):
            raise ValueError("videos and video_codebook_ids: expected exactly one of them")
        if only_train_generator and only_train_critic:
            raise ValueError("only_train_generator and only_train_critic: expected at most one")
        if only_train_critic and self.critic is None:
            raise ValueError("only_train_critic: this Phenaki has no critic")
        if video_codebook_ids is not None and video_codebook_ids.ndim != 4:
            raise ValueError(
                f"video_codebook_ids: expected (b, t', h, w), got {tuple(video_codebook_ids.shape)}"
            )

    def forward(
        self,
        videos: Tensor | None = None,
        *,
        texts: Sequence[str] | None = None,
        video_codebook_ids: Tensor | None = None,
        video_frame_mask: Tensor | None = None,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        cond_drop_prob: float | None = None,
        only_train_generator: bool = False,
        only_train_critic: bool = False,
    ) -> Tensor:
        """The training loss: MaskGit's cross-entropy on masked tokens (+ `critic_loss_weight` x
        the critic's BCE). `videos (b, c, F, H, W)` in [0, 1] (or their `video_codebook_ids (b, t',
        h, w)`), `video_frame_mask (b, F)` for variable lengths, `texts` or `text_embeds (b, m,
        d)` with `text_mask (b, m)`; `only_train_critic` returns the critic's loss alone."""
        self._check_inputs(videos, video_codebook_ids, only_train_generator, only_train_critic)
        device = self._device()
        token_mask = None
        if video_codebook_ids is None:
            assert videos is not None
            with torch.no_grad():
                video_codebook_ids = self.cvivit(
                    videos.to(device), mask=video_frame_mask, return_only_codebook_ids=True
                )
            if video_frame_mask is not None:
                token_mask = self.cvivit.calculate_video_token_mask(videos, video_frame_mask)
        assert video_codebook_ids is not None
        ids = video_codebook_ids.to(device)
        grid = tuple(ids.shape[1:])
        ids = ids.flatten(1)
        batch = ids.shape[0]
        valid = (
            torch.ones_like(ids, dtype=torch.bool) if token_mask is None else token_mask.to(device)
        )
        context, text_mask = self.encode_text(texts, text_embeds, text_mask)
        drop = self.cond_drop_prob if cond_drop_prob is None else cond_drop_prob

        step = torch.randint(0, self.steps, (batch,), device=device)
        fraction = mask_schedule(step.float() / self.steps, self.schedule)
        masked = get_mask_subset_with_prob(valid, fraction)
        inputs = ids.masked_fill(masked, self.maskgit.mask_id)
        text = {"context": context, "text_mask": text_mask} if context is not None else {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not only_train_critic):
            logits = self.maskgit(
                inputs, video_patch_shape=grid, video_mask=valid, cond_drop_prob=drop, **text
            )
        loss = F.cross_entropy(logits[masked], ids[masked])
        if self.critic is None or only_train_generator:
            return loss
        sampled = gumbel_sample(logits.detach(), self.critic_train_sample_temperature)
        judged = torch.where(masked, sampled, ids)
        labels = critic_labels(judged, ids, masked)
        critic_logits = self._critic_logits(judged, grid, context, text_mask, valid, drop)
        bce = F.binary_cross_entropy_with_logits(critic_logits[valid], labels[valid])
        return bce if only_train_critic else loss + self.critic_loss_weight * bce

    # ------------------------------------------------------------------ sampling

    def _decoder(self) -> TokenDecoder:
        """The iterative decoder over this model's MaskGit and critic (`phenaki.sampling`)."""
        return TokenDecoder(
            maskgit=self.maskgit,
            critic=self.critic,
            steps=self.steps,
            schedule=self.schedule,
            critic_noise_anneal_schedule=self.critic_noise_anneal_schedule,
        )

    @torch.no_grad()
    @typechecked
    def sample(
        self,
        *,
        num_frames: int,
        texts: Sequence[str] | None = None,
        text_embeds: Tensor | None = None,
        text_mask: Tensor | None = None,
        prime_frames: Tensor | None = None,
        batch_size: int = 1,
        cond_scale: float = 3.0,
        starting_temperature: float = 0.9,
        noise_K: float = 1.0,
        generator: torch.Generator | None = None,
        decoding: Literal["reference", "maskgit"] | None = None,
        return_prime: bool = False,
    ) -> Tensor:
        """Videos `(b, c, num_frames, H, W)` in about [0, 1] (with `return_prime`, preceded by the
        prime's reconstruction: `(b, c, prime + num_frames, H, W)`). Without `prime_frames`, `num_frames`
        is `1 + k * pt`; with `prime_frames (b, c, 1 + j * pt, H, W)` it is a multiple of `pt`
        and the new frames continue the prime. Deterministic given `generator` (on the model's
        device)."""
        was_training = self.training
        self.eval()
        try:
            context, text_mask = self.encode_text(texts, text_embeds, text_mask)
            video, prime_length = sample_video(
                self._decoder(),
                self.cvivit,
                num_frames=num_frames,
                context=context,
                text_mask=text_mask,
                prime_frames=prime_frames,
                batch_size=batch_size,
                cond_scale=cond_scale,
                starting_temperature=starting_temperature,
                noise_k=noise_K,
                generator=generator,
                decoding=decoding or self.decoding,
            )
            return video if return_prime else video[:, :, prime_length:]
        finally:
            self.train(was_training)

    @typechecked
    def sample_images(
        self,
        *,
        texts: Sequence[str] | None = None,
        text_embeds: Tensor | None = None,
        batch_size: int = 1,
        cond_scale: float = 3.0,
        starting_temperature: float = 0.9,
        noise_K: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Images `(b, c, H, W)`: `sample` with one frame."""
        video = self.sample(
            num_frames=1,
            texts=texts,
            text_embeds=text_embeds,
            batch_size=batch_size,
            cond_scale=cond_scale,
            starting_temperature=starting_temperature,
            noise_K=noise_K,
            generator=generator,
        )
        return video[:, :, 0]

    # ------------------------------------------------------------------ files (mp_layers.hub)

    def _hub_config(self) -> dict[str, Any]:
        """Phenaki's own arguments (the parts go to subfolders; a text encoder is never saved)
        and, when known, the folder and SHA-256 of the tokenizer it was trained on."""
        unsaved = ("text_encoder", "maskgit", "cvivit", "critic")
        config = {k: v for k, v in super()._hub_config().items() if k not in unsaved}
        if self.tokenizer_folder is not None and self.tokenizer_sha256 is not None:
            source = {"folder": str(self.tokenizer_folder), "sha256": self.tokenizer_sha256}
            config["tokenizer_source"] = source
        return config

    @typechecked
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Write `config.json`, `model.safetensors` and the parts' subfolders `maskgit/`,
        `cvivit/` (the frozen tokenizer) and `critic/` (a `TokenCritic`; a `SelfCritic`'s head
        stays in `model.safetensors`) to `save_directory`; returns the folder.

        `tokenizer`: the folder the tokenizer was saved to (`CViViT.save_pretrained`), recorded
        with the SHA-256 of its weights (default: the one this model was loaded with, if any)."""
        if tokenizer is not None:
            folder = Path(tokenizer)
            self.tokenizer_sha256 = tokenizer_digest(folder)
            self.tokenizer_folder = folder.resolve()
        return super().save_pretrained(save_directory, **kwargs)

    @classmethod
    @typechecked
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        text_encoder: Any = None,
        **kwargs: Any,
    ) -> Phenaki:
        """The Phenaki saved in a folder or a Hub repo (`mp_layers.hub.HubModel`), also one
        written by phenaki 0.1.0 (whose tokenizer is read from the recorded folder).

        `tokenizer`: a tokenizer folder to use instead, whose weights must have the SHA-256 the
        folder records; `text_encoder`: as `Phenaki`'s (never saved); other keywords as
        `HubModel.from_pretrained` (`map_location`, `revision`, `cache_dir`, parts, arguments)."""
        hub = ("revision", "cache_dir", "force_download", "local_files_only", "token")
        folder = resolve_folder(
            pretrained_model_name_or_path, **{k: kwargs[k] for k in hub if k in kwargs}
        )
        config_path = folder / CONFIG_NAME
        config = (
            json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        )
        recorded = recorded_tokenizer(config) if isinstance(config, dict) else None
        if tokenizer is not None:
            sha256 = None if recorded is None else recorded["sha256"]
            kwargs["cvivit"] = checked_tokenizer(Path(tokenizer), sha256, config_path)
            recorded = {
                "folder": str(Path(tokenizer).resolve()),
                "sha256": tokenizer_digest(Path(tokenizer)),
            }
        model = super().from_pretrained(folder, text_encoder=text_encoder, **kwargs)
        if recorded is not None:
            model.tokenizer_folder = Path(recorded["folder"])
            model.tokenizer_sha256 = recorded["sha256"]
        return model

    @classmethod
    def _hub_load_legacy(
        cls, folder: Path, config: dict[str, Any], kwargs: dict[str, Any]
    ) -> Phenaki | None:
        """A folder written by phenaki 0.1.0 (`phenaki.pretrained.load_v010`)."""
        model: Phenaki | None = load_v010(cls, folder, config, kwargs)
        return model
