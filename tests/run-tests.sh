#!/usr/bin/env bash
# README's test command. Every test, with preparation in confined workers (the default); then the
# integration tests again with preparation in process (PVF_TEST_ISOLATION=in-process), so every
# test that builds its host from `common::config` holds in both isolation modes (the tests about
# workers themselves skip in the second run, saying so). Both runs use the same dev-profile build.
# Arguments go to both `cargo test` runs (e.g. a filter). Exits non-zero when either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
cargo test --workspace "$@" || status=1
PVF_TEST_ISOLATION=in-process cargo test -p pvf-host --test integration "$@" || status=1
exit "$status"
