"""Phenaki: training losses, condition dropout, critics, sampling (both rules), priming, stories."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from phenaki import CViViT, MaskGit, SelfCritic, TokenCritic
from phenaki.phenaki import Phenaki, make_video

from .conftest import TINY

DIM_CONTEXT = 12


def tokenizer() -> CViViT:
    return CViViT(**{**TINY, "codebook_size": 32, "use_vgg_and_gan": False})


def maskgit(**overrides: Any) -> MaskGit:
    config: dict[str, Any] = {
        "dim": 32,
        "num_tokens": 32,
        "max_seq_len": 256,
        "depth": 1,
        "heads": 2,
        "dim_head": 8,
        "dim_context": DIM_CONTEXT,
        **overrides,
    }
    if config.get("unconditional"):
        config.pop("dim_context")
    return MaskGit(**config)


class FakeText:
    """A text encoder stand-in: a fixed random embedding per word, a real padding mask."""

    def __init__(self) -> None:
        self.calls = 0
        self.table: dict[str, Tensor] = {}

    def __call__(self, texts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        self.calls += 1
        words = [text.split() for text in texts]
        m = max(len(w) for w in words)
        embeds = torch.zeros(len(texts), m, DIM_CONTEXT)
        mask = torch.zeros(len(texts), m, dtype=torch.bool)
        for i, row in enumerate(words):
            for j, word in enumerate(row):
                gen = torch.Generator().manual_seed(sum(map(ord, word)))
                embeds[i, j] = torch.randn(DIM_CONTEXT, generator=gen)
                mask[i, j] = True
        return embeds.to(device), mask.to(device)


def phenaki(**overrides: Any) -> Phenaki:
    config: dict[str, Any] = {
        "maskgit": maskgit(),
        "cvivit": tokenizer(),
        "text_encoder": FakeText(),
        "steps": 4,
        **overrides,
    }
    return Phenaki(**config)


def videos(b: int = 2, f: int = 5) -> Tensor:
    return torch.rand(b, 3, f, 16, 16)


def test_training_loss_trains_maskgit_only() -> None:
    model = phenaki()
    loss = model(videos(), texts=["a red circle", "a blue square moving"])
    assert loss.shape == ()
    loss.backward()
    assert model.maskgit.token_emb.weight.grad is not None
    assert all(p.grad is None for p in model.cvivit.parameters())
    assert not any(p.requires_grad for p in model.cvivit.parameters())


def test_codebook_ids_and_text_embeddings_instead_of_videos_and_texts() -> None:
    model = phenaki()
    ids = model.cvivit(videos(), return_only_codebook_ids=True)
    embeds, mask = FakeText()(["a b", "c"], torch.device("cpu"))
    loss = model(video_codebook_ids=ids, text_embeds=embeds, text_mask=mask)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="exactly one"):
        model(videos(), video_codebook_ids=ids, text_embeds=embeds)
    with pytest.raises(ValueError, match="expected one of them, got both"):
        model(videos(), texts=["a", "b"], text_embeds=embeds)


def test_condition_dropout_is_applied_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect P2: the reference forced cond_drop_prob to 0, so guidance's branch never trained."""
    model = phenaki(cond_drop_prob=0.25)
    seen: list[float] = []
    original = model.maskgit.forward

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        seen.append(kwargs["cond_drop_prob"])
        return original(*args, **kwargs)

    monkeypatch.setattr(model.maskgit, "forward", spy)
    model(videos(), texts=["a", "b"])
    model(videos(), texts=["a", "b"], cond_drop_prob=0.0)
    assert seen == [0.25, 0.0]


def test_masked_frames_are_never_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    import phenaki.model as module

    chosen: list[Tensor] = []
    original = module.get_mask_subset_with_prob

    def spy(mask: Tensor, prob: Tensor) -> Tensor:
        out = original(mask, prob)
        chosen.append(out)
        return out

    monkeypatch.setattr(module, "get_mask_subset_with_prob", spy)
    model = phenaki()
    frame_mask = torch.tensor([[True] * 5, [True, False, False, False, False]])
    loss = model(videos(), texts=["a", "b"], video_frame_mask=frame_mask)
    assert torch.isfinite(loss)
    assert chosen[0][1, 16:].sum() == 0  # the second clip is one frame: 16 tokens
    assert chosen[0][1, :16].sum() >= 1


