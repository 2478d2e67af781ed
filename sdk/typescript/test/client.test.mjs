// The client's state machine on a simulated clock, against a fake WebSocket: no sleeps,
// no network. Row ids refer to docs/PROTOCOL.md's client state table.
import { test } from "node:test";
import assert from "node:assert/strict";

import { CallError, Client, Code, decodeMessage, decodeQualityReport, encodeFrame, utf8 } from "../dist/index.js";

/** A simulated clock: timers fire only when the test advances time. */
class FakeEnv {
  constructor(randomValue = 0.5) {
    this.time = 0;
    this.timers = new Map();
    this.nextHandle = 1;
    this.randomValue = randomValue;
  }
  now() {
    return this.time;
  }
  setTimeout(fn, ms) {
    const handle = this.nextHandle++;
    this.timers.set(handle, { at: this.time + ms, fn });
    return handle;
  }
  clearTimeout(handle) {
    this.timers.delete(handle);
  }
  random() {
    return this.randomValue;
  }
  /** Runs every timer due within `ms`, in time order. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [handle, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [handle, t];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }
}

/** A WebSocket stand-in: records what the client sends; the test opens, feeds and closes it. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.binaryType = "blob";
    this.readyState = 0;
    this.sent = [];
    this.closed = false;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(decodeMessage(data));
  }
  close() {
    this.closed = true;
  }
  // test side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  deliver(frame) {
    const bytes = encodeFrame(frame);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }
  end(code = 1006) {
    this.onclose?.({ code });
  }
  types() {
    return this.sent.map((f) => f.type);
  }
  last(type) {
    return [...this.sent].reverse().find((f) => f.type === type);
  }
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

function setup(options = {}) {
  FakeSocket.all = [];
  const env = new FakeEnv(options.random ?? 0.5);
  const client = new Client({
    url: "ws://gw.test/ws",
    app: "demo",
    device: "tab-1",
    token: "tok",
    WebSocket: FakeSocket,
    env,
    ...options.client,
  });
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  return { client, env, states, socket: () => FakeSocket.all.at(-1) };
}

/** Opens the current socket and completes the login. */
async function login(t, { heartbeatMs = 1000, connId = 7n } = {}) {
  const socket = t.socket();
  socket.open();
  await flush();
  const loginFrame = socket.last("Login");
  assert.ok(loginFrame, "Login sent");
  socket.deliver({ type: "LoginAck", id: loginFrame.id, connId, heartbeatMs, expiresAtMs: null });
  return socket;
}

test("CL1/CL3: logs in with the token, then is connected", async () => {
  const t = setup();
  assert.equal(t.client.state, "connecting");
  const socket = t.socket();
  assert.equal(socket.url, "ws://gw.test/ws");
  socket.open();
  assert.equal(t.client.state, "loggingIn");
  await flush();
  const loginFrame = socket.last("Login");
  assert.equal(loginFrame.app, "demo");
  assert.equal(loginFrame.device, "tab-1");
  assert.equal(new TextDecoder().decode(loginFrame.token), "tok");
  socket.deliver({ type: "LoginAck", id: 1, connId: 42n, heartbeatMs: 1000, expiresAtMs: null });
  assert.equal(t.client.state, "connected");
  assert.equal(t.client.connId, 42n);
  assert.deepEqual(
    t.states.map((s) => s.state),
    ["connecting", "loggingIn", "connected"],
  );
});

test("CA5/CA6/CA7: pings every heartbeat, a lost pong ends the connection", async () => {
  const t = setup();
  const socket = await login(t, { heartbeatMs: 1000 });
  t.env.advance(1000);
  const ping = socket.last("Ping");
  assert.ok(ping, "a Ping after one heartbeat");
  socket.deliver({ type: "Pong", id: ping.id, payload: ping.payload });
  t.env.advance(1000);
  assert.equal(socket.sent.filter((f) => f.type === "Ping").length, 2);
  // No pong to the second ping: after 2 x heartbeat the connection is dead.
  t.env.advance(2000);
  assert.equal(t.client.state, "waiting");
  assert.equal(t.states.at(-1).reason.kind, "heartbeatLost");
  assert.ok(socket.closed);
  assert.ok(!socket.types().includes("QualityReport"), "quality reports are opt-in");
});

test("quality reports (opt-in): connect attempts and heartbeat round trips per transport", async () => {
  const t = setup({ client: { qualityReportMs: 60_000, network: 1 } });
  t.socket().end(1006); // attempt 1 fails
  t.env.advance(t.states.at(-1).retryInMs);
  t.env.advance(30);
  const socket = t.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 20_000, expiresAtMs: null }); // attempt 2: 30 ms
  t.env.advance(20_000);
  t.env.advance(5);
  socket.deliver({ type: "Pong", id: socket.last("Ping").id, payload: new Uint8Array() }); // 5 ms
  t.env.advance(60_000 - 20_005);
  const frame = socket.last("QualityReport");
  assert.ok(frame, "a report after 60 s");
  assert.equal(frame.network, 1);
  const report = decodeQualityReport(frame.payload);
  assert.equal(report.transports.length, 1);
  const ws = report.transports[0];
  assert.equal(ws.transport, "ws");
  assert.equal(ws.connectAttempts, 2);
  assert.deepEqual(ws.connectLatency, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
  // The first ping was answered; the second (sent at 40 s) is still open.
  assert.equal(ws.pings, 1);
  assert.deepEqual(ws.rtt, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  // An Error for the report (a gateway that refuses its body) fails nothing else.
  socket.deliver({ type: "Error", id: frame.id, code: Code.malformed_report, message: "" });
  assert.equal(t.client.state, "connected");
  // Counts restart: the next report holds only what happened since.
  socket.deliver({ type: "Pong", id: socket.last("Ping").id, payload: new Uint8Array() });
  t.env.advance(60_000);
  const next = decodeQualityReport(socket.last("QualityReport").payload);
  assert.equal(next.transports[0].connectAttempts, 0);
  assert.ok(next.transports[0].pings >= 1);
});

test("CX1: a Ping from the gateway is answered with a Pong carrying its id and payload", async () => {
  const t = setup();
  const socket = await login(t);
  socket.deliver({ type: "Ping", id: 99, payload: utf8("t=1") });
  const pong = socket.last("Pong");
  assert.equal(pong.id, 99);
  assert.equal(new TextDecoder().decode(pong.payload), "t=1");
});

test("CA1/CA2/CX7: requests resolve, fail with the gateway's code, or time out", async () => {
  const t = setup({ client: { requestTimeoutMs: 500 } });
  const socket = await login(t);
  const ok = t.client.request(7, "hello", { meta: { group: "room" } });
  const req = socket.last("Request");
  assert.equal(req.business, 7);
  assert.deepEqual(req.meta.map(([k, v]) => [k, new TextDecoder().decode(v)]), [["group", "room"]]);
  socket.deliver({ type: "Response", id: req.id, business: 7, meta: [], payload: utf8("hi") });
  assert.equal(new TextDecoder().decode((await ok).payload), "hi");

  const failed = t.client.request(999, "x");
  socket.deliver({ type: "Error", id: socket.last("Request").id, code: Code.unknown_business, message: "none" });
  await assert.rejects(failed, (e) => e instanceof CallError && e.reason === "rejected" && e.code === 300);

  const slow = t.client.request(7, "x");
  t.env.advance(500);
  await assert.rejects(slow, (e) => e instanceof CallError && e.reason === "timeout");
});

test("CC4: calls made while connecting are sent in order after LoginAck", async () => {
  const t = setup();
  const a = t.client.request(1, "a");
  const joined = t.client.join("room");
  const socket = t.socket();
  socket.open();
  await flush();
  assert.deepEqual(socket.types(), ["Login"]);
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 1000, expiresAtMs: null });
  assert.deepEqual(socket.types(), ["Login", "Request", "JoinGroup"]);
  socket.deliver({ type: "Response", id: socket.sent[1].id, business: 1, meta: [], payload: utf8("a") });
  socket.deliver({ type: "JoinAck", id: socket.sent[2].id, group: "room" });
  await a;
  await joined;
  assert.deepEqual(t.client.joinedGroups, ["room"]);
});

