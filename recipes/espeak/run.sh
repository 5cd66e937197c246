#!/usr/bin/env bash
# espeak: King James Bible clauses spoken by espeak-ng voices (a synthetic multi-speaker corpus,
# nothing to download), character BiLSTM-CTC, and a word 3-gram LM from the text outside dev/test.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train] [--force true]
#            [--num-train 1500] [--alphas 0,0.5,1,1.5] [--betas 0,1,2,3] [--beams 8,32]
# Needs: apt-get install espeak-ng bible-kjv; KenLM's lmplz (tools/install_kenlm.sh, run by stage 3).
# Stages: 0 synthesise data, 1 CMVN, 2 train, 3 LM, 4 tune alpha/beta/beam on dev,
#         5 decode test (greedy, beam, beam + LM), 6 RESULTS.md
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
config=conf/train.yaml
exp=exp/train
train_args=
num_train=1500
num_dev=150
num_test=200
lm_order=3
alphas=0,0.25,0.5,0.75,1,1.5
betas=0,1,2,3
beams=8,32
. ../lib.sh

lm=exp/lm/${lm_order}gram.arpa

if stage 0 prepare; then
  python -m data_prep.espeak --num-train "$num_train" --num-dev "$num_dev" --num-test "$num_test" data
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/espeak \
    features.cmvn=exp/cmvn.json $train_args
  done_stage 2 train
fi

if stage 3 lm; then
  # data/local/lm_train.txt: the text outside the passages dev and test come from (data_prep.espeak)
  [ -x ../../tools/bin/lmplz ] || ../../tools/install_kenlm.sh
  asr lm train --order "$lm_order" data/local/lm_train.txt "$lm"
  done_stage 3 lm
fi

if stage 4 tune; then
  asr tune --model "$exp" --data data/dev --lm "$lm" --out-dir "$exp/tune" \
    --alphas "$alphas" --betas "$betas" --beams "$beams"
  done_stage 4 tune
fi

if stage 5 decode; then
  beam=$(python -c "import json;print(json.load(open('$exp/tune/best.json'))['beam_width'])")
  asr decode --model "$exp" --data data/test --out-dir "$exp/decode_test_greedy"
  asr decode --model "$exp" --decoder beam --beam-width "$beam" --data data/test \
    --out-dir "$exp/decode_test_beam"
  # the tuned package carries alpha, beta, beam width and the LM as its decoding defaults
  asr decode --model "$exp/tune/model.safetensors" --decoder beam --data data/test \
    --out-dir "$exp/decode_test_beam_lm"
  done_stage 5 decode
fi

if stage 6 results; then
  {
    echo "# espeak results"
    echo
    echo "Measured $(date +%F) on $(machine)."
    echo "Data: $(wc -l < data/train/text) train / $(wc -l < data/dev/text) dev / $(wc -l < data/test/text) test"\
         "sentences; dev and test voices (accent + variant) never heard in training."
    echo "Model: $(python - "$exp" <<'PY'
import csv, sys, yaml
c = yaml.safe_load(open(sys.argv[1] + "/config.yaml"))["model"]
dev = [r for r in csv.DictReader(open(sys.argv[1] + "/train_log.csv")) if r["split"] == "dev"]
print(f"{c['num_layers']}x{c['hidden_size']} Bi{c['cell'].upper()}, characters, subsample={c['subsample']}; "
      f"{len(dev)} dev evaluations (one per epoch), {dev[-1]['step'] if dev else '?'} steps")
PY
) (config \`$config\`)."
    echo "LM: word ${lm_order}-gram (KenLM, --discount_fallback) on $(wc -l < data/local/lm_train.txt)"\
         "clauses, none from the dev/test passages."
    echo
    echo '```'
    for d in greedy beam beam_lm; do
      printf '%-8s %s  RTF %s\n' "$d" "$(head -1 "$exp/decode_test_$d/wer")" "$(cat "$exp/decode_test_$d/rtf")"
    done
    echo '```'
    echo
    echo "Tuned on dev ($exp/tune/results.md, best first; greedy first as the baseline):"
    echo
    head -8 "$exp/tune/results.md"
  } > RESULTS.md
  cat RESULTS.md
  done_stage 6 results
fi
