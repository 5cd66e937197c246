#!/usr/bin/env bash
# an4: CMU's alphanumeric census database (spelled names, digits, words; 16 kHz) with a small
# stacked BiLSTM-CTC model. Get an4_sphere.tar.gz (64 MB) from
# http://www.speech.cs.cmu.edu/databases/an4/ and unpack it; --corpus-dir is the folder holding an4/.
#   ./run.sh --corpus-dir DIR [--dev-utts 100] [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train]
#            [--force true]
# Stages: 0 prepare, 1 CMVN, 2 train, 3 decode + score, 4 package, 5 RESULTS.md

set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
config=conf/train.yaml
exp=exp/train
corpus_dir=
dev_utts=100
train_args=
force=false
. ../lib.sh

if stage 0 prepare; then
  python -m data_prep.an4 ${corpus_dir:+--corpus-dir "$corpus_dir"} --dev-utts "$dev_utts" data
  for s in train dev test; do python -m asr.datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  python -m asr cmvn --config "$config" -o exp/cmvn.json data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  python -m asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/an4 \
    features.cmvn=exp/cmvn.json $train_args
  done_stage 2 train
fi

if stage 3 decode; then
  python -m asr decode --model "$exp" --data data/test --out-dir "$exp/decode_test"
  done_stage 3 decode
fi

if stage 4 package; then
  python -m asr package --model "$exp" -o "$exp/an4.safetensors" \
    --info data="AN4 train (74 speakers less the dev ones)" --info recipe=recipes/an4 \
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
    echo '```'
  } > "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 5 results
fi
