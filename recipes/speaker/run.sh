#!/usr/bin/env bash
# speaker: speaker identification and verification over the real voices here. Trained on AN4's 74
# training speakers, speechocean762's 125 training speakers (Mandarin-L1 children and adults) and
# FSDD's 5 (16 kHz; FSDD resampled from 8 kHz); tested on 109 speakers never heard in training:
# speechocean762's 100 test speakers and AN4 test speakers (9 with transcripts). Each test speaker is enrolled from 5 of its
# utterances and the rest are identified among all 109 (closed set); verification scores a trial
# list in VoxCeleb's format (`1|0 utt1 utt2`). The log-mel statistics cosine baseline scores the
# same trials in the same run.
#   ./run.sh [--stage N] [--stop-stage N] [--config conf/train.yaml] [--exp exp/train] [--force true]
#            [--an4-dir DIR] [--so762-dir DIR] [--fsdd-dir DIR] [--ship true]
# Stages: 0 prepare, 1 CMVN, 2 train, 3 evaluate (model, network alone, statistics baseline),
#         4 package, 5 RESULTS.md (with results by age group and gender)
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=5
config=conf/train.yaml
exp=exp/train
an4_dir=
so762_dir=
fsdd_dir=
train_args=
force=false
ship=false
enroll_utts=5
. ../lib.sh

if stage 0 prepare; then
  python -m data_prep.an4 ${an4_dir:+--corpus-dir "$an4_dir"} --dev-utts 0 data/an4
  python -m data_prep.speechocean762 ${so762_dir:+--corpus-dir "$so762_dir"} --dev-speakers 0 data/so762
  python -m data_prep.fsdd ${fsdd_dir:+--corpus-dir "$fsdd_dir"} --num-conn-train 0 --num-conn-dev 0 --num-conn-test 0 data/fsdd
  python - "$enroll_utts" <<'EOF'
import sys
from pathlib import Path

from asr.datadir import read_data_dir, write_data_dir
from asr.speaker_eval import make_trials

# Training speakers: every 10th utterance of each goes to dev (the trainer's speaker accuracy).
train = [u for d in ("data/an4/train", "data/so762/train", "data/fsdd/train", "data/fsdd/dev")
         for u in read_data_dir(d)]
dev_ids = {u.utt_id for k, u in enumerate(sorted(train, key=lambda u: u.utt_id)) if k % 10 == 9}
write_data_dir("data/train", [u for u in train if u.utt_id not in dev_ids])
write_data_dir("data/dev", [u for u in train if u.utt_id in dev_ids])
test = [u for d in ("data/so762/test", "data/an4/test") for u in read_data_dir(d)]
write_data_dir("data/test", test)
# Speaker facts for results by group: speechocean762 lists age and gender; AN4's speaker ids start
# with their gender (fash, mcen) and its speakers are adults.
age = dict(l.split() for l in Path("data/so762/test/spk2age").read_text().splitlines())
gender = dict(l.split() for l in Path("data/so762/test/spk2gender").read_text().splitlines())
for u in read_data_dir("data/an4/test"):
    age.setdefault(u.speaker, "adult")
    gender.setdefault(u.speaker, u.speaker[0])
group = {s: ("child" if a.isdigit() and int(a) < 12 else "adult") + "," + gender[s] for s, a in age.items()}
Path("data/test/spk2group").write_text("".join(f"{s} {g}\n" for s, g in sorted(group.items())))
# Verification trials over the test utterances, VoxCeleb's format
trials = make_trials(test, max_trials=60000, seed=0)
Path("data/test/trials").write_text("".join(f"{int(t)} {a} {b}\n" for a, b, t in trials))
print(f"train {len(train) - len(dev_ids)}, dev {len(dev_ids)}, test {len(test)} utterances "
      f"({len({u.speaker for u in test})} speakers), {len(trials)} trials")
EOF
  for s in train dev test; do asr datadir validate data/$s; done
  done_stage 0 prepare
fi

if stage 1 cmvn; then
  asr cmvn --config "$config" -o exp/cmvn.json --max-utts 1500 data/train
  done_stage 1 cmvn
fi

if stage 2 train; then
  start=$SECONDS
  asr train --config "$config" --exp-dir "$exp" --resume --recipe recipes/speaker \
    features.cmvn=exp/cmvn.json $train_args
  echo $((SECONDS - start)) > "$exp/train_seconds"
  done_stage 2 train
fi