test("CA4: group pushes reach the group listener, positions and gaps are tracked, acks are sent", async () => {
  const t = setup();
  const socket = await login(t);
  const seen = [];
  const all = [];
  t.client.on("push", (p) => all.push(p));
  const joining = t.client.join("room", (p) => seen.push(p));
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room" });
  await joining;
  const push = (seq, extra = {}) =>
    socket.deliver({
      type: "Push",
      id: 0,
      ackRequired: false,
      business: 7,
      group: "room",
      seq,
      epoch: 5n,
      meta: [],
      payload: utf8(`m${seq}`),
      ...extra,
    });
  push(1n);
  push(2n);
  push(5n, { id: 77, ackRequired: true });
  assert.deepEqual(
    seen.map((p) => [new TextDecoder().decode(p.payload), p.gap]),
    [
      ["m1", false],
      ["m2", false],
      ["m5", true],
    ],
  );
  assert.equal(all.length, 3);
  assert.deepEqual(t.client.position("room"), { epoch: 5n, seq: 5n });
  assert.equal(socket.last("PushAck").id, 77);
  // A new epoch restarts the numbering: no gap.
  push(1n, { epoch: 6n });
  assert.equal(seen.at(-1).gap, false);
  assert.deepEqual(t.client.position("room"), { epoch: 6n, seq: 1n });
});

