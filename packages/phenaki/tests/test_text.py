"""TextEncoder: token embeddings + padding mask, lazy offline loading, truncation, injection."""

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


def no_weights(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not load weights or a tokenizer")


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


def test_other_encoders_load_with_automodel(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(str(tiny_bert_dir))  # a str path: never sent to the hub
    embeds, mask = encoder(CAPTIONS)
    tokens = transformers.AutoTokenizer.from_pretrained(tiny_bert_dir)(CAPTIONS, padding=True)
    assert embeds.shape == (2, len(tokens["input_ids"][0]), 32)
    assert mask.tolist() == [[bool(m) for m in row] for row in tokens["attention_mask"]]


def test_texts_are_truncated_to_max_length(tiny_t5_dir: Path, t5: tuple[Any, Any]) -> None:
    embeds, mask = TextEncoder(tiny_t5_dir, max_length=4)(CAPTIONS)
    assert embeds.shape == (2, 4, 16)
    assert mask.all()
    hidden, _ = expected(t5, CAPTIONS, truncation=True, max_length=4)
    torch.testing.assert_close(embeds, hidden, atol=1e-5, rtol=1e-5)


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


def test_padding_and_the_cache_do_not_change_a_text(tiny_t5_dir: Path) -> None:
    uncached = TextEncoder(tiny_t5_dir, cache_size=0)
    alone, _ = uncached(["a cat runs"])
    batched, _ = uncached(CAPTIONS)
    n = alone.shape[1]
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-5)
    cached = TextEncoder(tiny_t5_dir)
    first = cached(CAPTIONS)
    again = cached(CAPTIONS[::-1])  # both from the cache, in another order
    torch.testing.assert_close(again[0], first[0].flip(0))
    assert torch.equal(again[1], first[1].flip(0))


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


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    encoder = TextEncoder(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        encoder(["a cat"])


def test_dim_reads_the_config_without_loading_weights(
    tiny_t5_dir: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AutoModel", "T5EncoderModel", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", no_weights)
    for folder, width in ((tiny_t5_dir, 16), (tiny_bert_dir, 32)):
        encoder = TextEncoder(folder)
        assert encoder.dim == width
        assert not encoder.is_loaded
    with pytest.raises(ValueError, match="dim=8"):
        _ = TextEncoder(tiny_t5_dir, dim=8).dim


def test_empty_and_non_string_texts(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    with pytest.raises(ValueError, match="at least one text"):
        encoder([])
    with pytest.raises(TypeError, match="index 1"):
        encoder(["a cat", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        encoder(3)  # type: ignore[arg-type]
    assert not encoder.is_loaded  # validation comes before loading


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


# ---------------------------------------------------------------- devices and injection


def test_device_argument_is_respected(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    for device in (None, "cpu", torch.device("cpu")):
        embeds, mask = encoder(CAPTIONS, device=device)
        assert embeds.device == mask.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_runs_on_the_requested_cuda_device(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir, cache_size=0)
    on_cpu = encoder(CAPTIONS)
    on_gpu = encoder(CAPTIONS, device="cuda")
    assert on_gpu[0].device.type == on_gpu[1].device.type == "cuda"
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=1e-4)
    assert torch.equal(on_gpu[1].cpu(), on_cpu[1])


class CountingModule(nn.Module):
    """Wraps a transformers encoder; records the batch size of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.batches: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.batches.append(input_ids.shape[0])
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_injected_module_and_tokenizer(t5: tuple[Any, Any]) -> None:
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


def test_function_with_dim() -> None:
    def embed(texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        m = max(len(t) for t in texts)
        mask = torch.tensor([[i < len(t) for i in range(m)] for t in texts], device=device)
        return torch.full((len(texts), m, 3), 7.0, dtype=torch.float64, device=device), mask

    encoder = TextEncoder(function=embed, dim=3)
    assert encoder.dim == 3
    assert encoder.is_loaded
    embeds, mask = encoder(["ab", "abcd"], device="cpu")
    assert embeds.dtype == torch.float32
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert (embeds[mask] == 7).all()
    assert (embeds[~mask] == 0).all()
    wrong = TextEncoder(function=lambda texts, device: torch.zeros(len(texts), 2, 3), dim=3)
    with pytest.raises(ValueError, match=r"embeds \(1, m, 3\), mask \(1, m\)"):
        wrong(["a cat"])


def test_is_not_a_module_and_copies_share_it(tiny_t5_dir: Path) -> None:
    encoder = TextEncoder(tiny_t5_dir)
    assert not isinstance(encoder, nn.Module)
    holder = nn.Linear(2, 2)
    holder.text = encoder  # type: ignore[assignment]
    encoder(["a cat"])
    assert set(holder.state_dict()) == {"weight", "bias"}
    assert len(list(holder.parameters())) == 2
    assert copy.deepcopy(holder).text is encoder
    restored = pickle.loads(pickle.dumps(encoder))  # drops the weights: they reload lazily
    assert not restored.is_loaded
    torch.testing.assert_close(restored(["a cat"])[0], encoder(["a cat"])[0])
