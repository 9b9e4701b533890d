"""`TrainerConfig` validation and the resumable, sharded batch sampler."""

from __future__ import annotations

import itertools
import json

import pytest

from mp_layers.training import ResumableBatchSampler, TrainerConfig


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("steps", 0, "an int >= 1"),
        ("grad_accum_steps", True, "an int >= 1"),
        ("keep_last", 0, "an int >= 1"),
        ("save_every", -1, "an int >= 0"),
        ("mixed_precision", "fp32", "one of ('no', 'bf16', 'fp16')"),
        ("max_grad_norm", 0.0, "a float in"),
        ("ema_beta", 1.5, "a float in [0.0, 1.0]"),
        ("post_hoc_ema_sigma_rels", (0.1,), "empty or >= 2 distinct floats"),
        ("post_hoc_ema_sigma_rels", (0.1, 0.1), "empty or >= 2 distinct floats"),
        ("out_dir", "", "a non-empty path"),
        ("max_time_s", 0, "a float in"),
        ("distributed", "zero3", "one of ('ddp', 'fsdp')"),
    ],
)
def test_config_errors_name_field_expected_and_given(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ValueError, match="TrainerConfig") as info:
        TrainerConfig(**{field: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"TrainerConfig.{field}" in message
    assert expected in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("batch_size", 2.0), ("cpu", "yes"), ("max_time_s", "1h"), ("compile", 1), ("out_dir", 3)],
)
def test_config_type_errors_name_the_field(field: str, value: object) -> None:
    """Wrong types are the `TypeError` of `@typechecked`, naming the field and the value."""
    with pytest.raises(TypeError, match=rf"TrainerConfig.__init__\(\) parameter {field}="):
        TrainerConfig(**{field: value})  # type: ignore[arg-type]


def test_config_round_trips_through_json() -> None:
    config = TrainerConfig(steps=5, post_hoc_ema_sigma_rels=(0.05, 0.28), max_grad_norm=1.0)
    assert TrainerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown keys \['stepz'\]"):
        TrainerConfig.from_dict({"stepz": 1})


def _take(sampler: ResumableBatchSampler, n: int) -> list[list[int]]:
    return list(itertools.islice(iter(sampler), n))


def test_sampler_shards_partition_the_single_process_batches() -> None:
    single = _take(ResumableBatchSampler(num_samples=20, batch_size=4, seed=3), 12)
    ranks = [
        _take(ResumableBatchSampler(num_samples=20, batch_size=2, seed=3, rank=r, world_size=2), 12)
        for r in (0, 1)
    ]
    for step in range(12):
        assert ranks[0][step] + ranks[1][step] == single[step]
        assert not set(ranks[0][step]) & set(ranks[1][step])
    epoch0 = single[:5]  # 20 // 4 batches per epoch; each epoch is a permutation
    assert sorted(i for batch in epoch0 for i in batch) == list(range(20))
    assert single[:5] != single[5:10]  # a new order each epoch


def test_sampler_resumes_at_any_batch_and_drops_the_tail() -> None:
    full = _take(ResumableBatchSampler(num_samples=10, batch_size=3, seed=0), 9)
    assert all(len(batch) == 3 for batch in full)  # 10 // 3 = 3 batches, one sample dropped
    for start in (0, 1, 3, 7):
        resumed = ResumableBatchSampler(num_samples=10, batch_size=3, seed=0, start_batch=start)
        assert _take(resumed, 9 - start) == full[start:]


def test_sampler_takes_datasets_smaller_than_a_batch() -> None:
    # 3 samples, a global batch of 8: an epoch chains ceil(8 / 3) = 3 permutations (9 samples,
    # one batch), each sample once per pass; the ranks still partition the global batch.
    single = _take(ResumableBatchSampler(num_samples=3, batch_size=8, seed=1, with_epochs=True), 2)
    assert all(len(batch) == 8 for batch in single)
    first = single[0]
    assert [p for p, _ in first] == [0, 0, 0, 1, 1, 1, 2, 2]
    for data_pass in (0, 1):
        assert sorted(i for p, i in first if p == data_pass) == [0, 1, 2]
    assert {p for p, _ in single[1]} == {3, 4, 5}  # epoch 1 is passes 3..5
    ranks = [
        _take(
            ResumableBatchSampler(
                num_samples=3, batch_size=4, seed=1, rank=r, world_size=2, with_epochs=True
            ),
            2,
        )
        for r in (0, 1)
    ]
    for step in range(2):
        assert ranks[0][step] + ranks[1][step] == single[step]
    plain = _take(ResumableBatchSampler(num_samples=3, batch_size=8, seed=1), 2)
    assert plain == [[i for _, i in batch] for batch in single]


def test_sampler_errors() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        ResumableBatchSampler(num_samples=0, batch_size=4)
    with pytest.raises(ValueError, match="rank < world_size"):
        ResumableBatchSampler(num_samples=8, batch_size=1, rank=2, world_size=2)