test("CA3: a push right behind the JoinAck reaches the new listener; leave forgets the group", async () => {
  const t = setup();
  const socket = await login(t);
  const seen = [];
  const joining = t.client.join("room", (p) => seen.push(p.seq));
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room" });
  socket.deliver({ type: "Push", id: 0, ackRequired: false, business: 7, group: "room", seq: 1n, epoch: 1n, meta: [], payload: utf8("x") });
  await joining;
  assert.deepEqual(seen, [1n]);
  const leaving = t.client.leave("room");
  socket.deliver({ type: "LeaveAck", id: socket.last("LeaveGroup").id, group: "room" });
  await leaving;
  assert.deepEqual(t.client.joinedGroups, []);
  assert.equal(t.client.position("room"), undefined);
  const failed = t.client.join("full-room");
  socket.deliver({ type: "Error", id: socket.last("JoinGroup").id, code: Code.group_full, message: "" });
  await assert.rejects(failed, (e) => e.reason === "rejected" && e.code === Code.group_full);
  assert.deepEqual(t.client.joinedGroups, []);
});

test("CX4/CW1/CL3: a dropped connection reconnects with full jitter and rejoins its groups", async () => {
  const t = setup({ random: 0.5, client: { reconnectBaseMs: 1000, reconnectCapMs: 30000 } });
  let socket = await login(t);
  const joining = t.client.join("room", () => {});
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room" });
  await joining;
  socket.deliver({ type: "Push", id: 0, ackRequired: false, business: 7, group: "room", seq: 3n, epoch: 1n, meta: [], payload: utf8("x") });
  const open = t.client.request(7, "lost");
  t.client.dropConnection();
  await assert.rejects(open, (e) => e.reason === "abandoned");
  assert.equal(t.client.state, "waiting");
  // Attempt 0: uniform in [0, 1000] -> 500 with random() = 0.5.
  assert.equal(t.states.at(-1).retryInMs, 500);
  await assert.rejects(t.client.request(7, "x"), (e) => e.reason === "notConnected");
  t.env.advance(499);
  assert.equal(FakeSocket.all.length, 1);
  t.env.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  // The next dial fails: attempt 1 waits up to 2000.
  t.socket().end(1006);
  assert.equal(t.states.at(-1).retryInMs, 1000);
  t.env.advance(1000);
  socket = await login(t);
  assert.equal(t.client.state, "connected");
  assert.deepEqual(socket.types(), ["Login", "JoinGroup"]);
  assert.equal(socket.last("JoinGroup").group, "room");
  // The position survives the reconnect.
  assert.deepEqual(t.client.position("room"), { epoch: 1n, seq: 3n });
  // After a successful login the attempt count starts again.
  t.client.dropConnection();
  assert.equal(t.states.at(-1).retryInMs, 500);
});

