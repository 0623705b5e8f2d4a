// The README's example is examples/quickstart.mts verbatim, and it runs as written.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { promisify } from "node:util";

const ROOT = join(__dirname, "..", "..");

it("README quotes examples/quickstart.mts verbatim", () => {
  const example = readFileSync(join(ROOT, "examples", "quickstart.mts"), "utf8");
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  assert.ok(readme.includes("```ts\n" + example + "```\n"), "README.md's ```ts block differs from examples/quickstart.mts");
  assert.equal(example.trimEnd().split("\n").length, 5);
});

it("the quickstart runs against INFER_TARGET", async () => {
  assert.ok(process.env.INFER_TARGET, "INFER_TARGET is not set");
  const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, "dist", "examples", "quickstart.mjs")], {
    env: process.env, timeout: 60_000,
  });
  assert.match(stdout, /next 24 h by \[ '\w+' \] \[ 1, 24 \] Float32Array\(24\)/);
});
