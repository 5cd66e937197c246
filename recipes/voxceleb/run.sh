#!/usr/bin/env bash
# voxceleb: speaker verification on VoxCeleb1 (and VoxCeleb2 converted to wav) with the official
# VoxCeleb1-O trial list. --corpus-dir holds `wav/<speaker>/<video>/<nnnnn>.wav` and
# `veri_test2.txt` (VoxCeleb2's m4a: `ffmpeg -i x.m4a -ar 16000 -ac 1 x.wav` first). The speakers of
# the trial list are the test set, every other speaker trains (data_prep/voxceleb.py --split veri).
# Anchor for those who run it: SpeechBrain's ECAPA-TDNN reaches 0.80 % EER on VoxCeleb1-O.
#   ./run.sh --corpus-dir DIR [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train]
#            [--train-args "train.max_epochs=2"] [--force true]
# Stages: 0 prepare (dev: every 10th utterance of each training speaker), 1 CMVN, 2 train,
#         3 score the official trials (EER, minDCF) with the model and the statistics baseline,
#         4 RESULTS.part.md
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=4
config=conf/train.yaml
exp=exp/train
corpus_dir=
train_args=
force=false
. ../lib.sh

if stage 0 prepare; then
  [ -n "$corpus_dir" ] || { echo "$0: --corpus-dir DIR is needed (the folder holding wav/ and veri_test2.txt)" >&2; exit 2; }
  python -m data_prep.voxceleb --corpus-dir "$corpus_dir" --split veri data/vox
  python - <<'PY'
from asr.datadir import read_data_dir, write_data_dir

# dev: every 10th utterance of each training speaker (the trainer's speaker accuracy and EER)
train = sorted(read_data_dir("data/vox/train"), key=lambda u: u.utt_id)
by_speaker = {}
for u in train:
    by_speaker.setdefault(u.speaker, []).append(u.utt_id)
dev = {i for ids in by_speaker.values() for i in ids[9::10]}
write_data_dir("data/train", [u for u in train if u.utt_id not in dev])
write_data_dir("data/dev", [u for u in train if u.utt_id in dev])
PY
  for s in train dev; do asr datadir validate data/$s; done
  asr datadir validate data/vox/test
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json --max-utts 2000 data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/voxceleb \
    features.cmvn=exp/cmvn.json $train_args
  done_stage 2 train
fi

if stage 3 score; then
  # identification figures here enroll each test speaker from 2 of its utterances; the trials are the official ones
  for backend in fused stats; do
    asr speaker evaluate --model "$exp" --test data/vox/test --trials data/vox/test/trials \
      --new-speaker-utts 2 --backend $backend --out-dir "$exp/eval_$backend"
  done
  done_stage 3 score
fi

if stage 4 results; then
  python - "$exp" <<'PY' | tee "$exp/RESULTS.part.md"
import json, sys
exp = sys.argv[1]
print("| scoring | EER | minDCF (p 0.01) | trials |\n|---|---|---|---|")
for b, name in (("fused", "model"), ("stats", "log-mel statistics baseline")):
    r = json.load(open(f"{exp}/eval_{b}/results.json"))
    print(f"| {name} | {r['eer']:.2f} % | {r['min_dcf']:.4f} | {r['trials']['target']} target / {r['trials']['nontarget']} non-target |")
PY
  done_stage 4 results
fi
