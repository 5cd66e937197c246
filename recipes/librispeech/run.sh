#!/usr/bin/env bash
# librispeech: LibriSpeech (OpenSLR 12, CC BY 4.0) with a DeepSpeech2-size BiLSTM-CTC model, trained
# from webdataset shards on one or more GPUs. See README.md for the expected WER and multi-node runs.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/ds2_960h.yaml] [--exp exp/ds2_960h]
#            [--corpus-dir DIR] [--download true] [--ngpu N] [--force true]
#            [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT]  (several machines)
# Stages: 0 download + prepare, 1 shards, 2 CMVN, 3 train, 4 decode each dev/test set, 5 package,
#         6 RESULTS.md

set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=6
config=conf/ds2_960h.yaml
exp=exp/ds2_960h
corpus_dir=
download=false
train_sets="train-clean-100 train-clean-360 train-other-500"
shard_name=train_960       # data/shards/<shard_name>; the config's train.train_shards points there
max_shard_mb=300
ngpu=1
nnodes=1
node_rank=0
rdzv_endpoint=
train_args=
force=false
. ../lib.sh

test_sets="dev-clean dev-other test-clean test-other"

if stage 0 prepare; then
  subsets=$(echo $train_sets $test_sets | tr ' ' ',')
  python -m data_prep.librispeech ${corpus_dir:+--corpus-dir "$corpus_dir"} \
    $([ "$download" = true ] && echo --download) --subsets "$subsets" data
  for s in $train_sets $test_sets; do asr datadir validate --no-audio data/${s//-/_}; done
  done_stage 0 prepare
fi

if stage 1 shards; then
  # ~300 MB tar shards of the training audio, read sequentially (or from object storage) in training.
  # Shared by every experiment on these sets: an index from an earlier run means they are complete.
  if [ "$force" = true ] || [ ! -f data/shards/$shard_name/shards.json ]; then
    asr shards write $(for s in $train_sets; do echo data/${s//-/_}; done) data/shards/$shard_name \
      --max-shard-mb "$max_shard_mb"
  fi
  asr shards verify data/shards/$shard_name
  done_stage 1 shards
fi

if stage 2 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json --max-utts 2000 \
    $(for s in $train_sets; do echo data/${s//-/_}; done)
  done_stage 2 cmvn
fi

if stage 3 train; then
  # One process per GPU; rank 0 alone writes the experiment dir. --resume continues a killed run
  # at the batch it stopped (the shard loader replays its plan for the epoch).
  if [ "$nnodes" -gt 1 ]; then
    launch=(torchrun --nnodes "$nnodes" --node_rank "$node_rank" --nproc_per_node "$ngpu"
            --rdzv_backend c10d --rdzv_endpoint "${rdzv_endpoint:?--rdzv-endpoint HOST:PORT is needed with --nnodes}"
            --rdzv_id "librispeech_$(basename "$exp")" -m asr)
  elif [ "$ngpu" -gt 1 ]; then
    launch=(torchrun --standalone --nproc_per_node "$ngpu" -m asr)
  else
    launch=(python -m asr)
  fi
  "${launch[@]}" train --config "$config" --exp-dir "$exp" --resume --recipe recipes/librispeech \
    features.cmvn=exp/cmvn.json train.train_shards=data/shards/$shard_name $train_args
  done_stage 3 train
fi

if stage 4 decode; then
  for s in $test_sets; do
    asr decode --model "$exp" --data data/${s//-/_} --out-dir "$exp/decode_${s//-/_}" \
      --device "$(python -c 'import torch;print("cuda" if torch.cuda.is_available() else "cpu")')" --batch-size 32
  done
  done_stage 4 decode
fi

if stage 5 package; then
  asr package --model "$exp" -o "$exp/librispeech_ds2.safetensors" \
    --info data="LibriSpeech $(echo $train_sets | tr ' ' '+')" --info recipe=recipes/librispeech \
    --info "result=test-clean $(head -1 "$exp/decode_test_clean/wer" | cut -d' ' -f1-2), test-other $(head -1 "$exp/decode_test_other/wer" | cut -d' ' -f1-2) (greedy)"
  done_stage 5 package
fi

if stage 6 results; then
  {
    echo "## $exp ($(date +%F), $(machine), $ngpu GPU(s) x $nnodes node(s))"
    echo
    echo "Config \`$config\`, greedy decoding, no LM:"
    echo
    echo '```'
    for s in $test_sets; do echo "${s}: $(head -1 "$exp/decode_${s//-/_}/wer")  RTF $(cat "$exp/decode_${s//-/_}/rtf")"; done
    echo '```'
  } > "$exp/RESULTS.part.md"
  cat "$exp/RESULTS.part.md"
  done_stage 6 results
fi
