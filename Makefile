# lago — the two commands:
#   make demo   runs the product end to end on embedded defaults (no AWS account);
#               ARGS="--size medium --open" passes options to `lago demo`
#   make test   sets up everything the tests need and runs every test
#   make fuzz   runs every fuzz target for FUZZ_SECONDS each (nightly, cargo-fuzz); `make test`
#               replays the committed corpus instead
#
# Builds go to a directory outside the clone so repeated runs (and CI on the same machine) reuse
# them; override with CARGO_TARGET_DIR. The Python tools live in a venv keyed by the pins.

LAGO_CACHE ?= $(HOME)/.cache/lago
export CARGO_TARGET_DIR ?= $(LAGO_CACHE)/target

FUZZ_SECONDS ?= 60

.PHONY: demo test bench fuzz lint fmt
demo:
	@bash scripts/demo.sh $(ARGS)

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(FUZZ_TARGETS)

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
