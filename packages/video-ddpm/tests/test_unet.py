"""`Unet3D`: shapes, conditioning, the focus-present mask, validation."""

from __future__ import annotations

import pytest
import torch

from video_ddpm.unet import Unet3D


def tiny(**kwargs: object) -> Unet3D:
    config: dict[str, object] = {"dim": 8, "dim_mults": (1, 2), "attn_heads": 2, "attn_dim_head": 8}
    config.update(kwargs)
    return Unet3D(**config).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dim_mults", "frames", "height", "width"),
    [((1,), 1, 6, 6), ((1, 2), 4, 8, 12), ((1, 2, 4), 3, 16, 8), ((1, 1, 2, 2), 2, 8, 8)],
)
def test_output_shape_for_any_frames_and_rectangular_sizes(
    dim_mults: tuple[int, ...], frames: int, height: int, width: int
) -> None:
    net = tiny(dim_mults=dim_mults)
    x = torch.randn(2, 3, frames, height, width)
    assert net(x, torch.tensor([0, 5])).shape == x.shape


@pytest.mark.parametrize("norm", ["group", "rms"])
def test_norms_out_dim_and_init_dim(norm: str) -> None:
    net = tiny(norm=norm, out_dim=6, init_dim=16, use_sparse_linear_attn=False)
    out = net(torch.randn(1, 3, 2, 4, 4), torch.tensor([1]))
    assert out.shape == (1, 6, 2, 4, 4)
    names = set(net.state_dict())
    assert ("downs.0.0.block1.norm.bias" in names) == (norm == "group")
    assert not any(name.startswith("downs.0.2.") for name in names)  # no linear attention


def test_reference_parameter_names() -> None:
    names = set(tiny(cond_dim=4).state_dict())
    for name in (
        "time_rel_pos_bias.relative_attention_bias.weight",
        "init_conv.weight",
        "init_temporal_attn.fn.norm.gamma",
        "init_temporal_attn.fn.fn.fn.to_qkv.weight",
        "time_mlp.1.weight",
        "time_mlp.3.weight",
        "null_cond_emb",
        "downs.0.0.mlp.1.weight",
        "downs.1.0.res_conv.weight",
        "downs.0.2.fn.fn.to_qkv.weight",
        "downs.0.3.fn.fn.fn.to_out.weight",
        "downs.0.4.weight",
        "mid_spatial_attn.fn.fn.fn.to_qkv.weight",
        "mid_temporal_attn.fn.norm.gamma",
        "ups.0.0.block1.proj.weight",
        "ups.0.4.weight",
        "final_conv.0.block1.proj.weight",
        "final_conv.1.weight",
    ):
        assert name in names, name


def test_config_round_trip() -> None:
    net = tiny(cond_dim=5, norm="rms")
    again = Unet3D.from_config(net.config)
    again.load_state_dict(net.state_dict())
    x, t, c = torch.randn(1, 3, 2, 4, 4), torch.tensor([3]), torch.randn(1, 5)
    torch.testing.assert_close(again.eval()(x, t, c), net(x, t, c))


def test_text_conditioning_width_defaults_to_bert_and_follows_cond_dim() -> None:
    assert tiny(use_bert_text_cond=True).cond_dim == 768
    assert tiny(use_bert_text_cond=True, cond_dim=384).cond_dim == 384


def test_null_cond_prob_one_is_the_null_embedding() -> None:
    net = tiny(cond_dim=4)
    x, t = torch.randn(2, 3, 2, 4, 4), torch.tensor([1, 2])
    null = net.null_cond_emb.detach().expand(2, -1)
    dropped = net(x, t, cond=torch.randn(2, 4), null_cond_prob=1.0)
    torch.testing.assert_close(dropped, net(x, t, cond=null))


