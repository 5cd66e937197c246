import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data"))
FSDD = SHARED_DATA / "fsdd" / "recordings"
YESNO = SHARED_DATA / "yesno" / "waves_yesno"

needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
needs_yesno = pytest.mark.skipif(not YESNO.is_dir(), reason=f"yesno not found at {YESNO}")


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # Tests run on 2 cores next to each other; keep torch from oversubscribing. OMP_NUM_THREADS=1
    # (a machine another job shares) is honoured: two spinning OpenMP threads on one free core
    # made step-by-step decoders about 20x slower.
    import torch

    torch.set_num_threads(max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2") or 2))))


# Under CI every test must run: a skip there means a broken import, a missing ../shared or a tool
# the Makefile failed to install, and would hide dozens of tests behind a green run.
_skips: list[str] = []


def _record_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    _record_skip(report)


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skips and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("CI") == "true" and _skips:
        terminalreporter.section("skips are failures under CI=true")
        for line in _skips:
            terminalreporter.write_line(line)
