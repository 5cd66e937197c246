"""Speaker identification and verification measured on Kaldi data dirs (the recipes' scoring
stage, `asr speaker evaluate`): trial lists, results.json, identify.jsonl, scores, a PCA plot.

    asr speaker evaluate --model exp/train --enroll data/train --test data/test --out-dir exp/train/eval_test

Scores are cosine similarities in [-1, 1].  EER and minDCF (asr.metrics) take fractions in [0, 1];
results.json gives EER and accuracies in percent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .datadir import read_data_dir
from .metrics import eer_threshold, min_dcf
from .speaker_db import UNKNOWN, default_threshold, model_name
from .speaker_embed import embed_utterances, normalize


def make_trials(utts, max_trials: int = 50000, seed: int = 0) -> list[tuple[str, str, bool]]:
    """Pairs of distinct utterances, (utt1, utt2, same speaker): all pairs, or a seeded sample of
    `max_trials` of them when there are more."""
    utts = sorted(utts, key=lambda u: u.utt_id)
    i, j = np.triu_indices(len(utts), k=1)
    if len(i) > max_trials:
        keep = np.sort(np.random.default_rng(seed).choice(len(i), max_trials, replace=False))
        i, j = i[keep], j[keep]
    return [(utts[a].utt_id, utts[b].utt_id, utts[a].speaker == utts[b].speaker) for a, b in zip(i, j)]


def write_trials(path: str | Path, trials) -> None:
    """Kaldi's trials format: `utt1 utt2 target|nontarget`."""
    Path(path).write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n" for a, b, t in trials))


def read_trials(path: str | Path) -> list[tuple[str, str, bool]]:
    """Kaldi's `utt1 utt2 target|nontarget` or VoxCeleb's `1|0 utt1 utt2` lines."""
    trials = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) == 3 and parts[2] in ("target", "nontarget"):
            trials.append((parts[0], parts[1], parts[2] == "target"))
        elif len(parts) == 3 and parts[0] in ("1", "0"):
            trials.append((parts[1], parts[2], parts[0] == "1"))
        else:
            raise ValueError(f"{path}:{n}: expected `utt1 utt2 target|nontarget` or VoxCeleb's `1|0 utt1 utt2`, "
                             f"got {line!r}")
    return trials


