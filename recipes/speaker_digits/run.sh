#!/usr/bin/env bash
# speaker_digits: speaker identification and verification on the Free Spoken Digit Dataset
# (Zohar Jackson et al., CC BY-SA 4.0): 5 speakers, a BiLSTM encoder with attentive statistics
# pooling and an additive-margin softmax head; speakers are scored by cosine of their embeddings.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train] [--force true]
# Stages: 0 prepare, 1 CMVN, 2 train, 3 evaluate (closed-set identification on takes 0-4, EER and
#         minDCF on all test pairs, PCA plot), 4 package, 5 RESULTS.md,
#         6 ship (copy the package into asr/pretrained as the embedded `digits-speaker`; maintainers only),
#         10 leave-one-speaker-out: train on 4 speakers, enroll the 5th from 10 utterances and
#            identify the rest among all 5 (5 trainings; not run by default). One speaker only:
#            --speakers NAME; speed pseudo-speakers: --train-args model.extra.speed_speakers=[0.9,1.0,1.1]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
config=conf/train.yaml
exp=exp/train
corpus_dir=
train_args=
speakers="george jackson nicolas theo yweweler"
force=false  # declared here: lib.sh only accepts options the recipe declared
. ../lib.sh

no_conn="--num-conn-train 0 --num-conn-dev 0 --num-conn-test 0"  # single digits are enough here

if stage 0 prepare; then
  python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} $no_conn data
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/speaker_digits \
    features.cmvn=exp/cmvn.json $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 2 train
fi

if stage 3 evaluate; then
  # Speakers enrolled from their training takes; takes 0-4 identified, and paired into trials.
  asr speaker evaluate --model "$exp" --enroll data/train --test data/test \
    --trials data/test/trials --out-dir "$exp/eval_test"
  asr speaker evaluate --model "$exp" --enroll data/train --test data/test \
    --trials data/test/trials --out-dir "$exp/eval_test_network" --backend none
  done_stage 3 evaluate
fi

result() { python -c "import json;r=json.load(open('$exp/eval_test/results.json'));print(f\"test acc {r['acc']:.2f} %, EER {r['eer']:.2f} %, minDCF {r['min_dcf']:.3f}\")"; }

if stage 4 package; then
  # The EER threshold measured here becomes the model's default accept/reject threshold.
  threshold=$(python -c "import json;print(json.load(open('$exp/eval_test/results.json'))['eer_threshold'])")
  asr package --model "$exp" -o "$exp/digits-speaker.safetensors" \
    --info data="FSDD 5 speakers, takes 10-49" --info recipe=recipes/speaker_digits \
    --info "result=$(result)" --info threshold="$threshold"
  done_stage 4 package
fi

if stage 5 results; then
  python - "$exp" "$config" "$(machine)" "$(date +%F)" <<'EOF' > RESULTS.md
import json, sys, yaml
from pathlib import Path
exp, config, machine, day = sys.argv[1:]
r = json.load(open(f"{exp}/eval_test/results.json"))
m = yaml.safe_load(open(f"{exp}/config.yaml"))["model"]
secs = Path(f"{exp}/train_seconds")
print(f"# speaker_digits results\n\n## {exp} ({day}, {machine})\n")
print(f"Config `{config}`: {m['num_layers']}x{m['hidden_size']} {'Bi' if m['bidirectional'] else ''}"
      f"{m['cell'].upper()}, subsample={m['subsample']}, embedding {m['embedding_dim']}, head {m['extra']}"
      + (f"; training took {int(secs.read_text())} s wall clock" if secs.exists() else "") + ".\n")
print("| test (takes 0-4) | value |\n|---|---|")
print(f"| closed-set identification accuracy | {r['acc']:.2f} % ({r['identified']} utterances, enrolled from data/train) |")
print(f"| EER | {r['eer']:.2f} % (threshold {r['eer_threshold']:.3f}; {r['trials']['target']} target / {r['trials']['nontarget']} non-target trials) |")
print(f"| minDCF (p_target 0.01) | {r['min_dcf']:.4f} |")
raw = Path(f"{exp}/eval_test_network/results.json")
if raw.exists():
    y = json.load(open(raw))
    print(f"| network alone (`--backend none`) | accuracy {y['acc']:.2f} %, EER {y['eer']:.2f} %, minDCF {y['min_dcf']:.4f} |")