test("full jitter is capped and spread over the whole window", () => {
  const delays = [];
  for (const r of [0, 0.25, 0.999]) {
    const t = setup({ random: r, client: { reconnectBaseMs: 100, reconnectCapMs: 400 } });
    for (let i = 0; i < 5; i++) {
      t.socket().end(1006);
      delays.push([r, i, t.states.at(-1).retryInMs]);
      t.env.advance(t.states.at(-1).retryInMs);
    }
  }
  const windowOf = (i) => Math.min(400, 100 * 2 ** i);
  for (const [r, i, d] of delays) assert.equal(d, Math.round(r * windowOf(i)), `r=${r} attempt ${i}`);
});

test("CX2/CL4: replaced and invalid_token stop the client; CX3 slow_consumer reconnects", async () => {
  let t = setup();
  let socket = await login(t);
  socket.deliver({ type: "Kick", code: Code.replaced, message: "" });
  assert.equal(t.client.state, "closed");
  t.env.advance(60_000);
  assert.equal(FakeSocket.all.length, 1, "no reconnect after replaced");

  t = setup();
  socket = t.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "Close", code: Code.invalid_token, message: "bad" });
  assert.equal(t.client.state, "closed");
  assert.deepEqual(t.states.at(-1).reason, { kind: "loginRefused", code: 200 });

  t = setup();
  socket = await login(t);
  socket.deliver({ type: "Kick", code: Code.slow_consumer, message: "" });
  assert.equal(t.client.state, "waiting");
});

test("CL5: expired_token is retried once with a fresh token, then stops", async () => {
  let calls = 0;
  const t = setup({ client: { token: async () => `tok-${++calls}` } });
  let socket = t.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "Close", code: Code.expired_token, message: "" });
  assert.equal(t.client.state, "waiting");
  t.env.advance(t.states.at(-1).retryInMs);
  socket = t.socket();
  socket.open();
  await flush();
  assert.equal(new TextDecoder().decode(socket.last("Login").token), "tok-2");
  socket.deliver({ type: "Close", code: Code.expired_token, message: "" });
  assert.equal(t.client.state, "closed");
});

test("CA9/CD2: GoAway drains, then the reconnect waits retry_after plus jitter", async () => {
  const t = setup({ random: 0.5 });
  const socket = await login(t);
  socket.deliver({ type: "GoAway", retryAfterMs: 5000, message: "deploy" });
  assert.equal(t.client.state, "draining");
  socket.deliver({ type: "Close", code: Code.going_away, message: "" });
  assert.equal(t.client.state, "waiting");
  assert.equal(t.states.at(-1).retryInMs, 5000 + 0.5 * 2500);
});

test("CL9: Close try_later waits the given delay plus jitter before reconnecting", async () => {
  const t = setup({ random: 0.5, client: { reconnectBaseMs: 100, reconnectCapMs: 200 } });
  // Refused at login: 4000 ms + 0.5 * 2000 ms, far beyond the 100 ms backoff.
  let socket = t.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "Close", code: Code.try_later, message: "retry_after_ms=4000" });
  assert.equal(t.client.state, "waiting");
  assert.equal(t.states.at(-1).reason.code, Code.try_later);
  assert.equal(t.states.at(-1).retryInMs, 5000);
  t.env.advance(4999);
  assert.equal(FakeSocket.all.length, 1, "no reconnect before the delay");
  t.env.advance(1);
  assert.equal(FakeSocket.all.length, 2);
  // Logged in, then refused again: the same; jitter 0 waits exactly the delay.
  socket = await login(t);
  t.env.randomValue = 0;
  socket.deliver({ type: "Close", code: Code.try_later, message: "retry_after_ms=1500" });
  assert.equal(t.states.at(-1).retryInMs, 1500);
  t.env.advance(1499);
  assert.equal(FakeSocket.all.length, 2);
  t.env.advance(1);
  assert.equal(FakeSocket.all.length, 3);
  // No delay in the message: 1 s; an absurd one is capped at 60 s (plus up to 30 s jitter).
  t.env.randomValue = 1;
  t.socket().open();
  await flush();
  t.socket().deliver({ type: "Close", code: Code.try_later, message: "" });
  assert.equal(t.states.at(-1).retryInMs, 1000 + 500);
  t.env.advance(1500);
  t.socket().open();
  await flush();
  t.socket().deliver({ type: "Close", code: Code.try_later, message: "retry_after_ms=999999999" });
  assert.equal(t.states.at(-1).retryInMs, 60000 + 30000);
});