def plot_embeddings(emb: np.ndarray, speakers: list[str], path: str | Path, title: str = "") -> None:
    """Scatter of the embeddings on their first two principal components, one colour per speaker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = emb - emb.mean(0)
    pcs = np.linalg.svd(x, full_matrices=False)[2][:2]
    xy = x @ pcs.T
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in sorted(set(speakers)):
        sel = [i for i, s in enumerate(speakers) if s == name]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, label=name)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title or "speaker embeddings (PCA)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate(model, enroll_dirs: list[str], test_dirs: list[str], out_dir: str | Path,
             trials_path: str | Path | None = None, new_speaker_utts: int = 10, seed: int = 0,
             threshold: float | None = None) -> dict:
    """Identification and verification on Kaldi data dirs; writes results.json, identify.jsonl,
    scores, the trial list (when `trials_path` does not exist yet) and embeddings.png to out_dir.

    Speakers of `enroll_dirs` are enrolled from all their utterances there.  A test speaker absent
    from them (a new speaker) is enrolled from `new_speaker_utts` of their test utterances, picked
    with `seed`, which are then not identified.  Every other test utterance is identified among all
    enrolled speakers: `acc` is closed-set accuracy (best score, no threshold), `acc_open` also
    counts a correct speaker scored below the threshold as an error.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enroll_utts = [u for d in enroll_dirs for u in read_data_dir(d)]
    test_utts = [u for d in test_dirs for u in read_data_dir(d)]
    threshold = default_threshold(model) if threshold is None else threshold
    emb = embed_utterances(model, enroll_utts + test_utts)
    test_utts = [u for u in test_utts if u.utt_id in emb]

    groups: dict[str, list[str]] = {}
    for u in enroll_utts:
        if u.utt_id in emb:
            groups.setdefault(u.speaker, []).append(u.utt_id)
    rng = np.random.default_rng(seed)
    new = sorted({u.speaker for u in test_utts} - set(groups))
    held_back = set()
    for spk in new:
        ids = sorted(u.utt_id for u in test_utts if u.speaker == spk)
        if len(ids) <= new_speaker_utts:
            raise ValueError(f"new speaker {spk!r}: {len(ids)} test utterances, need more than {new_speaker_utts} "
                             "to enroll from and test on")
        groups[spk] = [ids[k] for k in sorted(rng.choice(len(ids), new_speaker_utts, replace=False))]
        held_back.update(groups[spk])
    names = sorted(groups)
    centroids = normalize(np.stack([normalize(np.stack([emb[i] for i in groups[n]])).mean(0) for n in names]))

    rows, per_spk = [], {}
    for u in test_utts:
        if u.utt_id in held_back:
            continue
        scores = centroids @ emb[u.utt_id]
        k = int(np.argmax(scores))
        ok = names[k] == u.speaker
        hyp = names[k] if scores[k] >= threshold else UNKNOWN
        rows.append({"utt_id": u.utt_id, "speaker": u.speaker, "hyp": hyp, "best": names[k],
                     "score": round(float(scores[k]), 4)})
        c = per_spk.setdefault(u.speaker, [0, 0, 0])
        c[0] += 1
        c[1] += ok
        c[2] += hyp == u.speaker
    with open(out / "identify.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    n = sum(c[0] for c in per_spk.values())
    res: dict = {"model": model_name(model), "enroll": list(enroll_dirs), "test": list(test_dirs),
                 "speakers": names, "new_speakers": new, "new_speaker_utts": new_speaker_utts if new else 0,
                 "identified": n, "threshold": round(threshold, 4),
                 "acc": round(100.0 * sum(c[1] for c in per_spk.values()) / max(n, 1), 2),
                 "acc_open": round(100.0 * sum(c[2] for c in per_spk.values()) / max(n, 1), 2),
                 "acc_per_speaker": {s: round(100.0 * c[1] / c[0], 2) for s, c in sorted(per_spk.items())}}
    if new:
        m = sum(per_spk[s][0] for s in new if s in per_spk)
        res["acc_new_speakers"] = round(100.0 * sum(per_spk[s][1] for s in new if s in per_spk) / max(m, 1), 2)

    if trials_path is not None and Path(trials_path).exists():
        trials = read_trials(trials_path)
    else:
        trials = make_trials(test_utts, seed=seed)
        write_trials(trials_path or out / "trials", trials)
    missing = sorted({u for a, b, _ in trials for u in (a, b)} - set(emb))
    if missing:
        raise ValueError(f"{trials_path}: {len(missing)} trial utterance(s) not in the test data, e.g. {missing[:3]}")
    scores = np.array([float(emb[a] @ emb[b]) for a, b, _ in trials])
    labels = np.array([t for _, _, t in trials])
    with open(out / "scores", "w") as f:
        f.writelines(f"{a} {b} {s:.5f} {'target' if t else 'nontarget'}\n" for (a, b, t), s in zip(trials, scores))
    res["trials"] = {"file": str(trials_path or out / "trials"), "target": int(labels.sum()),
                     "nontarget": int((~labels).sum())}
    if labels.any() and not labels.all():
        e, t = eer_threshold(scores, labels)
        res.update(eer=round(100.0 * e, 3), eer_threshold=round(t, 4), min_dcf=round(min_dcf(scores, labels), 4))
    else:
        res.update(eer=None, eer_threshold=None, min_dcf=None)  # one class only: undefined
    plot_embeddings(np.stack([emb[u.utt_id] for u in test_utts]), [u.speaker for u in test_utts],
                    out / "embeddings.png", f"{', '.join(test_dirs)} ({len(test_utts)} utterances)")
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    return res
