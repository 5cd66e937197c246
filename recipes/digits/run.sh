#!/usr/bin/env bash
# digits: the Free Spoken Digit Dataset (Zohar Jackson et al., CC BY-SA 4.0), isolated digits and
# connected-digit strings spliced from its recordings, with a stacked BiLSTM-CTC model.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train] [--force true]
#            [--demo true]  (the `make demo` path: also transcribes a sample clip)
# Stages: 0 prepare, 1 CMVN, 2 train, 3 decode + score, 4 package, 5 RESULTS.md,
#         6 ship (with --ship true only: copy the package into asr/pretrained as the embedded `digits`
#           model; maintainers), 7 word 3-gram LM (KenLM), 8 tune alpha/beta/beam on dev_conn,
#         9 decode with beam search + LM,
#         10 leave-one-speaker-out (5 trainings; not part of the demo),
#         11 ensemble: the models of --ensemble-exps (trained by stage 2 with their configs) combined
#           by `asr ensemble` with stage 7's LM, tuned on dev_conn as stage 8, decoded and scored in
#           exp/ensemble (ship it with --ship true --exp exp/ensemble)
#         12 the `english` acoustic model (recipes/english, trained on AN4 + speechocean762, about
#           190 speakers, never FSDD) as it is, with stage 7's ten-word LM, tuned on dev_conn,
#           decoded on test, test_conn and AN4's test utterances made only of digit words
#           (exp/english_digits)
#         13 digits for any voice: that model fine-tuned on FSDD, leaving each FSDD speaker out in
#           turn and once on all five (exp/finetune_english: the shipped `digits`;
#           ship it with --ship true --exp exp/finetune_english)
#   --synthetic-voices true: stage 10 also trains on espeak-ng voices saying digits (600 isolated
#     digits + 900 strings of 2-7 digits, data/espeak_digits; exp dirs exp/loso_<spk>_espeak)
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
config=conf/train.yaml
exp=exp/train
corpus_dir=
train_args=
demo=false
ship=false
lm_order=3
speakers="george jackson nicolas theo yweweler"
synthetic_voices=false
english_exp=../english/exp/train  # stage 12's acoustic model (an exp dir, package or model name)
# members of stage 11, each trained by stages 2-3 with --config conf/<name>.yaml --exp exp/<name>,
# except exp/train_long (conf/train_long_nocmn.yaml) and exp/train_long_cmn (conf/train_long.yaml)
# the shipped set: the fewest errors on dev + dev_conn of the 15 sets of these four LSTMs (RESULTS.md)
ensemble_exps="exp/train_long_cmn exp/train_long_seed1 exp/train_long_seed2"
. ../lib.sh

sets="test test_conn"

if stage 0 prepare; then
  python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} --num-conn-train 1200 data
  for s in train dev test train_conn dev_conn test_conn; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json data/train data/train_conn
  done_stage 1 cmvn
fi

if stage 2 train; then
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/digits \
    features.cmvn=exp/cmvn.json $train_args
  done_stage 2 train
fi

if stage 3 decode; then
  for s in $sets; do
    asr decode --model "$exp" --data data/$s --out-dir "$exp/decode_$s"
  done
  done_stage 3 decode
fi

if stage 4 package; then
  asr package --model "$exp" -o "$exp/digits.safetensors" \
    --info data="FSDD 5 speakers, takes 10-49 + connected strings" --info recipe=recipes/digits \
    --info "result=test $(head -1 "$exp/decode_test/wer" | cut -d' ' -f1-2), test_conn $(head -1 "$exp/decode_test_conn/wer" | cut -d' ' -f1-2)"
  done_stage 4 package
fi

