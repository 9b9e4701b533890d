"""The workflows behind the `phenaki` command line (extra `phenaki[train]`), importable as functions.

Each command turns its flags into a config and calls one of these:

- `phenaki.workflows.tokenizer`: `TokenizerConfig` and `train_tokenizer_run` (`phenaki
  train-tokenizer`): build the C-ViViT, its data, fit it, evaluate the reconstructions, report;
- `phenaki.workflows.text_to_video`: `PhenakiTrainConfig` and `train_phenaki_run` (`phenaki
  train`): a frozen tokenizer (trained first when none is given), tokenised captioned clips,
  MaskGit (and a critic), a sample sheet and its colour/shape accuracy;
- `phenaki.workflows.generate`: `SampleConfig` / `sample_clips` and `StoryConfig` / `tell_story`
  (`phenaki sample`, `phenaki story`) on a saved run.
"""