def test_guidance_is_null_plus_scaled_difference() -> None:
    net = tiny(cond_dim=4)
    x, t, c = torch.randn(2, 3, 2, 4, 4), torch.tensor([1, 2]), torch.randn(2, 4)
    conditional = net(x, t, cond=c)
    null = net(x, t, cond=c, null_cond_prob=1.0)
    guided = net.forward_with_cond_scale(x, t, cond=c, cond_scale=3.0)
    torch.testing.assert_close(guided, null + 3.0 * (conditional - null), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net.forward_with_cond_scale(x, t, cond=c), conditional)


def test_focus_present_mask_makes_frames_independent_in_every_temporal_attention() -> None:
    """Reference defect 4: the first temporal attention never got the mask, so a focused sample
    still mixed frames. Here, changing frame 2 of a focused sample leaves its other frames as
    they were, while an unfocused sample's other frames change. (RMS norm: GroupNorm's statistics
    span all frames, so with it frames are never fully independent.)"""
    net = tiny(norm="rms")
    x = torch.randn(2, 3, 4, 8, 8)
    changed = x.clone()
    changed[:, :, 2] += 1.0
    t = torch.tensor([3, 3])
    mask = torch.tensor([True, False])
    before = net(x, t, focus_present_mask=mask)
    after = net(changed, t, focus_present_mask=mask)
    others = [0, 1, 3]
    torch.testing.assert_close(after[0, :, others], before[0, :, others], atol=1e-5, rtol=0)
    assert (after[1, :, others] - before[1, :, others]).abs().max() > 1e-3
    everyone = torch.tensor([True, True])
    both = net(changed, t, focus_present_mask=everyone)
    torch.testing.assert_close(both[0], after[0], atol=1e-5, rtol=1e-5)


def test_temporal_attention_knows_frame_order() -> None:
    """Rotary embedding and the relative position bias: reversing the frames does not simply
    reverse the output (attention over frames is not permutation-equivariant)."""
    net = tiny()
    x = torch.randn(1, 3, 4, 4, 4)
    t = torch.tensor([2])
    reversed_out = net(x.flip(2), t).flip(2)
    assert (reversed_out - net(x, t)).abs().max() > 1e-4


def test_gradients_reach_every_parameter() -> None:
    net = tiny(cond_dim=3).train()
    out = net(
        torch.randn(2, 3, 2, 4, 4), torch.tensor([1, 9]), cond=torch.randn(2, 3), null_cond_prob=0.5
    )
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["null_cond_emb"] or missing == []


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="init_kernel_size: expected an odd int, got 4"):
        tiny(init_kernel_size=4)
    with pytest.raises(ValueError, match="norm: expected one of"):
        tiny(norm="layer")
    with pytest.raises(ValueError, match="dim_mults"):
        tiny(dim_mults=())
    with pytest.raises(ValueError, match="resnet_groups"):
        tiny(resnet_groups=3)
    with pytest.raises(ValueError, match="attn_heads: expected an int >= 1, got 0"):
        tiny(attn_heads=0)
    with pytest.raises(TypeError, match="block_type"):
        Unet3D(dim=8, block_type="resnet")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="dim"):
        Unet3D(dim=8.0)  # type: ignore[arg-type]


def test_forward_errors() -> None:
    net = tiny(cond_dim=4)
    x, t = torch.randn(2, 3, 2, 4, 4), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"expected a float video \(b, 3, frames"):
        net(torch.randn(2, 4, 2, 4, 4), t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(2, 3, 2, 5, 4), t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"cond: expected a \(2, 4\) tensor, got None"):
        net(x, t)
    with pytest.raises(ValueError, match=r"cond: expected shape \(2, 4\), got \(2, 5\)"):
        net(x, t, cond=torch.randn(2, 5))
    with pytest.raises(ValueError, match="unconditional"):
        tiny()(x, t, cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"time: expected shape \(2,\)"):
        net(x, torch.tensor([1]), cond=torch.randn(2, 4))
    with pytest.raises(ValueError, match="focus_present_mask"):
        net(x, t, cond=torch.randn(2, 4), focus_present_mask=torch.ones(2))
    with pytest.raises(ValueError, match="null_cond_prob"):
        net(x, t, cond=torch.randn(2, 4), null_cond_prob=1.5)