if stage 5 results; then
  {
    echo "## $exp ($(date +%F), $(machine))"
    echo
    echo "Config \`$config\`, $(python -c "import yaml;c=yaml.safe_load(open('$exp/config.yaml'))['model'];print(f\"{c['num_layers']}x{c['hidden_size']} {'Bi' if c['bidirectional'] else ''}{c['cell'].upper()}, subsample={c['subsample']}\")")"
    echo
    echo '```'
    for s in $sets; do echo "$s: $(head -1 "$exp/decode_$s/wer")  RTF $(cat "$exp/decode_$s/rtf")"; done
    echo '```'
  } > "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 5 results
fi

lm=exp/lm/${lm_order}gram.arpa
if stage 7 lm; then
  # A word n-gram from the training transcripts only.
  [ -x ../../tools/bin/lmplz ] || ../../tools/install_kenlm.sh
  mkdir -p exp/lm
  cut -s -d' ' -f2- data/train/text data/train_conn/text > exp/lm/train_text.txt
  asr lm train --order "$lm_order" exp/lm/train_text.txt "$lm"
  done_stage 7 lm
fi

if stage 8 tune; then
  asr tune --model "$exp" --data data/dev_conn --lm "$lm" --out-dir "$exp/tune" \
    --alphas 0,0.25,0.5,1 --betas 0,0.5,1,2 --beams 8,32
  done_stage 8 tune
fi

if stage 9 decode_lm; then
  for s in $sets; do
    asr decode --model "$exp/tune/model.safetensors" --decoder beam --data data/$s \
      --out-dir "$exp/decode_${s}_beam_lm"
  done
  done_stage 9 decode_lm
fi

if [ "$demo" = true ]; then
  sample=$(head -1 data/test_conn/wav.scp | cut -d' ' -f2)
  echo "== transcribing a sample: $sample (reference: $(head -1 data/test_conn/text | cut -d' ' -f2-))"
  asr transcribe --model "$exp" --format json "$sample"
fi

# Leave one speaker out: train on four speakers, test on all 500 clips of the fifth.
if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  extra= suffix=
  if [ "$synthetic_voices" = true ]; then
    # every espeak-ng English accent x voice variant, rate and pitch drawn per utterance (seeded)
    syn=data/espeak_digits suffix=_espeak
    extra="$syn/isolated/train $syn/conn/train"
    mkdir -p $syn/local
    printf '%s\n' zero one two three four five six seven eight nine > $syn/local/isolated.txt
    python -c "
