// The gateway's demo page embeds a copy of the built SDK (longconn-gateway/demo/sdk/);
// it must be the current build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dist = fileURLToPath(new URL("../dist/", import.meta.url));
const demo = fileURLToPath(new URL("../../../longconn-gateway/demo/sdk/", import.meta.url));

test("longconn-gateway/demo/sdk holds the current build (else run `npm run sync-demo`)", () => {
  const built = readdirSync(dist).filter((n) => n.endsWith(".js")).sort();
  assert.deepEqual(readdirSync(demo).filter((n) => n.endsWith(".js")).sort(), built);
  for (const name of built) {
    assert.equal(
      readFileSync(demo + name, "utf8"),
      readFileSync(dist + name, "utf8"),
      `longconn-gateway/demo/sdk/${name} differs from dist/${name}: run \`npm run sync-demo\``,
    );
  }
});