test("CX5: bytes that fail to decode close the session with the error's code", async () => {
  const t = setup();
  const socket = await login(t);
  socket.onmessage({ data: Uint8Array.of(0x4c, 0x43, 0x01, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1).buffer });
  assert.equal(socket.last("Close").code, Code.malformed_frame);
  assert.equal(t.client.state, "waiting");
  assert.equal(t.states.at(-1).reason.kind, "protocolError");
});

test("CL7: no LoginAck before the login deadline", async () => {
  const t = setup({ client: { loginTimeoutMs: 3000 } });
  t.socket().open();
  await flush();
  t.env.advance(3000);
  assert.equal(t.socket().last("Close").code, Code.login_timeout);
  assert.equal(t.states.at(-1).reason.kind, "loginTimeout");
});

test("CX6/CZ1: close() says goodbye and stops; later calls are refused", async () => {
  const t = setup();
  const socket = await login(t);
  const open = t.client.request(1, "x");
  t.client.close();
  assert.equal(socket.last("Close").code, Code.normal);
  await assert.rejects(open, (e) => e.reason === "closed");
  await assert.rejects(t.client.request(1, "y"), (e) => e.reason === "closed");
  assert.equal(t.client.state, "closed");
});

test("CA12: a failed rejoin is reported and the group forgotten", async () => {
  const t = setup();
  let socket = await login(t);
  const failures = [];
  t.client.on("rejoinFailed", (group, code) => failures.push([group, code]));
  const joining = t.client.join("room");
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room" });
  await joining;
  t.client.dropConnection();
  t.env.advance(t.states.at(-1).retryInMs);
  socket = await login(t);
  socket.deliver({ type: "Error", id: socket.last("JoinGroup").id, code: Code.group_full, message: "" });
  await flush();
  assert.deepEqual(failures, [["room", Code.group_full]]);
  assert.deepEqual(t.client.joinedGroups, []);
});

test("CA14: a rejoin sends the last position and reports whether it was recovered", async () => {
  const t = setup();
  let socket = await login(t);
  const rejoins = [];
  t.client.on("rejoined", (group, recovered) => rejoins.push([group, recovered]));
  const joining = t.client.join("room");
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room", seq: 4n, epoch: 9n, recovered: null });
  await joining;
  assert.deepEqual(t.client.position("room"), { epoch: 9n, seq: 4n }, "the ack's position is the base");
  socket.deliver({ type: "Push", id: 0, ackRequired: false, business: 7, group: "room", seq: 5n, epoch: 9n, meta: [], payload: utf8("x") });
  t.client.dropConnection();
  t.env.advance(t.states.at(-1).retryInMs);
  socket = await login(t);
  const rejoin = socket.last("JoinGroup");
  assert.deepEqual([rejoin.group, rejoin.epoch, rejoin.seq], ["room", 9n, 5n]);
  socket.deliver({ type: "JoinAck", id: rejoin.id, group: "room", seq: 7n, epoch: 9n, recovered: true });
  await flush();
  assert.deepEqual(rejoins, [["room", true]]);
  assert.deepEqual(t.client.position("room"), { epoch: 9n, seq: 5n }, "the replayed pushes move it");
  t.client.dropConnection();
  t.env.advance(t.states.at(-1).retryInMs);
  socket = await login(t);
  socket.deliver({ type: "JoinAck", id: socket.last("JoinGroup").id, group: "room", seq: 2n, epoch: 3n, recovered: false });
  await flush();
  assert.deepEqual(rejoins, [["room", true], ["room", false]]);
  assert.deepEqual(t.client.position("room"), { epoch: 3n, seq: 2n }, "not recovered: the new base");
});

