"""End to end: the yesno recipe (prepare, CMVN, train, decode, score, package) in a scratch copy."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, YESNO, needs_yesno


def copy_recipe(tmp_path: Path, name: str) -> Path:
    (tmp_path / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "lib.sh", tmp_path / "recipes")
    shutil.copytree(ROOT / "recipes" / name, tmp_path / "recipes" / name, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md"))
    shutil.copytree(ROOT / "conf" / name, tmp_path / "conf" / name)
    return tmp_path / "recipes" / name


def recipe_env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.slow
@needs_yesno
def test_yesno_recipe_reaches_low_wer_and_is_rerunnable(tmp_path):
    d = copy_recipe(tmp_path, "yesno")
    run = lambda *a: subprocess.run(["bash", "run.sh", "--corpus-dir", str(YESNO.parent), *a], cwd=d,
                                    env=recipe_env(), capture_output=True, text=True, timeout=900)
    res = run()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    first = (d / "exp/train/decode_test/wer").read_text().splitlines()[0]
    errors, total = first.split("[")[1].split(",")[0].split("/")
    assert int(total) == 232
    assert int(errors) == 0, first  # README and RESULTS.md state %WER 0.00 [ 0 / 232 ]
    assert (d / "exp/train/yesno.safetensors").exists() and (d / "RESULTS.md").exists()
    again = run()
    assert again.returncode == 0
    assert again.stdout.count("done already, skipping") == 6


def test_recipe_options_are_checked(tmp_path):
    d = copy_recipe(tmp_path, "yesno")
    res = subprocess.run(["bash", "run.sh", "--no-such-option", "1"], cwd=d, env=recipe_env(),
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown option --no-such-option" in res.stderr


def test_missing_corpus_names_the_path(tmp_path):
    d = copy_recipe(tmp_path, "yesno")
    env = {**recipe_env(), "ASR_DATA": str(tmp_path / "nowhere"), "ASR_SHARED_DATA": str(tmp_path / "nowhere")}
    res = subprocess.run(["bash", "run.sh", "--corpus-dir", str(tmp_path / "absent"), "--stop-stage", "0"], cwd=d,
                         env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert str(tmp_path / "absent") in res.stdout + res.stderr


def test_editing_a_running_recipe_does_not_change_the_run(tmp_path):
    (tmp_path / "recipes" / "toy").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "lib.sh", tmp_path / "recipes")
    script = tmp_path / "recipes" / "toy" / "run.sh"
    started, edited = tmp_path / "started", tmp_path / "edited"
    # The script says when it is past its first line and waits (bounded) until the edit is on disk,
    # so the edit lands mid-run however busy the machine is.
    body = ('#!/usr/bin/env bash\nset -euo pipefail\ncd "$(dirname "$0")"\nword=first\n. ../lib.sh\n'
            f'echo "$word from $0 in $(basename "$PWD")"\ntouch {started}\n'
            f'for i in $(seq 300); do [ -e {edited} ] && break; sleep 0.1; done\necho last\n')
    script.write_text(body)
    # started from another folder, with an option, the way a user runs a recipe
    proc = subprocess.Popen(["bash", "recipes/toy/run.sh", "--word", "hello"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the recipe never reached its first line"
        time.sleep(0.05)
    # an edit mid-run, longer than the original: bash would have read on at the old byte offset
    script.write_text(body.replace("echo last\n", "echo 'an edited line, not in this run'\necho last\n"))
    edited.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["hello from recipes/toy/run.sh in toy", "last"]


def make_voxceleb_corpus(root: Path) -> None:
    """VoxCeleb1's layout: wav/<speaker>/<video>/<n>.wav and the official veri_test2.txt."""
    from asr.audio import save_audio

    from .test_speaker import voice

    test = ("id10270", "id10271")
    for k, spk in enumerate(("id10001", "id10002", "id10003", "id10004", *test)):
        for vid in ("vidA-1", "vid_B"):
            for n in range(1, 11):
                (root / "wav" / spk / vid).mkdir(parents=True, exist_ok=True)
                save_audio(root / "wav" / spk / vid / f"{n:05d}.wav", voice(110.0 + 60 * k, 0.3, n + 10 * k), 16000)
    pairs = [(a, b) for a in ("vidA-1/00001", "vid_B/00002") for b in ("vidA-1/00003", "vid_B/00004")]
    lines = [f"1 {s}/{a}.wav {s}/{b}.wav" for s in test for a, b in pairs]
    lines += [f"0 {test[0]}/{a}.wav {test[1]}/{b}.wav" for a, b in pairs]
    (root / "veri_test2.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_voxceleb_recipe_on_a_fixture_laid_out_like_the_corpus(tmp_path):
    corpus = tmp_path / "VoxCeleb1"
    make_voxceleb_corpus(corpus)
    d = copy_recipe(tmp_path, "voxceleb")
    res = subprocess.run(["bash", "run.sh", "--corpus-dir", str(corpus), "--train-args",
                          "train.max_epochs=1 train.batch_seconds=4 model.hidden_size=16 model.num_layers=1 "
                          "model.embedding_dim=8"], cwd=d, env=recipe_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for backend in ("fused", "stats"):
        r = __import__("json").loads((d / f"exp/train/eval_{backend}/results.json").read_text())
        assert r["trials"]["target"] == 8 and r["trials"]["nontarget"] == 4  # the official list, whole
        assert 0 <= r["eer"] <= 100 and r["min_dcf"] is not None
    assert "| model |" in (d / "exp/train/RESULTS.part.md").read_text()
    train_spk = {line.split()[1] for line in (d / "data/train/utt2spk").read_text().splitlines()}
    assert train_spk == {"id10001", "id10002", "id10003", "id10004"}  # trial speakers never train
    assert (d / "data/dev/wav.scp").read_text().count("\n") == 4 * 2
