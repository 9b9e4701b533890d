"""mp_layers.text_encoder.TextEncoder: devices, cache, injected modules and functions, copies,
pickling, errors and what a subclass sets (the tiny models of test_text_encoder.py)."""

from __future__ import annotations

import copy
import importlib.util
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mp_layers.text_encoder import MissingDimError, TextEncoder

# The tiny models and helpers are test_text_encoder.py's (tests cannot import each other by name
# under --import-mode=importlib): load it by path and bind its fixtures here.
_spec = importlib.util.spec_from_file_location(
    "text_encoder_models", Path(__file__).with_name("test_text_encoder.py")
)
assert _spec is not None
assert _spec.loader is not None
models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(models)
tiny_bert_dir, tiny_t5_dir, bert, t5 = (
    models.tiny_bert_dir,
    models.tiny_t5_dir,
    models.bert,
    models.t5,
)
counting, _offline = models.counting, models._offline
CAPTIONS, CountingModule, expected = models.CAPTIONS, models.CountingModule, models.expected


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("pooling", ["mean", None])
def test_device_argument_is_respected(tiny_bert_dir: Path, pooling: str | None) -> None:
    encoder = TextEncoder(tiny_bert_dir, pooling=pooling)
    for device in (None, "cpu", torch.device("cpu")):
        out = encoder(CAPTIONS, device=device)
        for tensor in out if isinstance(out, tuple) else (out,):
            assert tensor.device == torch.device("cpu")
        assert (out[0] if isinstance(out, tuple) else out).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_the_requested_cuda_device(tiny_bert_dir: Path, tiny_t5_dir: Path) -> None:
    pooled = TextEncoder(tiny_bert_dir, pooling="mean", cache_size=0)
    on_cpu = pooled(CAPTIONS)
    on_gpu = pooled(CAPTIONS, device="cuda")
    assert isinstance(on_gpu, torch.Tensor)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
    tokens = TextEncoder(tiny_t5_dir, cache_size=0)
    cpu_embeds, cpu_mask = tokens(CAPTIONS)
    gpu_embeds, gpu_mask = tokens(CAPTIONS, device="cuda")
    assert gpu_embeds.device.type == gpu_mask.device.type == "cuda"
    torch.testing.assert_close(gpu_embeds.cpu(), cpu_embeds, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu_mask.cpu(), cpu_mask)


# ---------------------------------------------------------------- cache


def test_cache_hit_does_not_run_the_model(counting: tuple[Any, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module=module, tokenizer=tokenizer, pooling="mean")
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


def test_cache_evicts_the_least_recently_used(counting: tuple[Any, Any]) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module=module, tokenizer=tokenizer, pooling="mean", cache_size=2)
    encoder("a")
    encoder("b")
    encoder("a")  # hit: "b" is now the least recently used
    encoder("c")  # evicts "b"
    assert len(module.batches) == 3
    encoder("a")
    assert len(module.batches) == 3
    encoder("b")
    assert len(module.batches) == 4


@pytest.mark.parametrize("pooling", ["mean", None])
def test_cache_size_zero_disables_the_cache(counting: tuple[Any, Any], pooling: str | None) -> None:
    module, tokenizer = counting
    encoder = TextEncoder(module=module, tokenizer=tokenizer, pooling=pooling, cache_size=0)
    encoder("a cat")
    encoder("a cat")
    assert module.batches == [1, 1]


# ---------------------------------------------------------------- injection


def test_injected_module_gives_token_states_and_caches_them(t5: tuple[Any, Any]) -> None:
    model, tokenizer = t5
    module = CountingModule(model).train()  # the encoder must switch dropout off
    encoder = TextEncoder(module=module, tokenizer=tokenizer, cache_size=2)
    assert encoder.dim == 16  # config.d_model
    embeds, mask = encoder(CAPTIONS)
    assert not module.training
    hidden, real = expected(t5, CAPTIONS)
    torch.testing.assert_close(embeds[mask], hidden[real], atol=1e-5, rtol=1e-5)
    encoder([CAPTIONS[1], CAPTIONS[1]])  # cached: no forward
    encoder(["a dog"])  # one new caption; evicts the least recently used ("a cat runs")
    encoder([CAPTIONS[0]])
    assert module.batches == [2, 1, 1]


def test_injected_module_pooled(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    model.train()  # the encoder must switch dropout off
    encoder = TextEncoder(module=model, tokenizer=tokenizer, pooling="cls", cache_size=0)
    assert encoder.dim == 32
    out = encoder(CAPTIONS)
    torch.testing.assert_close(out, encoder(CAPTIONS))
    assert not model.training
    hidden, _ = expected(bert, CAPTIONS)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-5, rtol=1e-5)


def test_pooled_function_is_called_once_per_new_text() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> torch.Tensor:
        calls.append(texts)
        return torch.tensor([[float(len(t))] * 3 for t in texts], dtype=torch.float64)

    encoder = TextEncoder(function=embed, pooling="mean", dim=3)
    assert encoder.dim == 3
    out = encoder(["ab", "abcd", "ab"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[2.0] * 3, [4.0] * 3, [2.0] * 3]))
    assert calls == [["ab", "abcd"]]
    wrong = TextEncoder(function=lambda texts: torch.zeros(len(texts), 5), pooling="cls", dim=3)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        wrong("a cat")