test("CA8: TokenExpiring is answered with a TokenRefresh from the token source", async () => {
  let n = 0;
  const t = setup({ client: { token: async () => `tok-${++n}` } });
  const socket = await login(t);
  socket.deliver({ type: "TokenExpiring", deadlineMs: 1000n });
  await flush();
  assert.equal(new TextDecoder().decode(socket.last("TokenRefresh").token), "tok-2");
});

test("CA13: a renewable token is renewed in band at 80 % of its lifetime; a fixed one is not", async () => {
  let n = 0;
  // Heartbeats far apart, so that no pong deadline ends the session meanwhile.
  const t = setup({ client: { token: async () => `tok-${++n}`, heartbeatMs: 10_000_000 } });
  let socket = t.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 1_000_000, expiresAtMs: 100_000n });
  t.env.advance(79_999);
  await flush();
  assert.equal(socket.last("TokenRefresh"), undefined);
  t.env.advance(1);
  await flush();
  const refresh = socket.last("TokenRefresh");
  assert.equal(new TextDecoder().decode(refresh.token), "tok-2");
  // The ack's new expiry schedules the next renewal: 80 % of the 120 s left.
  socket.deliver({ type: "TokenRefreshAck", id: refresh.id, expiresAtMs: 200_000n });
  t.env.advance(95_999);
  await flush();
  assert.equal(socket.sent.filter((f) => f.type === "TokenRefresh").length, 1);
  t.env.advance(1);
  await flush();
  assert.equal(new TextDecoder().decode(socket.last("TokenRefresh").token), "tok-3");

  const fixed = setup({ client: { heartbeatMs: 10_000_000 } });
  socket = fixed.socket();
  socket.open();
  await flush();
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 1_000_000, expiresAtMs: 100_000n });
  fixed.env.advance(99_000);
  await flush();
  assert.equal(socket.last("TokenRefresh"), undefined, "a fixed token cannot be renewed");
});

test("control layer: the token is renewed through /v1/token/refresh", async () => {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push([url, JSON.parse(init.body)]);
    const body = url.endsWith("/v1/access")
      ? { endpoints: [{ url: "ws://gw.test/ws", transport: "ws" }], token: "old", expires_at_unix_s: 100 }
      : { token: "renewed", expires_at_unix_s: 200 };
    return { ok: true, status: 200, json: async () => body };
  };
  FakeSocket.all = [];
  const env = new FakeEnv(0.5);
  const client = new Client({ control: { url: "http://ctl.test" }, app: "demo", device: "d1", WebSocket: FakeSocket, fetch, env });
  client.connect();
  await flush();
  const socket = FakeSocket.all[0];
  socket.open();
  await flush();
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 1_000_000, expiresAtMs: 100_000n });
  env.advance(80_000);
  await flush();
  await flush();
  assert.deepEqual(calls[1], ["http://ctl.test/v1/token/refresh", { token: "old" }]);
  assert.equal(new TextDecoder().decode(socket.last("TokenRefresh").token), "renewed");
});

