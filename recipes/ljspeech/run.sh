#!/usr/bin/env bash
# ljspeech: single-speaker English TTS on LJ Speech 1.1 (Keith Ito and Linda Johnson, public
# domain; 13,100 clips, 24 h, 22.05 kHz) with the Tacotron-style model of asr.models.tts.
# Bring the corpus yourself (https://keithito.com/LJ-Speech-Dataset/), unpacked under --corpus-dir.
#   ./run.sh --corpus-dir DIR [--stage N] [--stop-stage N] [--config conf/tts.yaml] [--exp exp/tts]
# Stages: 0 prepare (ESPnet's split: last 500 ids held out, 250 dev + 250 test), 1 train (GPU),
#         2 synthesize the test texts: MCD against the recordings, RTF (no English ASR model ships
#           with asr, so intelligibility is not scored here; pass --asr-model to score one),
#         3 plots of attention alignments and mel spectrograms
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=3
config=conf/tts.yaml
exp=exp/tts
corpus_dir=
asr_model=
train_args=
force=false
. ../lib.sh

if stage 0 prepare; then
  python -m data_prep.ljspeech ${corpus_dir:+--corpus-dir "$corpus_dir"} data
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/ljspeech $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 1 train
fi

if stage 2 evaluate; then
  asr tts evaluate --model "$exp" --data data/test --asr-model "${asr_model:-none}" \
    --out-dir "$exp/eval_test" --plots 4
  done_stage 2 evaluate
fi

if stage 3 plots; then
  asr tts plot --model "$exp" --text "Printing, in the only sense with which we are at present concerned." \
    -o "$exp/plots/printing.png"
  done_stage 3 plots
fi