def test_per_token_function_with_dim() -> None:
    def embed(texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        m = max(len(t) for t in texts)
        mask = torch.tensor([[i < len(t) for i in range(m)] for t in texts], device=device)
        return torch.full((len(texts), m, 3), 7.0, dtype=torch.float64, device=device), mask

    encoder = TextEncoder(function=embed, dim=3)
    assert encoder.dim == 3
    assert encoder.is_loaded
    embeds, mask = encoder(["ab", "abcd"], device="cpu")
    assert (embeds.dtype, mask.dtype) == (torch.float32, torch.bool)
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert (embeds[mask] == 7).all()
    assert (embeds[~mask] == 0).all()
    wrong = TextEncoder(function=lambda texts, device: torch.zeros(len(texts), 2, 3), dim=3)
    with pytest.raises(ValueError, match=r"embeds \(1, m, 3\), mask \(1, m\)"):
        wrong(["a cat"])


# ---------------------------------------------------------------- copies and pickling


@pytest.mark.parametrize("pooling", ["mean", None])
def test_is_not_a_module_and_copies_share_it(tiny_bert_dir: Path, pooling: str | None) -> None:
    encoder = TextEncoder(tiny_bert_dir, pooling=pooling)
    assert not isinstance(encoder, nn.Module)
    holder = nn.Linear(2, 2)
    holder.text = encoder  # type: ignore[assignment]
    encoder("a cat")
    assert set(holder.state_dict()) == {"weight", "bias"}
    assert len(list(holder.parameters())) == 2
    assert copy.deepcopy(holder).text is encoder


@pytest.mark.parametrize("folder", ["tiny_bert_dir", "tiny_t5_dir"])
def test_pickling_drops_loaded_weights(folder: str, request: pytest.FixtureRequest) -> None:
    encoder = TextEncoder(request.getfixturevalue(folder), pooling="mean")
    before = encoder("a cat")
    restored = pickle.loads(pickle.dumps(encoder))
    assert not restored.is_loaded
    assert len(restored._cache) == 0
    torch.testing.assert_close(restored("a cat"), before)


def test_repr_names_the_source_pooling_and_cache(tiny_bert_dir: Path, bert: Any) -> None:
    encoder = TextEncoder(str(tiny_bert_dir), pooling="cls", cache_size=8)
    encoder("a cat")
    assert repr(encoder) == f"TextEncoder({str(tiny_bert_dir)!r}, pooling='cls', cache=1/8)"
    injected = TextEncoder(module=bert[0], tokenizer=bert[1])
    assert repr(injected) == "TextEncoder(BertModel, cache=0/256)"


# ---------------------------------------------------------------- errors


def test_bad_pooling() -> None:
    with pytest.raises(ValueError, match=r"mean.*cls.*'max'"):
        TextEncoder("anything", pooling="max")


def test_empty_and_non_string_texts(tiny_t5_dir: Path) -> None:
    for pooling in (None, "mean"):
        encoder = TextEncoder(tiny_t5_dir, pooling=pooling)
        with pytest.raises(ValueError, match="at least one text"):
            encoder([])
        with pytest.raises(TypeError, match="index 1"):
            encoder(["a cat", 3])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            encoder(3)  # type: ignore[arg-type]
        assert not encoder.is_loaded  # validation comes before loading


def test_bad_constructor_arguments(t5: tuple[Any, Any]) -> None:
    model, tokenizer = t5
    with pytest.raises(TypeError, match="module= needs tokenizer="):
        TextEncoder(module=model)
    with pytest.raises(ValueError, match="not both"):
        TextEncoder(module=model, tokenizer=tokenizer, function=lambda t, d: None)
    with pytest.raises(ValueError, match="name_or_path=None"):
        TextEncoder("t5-small", module=model, tokenizer=tokenizer)
    with pytest.raises(MissingDimError, match="dim="):
        TextEncoder(function=lambda t, d: None)
    with pytest.raises(ValueError, match="tokenizer="):
        TextEncoder(function=lambda t, d: None, dim=4, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="max_length="):
        TextEncoder(function=lambda t, d: None, dim=4, max_length=8)
    with pytest.raises(ValueError, match="none of them"):
        TextEncoder()
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder("t5-small", max_length=0)
    with pytest.raises(ValueError, match="dim"):
        TextEncoder("t5-small", dim=0)
    with pytest.raises(ValueError, match="cache_size"):
        TextEncoder("t5-small", cache_size=-1)
    with pytest.raises(TypeError):
        TextEncoder(42)  # type: ignore[arg-type]


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder(missing)(["a cat"])
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder(str(missing), pooling="mean")("a cat")
    with pytest.raises(OSError, match="no-such-model"):
        _ = TextEncoder(str(missing)).dim


def test_unavailable_name_is_a_one_sentence_error() -> None:
    encoder = TextEncoder("no-such-org/no-such-model-xyz", local_files_only=True)
    with pytest.raises(OSError, match=r"no-such-org/no-such-model-xyz.*offline") as caught:
        encoder(["a cat"])
    message = str(caught.value).split(" (cause:")[0]
    assert ". " not in message
    assert "save_pretrained" in message
    assert "mp_layers.text.default_text_encoder_path()" in message  # the default remedy
    assert isinstance(caught.value.__cause__, (OSError, ValueError))
    assert not encoder.is_loaded


def test_a_subclass_sets_the_install_hint_and_the_remedy(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Packaged(TextEncoder):
        extra = "pkg[text]"
        remedy = "run `pkg fetch` first"

    with pytest.raises(OSError, match=r"run `pkg fetch` first \(cause:"):
        Packaged("no-such-org/no-such-model-xyz", local_files_only=True)(["a cat"])
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "transformers"'):
        TextEncoder(tiny_bert_dir)(["a cat"])
    with pytest.raises(ImportError, match=r'pip install "pkg\[text\]"'):
        Packaged(tiny_bert_dir)(["a cat"])
