# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every package of the test and demo environment at an exact version with its hashes (make lock).
LOCK := requirements/lock.txt
UV_VERSION := 0.13.9

.PHONY: install tools lock demo test test-fast bench clean

install: $(STAMP)

# The system tools the tests need: KenLM's lmplz/build_binary (built from the pinned kenlm sdist),
# Debian's espeak-ng (synthetic speech) and chromium (the `asr serve` page). No-ops once installed.
tools: install
	PYTHON=$(PY) tools/install_kenlm.sh
	tools/install_apt.sh espeak-ng chromium

# The lock is installed as it is (--require-hashes, --no-deps: nothing is resolved again), then the
# project itself without build isolation, so the build does not fetch a floating setuptools either.
$(STAMP): setup.cfg pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

# Regenerate the lock after changing a requirement in setup.cfg, or to take newer releases on
# purpose; then run `make test`. uv, not pip-tools: it resolves for the target platform and Python
# without installing anything and takes the registry's hashes, where pip-compile --generate-hashes
# downloads every wheel (torch's CUDA wheels are about 3 GB) to hash it.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile setup.cfg --all-extras --generate-hashes --no-header --emit-index-url \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o $(LOCK)
	@echo "wrote $(LOCK); run 'make test' before committing it"

# Install, prepare FSDD, train, decode, score and transcribe a sample with the digits recipe.
demo: install
	cd recipes/digits && ./run.sh --demo true

test: tools
	$(PY) -m pytest -q tests

test-fast: tools
	$(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
