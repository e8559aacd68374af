#!/usr/bin/env bash
# README's test command. Every test, with compilation and execution in confined workers (the
# default); then the integration tests again in the two other isolation modes: per-job children
# (PVF_TEST_ISOLATION=per-job) and in process (PVF_TEST_ISOLATION=in-process). That is the parity
# suite: every test that builds its host from `common::config` or runs `pvf` through
# `common::pvf` holds in all three modes (the tests about preparation workers skip in process,
# saying so). All runs use the same dev-profile build. Arguments go to every `cargo test` run
# (e.g. a filter). Exits non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
cargo test --workspace "$@" || status=1
PVF_TEST_ISOLATION=per-job cargo test -p pvf-host --test integration "$@" || status=1
PVF_TEST_ISOLATION=in-process cargo test -p pvf-host --test integration "$@" || status=1
exit "$status"
