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
# The binaries the browser and desktop tests drive. `make test` builds both in one cargo
# invocation: building them separately would resolve the shared dependencies' features twice
# and compile much of the tree twice.
BROWSER_TEST_PKGS ?= -p demeter-daemon
DESKTOP_TEST_PKGS ?= -p demeter-desktop
ALL_BIN_PKGS := -p demeter-daemon -p demeter-desktop
EVAL_PKGS ?= -p demeter-daemon
# Photos with ground truth (manifest.json) that the counting goal is judged on.
DEV_SET ?= ../shared/data/real

.PHONY: run build test setup ort models model-check fmt lint browser-deps browser-test ui-vendor ui-vendor-check node desktop-deps desktop-test desktop contract-test eval soak bench bench-deps clean help

help:
	@echo "make run    install what is missing, build (release), run the daemon on ./photos"
	@echo "make test   install what is missing and run every test"
	@echo "make build  release binary at target/release/demeter (ONNX Runtime library beside it)"
	@echo "make ort    fetch the ONNX Runtime $(ORT_VERSION) library from its PyPI wheel"
	@echo "make models rebuild models/ from models/build.py"
	@echo "make bench  run the benchmark suite (release) and write docs/benchmarks.md (BENCH_ARGS=--quick for a smoke run)"
	@echo "make desktop  build the desktop app and its .deb (ONNX Runtime inside)"

setup:
	@scripts/setup.sh

ort: setup
	@scripts/fetch-ort.sh "$(ORT_DIR)" >/dev/null
	@echo "ONNX Runtime $(ORT_VERSION): $(ORT_LIB)"

# On a machine with an NVIDIA GPU (nvidia-smi), the GPU build of ONNX Runtime and, where the
# system lacks them, CUDA 13 and cuDNN 9, from PyPI; elsewhere nothing (see scripts/fetch-ort-gpu.sh).
ort-gpu:
	@scripts/fetch-ort-gpu.sh

build: ort ort-gpu
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
node:
	@command -v node >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq nodejs npm >/dev/null; }

browser-deps: node
	@command -v chromium >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }
	cd tests/browser && npm ci --no-audit --no-fund --silent

# The charting library compiled into the status page (ui/vendor/, include_str!): the checked-in
# files must be byte for byte the locked npm package's. `make ui-vendor` refreshes them after a
# version bump in ui/vendor/package.json.
UPLOT_FILES := uPlot.iife.min.js uPlot.min.css
ui-vendor-check: node
	cd ui/vendor && npm ci --no-audit --no-fund --silent && \
	  for f in $(UPLOT_FILES); do cmp node_modules/uplot/dist/$$f $$f || { echo "ui/vendor/$$f differs from the locked uplot package; run make ui-vendor" >&2; exit 1; }; done && \
	  cmp node_modules/uplot/LICENSE uPlot.LICENSE
ui-vendor: node
	cd ui/vendor && npm install --no-audit --no-fund --silent && \
	  for f in $(UPLOT_FILES); do cp node_modules/uplot/dist/$$f $$f; done && cp node_modules/uplot/LICENSE uPlot.LICENSE

# The status page in real headless Chromium against the real daemon (screenshots: target/browser-artifacts).
browser-test: ort browser-deps
	$(CARGO) build --locked $(BROWSER_TEST_PKGS)
	cd tests/browser && DEMETER_BIN="$(abspath $(TARGET_DIR))/debug/demeter" ARTIFACTS="$(abspath target/browser-artifacts)" \
	  node --test --test-concurrency=1 .

# The API contract: schemathesis (pinned, PyPI, venv under ~/.cache/demeter) against the real
# daemon from its own OpenAPI document, every check, zero failures (target/contract-artifacts).
CONTRACT_TEST_PKGS ?= -p demeter-daemon
contract-test: ort
	$(CARGO) build --locked $(CONTRACT_TEST_PKGS)
	tests/contract/run.sh "$(abspath $(TARGET_DIR))/debug/demeter" "$(abspath target/contract-artifacts)"

