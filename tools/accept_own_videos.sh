#!/usr/bin/env bash
# Issue 25 acceptance: each train command on a folder of videos the tests never saw
# (tools/make_real_like_videos.py), 2 steps, batch 4, 2 workers, --report-to tensorboard; then the
# event files, the report.json keys, and a search of every log for MovingShapes figures.
set -u
cd "$(dirname "$0")/.."
V=${VIDEOS:-/tmp/realdata/videos}
R=${OUT:-/tmp/realdata/accept}; rm -rf $R; mkdir -p $R
run() { name=$1; shift; echo "=== $name: $*"; start=$(date +%s); "$@" > $R/$name.log 2>&1; rc=$?; echo "rc=$rc wall=$(( $(date +%s) - start ))s"; grep -v "Warning\|warn\|it/s\]\|step/s\|^ *$\|cpu = \|self._index" $R/$name.log | tail -8; }
run karras uv run karras-unet3d train --data $V --skip-undecodable --steps 2 --batch-size 4 --num-workers 2 --out $R/karras --report-to tensorboard --sample-steps 2 --no-progress
run vddpm uv run video-ddpm train --data $V --skip-undecodable --steps 2 --batch-size 4 --num-workers 2 --out $R/vddpm --report-to tensorboard --sample-steps 2 --no-progress
run lumiere uv run lumiere-video train --data $V --skip-undecodable --base-steps 2 --steps 2 --batch-size 4 --num-workers 2 --out $R/lumiere --report-to tensorboard --sample-steps 2 --no-progress
run tokenizer uv run phenaki train-tokenizer --data $V --skip-undecodable --steps 2 --batch-size 4 --num-workers 2 --out $R/tokenizer --report-to tensorboard --no-progress
run phenaki uv run phenaki train --data $V --skip-undecodable --tokenizer $R/tokenizer --steps 2 --batch-size 4 --num-workers 2 --out $R/phenaki --report-to tensorboard --sample-steps 2 --no-progress
echo "=== event files"; find $R -name "events.out.tfevents*" | sed "s|$R/||"
echo "=== report.json keys"; for f in $(find $R -name report.json | sort); do echo "$f: $(python3 -c "import json,sys; r=json.load(open('$f')); print(sorted(r))")"; done
echo "=== MovingShapes figures printed?"; grep -il "colour accuracy\|color_accuracy\|one object\|centroid\|px/frame" $R/*.log || echo none
