"""`Lumiere` / `MPLumiere` on diffusers U-Nets and a magnitude-preserving 2-D U-Net."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lumiere import (
    ConvolutionInflationBlock,
    Lumiere,
    MPConvolutionInflationBlock,
    MPLumiere,
    TemporalDownsample,
)

from .conftest import SIZE, MPUNet2D, unet2d, unet2d_condition

LABEL = {"class_labels": torch.zeros(1, dtype=torch.long)}
CONV = ["down_blocks.0.resnets.0", "down_blocks.1.resnets.0", "up_blocks.0.resnets.1"]
ATTN = ["mid_block"]
DOWN = ["down_blocks.0.downsamplers.0"]
UP = ["up_blocks.0.upsamplers.0"]
# Equal to the base up to rounding (the plain wrapper bit for bit, tested below; the MP attention
# block's output layout can change the base's later kernels' summation order).
ROUNDING = {"atol": 1e-5, "rtol": 1e-5}


def wrap(klass: type[Lumiere] = Lumiere, base: nn.Module | None = None, **kwargs: Any) -> Lumiere:
    kwargs = {
        "image_size": SIZE,
        "unet_time_kwarg": "timestep",
        "conv_module_names": CONV,
        "attn_module_names": ATTN,
        "example_kwargs": LABEL,
        "attn_inflation_kwargs": {"dim_head": 4, "heads": 2},
        **kwargs,
    }
    return klass(unet2d() if base is None else base, **kwargs)


def per_frame(base: nn.Module, video: Tensor, **kwargs: Tensor) -> Tensor:
    """The base model applied to every frame, as a video."""
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    repeated = {k: v.repeat_interleave(t, 0) for k, v in kwargs.items()}
    out = base(frames, **repeated)
    out = out.sample if hasattr(out, "sample") else out
    return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)


def clip(b: int = 2, t: int = 4, seed: int = 0) -> Tensor:
    return torch.randn(b, 3, t, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# identity at init, conditioning, frame counts


@pytest.mark.parametrize("klass", [Lumiere, MPLumiere])
def test_class_conditional_unet_is_reproduced_exactly_at_init(klass: type[Lumiere]) -> None:
    base = unet2d()
    wrapper = wrap(klass, base)
    video, labels, time = clip(), torch.tensor([1, 3]), torch.tensor([10, 500])
    with torch.no_grad():
        out = wrapper(video, timestep=time, class_labels=labels).sample
        expected = per_frame(base, video, timestep=time, class_labels=labels)
    assert out.shape == video.shape
    torch.testing.assert_close(out, expected, **ROUNDING)


def test_channel_first_wrapper_reproduces_the_base_bit_for_bit() -> None:
    base = unet2d()
    wrapper = wrap(Lumiere, base)
    video, labels, time = clip(), torch.tensor([1, 3]), torch.tensor([10, 500])
    with torch.no_grad():
        out = wrapper(video, timestep=time, class_labels=labels).sample
        expected = per_frame(base, video, timestep=time, class_labels=labels)
    assert torch.equal(out, expected)


def test_text_conditional_unet_with_cross_attention_and_masks() -> None:
    base = unet2d_condition()
    text = torch.randn(1, 5, 6)
    wrapper = Lumiere(
        base,
        image_size=SIZE,
        unet_time_kwarg="timestep",
        conv_module_names=["down_blocks.0.resnets.0", "up_blocks.1.resnets.1"],
        attn_module_names=["down_blocks.0.attentions.0.proj_out"],
        attn_inflation_kwargs={"dim_head": 4, "heads": 2},
        example_kwargs={"encoder_hidden_states": text},
    )
    video, time = clip(), torch.tensor([3, 900])
    context, mask = torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = wrapper(video, time, encoder_hidden_states=context, encoder_attention_mask=mask)
        expected = per_frame(
            base, video, timestep=time, encoder_hidden_states=context, encoder_attention_mask=mask
        )
    torch.testing.assert_close(out.sample, expected, **ROUNDING)


def test_positional_and_keyword_calls_agree_and_return_dict_false_gives_a_tuple() -> None:
    wrapper = wrap()
    video, time, labels = clip(), torch.tensor([1, 2]), torch.tensor([0, 1])
    with torch.no_grad():
        by_keyword = wrapper(video, timestep=time, class_labels=labels).sample
        positional = wrapper(video, time, labels).sample
        (as_tuple,) = wrapper(video, time, class_labels=labels, return_dict=False)
    torch.testing.assert_close(by_keyword, positional)
    torch.testing.assert_close(by_keyword, as_tuple)


def test_per_frame_conditioning_passes_through_and_scalar_time_broadcasts() -> None:
    base = unet2d()
    wrapper = wrap(base=base)
    video = clip(b=1, t=3)
    labels = torch.tensor([0, 2, 3])  # one per frame (b·t)
    with torch.no_grad():
        out = wrapper(video, timestep=7, class_labels=labels).sample
        frames = video[0].transpose(0, 1)
        expected = base(frames, 7, class_labels=labels).sample.transpose(0, 1)[None]
    torch.testing.assert_close(out, expected, **ROUNDING)


def test_conditioning_with_a_foreign_batch_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"class_labels.*b=2.*b·t=8"):
        wrap()(clip(), timestep=torch.tensor([1, 2]), class_labels=torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("frames", [1, 3, 7])
def test_any_frame_count_and_frame_sizes_other_than_square(frames: int) -> None:
    base = unet2d(size=8)
    wrapper = Lumiere(
        base,
        image_size=(8, 16),
        unet_time_kwarg="timestep",
        conv_module_names=CONV,
        example_kwargs=LABEL,
    )
    video = torch.randn(1, 3, frames, 8, 16)
    with torch.no_grad():
        out = wrapper(video, timestep=torch.tensor([5]), class_labels=torch.tensor([2])).sample
        expected = per_frame(
            base, video, timestep=torch.tensor([5]), class_labels=torch.tensor([2])
        )
    torch.testing.assert_close(out, expected, **ROUNDING)


def test_mp_unet_wrapped_by_mp_lumiere_is_identity_at_init_and_called_by_keywords(
    mp_unet: nn.Module,
) -> None:
    # MPUNet2D calls every block with keyword arguments only (the reference's pre-hook crashed)
    wrapper = MPLumiere(
        mp_unet,
        image_size=SIZE,
        unet_time_kwarg="sigma",
        conv_module_names=["enc0", "enc1", "dec1", "dec0"],
        attn_module_names=["mid"],
        attn_inflation_kwargs={"dim_head": 4, "heads": 2},
    )
    video, sigma = clip(), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        out = wrapper(video, sigma=sigma)
        expected = per_frame(mp_unet, video, sigma=sigma)
    torch.testing.assert_close(out, expected, **ROUNDING)
    assert all(isinstance(block, MPConvolutionInflationBlock) for block in wrapper.convs)


def test_the_base_called_directly_is_the_plain_image_model() -> None:
    base = unet2d()
    wrapper = wrap(base=base)
    with torch.no_grad():
        wrapper.convs[0].proj_out.weight.normal_()  # a trained temporal block
        frames = torch.randn(3, 3, SIZE, SIZE)
        torch.testing.assert_close(
            wrapper.model(frames, 4, class_labels=torch.tensor([0, 1, 2])).sample,
            base(frames, 4, class_labels=torch.tensor([0, 1, 2])).sample,
        )


# ---------------------------------------------------------------------------------------------
# temporal down- and up-sampling


def test_symmetric_temporal_resampling_matches_conditioning_to_the_frame_count() -> None:
    base = unet2d()
    wrapper = wrap(base=base, downsample_module_names=DOWN, upsample_module_names=UP)
    assert wrapper.downsample_factor == 2
    # the time embedding reaches the half-rate level with the full frame count: matched there
    assert wrapper.conditioning_matched
    assert all(not name.startswith("down_blocks.0.") for name in wrapper.conditioning_matched)
    still = clip(b=2, t=1).expand(-1, -1, 4, -1, -1)  # a constant clip: resampling is exact
    time, labels = torch.tensor([5, 50]), torch.tensor([1, 2])
    with torch.no_grad():
        out = wrapper(still, timestep=time, class_labels=labels).sample
        expected = per_frame(base, still, timestep=time, class_labels=labels)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    moving = clip(t=8)
    out = wrapper(moving, timestep=time, class_labels=labels).sample
    assert out.shape == moving.shape
    assert torch.isfinite(out).all()


def test_per_video_conditioning_stays_with_its_video_after_downsampling() -> None:
    wrapper = wrap(downsample_module_names=DOWN, upsample_module_names=UP)
    still = clip(b=1, t=1).expand(2, -1, 4, -1, -1)
    with torch.no_grad():
        out = wrapper(still, timestep=torch.tensor([5, 5]), class_labels=torch.tensor([0, 3]))
        alone = wrapper(still[1:], timestep=torch.tensor([5]), class_labels=torch.tensor([3]))
    torch.testing.assert_close(out.sample[1:], alone.sample, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.sample[0], out.sample[1])


def test_mp_temporal_resampling_in_mp_lumiere() -> None:
    wrapper = wrap(MPLumiere, downsample_module_names=DOWN, upsample_module_names=UP)
    out = wrapper(clip(t=4), timestep=torch.tensor([5, 50]), class_labels=torch.tensor([1, 2]))
    assert out.sample.shape == (2, 3, 4, SIZE, SIZE)


def test_an_asymmetric_placement_names_the_skip_connection_instead_of_resampling_it() -> None:
    # down-sampling after the first resnet: its skip (half rate) meets the full-rate decoder
    with pytest.raises(ValueError, match=r"skip connection.*'up_blocks\.1'.*'down_blocks\.0'"):
        wrap(downsample_module_names=["down_blocks.0.resnets.0"], upsample_module_names=UP)


def test_frames_not_divisible_by_the_downsampling_factor_are_refused() -> None:
    wrapper = wrap(downsample_module_names=DOWN, upsample_module_names=UP)
    with pytest.raises(ValueError, match="divisible by 2"):
        wrapper(clip(t=3), timestep=torch.tensor([1, 2]), class_labels=torch.tensor([0, 1]))


def test_unequal_numbers_of_down_and_up_samplers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"as many temporal up-samplers as down-samplers"):
        wrap(downsample_module_names=DOWN)


# ---------------------------------------------------------------------------------------------
# construction: groups, names, shapes, the init check


def test_empty_groups_are_allowed_but_not_all_empty() -> None:
    wrapper = wrap(attn_module_names=[])  # the reference crashed on any empty group (zip(*[]))
    assert len(wrapper.attns) == 0
    only_attention = wrap(conv_module_names=[], attn_module_names=ATTN)
    assert len(only_attention.convs) == 0
    with pytest.raises(ValueError, match="at least one temporal module"):
        wrap(conv_module_names=[], attn_module_names=[])


def test_blocks_are_built_in_execution_order_with_inferred_channels() -> None:
    wrapper = wrap(conv_module_names=list(reversed(CONV)))
    assert wrapper.module_names["conv"] == CONV
    assert wrapper.dims["conv"] == [8, 16, 16]
    assert [block.dim for block in wrapper.convs] == [8, 16, 16]


@pytest.mark.parametrize("resampling", [False, True])
def test_construction_runs_the_base_once_with_every_group_hooked(resampling: bool) -> None:
    base = unet2d()
    calls: list[int] = []
    base.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    if resampling:
        wrap(base=base, downsample_module_names=DOWN, upsample_module_names=UP)
    else:
        wrap(base=base)
    # the hook was deep-copied with the base: one pass, on a constant clip of
    # downsample_factor frames (the reference ran one forward per group)
    assert calls == [2 if resampling else 1]


def test_unknown_module_names_are_named() -> None:
    with pytest.raises(
        ValueError, match=r"conv_module_names: no module named \['down_blocks\.9'\]"
    ):
        wrap(conv_module_names=["down_blocks.9"])


def test_modules_that_do_not_return_a_channel_first_feature_map_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'down_blocks\.0'.*channel-first 4-D.*tuple"):
        wrap(conv_module_names=["down_blocks.0"])
    with pytest.raises(ValueError, match=r"'time_embedding'.*channel-first 4-D"):
        wrap(conv_module_names=["time_embedding"])


class _ToChannelLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, x[:, :2]], 1).permute(0, 2, 3, 1)  # (n, h, w, 5)


class _ChannelLastInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _ToChannelLast()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.inner(x).permute(0, 3, 1, 2)


def test_channel_last_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'inner'.*channel-first.*\(1, 8, 8, 5\)"):
        Lumiere(
            _ChannelLastInside(), image_size=8, unet_time_kwarg="t", conv_module_names=["inner"]
        )


def test_a_conditional_unet_without_example_kwargs_fails_with_its_own_error() -> None:
    with pytest.raises(ValueError, match="class_labels"):
        wrap(example_kwargs={})


def test_a_block_class_that_is_not_an_identity_at_init_is_caught() -> None:
    class Doubling(ConvolutionInflationBlock):
        def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
            return 2 * super().forward(x, batch_size)

    with pytest.raises(ValueError, match=r"convs\.0.*not an identity at initialisation"):
        wrap(conv_klass=Doubling)
    wrapper = wrap(conv_klass=Doubling, check_init=False)  # opted out: built as asked
    assert isinstance(wrapper.convs[0], Doubling)


def test_reference_style_down_sampling_that_doubles_magnitudes_is_caught() -> None:
    class Doubling(TemporalDownsample):
        def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
            return 2 * super().forward(x, batch_size)

    with pytest.raises(ValueError, match="not an identity"):
        wrap(downsample_module_names=DOWN, upsample_module_names=UP, downsample_klass=Doubling)


def test_block_kwargs_are_validated_by_the_blocks() -> None:
    with pytest.raises(ValueError, match="odd"):
        wrap(conv_inflation_kwargs={"conv1d_kernel_size": 2})
    with pytest.raises(ValueError, match="'dim' is inferred"):
        wrap(conv_inflation_kwargs={"dim": 4})


def test_constructor_arguments_are_type_checked() -> None:
    with pytest.raises(TypeError, match="image_size"):
        wrap(image_size="8")
    with pytest.raises(TypeError, match="conv_module_names"):
        wrap(conv_module_names="down_blocks.0.resnets.0")


def test_video_shape_is_validated() -> None:
    wrapper = wrap()
    with pytest.raises(ValueError, match=r"expected shape \(b, 3, t, 8, 8\)"):
        wrapper(torch.randn(2, 3, 4, 16, 16), timestep=1, class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected shape"):
        wrapper(torch.randn(8, 3, 8, 8), timestep=1, class_labels=torch.tensor([0]))


# ---------------------------------------------------------------------------------------------
# training: parameters, gradients, adapters


def test_parameters_keep_module_semantics_and_temporal_parameters_are_separate() -> None:
    wrapper = wrap()
    assert next(wrapper.parameters()) is not None  # a generator (the reference returned a list)
    everything = list(wrapper.parameters())
    assert len(list(wrapper.parameters(recurse=False))) == 0
    temporal = list(wrapper.temporal_parameters())
    base = list(wrapper.model.parameters())
    assert len(everything) == len(temporal) + len(base)
    assert all(p.requires_grad for p in temporal)
    assert not any(p.requires_grad for p in base)
    assert set(wrapper.temporal_state_dict()) == {
        f"{name}" for name, _ in wrapper.temporal_modules().named_parameters()
    } | {f"{name}" for name, _ in wrapper.temporal_modules().named_buffers()}
    unfrozen = wrap(freeze_base=False)
    assert all(p.requires_grad for p in unfrozen.model.parameters())


@pytest.mark.parametrize("klass", [Lumiere, MPLumiere])
def test_only_temporal_parameters_learn_and_the_base_is_untouched(klass: type[Lumiere]) -> None:
    base = unet2d()
    wrapper = wrap(klass, base)
    before = {k: v.clone() for k, v in wrapper.model.state_dict().items()}
    optimizer = torch.optim.Adam(wrapper.temporal_parameters(), lr=1e-2)
    video, time, labels = clip(), torch.tensor([5, 60]), torch.tensor([0, 1])
    for _ in range(3):
        loss = wrapper(video, timestep=time, class_labels=labels).sample.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in wrapper.model.parameters())
    after = wrapper.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        moved = wrapper(video, timestep=time, class_labels=labels).sample
        plain = per_frame(base, video, timestep=time, class_labels=labels)
    assert (moved - plain).abs().max() > 1e-4  # the temporal layers learned something


@pytest.mark.parametrize("klass", [Lumiere, MPLumiere])
def test_adapter_round_trip_onto_a_fresh_copy_of_the_base(klass: type[Lumiere], tmp_path) -> None:
    wrapper = wrap(klass, downsample_module_names=DOWN, upsample_module_names=UP)
    with torch.no_grad():
        for parameter in wrapper.temporal_parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    wrapper.save_temporal(tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]  # no base weights
    config = json.loads((tmp_path / "adapter" / "config.json").read_text())
    assert config["_class_name"] == "TemporalBlocks"
    assert config["groups"]["conv"]["module_names"] == CONV
    fresh = wrap(klass, downsample_module_names=DOWN, upsample_module_names=UP)
    fresh.load_temporal(tmp_path / "adapter")
    for key, value in wrapper.temporal_state_dict().items():
        torch.testing.assert_close(fresh.temporal_state_dict()[key], value)
    loaded = klass.from_temporal(unet2d(), tmp_path / "adapter", example_kwargs=LABEL)
    assert type(loaded) is klass
    video, time, labels = clip(), torch.tensor([5, 60]), torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(video, timestep=time, class_labels=labels).sample,
            wrapper(video, timestep=time, class_labels=labels).sample,
        )


def test_an_adapter_for_other_modules_or_another_base_is_refused(tmp_path) -> None:
    wrap().save_temporal(tmp_path / "adapter")
    with pytest.raises(ValueError, match="module_names"):
        wrap(conv_module_names=CONV[:2]).load_temporal(tmp_path / "adapter")
    with pytest.raises(ValueError, match="another base architecture"):
        Lumiere(
            MPUNet2D(),
            image_size=SIZE,
            unet_time_kwarg="sigma",
            conv_module_names=["enc0"],
        ).load_temporal(tmp_path / "adapter")
    with pytest.raises(ValueError, match="temporal adapter folder"):
        wrap().load_temporal(tmp_path / "missing")


def test_deep_copies_keep_their_own_temporal_blocks() -> None:
    # EMA copies are deep copies: their hooks must call their own blocks, not the original's
    import copy

    wrapper = wrap()
    twin = copy.deepcopy(wrapper)
    with torch.no_grad():
        twin.convs[0].proj_out.weight.normal_()
        video, time, labels = clip(), torch.tensor([1, 2]), torch.tensor([0, 1])
        original = wrapper(video, timestep=time, class_labels=labels).sample
        expected = per_frame(wrapper.model, video, timestep=time, class_labels=labels)
        torch.testing.assert_close(original, expected, **ROUNDING)
        assert not torch.allclose(twin(video, timestep=time, class_labels=labels).sample, original)


@pytest.mark.parametrize("klass", [Lumiere, MPLumiere])
def test_torch_compile_traces_the_wrapper_in_one_graph(klass: type[Lumiere]) -> None:
    import torch._dynamo as dynamo

    wrapper = wrap(klass)
    video, time, labels = clip(), torch.tensor([3, 4]), torch.tensor([0, 1])
    explanation = dynamo.explain(wrapper)(video, timestep=time, class_labels=labels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    dynamo.reset()
    if klass is MPLumiere:
        return  # one compiled run (below) is enough to show the traced graph runs and trains
    compiled = torch.compile(wrapper, backend="aot_eager")
    out = compiled(video, timestep=time, class_labels=labels).sample
    torch.testing.assert_close(out, wrapper(video, timestep=time, class_labels=labels).sample)
    out.square().mean().backward()
    assert all(p.grad is not None for p in wrapper.convs.parameters())