import random
r = random.Random(0); w = 'zero one two three four five six seven eight nine'.split()
print('\n'.join(sorted({' '.join(r.choice(w) for _ in range(r.randint(2, 7))) for _ in range(3000)})))" \
      > $syn/local/conn.txt
    opts="--all-voices --num-dev 0 --num-test 0 --sample-rate 8000 --jobs 1"
    python -m data_prep.espeak $opts --text $syn/local/isolated.txt --repeat-sentences --num-train 600 \
      --min-words 1 --max-words 1 --seed 1 $syn/isolated
    python -m data_prep.espeak $opts --text $syn/local/conn.txt --num-train 900 \
      --min-words 2 --max-words 7 --seed 2 $syn/conn
  fi
  for spk in $speakers; do
    d=data/loso_$spk e=exp/loso_$spk$suffix
    [ -f "$e/decode_test/wer" ] && [ "$force" != true ] && { echo "== loso $spk: done"; continue; }
    # an existing data dir is kept (its baseline was trained on it), unless --force true
    [ -f "$d/test_conn/wav.scp" ] && [ "$force" != true ] ||
      python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} --num-conn-train 1200 --holdout-speaker "$spk" "$d"
    asr cmvn --config "$config" -o "$e/cmvn.json" "$d/train" "$d/train_conn" $extra
    asr train --config "$config" --exp-dir "$e" --resume features.cmvn="$e/cmvn.json" \
      train.train_data="[$d/train, $d/train_conn${extra:+, ${extra// /, }}]" train.dev_data="[$d/dev, $d/dev_conn]" $train_args
    asr decode --model "$e" --data "$d/test" --out-dir "$e/decode_test"
    asr decode --model "$e" --data "$d/test_conn" --out-dir "$e/decode_test_conn"
  done
  for spk in $speakers; do
    echo "loso $spk$suffix: test $(head -1 exp/loso_$spk$suffix/decode_test/wer) | test_conn $(head -1 exp/loso_$spk$suffix/decode_test_conn/wer)"
  done | tee exp/loso${suffix}_summary.txt
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  ens=exp/ensemble
  members=
  for e in $ensemble_exps; do
    [ -f "$e/model.safetensors" ] || { echo "$0: stage 11: $e has no trained model; train it first:" \
      "./run.sh --stage 2 --stop-stage 3 --config conf/<its config> --exp $e" >&2; exit 1; }
    members="$members $e"
  done
  [ -f "$lm" ] || { echo "$0: stage 11 needs stage 7's LM $lm" >&2; exit 1; }
  # members in fp16: half the size, the same transcripts on test (RESULTS.md)
  asr ensemble $members -o $ens/members.safetensors --half --lm "$lm"
  asr tune --model $ens/members.safetensors --data data/dev_conn --lm "$lm" --out-dir $ens/tune \
    --alphas 0,0.25,0.5,1 --betas 0,0.5,1,2 --beams 8,32
  asr package --model $ens/tune -o $ens/model.safetensors --half  # its LM path rewritten
  for s in $sets; do
    asr decode --model $ens --data data/$s --out-dir $ens/decode_$s
  done
  asr package --model $ens -o $ens/digits.safetensors --half --info recipe=recipes/digits \
    --info data="FSDD 5 speakers, takes 10-49 + connected strings" \
    --info "result=test $(head -1 $ens/decode_test/wer | cut -d' ' -f1-2), test_conn $(head -1 $ens/decode_test_conn/wer | cut -d' ' -f1-2)"
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  ed=exp/english_digits
  [ -f "$lm" ] || { echo "$0: stage 12 needs stage 7's LM $lm" >&2; exit 1; }
  if [ ! -f data/an4_digits_test/.done ] || [ "$force" = true ]; then
    python -m data_prep.an4 --dev-utts 0 data/an4
    python -c "
from asr.datadir import read_data_dir, write_data_dir
digits = set('zero one two three four five six seven eight nine'.split())
utts = [u for u in read_data_dir('data/an4/test') if set(u.text.split()) <= digits]
write_data_dir('data/an4_digits_test', utts)
print(f'data/an4_digits_test: {len(utts)} AN4 test utterances made only of digit words')"
    touch data/an4_digits_test/.done
  fi
  asr tune --model "$english_exp" --data data/dev_conn --lm "$lm" --out-dir $ed/tune \
    --alphas 0,0.5,1 --betas 0,1,2 --beams 8,16
  for s in $sets an4_digits_test; do
    asr decode --model $ed/tune/model.safetensors --data data/$s --out-dir $ed/decode_$s
  done
  asr package --model $ed/tune -o $ed/digits.safetensors --half --info recipe=recipes/digits \
    --info data="recipes/english's model (AN4 + speechocean762 train speakers, never FSDD) with a ten-word LM" \
    --info "result=test $(head -1 $ed/decode_test/wer | cut -d' ' -f1-2), test_conn $(head -1 $ed/decode_test_conn/wer | cut -d' ' -f1-2), AN4 digits $(head -1 $ed/decode_an4_digits_test/wer | cut -d' ' -f1-2)"
fi

