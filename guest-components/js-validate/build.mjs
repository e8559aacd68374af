// Componentizes src/validate.js for the `validation-function` world of ../../wit.
//
//   node build.mjs [OUTPUT [WIT]]   (defaults: js_validate.wasm in this folder, ../../wit)
//
// Run by tests/guests/build.rs after `npm ci`; prints the time componentize took.
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile, rename } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const output = resolve(process.argv[2] ?? resolve(here, "js_validate.wasm"));
const wit = resolve(process.argv[3] ?? resolve(here, "../../wit"));

const started = performance.now();
const { component } = await componentize({
  sourcePath: resolve(here, "src/validate.js"),
  witPath: wit,
  worldName: "validation-function",
  // The host links wasi:cli, io, clocks, random and filesystem (all capability-less), but not
  // wasi:http: StarlingMonkey's fetch() and fetch-event support must be left out. stdio stays
  // (uncaught errors reach stderr), so do random and clocks (the host makes them deterministic).
  disableFeatures: ["http", "fetch-event"],
});
await mkdir(dirname(output), { recursive: true });
// Write beside the output, then rename: a reader never sees a half-written component.
const partial = `${output}.partial`;
await writeFile(partial, component);
await rename(partial, output);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`componentized ${output} (${component.length} bytes) in ${seconds} s`);