def test_critic_training_and_only_flags() -> None:
    critic = TokenCritic(
        dim=16,
        num_tokens=32,
        max_seq_len=256,
        depth=1,
        heads=2,
        dim_head=8,
        has_cross_attn=True,
        dim_context=DIM_CONTEXT,
    )
    model = phenaki(critic=critic)
    loss = model(videos(), texts=["a", "b"])
    loss.backward()
    assert critic.to_logits.weight.grad is not None
    assert model.maskgit.token_emb.weight.grad is not None
    model.zero_grad()
    model(videos(), texts=["a", "b"], only_train_critic=True).backward()
    assert model.maskgit.token_emb.weight.grad is None
    assert critic.to_logits.weight.grad is not None
    model.zero_grad()
    model(videos(), texts=["a", "b"], only_train_generator=True).backward()
    assert critic.to_logits.weight.grad is None


def test_self_critic_is_a_head_on_maskgit() -> None:
    model = phenaki(self_token_critic=True)
    assert model.critic is not None
    assert model.critic.maskgit is model.maskgit  # the same body, one set of weights
    model(videos(), texts=["a", "b"], only_train_critic=True).backward()
    assert model.critic.to_pred.weight.grad is not None
    model.zero_grad()
    model(videos(), texts=["a", "b"]).backward()
    assert model.maskgit.to_logits.weight.grad is not None


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="codebook size 32, got 64"):
        Phenaki(maskgit=maskgit(num_tokens=64), cvivit=tokenizer())
    with pytest.raises(ValueError, match="dim_context 12, got 768"):
        Phenaki(maskgit=maskgit(), cvivit=tokenizer(), text_embed_dim=768)
    with pytest.raises(ValueError, match="at most one"):
        Phenaki(
            maskgit=maskgit(),
            cvivit=tokenizer(),
            self_token_critic=True,
            critic=TokenCritic(dim=16, num_tokens=32, max_seq_len=64, depth=1, heads=2, dim_head=8),
        )
    with pytest.raises(ValueError, match="cond_drop_prob"):
        Phenaki(maskgit=maskgit(), cvivit=tokenizer(), cond_drop_prob=1.0)
    with pytest.raises(TypeError):
        Phenaki(maskgit=maskgit(), cvivit="tok")  # type: ignore[arg-type]


def test_text_encoder_is_not_called_at_construction() -> None:
    text = FakeText()
    model = phenaki(text_encoder=text)
    assert text.calls == 0
    model.sample(num_frames=3, texts=["a"])
    assert text.calls == 1
    assert not any(key.startswith("text_encoder") for key in model.state_dict())


@pytest.mark.parametrize("decoding", ["reference", "maskgit"])
@pytest.mark.parametrize("with_critic", [False, True])
def test_sampling_is_deterministic_given_a_generator(decoding: str, with_critic: bool) -> None:
    model = phenaki(self_token_critic=with_critic)
    assert model.training
    outs = [
        model.sample(
            num_frames=5,
            texts=["a red", "a blue"],
            decoding=decoding,  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(1),
        )
        for _ in range(2)
    ]
    assert outs[0].shape == (2, 3, 5, 16, 16)
    torch.testing.assert_close(outs[0], outs[1])
    assert model.training  # restored
    other = model.sample(
        num_frames=5,
        texts=["a red", "a blue"],
        decoding=decoding,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(2),
    )
    assert not torch.allclose(other, outs[0])


