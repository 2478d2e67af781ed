// Copies the built SDK (dist/*.js) to longconn-gateway/demo/sdk/, where the gateway
// embeds it for its demo page (`gateway --demo`). Run with `npm run sync-demo`;
// test/demo-copy.test.mjs fails while the copy differs from the build.
import { copyFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dist = fileURLToPath(new URL("../dist/", import.meta.url));
const demo = fileURLToPath(new URL("../../../longconn-gateway/demo/sdk/", import.meta.url));
for (const name of readdirSync(dist).filter((n) => n.endsWith(".js"))) {
  copyFileSync(dist + name, demo + name);
  console.log(`copied dist/${name} -> longconn-gateway/demo/sdk/${name}`);
}
