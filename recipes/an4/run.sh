#!/usr/bin/env bash
# an4: CMU's alphanumeric census database (spelled names, digits, words; 16 kHz) with a small
# stacked BiLSTM-CTC model. Get an4_sphere.tar.gz (64 MB) from
# http://www.speech.cs.cmu.edu/databases/an4/ and unpack it; --corpus-dir is the folder holding an4/
# (default: $ASR_DATA/an4, else ../shared/data/an4 beside the repo).
#   ./run.sh [--corpus-dir DIR] [--dev-utts 100] [--stage N] [--stop-stage N] [--config conf/train.yaml]
#            [--exp exp/train] [--force true]
# Stages: 0 prepare, 1 CMVN, 2 train, 3 greedy decode + score, 4 package, 5 RESULTS.part.md,
#         6 word 3-gram LM from the training transcripts, 7 tune LM weight/bonus/beam on dev,
#         8 decode test with the tuned package

set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=8
lm_order=3
config=conf/train.yaml
exp=exp/train
corpus_dir=
dev_utts=100
train_args=
cmvn=exp/cmvn.json  # --cmvn ../english/exp/cmvn.json with --config conf/finetune_english.yaml
force=false
. ../lib.sh

if stage 0 prepare; then
  python -m data_prep.an4 ${corpus_dir:+--corpus-dir "$corpus_dir"} --dev-utts "$dev_utts" data
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/an4 \
    features.cmvn="$cmvn" $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 2 train
fi

if stage 3 decode; then
  asr decode --model "$exp" --decoder greedy --data data/test --out-dir "$exp/decode_test"
  asr decode --model "$exp" --decoder greedy --data data/dev --out-dir "$exp/decode_dev"
  done_stage 3 decode
fi

if stage 4 package; then
  asr package --model "$exp" -o "$exp/an4.safetensors" \
    --info data="AN4 train (74 speakers less the dev ones)" --info config="$config" --info recipe=recipes/an4 \
    --info "result=test $(head -1 "$exp/decode_test/wer" | cut -d' ' -f1-2)"
  done_stage 4 package
fi

if stage 5 results; then
  {
    echo "## $exp ($(date +%F), $(machine))"
    echo
    echo "Config \`$config\`, greedy decoding:"
    echo
    echo '```'
    echo "test: $(head -1 "$exp/decode_test/wer")  RTF $(cat "$exp/decode_test/rtf")"
    echo "test: $(sed -n 3p "$exp/decode_test/wer")"
    echo '```'
  } > "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 5 results
fi

lm=exp/lm/${lm_order}gram.arpa
if stage 6 lm; then
  [ -x ../../tools/bin/lmplz ] || ../../tools/install_kenlm.sh
  mkdir -p exp/lm
  cut -s -d' ' -f2- data/train/text > exp/lm/train_text.txt  # training transcripts only
  asr lm train --order "$lm_order" exp/lm/train_text.txt "$lm"
  done_stage 6 lm
fi

if stage 7 tune; then
  asr tune --model "$exp" --data data/dev --lm "$lm" --out-dir "$exp/tune" \
    --alphas 0.3,0.6,1.0,1.5 --betas 0,1,2 --beams 16,32
  done_stage 7 tune
fi

if stage 8 decode_lm; then
  asr decode --model "$exp/tune/model.safetensors" --data data/test --out-dir "$exp/decode_test_lm"
  {
    echo "Beam + word ${lm_order}-gram (tuned on dev: $(python -c "import json;b=json.load(open('$exp/tune/best.json'));print(f\"alpha {b['alpha']}, beta {b['beta']}, beam {b['beam_width']}\")")):"
    echo '```'
    echo "test: $(head -1 "$exp/decode_test_lm/wer")"
    echo "test: $(sed -n 3p "$exp/decode_test_lm/wer")"
    echo '```'
  } >> "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 8 decode_lm
fi

