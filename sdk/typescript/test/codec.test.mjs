// The codec against every vector of docs/protocol-vectors.json (valid and invalid), read
// by the rules in the file's `description`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import {
  DecodeError,
  EncodeError,
  StreamDecoder,
  ReportError,
  decodeMessage,
  decodeQualityReport,
  encodeFrame,
  encodeQualityReport,
  hex,
  latencyBucket,
  utf8,
} from "../dist/index.js";

// LONGCONN_VECTORS: another vector file (e.g. a branch's regenerated one).
const vectorsPath =
  process.env.LONGCONN_VECTORS ?? fileURLToPath(new URL("../../../docs/protocol-vectors.json", import.meta.url));

/** JSON numbers can be as large as 2^64-1: quote long integers before parsing, then read every integer as a BigInt. */
function loadVectors() {
  const text = readFileSync(vectorsPath, "utf8").replace(/([:[,]\s*)(\d{16,})(?=\s*[,\]}])/g, '$1"$2"');
  return JSON.parse(text);
}

const INTEGER_KEYS = new Set([
  "id",
  "flags",
  "business",
  "conn_id",
  "heartbeat_ms",
  "expires_at_ms",
  "deadline_ms",
  "seq",
  "epoch",
  "retry_after_ms",
  "code",
  "network",
]);

/** The vector's `frame`, with every integer a BigInt. */
function normalizeExpected(frame) {
  const out = {};
  for (const [key, value] of Object.entries(frame)) {
    out[key] = INTEGER_KEYS.has(key) && value !== null ? BigInt(value) : value;
  }
  return out;
}

function metaToJson(meta) {
  return meta.map(([key, value]) => {
    try {
      return [key, new TextDecoder("utf-8", { fatal: true }).decode(value)];
    } catch {
      return [key, { hex: hex(value) }];
    }
  });
}

const big = (v) => (v === null ? null : BigInt(v));

/** The SDK's frame in the vector file's form (PROTOCOL field names, hex bytes, BigInt integers). */
function toVectorForm(frame) {
  const out = { type: frame.type, flags: frame.type === "Push" && frame.ackRequired ? 1n : 0n };
  if ("id" in frame) out.id = BigInt(frame.id);
  switch (frame.type) {
    case "Login":
      Object.assign(out, { app: frame.app, device: frame.device, token_hex: hex(frame.token), meta: metaToJson(frame.meta) });
      break;
    case "LoginAck":
      Object.assign(out, { conn_id: frame.connId, heartbeat_ms: BigInt(frame.heartbeatMs), expires_at_ms: frame.expiresAtMs });
      break;
    case "Ping":
    case "Pong":
      out.payload_hex = hex(frame.payload);
      break;
    case "Request":
    case "Response":
      Object.assign(out, { business: BigInt(frame.business), meta: metaToJson(frame.meta), payload_hex: hex(frame.payload) });
      break;
    case "Push":
      Object.assign(out, {
        ack_required: frame.ackRequired,
        business: BigInt(frame.business),
        group: frame.group,
        seq: big(frame.seq),
        epoch: big(frame.epoch),
        meta: metaToJson(frame.meta),
        payload_hex: hex(frame.payload),
      });
      break;
    case "PushAck":
      break;
    case "JoinGroup":
      Object.assign(out, { group: frame.group, seq: big(frame.seq), epoch: big(frame.epoch) });
      break;
    case "JoinAck":
      Object.assign(out, {
        group: frame.group,
        seq: big(frame.seq),
        epoch: big(frame.epoch),
        recovered: frame.recovered,
      });
      break;
    case "LeaveGroup":
    case "LeaveAck":
      out.group = frame.group;
      break;
    case "TokenExpiring":
      out.deadline_ms = frame.deadlineMs;
      break;
    case "TokenRefresh":
      out.token_hex = hex(frame.token);
      break;
    case "TokenRefreshAck":
      out.expires_at_ms = frame.expiresAtMs;
      break;
    case "Kick":
    case "Close":
    case "Error":
      Object.assign(out, { code: BigInt(frame.code), message: frame.message });
      break;
    case "GoAway":
      Object.assign(out, { retry_after_ms: BigInt(frame.retryAfterMs), message: frame.message });
      break;
    case "QualityReport":
      Object.assign(out, { network: BigInt(frame.network), payload_hex: hex(frame.payload) });
      break;
    default:
      throw new Error(`unhandled type ${frame.type}`);
  }
  return out;
}

const fromHex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));

