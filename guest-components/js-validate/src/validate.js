// Guest `js-validate`: the rules of the Rust guest `adder`, written in JavaScript.
//
// head = parent head (u64 LE) + block data (u64 LE), wrapping at 2^64; `err` (the candidate is
// invalid) when either is shorter than 8 bytes. It targets the `validation-function` world of
// `wit/validation.wit` and is componentized by `build.mjs` with componentize-js (SpiderMonkey,
// StarlingMonkey), which proves the contract is language-neutral and gives a multi-megabyte
// component for preparation benchmarks.
//
// Bindings (componentize-js): the exported interface `pvf:validation/validate` is the exported
// object `validate`, with camelCase names; `list<u8>` is a Uint8Array; `option<T>` none is
// `undefined`; for `result<T, string>` returning a value is `ok`, and throwing is `err` — the
// thrown value itself is the error payload, so we throw the reason string (throwing an `Error`
// object would make the guest trap: "expected a string, received [object]").

const U64_MASK = (1n << 64n) - 1n;

/** The first eight bytes of `bytes` as a little-endian u64 (a BigInt); throws the reason. */
function readU64(what, bytes) {
  if (bytes.length < 8) {
    throw `${what} is ${bytes.length} bytes, need at least 8`;
  }
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

/** `value` (a BigInt below 2^64) as eight little-endian bytes. */
function u64Bytes(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, true);
  return out;
}

export const validate = {
  validateBlock(params) {
    const parent = readU64("parent head", params.parentHead);
    const add = readU64("block data", params.blockData);
    return {
      headData: u64Bytes((parent + add) & U64_MASK),
      newValidationCode: undefined,
      upwardMessages: [],
      horizontalMessages: [],
      processedDownwardMessages: 0,
      hrmpWatermark: params.relayParentNumber,
    };
  },
};
