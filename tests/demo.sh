#!/usr/bin/env bash
# The main job on the bundled guests: builds the guests and the `pvf` CLI, then prepares and
# validates a candidate for each guest twice. The first round compiles (cache: miss), the second
# uses the stored artifacts (cache: hit). The store is ./artifacts (CONTRACT.md's default).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p pvf-host --bin pvf -p pvf-test-guests # the guests' build script compiles them
PVF=target/debug/pvf
GUESTS=target/guests/wasm32-wasip2/release
PARAMS=$(mktemp -d)
trap 'rm -rf "$PARAMS"' EXIT

# adder: head = 5 + 7; undying: 10 000 hashing rounds; the others: any block.
echo '{"parent_head": "0x0500000000000000", "block_data": "0x0700000000000000", "relay_parent_number": 7}' >"$PARAMS/adder.json"
echo '{"parent_head": "0x01", "block_data": "0x10270000cafebabe", "relay_parent_number": 7}' >"$PARAMS/undying.json"
for g in reject trap halt; do cp "$PARAMS/adder.json" "$PARAMS/$g.json"; done

"$PVF" cache prune --max-bytes 0 >/dev/null # start from an empty store

validate() { # guest, label
    rc=0
    out=$("$PVF" --json --timeout-ms 500 validate "$GUESTS/$1.wasm" --params "$PARAMS/$1.json" 2>/dev/null) || rc=$?
    echo "$2 $1 (exit $rc): $out"
}

echo "== round 1: nothing stored yet, every guest is prepared (cache: miss)"
for g in adder undying reject trap halt; do validate "$g" "round 1"; done
echo "== round 2: the stored artifacts are verified and used (cache: hit)"
for g in adder undying reject trap halt; do validate "$g" "round 2"; done
echo "== round 3: one byte of adder's artifact flipped: discarded, re-prepared, still valid (cache: repaired)"
hash=$("$PVF" --json prepare "$GUESTS/adder.wasm" 2>/dev/null | sed 's/.*"code_hash":"\([0-9a-f]*\)".*/\1/')
artifact=$(ls artifacts/*/"$hash".artifact)
printf '\x5a' | dd of="$artifact" bs=1 seek=4096 conv=notrunc status=none
validate adder "round 3"
