#!/usr/bin/env bash
# english: one stacked BiLSTM-CTC model over the real English sentences here, pooled: CMU AN4
# (74 speakers less the dev ones) and speechocean762 (Mandarin-L1 children and adults, 115 speakers
# less 10 for dev). Tested on AN4's and speechocean762's test speakers (never heard in training) and,
# as a model that has never heard FSDD, on FSDD's test takes (8 kHz, resampled to 16 kHz). Dev = whole
# training speakers of AN4 and speechocean762: checkpoints, LM weights and beams are chosen on it.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train] [--force true]
#            [--an4-dir DIR] [--so762-dir DIR] [--fsdd-dir DIR]   (default: found in ../shared/data)
#            [--ship true]  (maintainers: copy the tuned package into asr/pretrained as `english`,
#             --ship-name english-stream with --config conf/stream.yaml --exp exp/stream)
# Stages: 0 prepare, 1 CMVN, 2 train, 3 greedy decode + score, 4 LMs (word 3-gram and char 6-gram from
#         the training transcripts), 5 tune each LM on dev, 6 decode the test sets with the tuned
#         package, 7 scores by age group (speechocean762) and RESULTS.part.md
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=7
config=conf/train.yaml
exp=exp/train
an4_dir=
so762_dir=
fsdd_dir=
train_args=
force=false
ship=false
ship_name=english  # english-stream for conf/stream.yaml
word_order=3
char_order=6  # KenLM (tools/install_kenlm.sh and the kenlm module) is built for orders up to 6
. ../lib.sh

tests="an4/test so762/test fsdd/test fsdd/test_conn"

if stage 0 prepare; then
  python -m data_prep.an4 ${an4_dir:+--corpus-dir "$an4_dir"} --dev-utts 100 data/an4
  python -m data_prep.speechocean762 ${so762_dir:+--corpus-dir "$so762_dir"} --dev-speakers 10 data/so762
  python -m data_prep.fsdd ${fsdd_dir:+--corpus-dir "$fsdd_dir"} --num-conn-train 1200 data/fsdd
  for s in an4/train an4/dev an4/test so762/train so762/dev so762/test fsdd/train fsdd/train_conn fsdd/test fsdd/test_conn; do
    asr datadir validate data/$s
  done
  # one dev set for tuning: the dev speakers of both corpora
  mkdir -p data/dev
  for f in wav.scp text utt2spk utt2dur; do cat data/an4/dev/$f data/so762/dev/$f | LC_ALL=C sort > data/dev/$f; done
  python -c "
from asr.datadir import read_data_dir, write_data_dir
write_data_dir('data/dev', read_data_dir('data/dev'))"
  asr datadir validate data/dev
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json --max-utts 1500 \
    data/an4/train data/so762/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/english \
    features.cmvn=exp/cmvn.json $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 2 train
fi

if stage 3 decode; then
  for s in dev $tests; do
    asr decode --model "$exp" --decoder greedy --data data/$s --out-dir "$exp/decode_${s//\//_}"
  done
  done_stage 3 decode
fi

lmdir=exp/lm
if stage 4 lm; then
  [ -x ../../tools/bin/lmplz ] || ../../tools/install_kenlm.sh
  mkdir -p $lmdir
  cut -s -d' ' -f2- data/an4/train/text data/so762/train/text > $lmdir/train_text.txt
  # words: only the training vocabulary can be output (lexicon-constrained search)
  asr lm train --order "$word_order" $lmdir/train_text.txt $lmdir/word${word_order}.arpa
  # characters, the space written `|`: any word can be spelled (speechocean762's test sentences
  # have 6 % of their words outside the training vocabulary)
  sed -e 's/ /|/g' -e 's/./& /g' -e 's/ $//' $lmdir/train_text.txt > $lmdir/train_chars.txt
  asr lm train --order "$char_order" $lmdir/train_chars.txt $lmdir/char${char_order}.arpa
  done_stage 4 lm
fi

