// End to end in a real headless browser: Debian's chromium driven by playwright-core
// (no browser download), against a gateway this test starts with `--demo` on free ports.
// Two pages join a room and exchange messages; one drops its socket, reconnects, rejoins
// and sees the next message. Screenshots go to test-artifacts/.
//
// GATEWAY_BIN: the gateway binary (default ../../target/debug/gateway).
// CHROMIUM: the browser (default /usr/bin/chromium).
// Without the binary or the browser the test is skipped, except under CI=true.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const gatewayBin = process.env.GATEWAY_BIN ?? join(root, "../../target/debug/gateway");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const artifacts = join(root, "test-artifacts");
const ci = process.env.CI === "true";

const missing = [
  [gatewayBin, "the gateway binary (cargo build -p longconn-gateway, or set GATEWAY_BIN)"],
  [chromiumPath, "chromium (apt-get install chromium, or set CHROMIUM)"],
].filter(([path]) => !existsSync(path));
const skip = missing.length > 0 && !ci ? `missing ${missing.map(([, what]) => what).join(", ")}` : false;
if (skip) console.error(`browser test SKIPPED: ${skip}`);

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts `gateway --demo` on free loopback ports; retries if a port was taken meanwhile. */
async function startGateway() {
  for (let attempt = 1; ; attempt++) {
    const [ws, http] = [await freePort(), await freePort()];
    const args = ["--demo", "--tcp", "off", "--quic", "off", "--ws", `127.0.0.1:${ws}`, "--http", `127.0.0.1:${http}`];
    const child = spawn(gatewayBin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    let exited = null;
    child.on("exit", (code) => (exited = code));
    const base = `http://127.0.0.1:${http}`;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && exited === null) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) return { child, base, output: () => output };
      } catch {
        // Not listening yet.
      }
      await sleep(100);
    }
    child.kill("SIGKILL");
    if (attempt >= 3) throw new Error(`the gateway did not start (exit ${exited}):\n${output}`);
  }
}

