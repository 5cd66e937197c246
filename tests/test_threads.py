import os
import subprocess
import sys

import pytest
import torch

from asr import threads
from asr.cli import main

from .conftest import FSDD, ROOT, needs_fsdd


def test_choose_threads_leaves_the_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(cores=2, load=0.1) == 2
    assert threads.choose_threads(cores=2, load=1.2) == 1  # one training beside us: one thread
    assert threads.choose_threads(cores=2, load=5.0) == 1  # never 0
    assert threads.choose_threads(cores=16, load=3.4) == 13
    assert threads.choose_threads(3, cores=2, load=2.0) == 3  # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads(cores=16, load=0.0) == 1  # the user's OMP_NUM_THREADS is kept
    with pytest.raises(ValueError, match="--threads: 0"):
        threads.choose_threads(0)


def test_wait_policy_is_passive_unless_the_user_chose_one():
    env = {"KMP_BLOCKTIME": "200"}
    assert threads.set_wait_policy(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "200"}


def test_the_cli_sets_the_wait_policy_before_torch_loads():
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads it: importing the CLI must set it first.
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_POLICY}
    code = ("import sys, os, asr.cli; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'], "
            "os.environ['KMP_BLOCKTIME'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "PASSIVE", "0"]


@needs_fsdd
def test_threads_flag_sets_torch_threads(capsys):
    before = torch.get_num_threads()
    try:
        assert main(["transcribe", "--threads", "1", "--decoder", "greedy", str(FSDD / "2_theo_0.wav")]) == 0
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().out.split("\t")[1].strip() == "two"
    finally:
        torch.set_num_threads(before)