if stage 5 tune; then
  asr tune --model "$exp" --data data/dev --lm $lmdir/word${word_order}.arpa --out-dir "$exp/tune_word" \
    --alphas 0.3,0.6,1.0,1.5 --betas 0,1,2,3 --beams 16
  asr tune --model "$exp" --data data/dev --lm $lmdir/char${char_order}.arpa --out-dir "$exp/tune_char" \
    --alphas 0.2,0.4,0.7,1.0 --betas 0 --beams 16  # a word bonus needs word-level scoring
  # the LM that decodes dev best is the one decoded on test: chosen on dev only
  best=$(python -c "
import json, sys
rows = {k: json.load(open(f'$exp/tune_{k}/best.json')) for k in ('word', 'char')}
print(min(rows, key=lambda k: rows[k]['wer']))")
  echo "stage 5: the $best LM is better on dev"
  ln -sfn "tune_$best" "$exp/tune"
  done_stage 5 tune
fi

if stage 6 decode_lm; then
  for s in $tests; do
    asr decode --model "$exp/tune/model.safetensors" --data data/$s --out-dir "$exp/decode_${s//\//_}_lm"
  done
  done_stage 6 decode_lm
fi

if stage 7 results; then
  # speechocean762 by age group: children (< 12) and adults
  for d in decode_so762_test decode_so762_test_lm; do
    for g in child adult; do
      awk -v g=$g 'NR==FNR { if (($2 < 12) == (g == "child")) keep[$1] = 1; next }
                   { split($1, a, "-"); if (a[1] in keep) print }' data/so762/test/spk2age data/so762/test/text \
        > "$exp/$d/ref_$g.txt"
      asr score "$exp/$d/ref_$g.txt" "$exp/$d/hyp.txt" "$exp/$d/$g" > /dev/null
    done
  done
  {
    echo "## $exp ($(date +%F), $(machine))"
    echo
    echo "Config \`$config\`; LM chosen on dev: $(readlink "$exp/tune") ($(python -c "import json;b=json.load(open('$exp/tune/best.json'));print(', '.join(f'{k} {b[k]}' for k in ('alpha','beta','beam_width') if k in b))"))"
    echo
    echo '| set | greedy WER | greedy CER | beam + LM WER | beam + LM CER |'
    echo '|---|---|---|---|---|'
    for s in dev $tests; do
      g=$exp/decode_${s//\//_}/wer l=$exp/decode_${s//\//_}_lm/wer
      wer() { [ -f "$1" ] && sed -n "${2}p" "$1" | cut -d' ' -f2 || echo -; }
      echo "| $s | $(wer $g 1) | $(wer $g 3) | $(wer $l 1) | $(wer $l 3) |"
    done
    for g in child adult; do
      echo "| so762/test $g | $(wer $exp/decode_so762_test/$g/wer 1) | $(wer $exp/decode_so762_test/$g/wer 3) | $(wer $exp/decode_so762_test_lm/$g/wer 1) | $(wer $exp/decode_so762_test_lm/$g/wer 3) |"
    done
  } > "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 7 results
fi

if [ "$ship" = true ]; then
  asr package --model "$exp/tune" -o "$exp/$ship_name.safetensors" --half --info recipe=recipes/english \
    --info data="AN4 + speechocean762 train speakers (3.25 h, about 190 speakers)" \
    --info "result=AN4 test $(head -1 "$exp/decode_an4_test_lm/wer" | cut -d' ' -f2) % WER, speechocean762 test $(head -1 "$exp/decode_so762_test_lm/wer" | cut -d' ' -f2) % WER"
  asr ship "$exp/$ship_name.safetensors" "$ship_name" \
    --data "AN4 + speechocean762 training speakers, 16 kHz" \
    --result "AN4 test $(head -1 "$exp/decode_an4_test_lm/wer" | cut -d' ' -f2) % WER, speechocean762 test $(head -1 "$exp/decode_so762_test_lm/wer" | cut -d' ' -f2) % WER"
fi