/** Feeds `bytes` to a stream decoder (at once, or one byte at a time), then ends the stream. */
function decodeStream(bytes, maxFrameSize, byteByByte) {
  const decoder = new StreamDecoder(maxFrameSize);
  const frames = [];
  const chunks = byteByByte ? [...bytes].map((b) => Uint8Array.of(b)) : [bytes];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let frame = decoder.next(); frame !== null; frame = decoder.next()) frames.push(frame);
  }
  decoder.end();
  return frames;
}

const vectors = loadVectors();
const max = Number(vectors.max_frame_size);

test("the vector file is protocol version 1 and not empty", () => {
  assert.equal(Number(vectors.protocol_version), 1);
  assert.ok(vectors.valid.length >= 70, `only ${vectors.valid.length} valid vectors`);
  assert.ok(vectors.invalid.length >= 100, `only ${vectors.invalid.length} invalid vectors`);
});

for (const v of vectors.valid) {
  test(`valid vector ${v.name}`, () => {
    const bytes = fromHex(v.hex);
    const expected = normalizeExpected(v.frame);
    const asMessage = decodeMessage(bytes, max);
    assert.deepEqual(toVectorForm(asMessage), expected, "decoded as one message");
    for (const byteByByte of [false, true]) {
      const frames = decodeStream(bytes, max, byteByByte);
      assert.equal(frames.length, 1);
      assert.deepEqual(toVectorForm(frames[0]), expected, `decoded as a stream (byte by byte: ${byteByByte})`);
    }
    const encoded = encodeFrame(asMessage, max);
    if (v.canonical) {
      assert.equal(hex(encoded), v.hex, "canonical encoding");
    } else {
      assert.notEqual(hex(encoded), v.hex, "a non-canonical vector re-encodes differently");
      assert.deepEqual(toVectorForm(decodeMessage(encoded, max)), expected, "re-encoded frame decodes the same");
    }
  });
}

for (const v of vectors.invalid) {
  test(`invalid vector ${v.name} (${v.error})`, () => {
    const bytes = fromHex(v.hex);
    const check = (fn, how) => {
      assert.throws(
        fn,
        (err) => {
          assert.ok(err instanceof DecodeError, `${how}: ${err}`);
          assert.equal(err.kind, v.error, `${how}: ${err.message}`);
          if (v.tag !== undefined) assert.equal(err.tag, Number(v.tag), `${how}: tag of ${err.message}`);
          return true;
        },
        how,
      );
    };
    assert.ok(v.decoders.length > 0);
    for (const decoder of v.decoders) {
      if (decoder === "message") {
        check(() => decodeMessage(bytes, max), "message");
      } else if (decoder === "stream") {
        check(() => decodeStream(bytes, max, false), "stream, all at once");
        check(() => decodeStream(bytes, max, true), "stream, byte by byte");
        if (v.error === "Truncated") {
          // Nothing is reported before the end of the stream.
          const d = new StreamDecoder(max);
          d.push(bytes);
          assert.equal(d.next(), null);
        }
      } else {
        assert.fail(`unknown decoder ${decoder}`);
      }
    }
  });
}

test("DecodeError maps to the wire code a receiver closes with", () => {
  assert.equal(new DecodeError("BadMagic", "").code, 100);
  assert.equal(new DecodeError("UnsupportedVersion", "").code, 101);
  assert.equal(new DecodeError("FrameTooLarge", "").code, 102);
  assert.equal(new DecodeError("MissingField", "", 4).code, 103);
});

test("QualityReport (type 0x14) round-trips and its NETWORK is 1 byte of 0..=3", () => {
  const frame = { type: "QualityReport", id: 9, network: 2, payload: utf8("rtt=40") };
  const bytes = encodeFrame(frame);
  assert.equal(bytes[3], 0x14);
  assert.equal(hex(bytes.subarray(16, 20)), "10000102");
  assert.deepEqual(decodeMessage(bytes), frame);
  assert.throws(() => encodeFrame({ ...frame, network: 4 }), EncodeError);
  const bad = Uint8Array.from(bytes);
  bad[19] = 4;
  assert.throws(() => decodeMessage(bad), (e) => e.kind === "MalformedField" && e.tag === 0x10);
  const wide = fromHex("4c4301140000000500000000000000091000020002");
  assert.throws(() => decodeMessage(wide), (e) => e.kind === "MalformedField" && e.tag === 0x10);
  const missing = fromHex("4c430114000000000000000000000009");
  assert.throws(() => decodeMessage(missing), (e) => e.kind === "MissingField" && e.tag === 0x10);
});