async function stopGateway(gateway) {
  if (gateway.child.exitCode !== null) return;
  const exited = new Promise((resolve) => gateway.child.once("exit", resolve));
  gateway.child.kill("SIGTERM");
  const timer = setTimeout(() => gateway.child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
}

async function members(base, room) {
  const response = await fetch(`${base}/demo/rooms/${room}`);
  assert.equal(response.status, 200);
  return (await response.json()).members;
}

async function waitFor(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** The text of every chat bubble on `page`, in order. */
const bubbles = (page) => page.$$eval("#messages .message .bubble", (els) => els.map((e) => e.textContent));

test("demo room in headless chromium: two pages chat, one drops, reconnects and keeps receiving", { skip, timeout: 120_000 }, async () => {
  const { chromium } = await import("playwright-core");
  mkdirSync(artifacts, { recursive: true });
  const gateway = await startGateway();
  const profile = mkdtempSync(join(tmpdir(), "longconn-chromium-"));
  let context;
  try {
    // The demo's own routes answer as documented.
    const token = await fetch(`${gateway.base}/demo/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ device: "" }),
    });
    assert.equal(token.status, 400);
    assert.equal((await token.json()).error, "bad_request");

    context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      viewport: { width: 1100, height: 720 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const errors = [];
    const open = async (name) => {
      const page = await context.newPage();
      page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
      page.on("console", (msg) => {
        // While a page is offline on purpose, the browser logs its failed connects.
        if (msg.type() === "error" && !msg.text().includes("ERR_INTERNET_DISCONNECTED")) {
          errors.push(`${name} console: ${msg.text()}`);
        }
      });
      await page.goto(`${gateway.base}/demo/?name=${name}&room=e2e`);
      await page.waitForSelector("#state[data-state=connected]");
      await page.waitForSelector("#messages .system >> text=joined e2e");
      return page;
    };
    const alice = await open("alice");
    const bob = await open("bob");
    await waitFor("both members in the room", async () => (await members(gateway.base, "e2e")) === 2);
    await waitFor("the presence count on the page", async () => (await alice.textContent("#members")) === "2");

    const send = async (page, text) => {
      await page.fill("#text", text);
      await page.click("#send");
    };
    await send(alice, "hello from alice");
    await waitFor("bob sees alice", async () => (await bubbles(bob)).includes("hello from alice"));
    await send(bob, "hi alice, bob here");
    await waitFor("alice sees bob", async () => (await bubbles(alice)).includes("hi alice, bob here"));
    await waitFor("bob sees his own message", async () => (await bubbles(bob)).includes("hi alice, bob here"));
    // Each page sees both messages, in the same order.
    assert.deepEqual(await bubbles(alice), ["hello from alice", "hi alice, bob here"]);
    assert.deepEqual(await bubbles(bob), ["hello from alice", "hi alice, bob here"]);

    // Bob's network drops: the SDK reconnects with jitter and rejoins the room.
    const connIdBefore = await bob.textContent("#conn-id");
    await bob.click("#drop");
    await bob.waitForSelector("#messages .system >> text=connection lost");
    await bob.waitForSelector("#state[data-state=connected]");
    await waitFor("bob's reconnect counted", async () => (await bob.textContent("#reconnects")) === "1");
    assert.notEqual(await bob.textContent("#conn-id"), connIdBefore, "a new connection");
    await waitFor("bob back in the room", async () => (await members(gateway.base, "e2e")) === 2);

    await send(alice, "after bob's reconnect");
    await waitFor("bob sees the message sent after his reconnect", async () =>
      (await bubbles(bob)).includes("after bob's reconnect"),
    );
    await send(bob, "bob is back");
    await waitFor("alice sees bob again", async () => (await bubbles(alice)).includes("bob is back"));
    // Bob's own message comes back to him through the room like anyone's, possibly after
    // alice has it.
    await waitFor("bob sees his own message", async () => (await bubbles(bob)).includes("bob is back"));
    assert.deepEqual(await bubbles(bob), ["hello from alice", "hi alice, bob here", "after bob's reconnect", "bob is back"]);

    // Bob goes offline (DevTools network emulation, his page only): his socket drops and
    // his reconnects fail while alice keeps talking. Back online, he rejoins from his
    // last position and the gateway replays the message he missed from the room's
    // history (`--demo` keeps history for every room), before any live message.
    const cdp = await context.newCDPSession(bob);
    await cdp.send("Network.enable");
    const offline = (on) =>
      cdp.send("Network.emulateNetworkConditions", { offline: on, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await offline(true);
    await bob.click("#drop");
    await waitFor("bob out of the room", async () => (await members(gateway.base, "e2e")) === 1);
    await send(alice, "while bob was away");
    await waitFor("alice's own copy", async () => (await bubbles(alice)).includes("while bob was away"));
    await offline(false);
    await waitFor("bob's second reconnect", async () => (await bob.textContent("#reconnects")) === "2", 20_000);
    await waitFor("bob back in the room again", async () => (await members(gateway.base, "e2e")) === 2);
    await waitFor("bob recovers the message he missed", async () => (await bubbles(bob)).includes("while bob was away"));
    await bob.waitForSelector("#messages .system >> text=/replayed from the gateway's history/");
    await send(alice, "welcome back, bob");
    await waitFor("bob sees the live message after the recovered one", async () => (await bubbles(bob)).includes("welcome back, bob"));
    const afterRecovery = await bubbles(bob);
    assert.ok(
      afterRecovery.indexOf("while bob was away") < afterRecovery.indexOf("welcome back, bob"),
      `recovered before live: ${afterRecovery}`,
    );
    assert.equal(await bob.locator("#messages .system >> text=/not recovered|could not cover/").count(), 0, "no gap marked");

    // The SDK tracks the room's position: six publishes, in one epoch.
    const position = await bob.evaluate(() => {
      const p = window.demo.client.position("e2e");
      return p && { seq: p.seq.toString(), epoch: p.epoch === null ? null : p.epoch.toString() };
    });
    assert.equal(position.seq, "6");
    assert.notEqual(position.epoch, null);

    for (const [name, page] of [["alice", alice], ["bob", bob]]) {
      await waitFor(`${name}'s presence count back at 2`, async () => (await page.textContent("#members")) === "2");
      const path = join(artifacts, `browser-demo-${name}.png`);
      rmSync(path, { force: true });
      await page.screenshot({ path, fullPage: true });
      const png = readFileSync(path);
      assert.ok(statSync(path).size > 10_000, `${path} is too small to show the room`);
      assert.equal(png.subarray(1, 4).toString(), "PNG", `${path} is a PNG`);
      console.error(`screenshot: ${path}`);
    }
    assert.deepEqual(errors, [], "no page errors");
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    await stopGateway(gateway);
  }
});