# Digits for any voice: stage 12's English model fine-tuned on FSDD (conf/finetune_english.yaml),
# once leaving out each FSDD speaker in turn (tested on that speaker's 500 clips and strings) and
# once on all five (exp/finetune_english: the shipped `digits`). Every fold is also scored on AN4's
# test utterances made only of digit words (16 kHz, speakers no training heard).
if [ "$stage" -le 13 ] && [ "$stop_stage" -ge 13 ]; then
  en=../english
  [ -f "$lm" ] || { echo "$0: stage 13 needs stage 7's LM $lm" >&2; exit 1; }
  [ -f $en/exp/train/model.safetensors ] && [ -f $en/exp/cmvn.json ] ||
    { echo "$0: stage 13 fine-tunes recipes/english's model: run recipes/english/run.sh --stop-stage 2 first" >&2; exit 1; }
  [ -f data/an4_digits_test/.done ] || { echo "$0: stage 13 needs stage 12's data/an4_digits_test" >&2; exit 1; }
  if [ ! -f data/so762_digits/.done ] || [ "$force" = true ]; then
    python -c "
from asr.datadir import read_data_dir, write_data_dir
digits = set('zero one two three four five six seven eight nine'.split())
utts = [u for u in read_data_dir('$en/data/so762/train') if digits & set(u.text.split())]
write_data_dir('data/so762_digits', utts)
print(f'data/so762_digits: {len(utts)} speechocean762 training utterances with digit words')"
    touch data/so762_digits/.done
  fi
  for fold in $speakers all; do
    if [ $fold = all ]; then d=data e=exp/finetune_english; else d=data/loso_$fold e=exp/finetune_english_loso_$fold; fi
    [ -f "$d/test_conn/wav.scp" ] ||
      python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} --num-conn-train 1200 --holdout-speaker "$fold" "$d"
    if [ ! -f "$e/decode_an4_digits_test/wer" ] || [ "$force" = true ]; then
      asr train --config conf/finetune_english.yaml --exp-dir "$e" --resume --recipe recipes/digits \
        features.cmvn=$en/exp/cmvn.json train.dev_data="[$d/dev, $d/dev_conn]" \
        train.train_data="[$d/train, $d/train_conn, $en/data/an4/train, data/so762_digits]" $train_args
      asr tune --model "$e" --data $d/dev_conn --lm "$lm" --out-dir "$e/tune" --alphas 0,0.5,1 --betas 0,1,2 --beams 8
      for s in $sets; do asr decode --model "$e/tune/model.safetensors" --data $d/$s --out-dir "$e/decode_$s"; done
      asr decode --model "$e/tune/model.safetensors" --data data/an4_digits_test --out-dir "$e/decode_an4_digits_test"
    fi
  done
  for fold in $speakers all; do
    if [ $fold = all ]; then e=exp/finetune_english; else e=exp/finetune_english_loso_$fold; fi
    echo "$fold: test $(head -1 $e/decode_test/wer) | test_conn $(head -1 $e/decode_test_conn/wer) | an4_digits_test $(head -1 $e/decode_an4_digits_test/wer)"
  done | tee exp/finetune_english_summary.txt
  asr package --model exp/finetune_english/tune -o exp/finetune_english/digits.safetensors --half \
    --info recipe=recipes/digits \
    --info data="recipes/english's model (AN4 + speechocean762 train speakers) fine-tuned on FSDD's 5 speakers, ten-word LM" \
    --info "result=test $(head -1 exp/finetune_english/decode_test/wer | cut -d' ' -f1-2), test_conn $(head -1 exp/finetune_english/decode_test_conn/wer | cut -d' ' -f1-2), AN4 digits $(head -1 exp/finetune_english/decode_an4_digits_test/wer | cut -d' ' -f1-2)"
fi

if [ "$ship" = true ]; then
  echo "== ship: $exp/digits.safetensors -> asr/pretrained/digits.safetensors"
  asr ship "$exp/digits.safetensors" digits \
    --data "FSDD, 5 speakers, takes 10-49 + spliced strings" \
    --result "$(head -1 "$exp/decode_test/wer" | cut -d' ' -f2) % WER test, $(head -1 "$exp/decode_test_conn/wer" | cut -d' ' -f2) % test_conn"
fi