test("the encoder refuses what a conforming decoder must reject", () => {
  const login = { type: "Login", id: 1, app: "demo", device: "d", token: utf8("t"), meta: [] };
  assert.throws(() => encodeFrame({ ...login, app: "" }), EncodeError);
  assert.throws(() => encodeFrame({ ...login, device: "x".repeat(129) }), EncodeError);
  assert.throws(() => encodeFrame({ ...login, token: new Uint8Array(0) }), EncodeError);
  assert.throws(() => encodeFrame({ ...login, meta: [["", utf8("v")]] }), EncodeError);
  assert.throws(() => encodeFrame({ type: "Request", id: 2, business: 2 ** 32, meta: [], payload: new Uint8Array() }), EncodeError);
  assert.throws(() => encodeFrame({ type: "Ping", id: 3, payload: new Uint8Array(100) }, 64), EncodeError);
  assert.throws(() => encodeFrame({ type: "Close", code: 0, message: "m".repeat(1025) }), EncodeError);
});

test("a stream carries frames back to back", () => {
  const a = encodeFrame({ type: "Ping", id: 1, payload: utf8("a") });
  const b = encodeFrame({ type: "JoinGroup", id: 2, group: "room" });
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  const frames = decodeStream(joined, 65536, true);
  assert.deepEqual(
    frames.map((f) => f.type),
    ["Ping", "JoinGroup"],
  );
});

/** A report body in the vector file's form. */
function reportToJson(report) {
  return {
    version: report.version,
    transports: report.transports.map((e) => ({
      transport: e.transport,
      connect_attempts: e.connectAttempts,
      connect_latency: e.connectLatency,
      pings: e.pings,
      rtt: e.rtt,
    })),
  };
}

function reportFromJson(json) {
  return {
    version: Number(json.version),
    transports: json.transports.map((e) => ({
      transport: e.transport,
      connectAttempts: Number(e.connect_attempts),
      connectLatency: e.connect_latency.map(Number),
      pings: Number(e.pings),
      rtt: e.rtt.map(Number),
    })),
  };
}

const normalizeReport = (json) => reportToJson(reportFromJson(json));

// QualityReport bodies (PROTOCOL.md 4.1), when the vector file has them.
for (const v of vectors.quality_report_bodies ?? []) {
  test(`report body vector ${v.name}`, () => {
    const bytes = fromHex(v.hex);
    if (v.report !== undefined) {
      const decoded = decodeQualityReport(bytes);
      assert.deepEqual(reportToJson(decoded), normalizeReport(v.report));
      assert.equal(hex(encodeQualityReport(decoded)), v.hex, "valid bodies are canonical");
    } else {
      assert.throws(
        () => decodeQualityReport(bytes),
        (err) => err instanceof ReportError && err.kind === v.error,
      );
    }
  });
}

test("QualityReport body: the example of PROTOCOL.md 4.1, buckets and refusals", () => {
  const example =
    "0102" +
    "000003" + "0000000000010001000000000000000000000000" + "000a" + "0000000000020005000200000000000000000000" +
    "040001" + "0000000000000000000100000000000000000000" + "0000" + "0000000000000000000000000000000000000000";
  const report = decodeQualityReport(fromHex(example));
  assert.deepEqual(report.transports.map((e) => [e.transport, e.connectAttempts, e.pings]), [
    ["tcp", 3, 10],
    ["quic", 1, 0],
  ]);
  assert.equal(hex(encodeQualityReport(report)), example);
  assert.deepEqual([0, 10, 11, 5000, 5001, 1e9].map(latencyBucket), [0, 0, 1, 8, 9, 9]);
  const kind = (h) => {
    try {
      decodeQualityReport(fromHex(h));
      return "ok";
    } catch (err) {
      return err.kind;
    }
  };
  assert.equal(kind(""), "Truncated");
  assert.equal(kind("02"), "Truncated");
  assert.equal(kind("0200"), "UnsupportedVersion");
  assert.equal(kind("0100"), "ok");
  assert.equal(kind("010000"), "TrailingBytes");
  assert.equal(kind(example.slice(0, -2)), "Truncated");
  assert.equal(kind("0101" + "05" + example.slice(6, 4 + 90)), "UnknownTransport");
  assert.equal(kind("0102" + example.slice(4, 94) + example.slice(4, 94)), "TransportOrder");
  assert.equal(kind("0100" + "00".repeat(255)), "TooLong");
  const tooManyPongs = { version: 1, transports: [{ transport: "ws", connectAttempts: 0, connectLatency: Array(10).fill(0), pings: 1, rtt: [2, ...Array(9).fill(0)] }] };
  assert.throws(() => encodeQualityReport(tooManyPongs), (e) => e.kind === "CountsInconsistent");
});