if stage 3 evaluate; then
  # no --enroll: every test speaker is new, enrolled from $enroll_utts of its utterances (seeded)
  for backend in fused none stats; do
    asr speaker evaluate --model "$exp" --test data/test --trials data/test/trials \
      --new-speaker-utts "$enroll_utts" --backend $backend --out-dir "$exp/eval_test_$backend"
  done
  done_stage 3 evaluate
fi

result() { python -c "import json;r=json.load(open('$exp/eval_test_fused/results.json'));print(f\"109 unseen speakers: acc {r['acc']:.2f} %, EER {r['eer']:.2f} %, minDCF {r['min_dcf']:.3f}\")"; }

if stage 4 package; then
  threshold=$(python -c "import json;print(json.load(open('$exp/eval_test_fused/results.json'))['eer_threshold'])")
  asr package --model "$exp" -o "$exp/speaker.safetensors" \
    --info data="AN4 + speechocean762 + FSDD training speakers (204), 16 kHz" --info recipe=recipes/speaker \
    --info "result=$(result)" --info threshold="$threshold"
  done_stage 4 package
fi

if stage 5 results; then
  python - "$exp" "$config" "$(machine)" "$(date +%F)" <<'EOF' | tee "$exp/RESULTS.part.md"
import json, sys
from pathlib import Path

import numpy as np
import yaml

from asr.metrics import eer

exp, config, machine, day = sys.argv[1:]
group = dict(l.split() for l in Path("data/test/spk2group").read_text().splitlines())
spk = {}
for d in ("data/test",):
    spk.update(dict(l.split() for l in Path(d, "utt2spk").read_text().splitlines()))
m = yaml.safe_load(open(f"{exp}/config.yaml"))["model"]
secs = Path(f"{exp}/train_seconds")
print(f"## {exp} ({day}, {machine})\n")
print(f"Config `{config}`: {m['num_layers']}x{m['hidden_size']} {'Bi' if m['bidirectional'] else ''}"
      f"{m['cell'].upper()}, embedding {m['embedding_dim']}, {m['extra']}"
      + (f"; training {int(secs.read_text())} s wall clock" if secs.exists() else "") + ".\n")
print("| scoring | identification accuracy | EER | minDCF (p 0.01) |\n|---|---|---|---|")
names = {"fused": "model (network + fitted back-end, shipped)", "none": "network embedding alone",
         "stats": "baseline: log-mel mean/std cosine"}
rows = {}
for b, name in names.items():
    r = json.load(open(f"{exp}/eval_test_{b}/results.json"))
    rows[b] = r
    print(f"| {name} | {r['acc']:.2f} % ({r['identified']} utts) | {r['eer']:.2f} % | {r['min_dcf']:.4f} |")
print(f"\nTrials: {rows['fused']['trials']['target']} target / {rows['fused']['trials']['nontarget']} "
      f"non-target; EER ratio baseline / model: {rows['stats']['eer'] / max(rows['fused']['eer'], 1e-9):.1f}x.\n")
print("By group (identification among all 109; EER over trials whose two utterances are both in the group):\n")
print("| group | speakers | accuracy (model) | EER (model) | accuracy (baseline) | EER (baseline) |\n|---|---|---|---|---|---|")
for key, label in [(lambda g: g.split(",")[0], "age"), (lambda g: g.split(",")[1], "gender")]:
    for value in sorted({key(g) for g in group.values()}):
        members = {s for s, g in group.items() if key(g) == value}
        cells = []
        for b in ("fused", "stats"):
            ident = [json.loads(l) for l in open(f"{exp}/eval_test_{b}/identify.jsonl")]
            ident = [r for r in ident if r["speaker"] in members]
            acc = 100.0 * sum(r["best"] == r["speaker"] for r in ident) / max(len(ident), 1)
            sc, lab = [], []
            for line in open(f"{exp}/eval_test_{b}/scores"):
                a, c, s, t = line.split()
                if spk[a] in members and spk[c] in members:
                    sc.append(float(s)); lab.append(t == "target")
            e = 100.0 * eer(np.array(sc), np.array(lab)) if any(lab) and not all(lab) else float("nan")
            cells += [f"{acc:.2f} %", f"{e:.2f} %"]
        print(f"| {label} {value} | {len(members)} | " + " | ".join(cells) + " |")
EOF
  done_stage 5 results
fi

if [ "$ship" = true ]; then
  asr ship "$exp/speaker.safetensors" speaker \
    --data "AN4 + speechocean762 + FSDD training speakers (204), 16 kHz" --result "$(result)"
fi