def test_sampled_tokens_decode_to_the_output() -> None:
    model = phenaki(maskgit=maskgit(unconditional=True), text_encoder=None)
    video = model.sample(num_frames=3, batch_size=2, generator=torch.Generator().manual_seed(0))
    ids = model.cvivit(video.clamp(-10, 10), return_only_codebook_ids=True)
    assert ids.shape == (2, 2, 4, 4)
    images = model.sample_images(batch_size=3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(num_frames=3, texts=["a"])


def test_prime_frames_are_continued_and_unchanged() -> None:
    """The prime's tokens stay fixed: the output holds only the new frames, and the prime's
    tokens are the ones the causal tokenizer gives the prime alone."""
    model = phenaki()
    prime = videos(b=1, f=3)
    prime_ids = model.cvivit(prime, return_only_codebook_ids=True).flatten(1)
    inputs: list[Tensor] = []
    original = model.maskgit.forward_with_cond_scale

    def spy(x: Tensor, **kwargs: Any) -> Tensor:
        inputs.append(x)
        assert kwargs["video_patch_shape"] == (2 + 2, 4, 4)  # prime steps + new steps
        return original(x, **kwargs)

    model.maskgit.forward_with_cond_scale = spy  # type: ignore[method-assign]
    out = model.sample(
        num_frames=4, texts=["a"], prime_frames=prime, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (1, 3, 4, 16, 16)
    assert len(inputs) == model.steps
    for x in inputs:
        assert torch.equal(x[:, :32], prime_ids)
    with pytest.raises(ValueError, match=r"k \* temporal_patch_size \(2\) frames, got 3"):
        model.sample(num_frames=3, texts=["a"], prime_frames=prime)
    with pytest.raises(ValueError, match="batch of 2"):
        model.sample(num_frames=4, texts=["a", "b"], prime_frames=prime)


def test_make_video_chains_scenes_on_their_last_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    model = phenaki()
    primes: list[Tensor | None] = []
    original = model.sample

    def spy(**kwargs: Any) -> Tensor:
        primes.append(kwargs["prime_frames"])
        return original(**kwargs)

    monkeypatch.setattr(model, "sample", spy)
    video, scenes = make_video(
        model,
        ["a red", "a blue", "a green"],
        (5, 4, 2),
        (3, 1),
        generator=torch.Generator().manual_seed(0),
    )
    assert [s.shape[2] for s in scenes] == [5, 4, 2]
    assert video.shape == (1, 3, 11, 16, 16)
    assert primes[0] is None
    assert primes[1] is not None
    assert torch.equal(primes[1], scenes[0][:, :, -3:])
    assert primes[2] is not None
    assert torch.equal(primes[2], scenes[1][:, :, -1:])
    with pytest.raises(ValueError, match="expected 2 and 1 values"):
        make_video(model, ["a", "b"], (5,), 1)


def test_tokenizer_is_held_outside_the_state_and_moves_with_the_model() -> None:
    """P12: the reference kept a full tokenizer copy in every checkpoint."""
    model = phenaki()
    assert not any(key.startswith(("cvivit", "_tokenizer")) for key in model.state_dict())
    assert all(not name.startswith("cvivit") for name, _ in model.named_parameters())
    model.to(torch.float64)
    assert next(model.cvivit.parameters()).dtype == torch.float64
    clone = copy.deepcopy(model)
    assert clone.cvivit is model.cvivit  # EMA copies share the frozen tokenizer


def test_save_and_load_a_run_with_the_tokenizer_reference(tmp_path: Path) -> None:
    """The run's folder holds the frozen tokenizer in `cvivit/` (mp_layers.hub parts) and records
    the tokenizer folder it came from with its SHA-256; a tokenizer given by folder at load time
    must be that one."""
    from safetensors.torch import load_file

    tok = tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    critic = TokenCritic(
        dim=16,
        num_tokens=32,
        max_seq_len=256,
        depth=1,
        heads=2,
        dim_head=8,
        has_cross_attn=True,
        dim_context=DIM_CONTEXT,
    )
    model = phenaki(cvivit=CViViT.from_pretrained(tmp_path / "tok"), critic=critic)
    # without the tokenizer's folder: saved all the same (the tokenizer is in cvivit/), no source
    bare = model.save_pretrained(tmp_path / "bare")
    assert "tokenizer_source" not in json.loads((bare / "config.json").read_text())
    folder = model.save_pretrained(tmp_path / "run", tokenizer=tmp_path / "tok")
    for part in ("maskgit", "cvivit", "critic"):
        assert (folder / part / "config.json").is_file(), part
    # the run's own weights hold no copy of the tokenizer (nor of its parts)
    assert (folder / "model.safetensors").stat().st_size < (
        tmp_path / "tok" / "model.safetensors"
    ).stat().st_size
    assert not any(
        k.startswith(("cvivit", "_tokenizer")) for k in load_file(folder / "model.safetensors")
    )
    config = json.loads((folder / "config.json").read_text())
    assert len(config["tokenizer_source"]["sha256"]) == 64
    assert config["_parts"]["cvivit"] == "phenaki.CViViT"
    loaded = Phenaki.from_pretrained(folder, text_encoder=FakeText())
    assert loaded.tokenizer_folder == (tmp_path / "tok").resolve()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    outs = [
        m.sample(num_frames=3, texts=["a red"], generator=torch.Generator().manual_seed(0))
        for m in (model, loaded)
    ]
    torch.testing.assert_close(outs[0], outs[1])
    # another tokenizer in the recorded folder: refused when given by folder ...
    tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="not the tokenizer this model was trained on"):
        Phenaki.from_pretrained(folder, tokenizer=tmp_path / "tok")
    # ... while the run's own copy still loads, without the recorded folder
    shutil.rmtree(tmp_path / "tok")
    again = Phenaki.from_pretrained(folder, text_encoder=FakeText())
    ids = torch.randint(0, 32, (1, 3, 4, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(
            again.cvivit.decode_from_codebook_indices(ids),
            model.cvivit.decode_from_codebook_indices(ids),
        )


def test_save_and_load_with_a_self_critic(tmp_path: Path) -> None:
    """A `SelfCritic` is no part of its own: its head is saved with Phenaki's weights."""
    model = phenaki(self_token_critic=True)
    with torch.no_grad():
        model.critic.to_pred.weight.normal_()  # type: ignore[union-attr]
    folder = model.save_pretrained(tmp_path / "run")
    assert not (folder / "critic").exists()
    loaded = Phenaki.from_pretrained(folder, text_encoder=FakeText())
    assert isinstance(loaded.critic, SelfCritic)
    assert loaded.critic.maskgit is loaded.maskgit
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_texts_through_a_t5_folder_offline(
    tiny_t5_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default path: `t5_name` (here a local folder laid out like google/t5-v1_1-base) is
    loaded on the first encoding, never at construction."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = Phenaki(
        maskgit=maskgit(dim_context=16), cvivit=tokenizer(), t5_name=str(tiny_t5_dir), steps=2
    )
    assert model.text_encoder is None
    loss = model(videos(), texts=["a cat runs", "the red ball jumps on the snow"])
    assert torch.isfinite(loss)
    assert model.text_encoder is not None
    video = model.sample(num_frames=3, texts=["a cat"], generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"expected \(b, m, 12\), got \(2, 4, 16\)"):
        phenaki()(videos(), text_embeds=torch.zeros(2, 4, 16))


def test_primed_frames_equal_the_prime_reconstruction() -> None:
    """With the causal tokenizer, the primed frames of a continued sample are exactly the prime
    clip's own reconstruction: nothing generated after them changes them."""
    model = phenaki()
    prime = videos(b=1, f=3)
    full = model.sample(
        num_frames=4,
        texts=["a"],
        prime_frames=prime,
        return_prime=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert full.shape == (1, 3, 7, 16, 16)
    with torch.no_grad():
        reconstruction = model.cvivit(prime, return_recons_only=True)
    torch.testing.assert_close(full[:, :, :3], reconstruction, atol=1e-5, rtol=1e-5)
    new_only = model.sample(
        num_frames=4, texts=["a"], prime_frames=prime, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(new_only, full[:, :, 3:])


def test_guidance_null_branch_is_trained() -> None:
    """Dropped captions leave cross-attention only its learned null key/values: with dropout on
    (the default) they receive gradients; with every caption kept they cannot."""
    model = phenaki()
    cross = model.maskgit.transformer.layers[0][2]
    model(videos(), texts=["a red", "a blue"], cond_drop_prob=1.0).backward()
    assert cross.null_kv.grad is not None
    assert cross.null_kv.grad.abs().sum() > 0
    model.zero_grad()
    keep = torch.zeros(2, 2, dtype=torch.bool)  # no caption token visible at all
    embeds = torch.randn(2, 2, DIM_CONTEXT)
    ids = model.cvivit(videos(), return_only_codebook_ids=True)
    model(video_codebook_ids=ids, text_embeds=embeds, text_mask=keep).backward()
    assert cross.to_kv.weight.grad is None or cross.to_kv.weight.grad.abs().sum() == 0


def test_mismatched_critic_and_batches_are_value_errors() -> None:
    critic = TokenCritic(
        dim=16,
        num_tokens=32,
        max_seq_len=256,
        depth=1,
        heads=2,
        dim_head=8,
        has_cross_attn=True,
        dim_context=DIM_CONTEXT + 4,
    )
    with pytest.raises(ValueError, match=r"critic.dim_context: expected MaskGit's 12, got 16"):
        phenaki(critic=critic)
    model = phenaki()
    with pytest.raises(ValueError, match="context"):
        model(videos(b=2), texts=["a", "b", "c"])
