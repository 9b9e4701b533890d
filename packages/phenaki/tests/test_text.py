"""phenaki.text.TextEncoder: Phenaki's defaults on the shared encoder.

The encoder's behaviour (lazy loading, per-token states and mask, truncation, devices, cache,
injection, copies, errors) is tested once, in packages/mp-layers/tests/test_text_encoder*.py;
here: the defaults (T5 by name, per-token outputs, 256 tokens when the model sets no limit, 256
cached captions), the positional `device` Phenaki calls it with, the arguments and messages of
this constructor and the install hint that names this package."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from phenaki.text import DEFAULT_MAX_LENGTH, TextEncoder

transformers = pytest.importorskip("transformers")

CAPTIONS = ["a cat runs", "the red ball jumps on the snow in the sky"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def t5(tiny_t5_dir: Path) -> tuple[Any, Any]:
    """The tiny T5's encoder and tokenizer, loaded directly (the expected values)."""
    model = transformers.T5EncoderModel.from_pretrained(tiny_t5_dir, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_t5_dir, local_files_only=True)
    return model.eval(), tokenizer


def expected(model_and_tokenizer: tuple[Any, Any], texts: list[str], **kwargs: Any) -> Any:
    model, tokenizer = model_and_tokenizer
    tokens = tokenizer(texts, padding=True, return_tensors="pt", **kwargs)
    with torch.no_grad():
        hidden = model.eval()(**tokens).last_hidden_state
    return hidden, tokens["attention_mask"].bool()


# ---------------------------------------------------------------- loading by folder


def test_t5_folder_gives_states_and_the_tokenizers_mask(
    tiny_t5_dir: Path, t5: tuple[Any, Any]
) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    assert not encoder.is_loaded
    embeds, mask = encoder(CAPTIONS)
    assert encoder.is_loaded
    hidden, real = expected(t5, CAPTIONS)
    assert embeds.shape == (2, hidden.shape[1], 16)
    assert embeds.dtype == torch.float32
    assert mask.dtype == torch.bool
    assert torch.equal(mask, real)
    assert mask[1].all()
    assert not mask[0].all()
    assert (embeds[~mask] == 0).all()  # padded rows are zero, as the reference's
    torch.testing.assert_close(embeds[mask], hidden[real], atol=1e-5, rtol=1e-5)


def test_default_length_is_the_models_or_the_references(
    tiny_t5_dir: Path, tiny_bert_dir: Path
) -> None:
    long_text = " ".join(["the cat runs"] * 200)  # ~600 tokens
    # BERT: its 64 positions; the tiny T5 (relative positions, tokenizer without a limit): 256.
    assert TextEncoder(tiny_bert_dir)([long_text, "a dog"])[0].shape == (2, 64, 32)
    assert DEFAULT_MAX_LENGTH == 256
    assert TextEncoder(tiny_t5_dir)([long_text])[1].shape == (1, 256)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        TextEncoder(tiny_bert_dir, max_length=65)("a cat")


# ---------------------------------------------------------------- laziness and errors


def test_construction_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # not even imported
    encoder = TextEncoder()  # google/t5-v1_1-base, as the reference
    assert encoder.name_or_path == "google/t5-v1_1-base"
    assert not encoder.is_loaded
    TextEncoder("no-such-org/no-such-model")
    TextEncoder(Path("/no/such/folder"))
    with pytest.raises(ImportError, match=r"phenaki\[text\]"):
        encoder(["a cat"])


def test_unavailable_name_is_a_one_sentence_error() -> None:
    encoder = TextEncoder("no-such-org/no-such-model-xyz", local_files_only=True)
    with pytest.raises(OSError, match=r"no-such-org/no-such-model-xyz.*offline") as caught:
        encoder(["a cat"])
    message = str(caught.value).split(" (cause:")[0]
    assert ". " not in message
    assert "save_pretrained" in message
    assert "download" in message
    assert isinstance(caught.value.__cause__, (OSError, ValueError))
    assert not encoder.is_loaded


def test_bad_constructor_arguments(t5: tuple[Any, Any]) -> None:
    model, tokenizer = t5
    with pytest.raises(TypeError, match="tokenizer="):
        TextEncoder(module=model)
    with pytest.raises(ValueError, match="not both"):
        TextEncoder(module=model, tokenizer=tokenizer, function=lambda t, d: None)
    with pytest.raises(ValueError, match="name_or_path=None"):
        TextEncoder("t5-small", module=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="dim="):
        TextEncoder(function=lambda t, d: None)
    with pytest.raises(ValueError, match="tokenizer="):
        TextEncoder(function=lambda t, d: None, dim=4, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="none of them"):
        TextEncoder(None)
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(max_length=0)
    with pytest.raises(ValueError, match="cache_size"):
        TextEncoder(cache_size=-1)
    with pytest.raises(TypeError):
        TextEncoder(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- defaults and calls


def test_defaults_are_t5_token_states_and_256_cached_captions(
    tiny_t5_dir: Path, t5: tuple[Any, Any]
) -> None:
    encoder = TextEncoder()
    assert (encoder.pooling, encoder.cache_size) == (None, 256)
    assert repr(encoder) == "TextEncoder('google/t5-v1_1-base', cache=0/256)"
    model, tokenizer = t5
    injected = TextEncoder(module=model, tokenizer=tokenizer)  # the default name is ignored
    assert injected.name_or_path is None
    assert repr(injected) == "TextEncoder(T5EncoderModel, cache=0/256)"


def test_device_argument_is_respected_and_may_be_positional(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    for device in (None, "cpu", torch.device("cpu")):
        embeds, mask = encoder(CAPTIONS, device=device)
        assert embeds.device == mask.device == torch.device("cpu")
        positional = encoder(CAPTIONS, device)  # as Phenaki calls it
        assert torch.equal(positional[0], embeds)
        assert torch.equal(positional[1], mask)


def test_function_is_called_with_the_texts_and_the_device() -> None:
    calls: list[tuple[list[str], torch.device]] = []

    def embed(texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((texts, device))
        return torch.ones(len(texts), 2, 3), torch.tensor([[True, False]] * len(texts))

    encoder = TextEncoder(function=embed, dim=3)  # the default name is ignored
    embeds, mask = encoder(["a", "a"], "cpu")
    assert calls == [(["a", "a"], torch.device("cpu"))]  # no cache: every batch, as given
    assert embeds[:, 1].eq(0).all()
    assert mask.tolist() == [[True, False]] * 2
    with pytest.raises(ValueError, match=r"expected function= to return \(embeds \(1, m, 3\)"):
        TextEncoder(function=lambda texts, device: torch.zeros(len(texts), 2, 3), dim=3)(["a"])


def test_copies_share_it_and_pickling_drops_loaded_weights(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    assert not isinstance(encoder, nn.Module)
    holder = nn.Linear(2, 2)
    holder.text = encoder  # type: ignore[assignment]
    before = encoder(["a cat"])
    assert set(holder.state_dict()) == {"weight", "bias"}
    assert copy.deepcopy(holder).text is encoder
    restored = pickle.loads(pickle.dumps(encoder))
    assert type(restored) is TextEncoder
    assert not restored.is_loaded
    torch.testing.assert_close(restored(["a cat"])[0], before[0])