print("\nPer speaker accuracy: " + ", ".join(f"{s} {a:.1f} %" for s, a in r["acc_per_speaker"].items()) + ".")
print(f"\nEmbeddings of the test takes: `{exp}/eval_test/embeddings.png`.")
loso = sorted(Path("exp").glob("loso_*/eval/results.json"))
if loso:
    print("\n## Leave one speaker out (stage 10)\n\nTrained on 4 speakers; the 5th enrolled from 10 of its"
          " utterances, its other 490 and the others' takes 5-9 identified among all 5.\n")
    print("| exp | held-out speaker | its accuracy | all accuracy | EER | network alone: its accuracy / EER |"
          " max_epochs | model.extra |\n|---|---|---|---|---|---|---|---|")
    for p in loso:
        x = json.load(open(p))
        c = yaml.safe_load(open(p.parent.parent / "config.yaml"))
        raw = p.parent.parent / "eval_network" / "results.json"
        y = json.load(open(raw)) if raw.exists() else None
        alone = f"{y['acc_new_speakers']:.2f} % / {y['eer']:.2f} %" if y else "not run"
        print(f"| {p.parent.parent.name} | {x['new_speakers'][0]} | {x['acc_new_speakers']:.2f} % | {x['acc']:.2f} % "
              f"| {x['eer']:.2f} % | {alone} | {c['train']['max_epochs']} | {c['model']['extra']} |")
    print("""
What the back-end does: trained on four speakers, the network's embedding separates those four and
places a new voice near one of them (network alone, column above). The fused back-end, fitted on
the training data when training ends, centres and scales the embedding and joins it with the
utterance's log-mel mean and standard deviation whitened by their within-speaker covariance (WCCN):
the statistics know no speaker, and WCCN discounts what varies within one voice (which digit is
said). stats_weight 2 was chosen on these leave-one-out runs (1.5 / 2 / 3 were tried), so the table
is not an unbiased estimate; the closed-set test above was used only to turn speed pseudo-speakers off.

Caveats: each FSDD speaker recorded with their own microphone and room, so a held-out speaker is
also a held-out channel, and the log-mel statistics see both. The EER of the leave-one-out rows pairs
the held-out speaker's utterances with the others' dev takes, a harder and smaller trial list than
the closed-set one. Tried and dropped: 200 espeak-ng voices added as training speakers (yweweler,
the one speaker tried, fell to 38-68 %), speech-only statistics by an energy threshold (worse: silence carries the
channel), and speed pseudo-speakers (model.extra.speed_speakers: new speakers 93-100 % with the
back-end, but the closed-set EER rose from 1.1 to 2.6 %).""")
EOF
  cat RESULTS.md
  done_stage 5 results
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ] && [ "$stop_stage" -lt 10 ]; then
  echo "== stage 6 (ship): $exp/digits-speaker.safetensors -> asr/pretrained/digits-speaker.safetensors"
  asr ship "$exp/digits-speaker.safetensors" digits-speaker \
    --data "FSDD, 5 speakers, takes 10-49" --result "$(result)"
fi

# Leave one speaker out: the held-out speaker is new to the model, as a user's own voice would be.
if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  for spk in $speakers; do
    d=data/loso_$spk e=exp/loso_$spk
    [ -f "$e/eval/results.json" ] && [ "$force" != true ] && { echo "== loso $spk: done"; continue; }
    python -m data_prep.fsdd ${corpus_dir:+--corpus-dir "$corpus_dir"} $no_conn --holdout-speaker "$spk" "$d"
    asr cmvn --config "$config" -o "$e/cmvn.json" "$d/train"
    asr train --config "$config" --exp-dir "$e" --resume features.cmvn="$e/cmvn.json" \
      train.train_data="[$d/train]" train.dev_data="[$d/dev]" $train_args
    asr speaker evaluate --model "$e" --enroll "$d/train" --test "$d/test" "$d/dev" \
      --new-speaker-utts 10 --out-dir "$e/eval"
    # the same test scored by the network's embedding alone, to show what the back-end adds
    asr speaker evaluate --model "$e" --enroll "$d/train" --test "$d/test" "$d/dev" \
      --new-speaker-utts 10 --out-dir "$e/eval_network" --backend none
  done
  for spk in $speakers; do
    python -c "import json;r=json.load(open('exp/loso_$spk/eval/results.json'));print(f\"loso $spk: held-out acc {r['acc_new_speakers']:.2f}%, all acc {r['acc']:.2f}%, EER {r['eer']:.2f}%\")"
  done | tee exp/loso_summary.txt
fi
