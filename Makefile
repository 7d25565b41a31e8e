# Demeter — the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing first (scripts/setup.sh, scripts/fetch-ort.sh).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
ORT_VERSION := 1.31.1
ORT_DIR ?= $(HOME)/.cache/demeter/onnxruntime/$(ORT_VERSION)
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
MODELS_VENV ?= $(HOME)/.cache/demeter/models-venv
export DEMETER_ORT_LIB ?= $(ORT_LIB)

.PHONY: run build test setup ort models model-check fmt lint browser-deps browser-test clean help

help:
	@echo "make run    install what is missing, build (release), run the daemon on ./photos"
	@echo "make test   install what is missing and run every test"
	@echo "make build  release binary at target/release/demeter (ONNX Runtime library beside it)"
	@echo "make ort    fetch the ONNX Runtime $(ORT_VERSION) library from its PyPI wheel"
	@echo "make models rebuild models/ from models/build.py"

setup:
	@scripts/setup.sh

ort: setup
	@scripts/fetch-ort.sh "$(ORT_DIR)" >/dev/null
	@echo "ONNX Runtime $(ORT_VERSION): $(ORT_LIB)"

build: ort
	$(CARGO) build --release --locked -p demeter-daemon
	@mkdir -p target/release
	@if [ "$(TARGET_DIR)" != "target" ]; then cp -f "$(TARGET_DIR)/release/demeter" target/release/demeter; fi
	@cp -f "$(ORT_LIB)" target/release/
	@echo "built target/release/demeter"

run: build
	mkdir -p photos
	target/release/demeter run --watch photos

$(MODELS_VENV)/.installed: models/requirements.txt
	python3 -m venv "$(MODELS_VENV)"
	"$(MODELS_VENV)/bin/pip" install --quiet --disable-pip-version-check -r models/requirements.txt
	touch "$@"

models: $(MODELS_VENV)/.installed
	"$(MODELS_VENV)/bin/python" models/build.py

model-check: $(MODELS_VENV)/.installed
	"$(MODELS_VENV)/bin/python" models/build.py --check

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Debian's Chromium and playwright-core from npm (never a browser download of its own).
browser-deps:
	@command -v chromium >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }
	@command -v node >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/browser && npm ci --no-audit --no-fund --silent

# The status page in real headless Chromium against the real daemon (screenshots: target/browser-artifacts).
browser-test: ort browser-deps
	$(CARGO) build --locked -p demeter-daemon
	cd tests/browser && DEMETER_BIN="$(abspath $(TARGET_DIR))/debug/demeter" ARTIFACTS="$(abspath target/browser-artifacts)" \
	  node --test --test-concurrency=1 .

test: ort model-check fmt browser-deps
	$(CARGO) build --locked -p demeter-daemon
	$(CARGO) test --locked --workspace --no-fail-fast
	$(MAKE) --no-print-directory browser-test
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