test("control layer: /v1/access gives the ws endpoint, the token and the reconnect policy", async () => {
  const requests = [];
  const fetch = async (url, init) => {
    requests.push([url, JSON.parse(init.body)]);
    return {
      ok: true,
      status: 200,
      json: async () => ({
        endpoints: [
          { url: "tcp://127.0.0.1:7100", transport: "tcp" },
          { url: "ws://127.0.0.1:7101/ws", transport: "ws" },
        ],
        token: "lc2.dev.x",
        expires_at_unix_s: 4_000_000_000,
        heartbeat_ms: 20000,
        reconnect: { base_ms: 200, cap_ms: 800, jitter: "full" },
        reaccess_after_failures: 3,
      }),
    };
  };
  FakeSocket.all = [];
  const env = new FakeEnv(0.5);
  const client = new Client({
    control: { url: "http://ctl.test/" },
    app: "demo",
    device: "d1",
    WebSocket: FakeSocket,
    fetch,
    env,
  });
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  await flush();
  assert.deepEqual(requests[0][0], "http://ctl.test/v1/access");
  assert.equal(requests[0][1].platform, "web");
  assert.equal(requests[0][1].app, "demo");
  const socket = FakeSocket.all[0];
  assert.equal(socket.url, "ws://127.0.0.1:7101/ws");
  socket.open();
  await flush();
  assert.equal(new TextDecoder().decode(socket.last("Login").token), "lc2.dev.x");
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 30000, expiresAtMs: null });
  // The control layer's heartbeat (20 s) caps the gateway's (30 s); its backoff applies.
  env.advance(20000);
  assert.ok(socket.last("Ping"));
  client.dropConnection();
  assert.equal(states.at(-1).retryInMs, 100);
});

test("control layer: a failed attempt moves to the next endpoint, repeated failures ask /v1/access again", async () => {
  let accesses = 0;
  const fetch = async () => {
    accesses++;
    return {
      ok: true,
      status: 200,
      json: async () => ({
        endpoints: [
          { url: `ws://a${accesses}.test/ws`, transport: "ws" },
          { url: `ws://b${accesses}.test/ws`, transport: "ws" },
        ],
        token: "t",
        expires_at_unix_s: 4_000_000_000,
        reconnect: { base_ms: 100, cap_ms: 100 },
        reaccess_after_failures: 2,
      }),
    };
  };
  FakeSocket.all = [];
  const env = new FakeEnv(0);
  const client = new Client({ control: { url: "http://ctl.test" }, app: "demo", device: "d1", WebSocket: FakeSocket, fetch, env });
  client.connect();
  await flush();
  assert.equal(FakeSocket.all.at(-1).url, "ws://a1.test/ws");
  FakeSocket.all.at(-1).end(1006);
  env.advance(0);
  await flush();
  assert.equal(FakeSocket.all.at(-1).url, "ws://b1.test/ws");
  // Logged in on b1, then the connection drops: start again from the first endpoint.
  const socket = FakeSocket.all.at(-1);
  socket.open();
  await flush();
  socket.deliver({ type: "LoginAck", id: 1, connId: 1n, heartbeatMs: 30000, expiresAtMs: null });
  client.dropConnection();
  env.advance(0);
  await flush();
  assert.equal(FakeSocket.all.at(-1).url, "ws://a1.test/ws");
  assert.equal(accesses, 1);
  // Two failed attempts in a row (= max(reaccess_after_failures, endpoints)): ask again.
  FakeSocket.all.at(-1).end(1006);
  env.advance(0);
  await flush();
  FakeSocket.all.at(-1).end(1006);
  env.advance(0);
  await flush();
  assert.equal(accesses, 2);
  assert.equal(FakeSocket.all.at(-1).url, "ws://a2.test/ws");
});

test("a control layer refusal backs off and retries", async () => {
  let n = 0;
  const fetch = async () => {
    n++;
    return { ok: false, status: 503, json: async () => ({ error: { code: "no_endpoints", message: "none" } }) };
  };
  FakeSocket.all = [];
  const env = new FakeEnv(0.5);
  const client = new Client({ control: { url: "http://ctl.test" }, app: "demo", device: "d1", WebSocket: FakeSocket, fetch, env });
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  await flush();
  assert.equal(client.state, "waiting");
  assert.match(states.at(-1).reason.detail, /no_endpoints/);
  env.advance(states.at(-1).retryInMs);
  await flush();
  assert.equal(n, 2);
});
