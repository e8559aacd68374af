#!/usr/bin/env bash
# The main job on the bundled guests: builds the guests and the `pvf` CLI, then prepares and
# validates a candidate for each guest twice. The first round compiles (cache: miss), the second
# uses the stored artifacts (cache: hit); the third repairs a damaged artifact (cache: repaired).
# The store is ./artifacts (CONTRACT.md's default). Every validation is checked against its
# expected exit code, verdict and cache status; any difference makes the script exit 1 (CI runs
# it).
set -euo pipefail
cd "$(dirname "$0")/.."

# One build of the workspace's libraries and binaries: `pvf`, and `pvf-test-guests`, whose build
# script compiles the guests (`--bin pvf` would leave that library, and so the guests, out).
# `--examples` (there are none) makes cargo resolve features as `cargo test --workspace` does,
# dev-dependencies included, so that the test command reuses every crate built here instead of
# building wasmtime a second time with other features.
cargo build --quiet --workspace --lib --bins --examples
PVF=target/debug/pvf
GUESTS=target/guests/wasm32-wasip2/release
PARAMS=$(mktemp -d)
trap 'rm -rf "$PARAMS"' EXIT

# adder: head = 5 + 7; undying: 10 000 hashing rounds; the others: any block.
echo '{"parent_head": "0x0500000000000000", "block_data": "0x0700000000000000", "relay_parent_number": 7}' >"$PARAMS/adder.json"
echo '{"parent_head": "0x01", "block_data": "0x10270000cafebabe", "relay_parent_number": 7}' >"$PARAMS/undying.json"
for g in reject trap halt composed_adder; do cp "$PARAMS/adder.json" "$PARAMS/$g.json"; done
# 16 ed25519-signed messages, checked through the host's pvf:crypto extension.
target/debug/examples/batch_params 16 1 >"$PARAMS/sig_verify.json" 2>/dev/null

"$PVF" cache prune --max-bytes 0 >/dev/null # start from an empty store

# Expected exit code and verdict of each guest. `halt` never returns: it runs out of fuel
# (invalid) long before the generous wall-clock limit below, on any machine.
declare -A EXIT=([adder]=0 [undying]=0 [reject]=1 [trap]=1 [halt]=1 [sig_verify]=0 [composed_adder]=0)
declare -A VERDICT=([adder]=valid [undying]=valid [reject]=invalid [trap]=invalid [halt]=invalid [sig_verify]=valid [composed_adder]=valid)
failures=0

validate() { # guest, label, expected cache status
    rc=0
    out=$("$PVF" --json --timeout-ms 10000 validate "$GUESTS/$1.wasm" --params "$PARAMS/$1.json" 2>/dev/null) || rc=$?
    echo "$2 $1 (exit $rc): $out"
    if [[ $rc != "${EXIT[$1]}" || $out != *"\"verdict\":\"${VERDICT[$1]}\""* || $out != *"\"cache\":\"$3\""* ]]; then
        echo "FAILED: $2 $1: expected exit ${EXIT[$1]}, verdict ${VERDICT[$1]}, cache $3" >&2
        failures=$((failures + 1))
    fi
}

echo "== round 1: nothing stored yet, every guest is prepared (cache: miss)"
for g in adder undying reject trap halt sig_verify composed_adder; do validate "$g" "round 1" miss; done
echo "== round 2: the stored artifacts are verified and used (cache: hit)"
for g in adder undying reject trap halt sig_verify composed_adder; do validate "$g" "round 2" hit; done
echo "== round 3: one byte of adder's artifact inverted: discarded, re-prepared, still valid (cache: repaired)"
hash=$("$PVF" --json prepare "$GUESTS/adder.wasm" 2>/dev/null | sed -n 's/.*"code_hash":"\([0-9a-f]*\)".*/\1/p') || true
artifact=$(ls artifacts/*/"${hash:-none}".artifact 2>/dev/null) || true
if [[ -f $artifact ]]; then
    byte=$(od -An -tu1 -j4096 -N1 "$artifact" | tr -d ' ')
    printf "\\x$(printf '%02x' $((byte ^ 0xff)))" | dd of="$artifact" bs=1 seek=4096 conv=notrunc status=none
else
    echo "FAILED: round 3: adder's stored artifact not found" >&2
    failures=$((failures + 1))
fi
validate adder "round 3" repaired

if ((failures > 0)); then
    echo "demo: $failures check(s) failed" >&2
    exit 1
fi
echo "demo: every validation gave the expected result"