# What the desktop app builds against (WebKitGTK, appindicator) and what its test drives it
# with (Xvfb, a private D-Bus, dunst, dbus-next, ImageMagick's import for the screenshot).
DESKTOP_PACKAGES := libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev libxdo-dev \
	xvfb dbus dbus-x11 dunst python3-dbus-next python3-xlib imagemagick
desktop-deps:
	@missing="$$(for p in $(DESKTOP_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done)"; \
	if [ -n "$$missing" ]; then sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing: $$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; fi

# The real app under Xvfb and a private session bus: tray over StatusNotifierItem/dbusmenu,
# a notification on the bus, a screenshot (target/desktop-artifacts), Quit → clean exit.
desktop-test: ort desktop-deps
	$(CARGO) build --locked $(DESKTOP_TEST_PKGS)
	tests/desktop/run.sh "$(abspath $(TARGET_DIR))/debug/demeter-desktop" "$(abspath target/desktop-artifacts)"

# Release build and .deb through the Tauri CLI from npm, with ONNX Runtime in /usr/lib/demeter.
desktop: ort desktop-deps node
	mkdir -p target/desktop-bundle
	cp -f "$(ORT_LIB)" target/desktop-bundle/
	cd src-tauri && npm ci --no-audit --no-fund --silent && npx tauri build --no-bundle -- --locked
	@# Packages ship stripped binaries (the release profile keeps line tables for the daemon's panics).
	strip "$(abspath $(TARGET_DIR))/release/demeter-desktop"
	cd src-tauri && npx tauri bundle --bundles deb
	@ls -1 "$(abspath $(TARGET_DIR))"/release/bundle/deb/*.deb

# Benchmarks (docs/benchmarks.md): release builds, wrk for the poll load, and a virtualenv with
# Pillow, SciPy and onnxruntime for the Python baseline. Nothing here is part of `make test`.
BENCH_VENV ?= $(HOME)/.cache/demeter/bench-venv
BENCH_ARGS ?=
$(BENCH_VENV)/.installed: crates/demeter-bench/python/requirements.txt
	python3 -m venv "$(BENCH_VENV)"
	"$(BENCH_VENV)/bin/pip" install --quiet --disable-pip-version-check -r $<
	touch $@

bench-deps: $(BENCH_VENV)/.installed
	@command -v wrk >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq wrk >/dev/null; }

bench: ort bench-deps browser-deps
	$(CARGO) build --release --locked -p demeter-daemon -p demeter-bench
	DEMETER_BENCH_PYTHON="$(BENCH_VENV)/bin/python" "$(abspath $(TARGET_DIR))/release/demeter-bench" \
	  --out docs/benchmarks.md $(BENCH_ARGS)

# Counting accuracy on the dev set: every photo within one as stored and in 17 camera variants
# (turned, rescaled, relit, blurred, noised, compressed, widened), and the multi-plant trays
# within one at 400x300 too (see models/README.md).
eval: ort
	$(CARGO) build --locked $(EVAL_PKGS)
	"$(abspath $(TARGET_DIR))/debug/demeter" eval "$(DEV_SET)" --variants all --max-error 1
	"$(abspath $(TARGET_DIR))/debug/demeter" eval "$(DEV_SET)" --sizes 400x300 --min-count 2 --max-error 1

# 100 kill -9 cycles with four photos in flight each time (make test runs 10).
soak: ort
	DEMETER_KILL_CYCLES=100 $(CARGO) test --locked -p demeter-tests --test e2e -- kill_9_cycles --nocapture

test: ort model-check fmt ui-vendor-check browser-deps desktop-deps
	$(CARGO) build --locked $(ALL_BIN_PKGS)
	$(CARGO) test --locked --workspace --no-fail-fast
	$(MAKE) --no-print-directory eval EVAL_PKGS="$(ALL_BIN_PKGS)"
	$(MAKE) --no-print-directory browser-test BROWSER_TEST_PKGS="$(ALL_BIN_PKGS)"
	$(MAKE) --no-print-directory desktop-test DESKTOP_TEST_PKGS="$(ALL_BIN_PKGS)"
	$(MAKE) --no-print-directory contract-test CONTRACT_TEST_PKGS="$(ALL_BIN_PKGS)"
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
