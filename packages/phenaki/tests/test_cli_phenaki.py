"""`phenaki train | sample | story` with a tiny tokenizer and a tiny BERT (offline, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mp_layers.video import read_video
from phenaki import CViViT, Phenaki
from phenaki.cli import main
from phenaki.cli_phenaki import TokenizedClips, prompt_indices, train

from .conftest import TINY


@pytest.fixture
def tiny_tokenizer(tmp_path: Path) -> Path:
    config = {**TINY, "codebook_size": 32, "use_vgg_and_gan": False}
    return CViViT(**config).save_pretrained(tmp_path / "tok")


def run_args(tokenizer: Path, bert: Path, out: Path) -> list[str]:
    return [
        f"--tokenizer={tokenizer}",
        f"--text-encoder={bert}",
        f"--out={out}",
        "--frames=5",
        "--dim=16",
        "--depth=1",
        "--heads=2",
        "--dim-head=8",
        "--batch-size=4",
        "--num-videos=16",
        "--num-per-row=2",
        "--sample-steps=3",
        "--warmup-steps=1",
        "--no-progress",
    ]


def test_train_sample_and_story(tiny_tokenizer: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train([*run_args(tiny_tokenizer, tiny_bert_dir, out), "--steps=3", "--critic=token"])
    assert summary["step"] == 3
    for name in ("samples.gif", "loss.png", "metrics.csv", "phenaki_train.json"):
        assert (out / name).is_file(), name
    # the run's config, written by mp_layers.training.run_train_job
    assert json.loads((out / "phenaki_train.json").read_text())["critic"] == "token"
    assert 0.0 <= summary["quality"]["colour"] <= 1.0
    sheet = read_video(out / "samples.gif")
    assert sheet.shape[1] == 5
    model = Phenaki.from_pretrained(out / "phenaki", text_encoder=lambda t, d: None)
    assert model.critic is not None
    assert model.tokenizer_folder == tiny_tokenizer.resolve()
    # the run stores a reference to the tokenizer, not a copy
    assert not any(key.startswith("cvivit") for key in model.state_dict())

    clip = tmp_path / "clip.gif"
    common = [f"--run={out}", f"--text-encoder={tiny_bert_dir}"]
    assert main(["sample", *common, "--text=a red circle", "--frames=5", f"--out={clip}"]) == 0
    assert read_video(clip).shape[1] == 5
    story = tmp_path / "story.gif"
    code = main(
        [
            "story",
            *common,
            "--text=a red circle",
            "--text=a blue square",
            "--frames=5,2",
            "--prime=3",
            f"--out={story}",
        ]
    )
    assert code == 0
    assert read_video(story).shape[1] == 7


def test_sample_from_a_hub_repo_id_offline(
    tiny_tokenizer: Path,
    tiny_bert_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sample --run org/name`: the run's `save_pretrained` folder (`phenaki/`, the tokenizer in
    its `cvivit/`) published on the Hub, read from a Hub cache (nothing fetched)."""
    import huggingface_hub

    from mp_layers.testing import populate_hub_cache

    out = tmp_path / "run"
    train([*run_args(tiny_tokenizer, tiny_bert_dir, out), "--steps=2"])
    populate_hub_cache(tmp_path / "hub", "someone/tiny-phenaki", out / "phenaki")

    def from_cache(**kwargs: object) -> str:  # the real lookup, in this cache, never online
        kwargs.update(cache_dir=tmp_path / "hub", local_files_only=True)
        return huggingface_hub.snapshot_download(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("mp_layers.hub.snapshot_download", from_cache)
    clips = {}
    for name, run in (("local", str(out)), ("hub", "someone/tiny-phenaki")):
        clips[name] = tmp_path / f"{name}.mp4"
        argv = ["sample", f"--run={run}", f"--text-encoder={tiny_bert_dir}", "--text=a red circle",
                "--frames=5", f"--out={clips[name]}"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    assert torch.equal(read_video(clips["local"]), read_video(clips["hub"]))
    assert main(["sample", "--run=someone/not-there", "--text=x", f"--out={tmp_path}/x.gif"]) == 1
    assert "phenaki sample: error:" in capsys.readouterr().err


def test_resume(tiny_tokenizer: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train([*run_args(tiny_tokenizer, tiny_bert_dir, out), "--steps=2", "--save-every=1"])
    summary = train([*run_args(tiny_tokenizer, tiny_bert_dir, out), "--steps=3", "--resume=latest"])
    assert summary["step"] == 3


def test_tokenizer_may_be_a_train_tokenizer_run_folder(
    tiny_tokenizer: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import shutil

    tokenizer_run = tmp_path / "tokenizer-run"  # what `phenaki train-tokenizer --out` writes
    shutil.copytree(tiny_tokenizer, tokenizer_run / "tokenizer")
    out = tmp_path / "run"
    assert train([*run_args(tokenizer_run, tiny_bert_dir, out), "--steps=1"])["step"] == 1
    model = Phenaki.from_pretrained(out / "phenaki", text_encoder=lambda t, d: None)
    assert model.tokenizer_folder == (tokenizer_run / "tokenizer").resolve()


def test_tokenized_clips_keep_captions_and_labels(tiny_tokenizer: Path) -> None:
    from mp_layers.video import MovingShapes

    clips = MovingShapes(5, image_size=16, num_frames=5)
    data = TokenizedClips(clips, CViViT.from_pretrained(tiny_tokenizer))
    assert len(data) == 5
    item = data[0]
    assert item["ids"].shape == (3, 4, 4)
    assert item["text"] == clips[0]["text"]
    assert item["label"] == clips[0]["label"]
    with pytest.raises(ValueError, match="captioned clips"):
        TokenizedClips(
            [{"video": torch.rand(3, 5, 16, 16)}], CViViT.from_pretrained(tiny_tokenizer)
        )


def test_prompt_indices() -> None:
    colours, shapes = prompt_indices(["a red circle moving left", "A Blue square"])
    assert colours == [0, 2]
    assert shapes == [0, 1]
    assert prompt_indices(["a cat"]) == (None, None)


def test_story_errors_are_one_line(
    tiny_tokenizer: Path, tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train([*run_args(tiny_tokenizer, tiny_bert_dir, out), "--steps=1"])
    code = main(
        [
            "story",
            f"--run={out}",
            f"--text-encoder={tiny_bert_dir}",
            "--text=a",
            "--text=b",
            "--frames=5,4",
            "--prime=3",
            f"--out={tmp_path / 's.gif'}",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "max_seq_len" in err
    assert "Traceback" not in err
