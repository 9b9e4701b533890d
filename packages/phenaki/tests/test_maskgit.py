"""MaskGit, the token critics and the masking / sampling helpers (tiny configurations, CPU)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from einops import rearrange

from phenaki.maskgit import (
    MaskGit,
    SelfCritic,
    TokenCritic,
    critic_labels,
    get_mask_subset_with_prob,
    gumbel_sample,
    mask_schedule,
)

NUM_TOKENS = 32
DIM_CONTEXT = 12
GRID = (2, 2, 3)  # (t', h, w): 12 tokens
N = math.prod(GRID)
SMALL: dict[str, Any] = {"dim": 32, "num_tokens": NUM_TOKENS, "max_seq_len": 16, "depth": 1}


def make_maskgit(unconditional: bool = False, **overrides: Any) -> MaskGit:
    kwargs: dict[str, Any] = {**SMALL, "heads": 2, "dim_head": 8, **overrides}
    if not unconditional:
        kwargs.setdefault("dim_context", DIM_CONTEXT)
    return MaskGit(unconditional=unconditional, **kwargs).eval()


def make_critic(has_cross_attn: bool = True) -> TokenCritic:
    extra: dict[str, Any] = {"dim_context": DIM_CONTEXT} if has_cross_attn else {}
    return TokenCritic(**SMALL, heads=2, dim_head=8, has_cross_attn=has_cross_attn, **extra).eval()


def ids(batch: int = 2, high: int = NUM_TOKENS) -> torch.Tensor:
    return torch.randint(0, high, (batch, N))


def text(batch: int = 2, m: int = 5) -> torch.Tensor:
    return torch.randn(batch, m, DIM_CONTEXT)


# ------------------------------------------------------------------ MaskGit


@pytest.mark.parametrize("unconditional", [False, True])
def test_maskgit_shapes_for_flat_and_grid_ids(unconditional: bool) -> None:
    model = make_maskgit(unconditional)
    x = ids(3)
    context = None if unconditional else text(3)
    logits = model(x, video_patch_shape=GRID, context=context)
    assert logits.shape == (3, N, NUM_TOKENS)
    grid = model(rearrange(x, "b (t h w) -> b t h w", t=2, h=2), context=context)
    torch.testing.assert_close(grid, logits)
    embeds = model(x, video_patch_shape=GRID, context=context, return_embeds=True)
    assert embeds.shape == (3, N, 32)
    assert model.mask_id == NUM_TOKENS
    assert model.to_logits.bias is None


def test_mask_id_is_a_valid_input() -> None:
    model = make_maskgit(unconditional=True)
    x = torch.full((1, N), model.mask_id)
    assert torch.isfinite(model(x, video_patch_shape=GRID)).all()


def test_default_text_mask_spans_the_text_not_the_video() -> None:
    """Defect P14: the reference sized the default mask to the video length (n = 12, m = 5)."""
    model = make_maskgit()
    x, context = ids(), text(m=5)
    default = model(x, video_patch_shape=GRID, context=context)
    explicit = model(
        x, video_patch_shape=GRID, context=context, text_mask=torch.ones(2, 5, dtype=torch.bool)
    )
    torch.testing.assert_close(default, explicit)


def test_condition_dropout_one_equals_an_all_false_text_mask() -> None:
    model = make_maskgit()
    x, context = ids(), text()
    dropped = model(x, video_patch_shape=GRID, context=context, cond_drop_prob=1.0)
    masked = model(
        x, video_patch_shape=GRID, context=context, text_mask=torch.zeros(2, 5, dtype=torch.bool)
    )
    torch.testing.assert_close(dropped, masked)


def test_null_key_values_keep_a_fully_masked_text_finite() -> None:
    model = make_maskgit()
    x, context = ids(), text()
    out = model(
        x, video_patch_shape=GRID, context=context, text_mask=torch.zeros(2, 5, dtype=torch.bool)
    )
    assert torch.isfinite(out).all()
    # the dropped text no longer matters: any other text gives the same output
    other = model(
        x, video_patch_shape=GRID, context=text(), text_mask=torch.zeros(2, 5, dtype=torch.bool)
    )
    torch.testing.assert_close(out, other)
    assert not torch.allclose(out, model(x, video_patch_shape=GRID, context=context))


def test_condition_dropout_drops_whole_rows() -> None:
    model = make_maskgit()
    b = 16
    x, context = ids(b), text(b)
    cond = model(x, video_patch_shape=GRID, context=context)
    null = model(x, video_patch_shape=GRID, context=context, cond_drop_prob=1.0)
    mixed = model(x, video_patch_shape=GRID, context=context, cond_drop_prob=0.5)
    is_cond = [torch.allclose(mixed[i], cond[i], atol=1e-5) for i in range(b)]
    is_null = [torch.allclose(mixed[i], null[i], atol=1e-5) for i in range(b)]
    assert all(c != n for c, n in zip(is_cond, is_null, strict=True))
    assert 0 < sum(is_cond) < b


def test_guidance_in_one_batch_equals_two_calls_and_the_formula() -> None:
    model = make_maskgit()
    x, context = ids(), text()
    text_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    video_mask = torch.ones(2, N, dtype=torch.bool)
    video_mask[1, -3:] = False
    common: dict[str, Any] = {
        "video_patch_shape": GRID,
        "context": context,
        "text_mask": text_mask,
        "video_mask": video_mask,
    }
    for return_embeds in (False, True):
        cond = model(x, cond_drop_prob=0.0, return_embeds=return_embeds, **common)
        null = model(x, cond_drop_prob=1.0, return_embeds=return_embeds, **common)
        guided = model.forward_with_cond_scale(
            x, cond_scale=3.0, return_embeds=return_embeds, **common
        )
        torch.testing.assert_close(guided, null + (cond - null) * 3.0, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(guided, cond)


def test_cond_scale_one_and_unconditional_are_the_plain_forward() -> None:
    model = make_maskgit()
    x, context = ids(), text()
    plain = model(x, video_patch_shape=GRID, context=context)
    one = model.forward_with_cond_scale(x, cond_scale=1.0, video_patch_shape=GRID, context=context)
    torch.testing.assert_close(one, plain, atol=0, rtol=0)
    free = make_maskgit(unconditional=True)
    torch.testing.assert_close(
        free.forward_with_cond_scale(x, video_patch_shape=GRID), free(x, video_patch_shape=GRID)
    )


def test_gradient_shrink_keeps_the_value_and_scales_embedding_gradients() -> None:
    shrunk = make_maskgit(unconditional=True, gradient_shrink_alpha=0.1)
    plain = make_maskgit(unconditional=True, gradient_shrink_alpha=1.0)
    plain.load_state_dict(shrunk.state_dict())
    x = ids()
    grads = []
    for model in (shrunk, plain):
        out = model(x, video_patch_shape=GRID)
        (out * torch.linspace(-1, 1, NUM_TOKENS)).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    torch.testing.assert_close(shrunk(x, video_patch_shape=GRID), plain(x, video_patch_shape=GRID))
    small, full = grads
    for name in ("token_emb.weight", "pos_emb.weight"):
        assert full[name].abs().sum() > 0
        torch.testing.assert_close(small[name], 0.1 * full[name])
    torch.testing.assert_close(small["to_logits.weight"], full["to_logits.weight"])


def test_sequence_longer_than_max_seq_len_is_a_value_error() -> None:
    model = make_maskgit(unconditional=True, max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len = 8"):
        model(ids(), video_patch_shape=GRID)


@pytest.mark.parametrize("bad", [-1, NUM_TOKENS + 1])
def test_token_ids_out_of_range_are_a_value_error(bad: int) -> None:
    """Defect P13: the reference ended in a device-side assert."""
    x = ids()
    x[0, 3] = bad
    with pytest.raises(ValueError, match=r"token ids in \[0, 32\]"):
        make_maskgit(unconditional=True)(x, video_patch_shape=GRID)
    with pytest.raises(ValueError, match=r"token ids in \[0, 32\]"):
        make_critic(False)(x, video_patch_shape=GRID)


def test_construction_needs_depth_and_dim_context() -> None:
    with pytest.raises(ValueError, match="depth"):
        MaskGit(dim=16, num_tokens=8, max_seq_len=8, unconditional=True)
    with pytest.raises(ValueError, match="dim_context"):
        MaskGit(dim=16, num_tokens=8, max_seq_len=8, depth=1)
    MaskGit(dim=16, num_tokens=8, max_seq_len=8, depth=1, unconditional=True)
    with pytest.raises(ValueError, match="dim_context"):
        TokenCritic(dim=16, num_tokens=8, max_seq_len=8, depth=1, has_cross_attn=True)
    with pytest.raises(ValueError, match="depth"):
        TokenCritic(dim=16, num_tokens=8, max_seq_len=8)
    with pytest.raises(TypeError, match="peg"):
        MaskGit(dim=16, num_tokens=8, max_seq_len=8, depth=1, unconditional=True, peg=False)
    with pytest.raises(ValueError, match="gradient_shrink_alpha"):
        MaskGit(
            dim=16,
            num_tokens=8,
            max_seq_len=8,
            depth=1,
            unconditional=True,
            gradient_shrink_alpha=1.5,
        )
    with pytest.raises(ValueError, match="num_tokens"):
        MaskGit(dim=16, num_tokens=0, max_seq_len=8, depth=1, unconditional=True)


def test_video_mask_hides_the_masked_keys() -> None:
    """With the PEG convolution zeroed (it mixes neighbours regardless of any mask), the only path
    between tokens is self-attention, so tokens behind masked keys cannot reach valid outputs."""
    model = make_maskgit()
    layers: Any = model.transformer.layers
    with torch.no_grad():
        for layer in layers:
            layer[0].dsconv.weight.zero_()
            layer[0].dsconv.bias.zero_()
    x, context = ids(), text()
    video_mask = torch.ones(2, N, dtype=torch.bool)
    video_mask[:, -4:] = False
    changed = x.clone()
    changed[:, -4:] = (x[:, -4:] + 1) % NUM_TOKENS
    kw: dict[str, Any] = {"video_patch_shape": GRID, "context": context}
    before = model(x, video_mask=video_mask, **kw)
    after = model(changed, video_mask=video_mask, **kw)
    torch.testing.assert_close(after[:, :-4], before[:, :-4])
    # without the mask the change is seen
    assert not torch.allclose(model(changed, **kw)[:, :-4], model(x, **kw)[:, :-4])


def test_input_errors() -> None:
    model = make_maskgit()
    x, context = ids(), text()
    with pytest.raises(ValueError, match="video_patch_shape"):
        model(x, context=context)
    with pytest.raises(ValueError, match="t \\* h \\* w"):
        model(x, video_patch_shape=(2, 2, 2), context=context)
    grid = rearrange(x, "b (t h w) -> b t h w", t=2, h=2)
    with pytest.raises(ValueError, match="video_patch_shape"):
        model(grid, video_patch_shape=(2, 3, 2), context=context)
    with pytest.raises(ValueError, match="integer token ids"):
        model(x.float(), video_patch_shape=GRID, context=context)
    with pytest.raises(ValueError, match="context: expected shape"):
        model(x, video_patch_shape=GRID, context=torch.randn(2, 5, DIM_CONTEXT + 1))
    with pytest.raises(ValueError, match="text_mask"):
        model(x, video_patch_shape=GRID, context=context, text_mask=torch.ones(2, N).bool())
    with pytest.raises(ValueError, match="text_mask"):
        model(x, video_patch_shape=GRID, text_mask=torch.ones(2, 5).bool())
    with pytest.raises(ValueError, match="video_mask"):
        model(x, video_patch_shape=GRID, context=context, video_mask=torch.ones(2, 5).bool())
    with pytest.raises(ValueError, match="cond_drop_prob"):
        model(x, video_patch_shape=GRID, context=context, cond_drop_prob=1.5)
    with pytest.raises(ValueError, match="no cross-attention"):
        make_maskgit(unconditional=True)(x, video_patch_shape=GRID, context=context)


# ------------------------------------------------------------------ critics


def test_token_critic_shapes_and_direct_call_with_a_context() -> None:
    """Defect P14: the reference compared cond_drop_prob=None with 0 and raised TypeError."""
    critic = make_critic()
    x, context = ids(), text()
    logits = critic(x, context=context, video_patch_shape=GRID)
    assert logits.shape == (2, N)
    grid = critic(rearrange(x, "b (t h w) -> b t h w", t=2, h=2), context=context)
    torch.testing.assert_close(grid, logits)
    dropped = critic(x, context=context, video_patch_shape=GRID, cond_drop_prob=1.0)
    masked = critic(
        x, context=context, video_patch_shape=GRID, text_mask=torch.zeros(2, 5, dtype=torch.bool)
    )
    torch.testing.assert_close(dropped, masked)
    assert make_critic(False)(x, video_patch_shape=GRID).shape == (2, N)
    with pytest.raises(ValueError, match="no cross-attention"):
        make_critic(False)(x, context=context, video_patch_shape=GRID)


def test_token_critic_guidance() -> None:
    critic = make_critic()
    x, context = ids(), text()
    cond = critic(x, context=context, video_patch_shape=GRID)
    null = critic(x, context=context, video_patch_shape=GRID, cond_drop_prob=1.0)
    guided = critic.forward_with_cond_scale(
        x, cond_scale=2.5, context=context, video_patch_shape=GRID
    )
    torch.testing.assert_close(guided, null + (cond - null) * 2.5, atol=1e-4, rtol=1e-4)
    one = critic.forward_with_cond_scale(x, cond_scale=1.0, context=context, video_patch_shape=GRID)
    torch.testing.assert_close(one, cond)


def test_self_critic_reaches_maskgit_and_guides() -> None:
    maskgit = make_maskgit()
    critic = SelfCritic(maskgit)
    assert critic.has_cross_attn
    x, context = ids(), text()
    logits = critic(x, video_patch_shape=GRID, context=context)
    assert logits.shape == (2, N)
    logits.sum().backward()
    assert maskgit.token_emb.weight.grad is not None
    assert maskgit.token_emb.weight.grad.abs().sum() > 0
    layers: Any = maskgit.transformer.layers
    assert layers[0][2].to_kv.weight.grad.abs().sum() > 0  # the cross-attention too
    with torch.no_grad():
        cond = critic(x, video_patch_shape=GRID, context=context)
        null = critic(x, video_patch_shape=GRID, context=context, cond_drop_prob=1.0)
        guided = critic.forward_with_cond_scale(x, video_patch_shape=GRID, context=context)
    torch.testing.assert_close(guided, null + (cond - null) * 3.0, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ helpers


def reference_mask_subset(mask: torch.Tensor, prob: float) -> torch.Tensor:
    """The reference rule (defect P3): ranks every position and shifts by the padding count."""
    batch, n = mask.shape
    valid = mask.sum(dim=-1)
    count = (prob * valid).round().clamp(min=1)
    order = torch.rand(batch, n).argsort(dim=-1) - rearrange(n - valid, "b -> b 1")
    order = order.masked_fill(order < 0, n)
    return order < rearrange(count, "b -> b 1")


def test_mask_subset_never_picks_padding() -> None:
    mask = torch.zeros(256, 40, dtype=torch.bool)
    mask[:, :10] = True  # heavy right padding
    chosen = get_mask_subset_with_prob(mask, 0.5)
    assert int((chosen & ~mask).sum()) == 0
    assert (chosen.sum(dim=-1) == 5).all()
    # the reference rule puts most of its choices on padding
    old = reference_mask_subset(mask, 0.5)
    assert (old & ~mask).sum() / old.sum() > 0.5


def test_mask_subset_counts_per_row() -> None:
    valid = [0, 1, 3, 7, 10, 16, 20, 20]
    probs = torch.tensor([0.5, 0.01, 0.5, 0.3, 0.25, 0.9, 1.0, 0.0])
    mask = torch.zeros(len(valid), 20, dtype=torch.bool)
    for row, v in enumerate(valid):
        mask[row, torch.randperm(20)[:v]] = True  # valid positions anywhere in the row
    chosen = get_mask_subset_with_prob(mask, probs)
    expected = [
        0 if v == 0 else max(1, round(float(p) * v)) for v, p in zip(valid, probs, strict=True)
    ]
    assert chosen.sum(dim=-1).tolist() == expected
    assert not (chosen & ~mask).any()
    scalar = get_mask_subset_with_prob(mask, 0.3)
    assert scalar.sum(dim=-1).tolist() == [0 if v == 0 else max(1, round(0.3 * v)) for v in valid]


def test_mask_subset_is_uniform_over_valid_positions_and_seeded() -> None:
    mask = torch.tensor([[True, False, True, True, False, True, True, True, True, True]])
    mask = mask.expand(4000, -1).contiguous()
    chosen = get_mask_subset_with_prob(mask, 0.25, generator=torch.Generator().manual_seed(1))
    freq = chosen.float().mean(dim=0)
    assert (freq[~mask[0]] == 0).all()
    torch.testing.assert_close(freq[mask[0]], torch.full((8,), 0.25), atol=0.03, rtol=0)
    a = get_mask_subset_with_prob(mask, 0.5, generator=torch.Generator().manual_seed(3))
    b = get_mask_subset_with_prob(mask, 0.5, generator=torch.Generator().manual_seed(3))
    c = get_mask_subset_with_prob(mask, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mask_subset_errors() -> None:
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="prob"):
        get_mask_subset_with_prob(mask, 1.5)
    with pytest.raises(ValueError, match="prob"):
        get_mask_subset_with_prob(mask, torch.tensor([0.5, -0.1]))
    with pytest.raises(
        ValueError, match=r"prob: expected a float or a float tensor of shape \(2,\)"
    ):
        get_mask_subset_with_prob(mask, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="bool tensor"):
        get_mask_subset_with_prob(mask.long(), 0.5)


def test_mask_schedules() -> None:
    r = torch.linspace(0, 1, 11)
    for name in ("cosine", "linear", "sqrt"):
        gamma = mask_schedule(r, name)
        torch.testing.assert_close(gamma[0], torch.tensor(1.0))
        torch.testing.assert_close(gamma[-1], torch.tensor(0.0), atol=1e-6, rtol=0)
        assert (gamma[1:] < gamma[:-1]).all()
    half = torch.tensor(0.5)
    torch.testing.assert_close(mask_schedule(half, "cosine"), torch.tensor(math.cos(math.pi / 4)))
    torch.testing.assert_close(mask_schedule(half, "linear"), torch.tensor(0.5))
    torch.testing.assert_close(mask_schedule(0.25, "sqrt"), torch.tensor(0.5))
    with pytest.raises(ValueError, match="ratio"):
        mask_schedule(torch.tensor([0.5, 1.5]), "cosine")
    with pytest.raises(TypeError):
        mask_schedule(half, "quadratic")  # type: ignore[arg-type]


def test_gumbel_sample() -> None:
    logits = torch.randn(3, 7, 5)
    assert torch.equal(gumbel_sample(logits, temperature=0.0), logits.argmax(dim=-1))
    probe = torch.tensor([1.0, 0.0, -1.0, 2.0])
    for temperature in (1.0, 2.0):
        draws = gumbel_sample(probe.expand(20000, 4), temperature=temperature)
        assert draws.dtype == torch.long
        freq = torch.bincount(draws, minlength=4).float() / 20000
        torch.testing.assert_close(freq, (probe / temperature).softmax(-1), atol=0.02, rtol=0)
    g = torch.Generator().manual_seed(5)
    first = gumbel_sample(logits, generator=g)
    again = gumbel_sample(logits, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="temperature"):
        gumbel_sample(logits, temperature=-1.0)


def test_critic_labels_only_mark_wrong_masked_tokens() -> None:
    """Defect P4: unmasked positions carry the ground truth in the critic's input."""
    truth = torch.tensor([[1, 2, 3, 4, 5]])
    predicted = torch.tensor([[1, 9, 3, 8, 7]])
    masked = torch.tensor([[True, True, False, False, True]])
    labels = critic_labels(predicted, truth, masked)
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]
    assert (predicted != truth).float().tolist() == [[0.0, 1.0, 0.0, 1.0, 1.0]]  # reference rule
    with pytest.raises(ValueError, match="one shape"):
        critic_labels(predicted, truth[:, :4], masked)
    with pytest.raises(ValueError, match="masked"):
        critic_labels(predicted, truth, masked.long())


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        MaskGit(dim=16.0, num_tokens=8, max_seq_len=8, depth=1, unconditional=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TokenCritic(dim=16, num_tokens="8", max_seq_len=8, depth=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SelfCritic(make_critic(False))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        get_mask_subset_with_prob([[True, False]], 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        get_mask_subset_with_prob(torch.ones(1, 2, dtype=torch.bool), "0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gumbel_sample(torch.randn(2, 3), temperature="hot")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        critic_labels([1], torch.tensor([1]), torch.tensor([True]))  # type: ignore[arg-type]
    model = make_maskgit(unconditional=True)
    with pytest.raises(TypeError):
        model(ids(), video_patch_shape=GRID, cond_drop_prob="0.5")
    with pytest.raises(TypeError):
        model(ids(), video_patch_shape=[2, 2, 3])


def test_maskgit_and_token_critic_share_the_trunk_and_its_state_dict_keys() -> None:
    """One trunk (`phenaki.token_transformer`) under both models; the keys are 0.1.0's."""
    from phenaki.token_transformer import TokenTransformer

    def prefixes(model: torch.nn.Module) -> list[str]:
        return list(dict.fromkeys(key.split(".")[0] for key in model.state_dict()))

    maskgit, critic = make_maskgit(), make_critic()
    assert isinstance(maskgit, TokenTransformer)
    assert isinstance(critic, TokenTransformer)
    trunk = ["token_emb", "pos_emb", "transformer", "to_logits"]
    assert prefixes(maskgit) == ["token_emb", "pos_emb", "continuous_pos_bias", *trunk[2:]]
    assert prefixes(critic) == trunk
    assert "to_logits.bias" not in maskgit.state_dict()
    assert critic.state_dict()["to_logits.bias"].shape == (1,)
