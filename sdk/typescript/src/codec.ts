// The longconn wire protocol, version 1 (docs/PROTOCOL.md is normative): frame types,
// field tags, wire codes, and a codec for whole messages (one WebSocket message = one
// frame) and for byte streams.

/** The two magic bytes that start every frame: "LC". */
export const MAGIC = 0x4c43;
/** The protocol version this codec speaks. */
export const VERSION = 1;
/** Length of the fixed frame header. */
export const HEADER_LEN = 16;
/** Header flag: the client must answer this `Push` with a `PushAck`. */
export const FLAG_ACK_REQUIRED = 0x01;
/** The gateway's default maximum frame size (PROTOCOL.md section 7). */
export const DEFAULT_MAX_FRAME_SIZE = 65_536;
/** Longest app, device or group id in bytes. */
export const MAX_ID_LEN = 128;
/** Longest token in bytes. */
export const MAX_TOKEN_LEN = 2048;
/** Longest `MESSAGE` in bytes. */
export const MAX_MESSAGE_LEN = 1024;

/** Frame type bytes (PROTOCOL.md section 4). */
export const FrameType = {
  Login: 0x01,
  LoginAck: 0x02,
  Ping: 0x03,
  Pong: 0x04,
  Request: 0x05,
  Response: 0x06,
  Push: 0x07,
  PushAck: 0x08,
  JoinGroup: 0x09,
  JoinAck: 0x0a,
  LeaveGroup: 0x0b,
  LeaveAck: 0x0c,
  TokenExpiring: 0x0d,
  TokenRefresh: 0x0e,
  TokenRefreshAck: 0x0f,
  Kick: 0x10,
  GoAway: 0x11,
  Error: 0x12,
  Close: 0x13,
  QualityReport: 0x14,
} as const;

/** The name of a frame type, e.g. `"Push"`. */
export type FrameTypeName = keyof typeof FrameType;

const TYPE_NAMES: ReadonlyMap<number, FrameTypeName> = new Map(
  (Object.keys(FrameType) as FrameTypeName[]).map((name) => [FrameType[name], name]),
);

/** Field tags (PROTOCOL.md section 3). */
export const Tag = {
  APP: 0x01,
  DEVICE: 0x02,
  TOKEN: 0x03,
  BUSINESS: 0x04,
  META: 0x05,
  GROUP: 0x06,
  SEQ: 0x07,
  CODE: 0x08,
  MESSAGE: 0x09,
  RETRY_AFTER_MS: 0x0a,
  HEARTBEAT_MS: 0x0b,
  CONN_ID: 0x0c,
  EXPIRES_AT_MS: 0x0d,
  EPOCH: 0x0e,
  RECOVERED: 0x0f,
  NETWORK: 0x10,
} as const;

/** Wire codes of `Error`, `Kick` and `Close` (PROTOCOL.md section 5). Unknown values are kept as numbers. */
export const Code = {
  normal: 0,
  going_away: 1,
  replaced: 2,
  kicked: 3,
  login_timeout: 4,
  idle_timeout: 5,
  token_expired: 6,
  slow_consumer: 7,
  /** Over the gateway's accept rate; the Close message is `retry_after_ms=<N>`. */
  try_later: 8,
  /** The source address holds as many connections as the gateway allows. */
  source_limit: 9,
  bad_magic: 100,
  unsupported_version: 101,
  frame_too_large: 102,
  malformed_frame: 103,
  unexpected_frame: 104,
  unsupported_message: 105,
  invalid_token: 200,
  expired_token: 201,
  forbidden: 202,
  /** Too many login attempts for this device in a minute; retry with backoff. */
  login_rate_limited: 203,
  unknown_business: 300,
  backend_timeout: 301,
  backend_error: 302,
  busy: 303,
  draining: 304,
  group_limit: 310,
  group_full: 311,
  group_forbidden: 312,
  /** A `QualityReport` body that breaks PROTOCOL.md section 4.1. */
  malformed_report: 320,
  /** More requests per second than the connection may send (PROTOCOL.md, Codes). */
  rate_limited: 330,
  /** The Login's metadata is larger than the gateway accepts. */
  metadata_too_large: 331,
  internal: 500,
} as const;

const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Code).map(([name, value]) => [value, name]),
);

/** The registry name of a wire code (`"group_full"`), or `"code_<n>"` for one this SDK does not know. */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `code_${code}`;
}

/** Request and push metadata: `[key, value]` entries in wire order (keys may repeat). */
export type Meta = Array<[string, Uint8Array]>;

/** `QualityReport`'s `NETWORK` values are 0..=3. */
export const MAX_NETWORK = 3;

/** One decoded frame. Integers that are u64 on the wire are `bigint`; u32 and u16 are `number`. */
export type Frame =
  | { type: "Login"; id: number; app: string; device: string; token: Uint8Array; meta: Meta }
  | { type: "LoginAck"; id: number; connId: bigint; heartbeatMs: number; expiresAtMs: bigint | null }
  | { type: "Ping"; id: number; payload: Uint8Array }
  | { type: "Pong"; id: number; payload: Uint8Array }
  | { type: "Request"; id: number; business: number; meta: Meta; payload: Uint8Array }
  | { type: "Response"; id: number; business: number; meta: Meta; payload: Uint8Array }
  | {
      type: "Push";
      id: number;
      ackRequired: boolean;
      business: number;
      group: string | null;
      seq: bigint | null;
      epoch: bigint | null;
      meta: Meta;
      payload: Uint8Array;
    }
  | { type: "PushAck"; id: number }
  | { type: "JoinGroup"; id: number; group: string; seq?: bigint | null; epoch?: bigint | null }
  | {
      type: "JoinAck";
      id: number;
      group: string;
      seq?: bigint | null;
      epoch?: bigint | null;
      recovered?: boolean | null;
    }
  | { type: "LeaveGroup"; id: number; group: string }
  | { type: "LeaveAck"; id: number; group: string }
  | { type: "TokenExpiring"; deadlineMs: bigint }
  | { type: "TokenRefresh"; id: number; token: Uint8Array }
  | { type: "TokenRefreshAck"; id: number; expiresAtMs: bigint | null }
  | { type: "Kick"; code: number; message: string }
  | { type: "GoAway"; retryAfterMs: number; message: string }
  | { type: "Error"; id: number; code: number; message: string }
  | { type: "Close"; code: number; message: string }
  | { type: "QualityReport"; id: number; network: number; payload: Uint8Array };

/** The error kinds of PROTOCOL.md section 6 (the names of `longconn_core::DecodeError`'s variants). */
export type DecodeErrorKind =
  | "BadMagic"
  | "UnsupportedVersion"
  | "FrameTooLarge"
  | "UnknownFrameType"
  | "ReservedBits"
  | "MalformedField"
  | "DuplicateField"
  | "InvalidUtf8"
  | "MissingField"
  | "Truncated";

/** Bytes that are not a valid frame. `tag` is set for the field errors (0: the frame as a whole). */
export class DecodeError extends Error {
  readonly kind: DecodeErrorKind;
  readonly tag: number | undefined;

  constructor(kind: DecodeErrorKind, detail: string, tag?: number) {
    super(tag === undefined ? `${kind}: ${detail}` : `${kind} (tag ${tag}): ${detail}`);
    this.name = "DecodeError";
    this.kind = kind;
    this.tag = tag;
  }

  /** The wire code a receiver closes the session with (PROTOCOL.md section 6). */
  get code(): number {
    switch (this.kind) {
      case "BadMagic":
        return Code.bad_magic;
      case "UnsupportedVersion":
        return Code.unsupported_version;
      case "FrameTooLarge":
        return Code.frame_too_large;
      default:
        return Code.malformed_frame;
    }
  }
}

/** A frame that cannot be encoded: a value outside its documented limit, or too large a frame. */
export class EncodeError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = "EncodeError";
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

function hasPayload(type: FrameTypeName): boolean {
  return (
    type === "Ping" ||
    type === "Pong" ||
    type === "Request" ||
    type === "Response" ||
    type === "Push" ||
    type === "QualityReport"
  );
}

function hasId(type: FrameTypeName): boolean {
  return type !== "TokenExpiring" && type !== "Kick" && type !== "GoAway" && type !== "Close";
}

interface Header {
  type: FrameTypeName;
  flags: number;
  fieldsLen: number;
  payloadLen: number;
  id: number;
}

/**
 * Checks what of a header `buf` holds, in the order of PROTOCOL.md section 6; returns
 * `null` while fewer than 16 bytes are in.
 */
function peekHeader(buf: Uint8Array, maxFrameSize: number): Header | null {
  if (buf.length >= 2 && (buf[0] !== 0x4c || buf[1] !== 0x43)) {
    throw new DecodeError("BadMagic", `the bytes start with ${hex(buf.subarray(0, 2))}, not 4c43`);
  }
  if (buf.length >= 3 && buf[2] !== VERSION) {
    throw new DecodeError("UnsupportedVersion", `version ${buf[2]}`);
  }
  if (buf.length < HEADER_LEN) {
    return null;
  }
  const view = new DataView(buf.buffer, buf.byteOffset, HEADER_LEN);
  const fieldsLen = view.getUint16(6);
  const payloadLen = view.getUint32(8);
  const total = HEADER_LEN + fieldsLen + payloadLen;
  if (total > maxFrameSize) {
    throw new DecodeError("FrameTooLarge", `${total} bytes, more than ${maxFrameSize}`);
  }
  const type = TYPE_NAMES.get(buf[3]!);
  if (type === undefined) {
    throw new DecodeError("UnknownFrameType", `type 0x${buf[3]!.toString(16).padStart(2, "0")}`);
  }
  const flags = buf[4]!;
  const allowed = type === "Push" ? FLAG_ACK_REQUIRED : 0;
  if ((flags & ~allowed) !== 0 || buf[5] !== 0) {
    throw new DecodeError("ReservedBits", `flags 0x${flags.toString(16)}, reserved 0x${buf[5]!.toString(16)}`);
  }
  if (payloadLen !== 0 && !hasPayload(type)) {
    throw new DecodeError("MalformedField", `${type} carries no payload`, 0);
  }
  return { type, flags, fieldsLen, payloadLen, id: view.getUint32(12) };
}

interface Fields {
  app?: string;
  device?: string;
  token?: Uint8Array;
  business?: number;
  meta?: Meta;
  group?: string;
  seq?: bigint;
  code?: number;
  message?: string;
  retryAfterMs?: number;
  heartbeatMs?: number;
  connId?: bigint;
  expiresAtMs?: bigint;
  epoch?: bigint;
  network?: number;
  recovered?: boolean;
}

function text(tag: number, raw: Uint8Array): string {
  try {
    return utf8Decoder.decode(raw);
  } catch {
    throw new DecodeError("InvalidUtf8", "not UTF-8", tag);
  }
}

function idText(tag: number, raw: Uint8Array): string {
  if (raw.length < 1 || raw.length > MAX_ID_LEN) {
    throw new DecodeError("MalformedField", "an id must be 1..=128 bytes", tag);
  }
  return text(tag, raw);
}

function uint(tag: number, raw: Uint8Array, width: 1 | 2 | 4): number {
  if (raw.length !== width) {
    throw new DecodeError("MalformedField", `expected a ${width}-byte integer`, tag);
  }
  let value = 0;
  for (const byte of raw) {
    value = value * 256 + byte;
  }
  return value;
}

function u64(tag: number, raw: Uint8Array): bigint {
  if (raw.length !== 8) {
    throw new DecodeError("MalformedField", "expected an 8-byte integer", tag);
  }
  return new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0);
}

function decodeMeta(raw: Uint8Array): Meta {
  const meta: Meta = [];
  let at = 0;
  while (at < raw.length) {
    const keyLen = raw[at]!;
    if (raw.length - at - 1 < keyLen + 2) {
      throw new DecodeError("MalformedField", "metadata entry overruns the field", Tag.META);
    }
    const key = raw.subarray(at + 1, at + 1 + keyLen);
    const valueLen = (raw[at + 1 + keyLen]! << 8) | raw[at + 2 + keyLen]!;
    const valueStart = at + 3 + keyLen;
    if (raw.length - valueStart < valueLen) {
      throw new DecodeError("MalformedField", "metadata entry overruns the field", Tag.META);
    }
    if (keyLen === 0) {
      throw new DecodeError("MalformedField", "empty metadata key", Tag.META);
    }
    meta.push([text(Tag.META, key), raw.slice(valueStart, valueStart + valueLen)]);
    at = valueStart + valueLen;
  }
  return meta;
}

/** Parses and checks the fields section, field by field in wire order (steps 7 to 10). */
function parseFields(section: Uint8Array): Fields {
  const fields: Fields = {};
  const seen = new Set<number>();
  let at = 0;
  while (at < section.length) {
    const tag = section[at]!;
    if (section.length - at < 3) {
      throw new DecodeError("MalformedField", "field header overruns the fields section", tag);
    }
    const len = (section[at + 1]! << 8) | section[at + 2]!;
    const start = at + 3;
    if (len > section.length - start) {
      throw new DecodeError("MalformedField", "field value overruns the fields section", tag);
    }
    at = start + len;
    const raw = section.subarray(start, at);
    const known = (tag >= Tag.APP && tag <= Tag.RECOVERED) || tag === Tag.NETWORK;
    if (known) {
      if (seen.has(tag)) {
        throw new DecodeError("DuplicateField", "the tag appears twice", tag);
      }
      seen.add(tag);
    }
    switch (tag) {
      case Tag.APP:
        fields.app = idText(tag, raw);
        break;
      case Tag.DEVICE:
        fields.device = idText(tag, raw);
        break;
      case Tag.GROUP:
        fields.group = idText(tag, raw);
        break;
      case Tag.TOKEN:
        if (raw.length < 1 || raw.length > MAX_TOKEN_LEN) {
          throw new DecodeError("MalformedField", "a token must be 1..=2048 bytes", tag);
        }
        fields.token = raw.slice();
        break;
      case Tag.MESSAGE:
        if (raw.length > MAX_MESSAGE_LEN) {
          throw new DecodeError("MalformedField", "a message is at most 1024 bytes", tag);
        }
        fields.message = text(tag, raw);
        break;
      case Tag.META:
        fields.meta = decodeMeta(raw);
        break;
      case Tag.BUSINESS:
        fields.business = uint(tag, raw, 4);
        break;
      case Tag.RETRY_AFTER_MS:
        fields.retryAfterMs = uint(tag, raw, 4);
        break;
      case Tag.HEARTBEAT_MS:
        fields.heartbeatMs = uint(tag, raw, 4);
        break;
      case Tag.CODE:
        fields.code = uint(tag, raw, 2);
        break;
      case Tag.SEQ:
        fields.seq = u64(tag, raw);
        break;
      case Tag.EPOCH:
        fields.epoch = u64(tag, raw);
        break;
      case Tag.RECOVERED: {
        if (raw.length !== 1 || raw[0]! > 1) {
          throw new DecodeError("MalformedField", "RECOVERED is one byte, 0 or 1", tag);
        }
        fields.recovered = raw[0] === 1;
        break;
      }
      case Tag.CONN_ID:
        fields.connId = u64(tag, raw);
        break;
      case Tag.EXPIRES_AT_MS:
        fields.expiresAtMs = u64(tag, raw);
        break;
      case Tag.NETWORK: {
        const network = uint(tag, raw, 1);
        if (network > MAX_NETWORK) {
          throw new DecodeError("MalformedField", `network ${network} is not 0..=3`, tag);
        }
        fields.network = network;
        break;
      }
      default:
        // Unknown tags are skipped, so a later version-1 peer can add fields.
        break;
    }
  }
  return fields;
}

function required<T>(value: T | undefined, type: FrameTypeName, tag: number): T {
  if (value === undefined) {
    throw new DecodeError("MissingField", `${type} needs tag ${tag}`, tag);
  }
  return value;
}

/** Builds the frame from its checked header and its complete bytes. */
function fromParts(header: Header, frame: Uint8Array): Frame {
  const fieldsEnd = HEADER_LEN + header.fieldsLen;
  const f = parseFields(frame.subarray(HEADER_LEN, fieldsEnd));
  const payload = frame.slice(fieldsEnd, fieldsEnd + header.payloadLen);
  const { id, type } = header;
  const meta = f.meta ?? [];
  const message = f.message ?? "";
  switch (type) {
    case "Login":
      return {
        type,
        id,
        app: required(f.app, type, Tag.APP),
        device: required(f.device, type, Tag.DEVICE),
        token: required(f.token, type, Tag.TOKEN),
        meta,
      };
    case "LoginAck":
      return {
        type,
        id,
        connId: required(f.connId, type, Tag.CONN_ID),
        heartbeatMs: required(f.heartbeatMs, type, Tag.HEARTBEAT_MS),
        expiresAtMs: f.expiresAtMs ?? null,
      };
    case "Ping":
    case "Pong":
      return { type, id, payload };
    case "Request":
    case "Response":
      return { type, id, business: required(f.business, type, Tag.BUSINESS), meta, payload };
    case "Push":
      return {
        type,
        id,
        ackRequired: (header.flags & FLAG_ACK_REQUIRED) !== 0,
        business: required(f.business, type, Tag.BUSINESS),
        group: f.group ?? null,
        seq: f.seq ?? null,
        epoch: f.epoch ?? null,
        meta,
        payload,
      };
    case "PushAck":
      return { type, id };
    case "JoinGroup": {
      const both = f.seq !== undefined && f.epoch !== undefined;
      return {
        type,
        id,
        group: required(f.group, type, Tag.GROUP),
        seq: both ? f.seq! : null,
        epoch: both ? f.epoch! : null,
      };
    }
    case "JoinAck": {
      const both = f.seq !== undefined && f.epoch !== undefined;
      return {
        type,
        id,
        group: required(f.group, type, Tag.GROUP),
        seq: both ? f.seq! : null,
        epoch: both ? f.epoch! : null,
        recovered: f.recovered ?? null,
      };
    }
    case "LeaveGroup":
    case "LeaveAck":
      return { type, id, group: required(f.group, type, Tag.GROUP) };
    case "TokenExpiring":
      return { type, deadlineMs: required(f.expiresAtMs, type, Tag.EXPIRES_AT_MS) };
    case "TokenRefresh":
      return { type, id, token: required(f.token, type, Tag.TOKEN) };
    case "TokenRefreshAck":
      return { type, id, expiresAtMs: f.expiresAtMs ?? null };
    case "Kick":
    case "Close":
      return { type, code: required(f.code, type, Tag.CODE), message };
    case "GoAway":
      return { type, retryAfterMs: required(f.retryAfterMs, type, Tag.RETRY_AFTER_MS), message };
    case "Error":
      return { type, id, code: required(f.code, type, Tag.CODE), message };
    case "QualityReport":
      return { type, id, network: required(f.network, type, Tag.NETWORK), payload };
  }
}

/**
 * Decodes one complete frame held in `bytes`: one WebSocket message. Missing bytes are
 * `Truncated`; bytes after the frame are `MalformedField` with tag 0.
 *
 * @throws {DecodeError} the first failing check of PROTOCOL.md section 6.
 */
export function decodeMessage(bytes: Uint8Array, maxFrameSize = DEFAULT_MAX_FRAME_SIZE): Frame {
  const header = peekHeader(bytes, maxFrameSize);
  if (header === null) {
    throw new DecodeError("Truncated", `${bytes.length} bytes, less than a header`);
  }
  const len = HEADER_LEN + header.fieldsLen + header.payloadLen;
  if (bytes.length < len) {
    throw new DecodeError("Truncated", `${bytes.length} of ${len} bytes`);
  }
  if (bytes.length > len) {
    throw new DecodeError("MalformedField", "bytes after the end of the frame", 0);
  }
  return fromParts(header, bytes);
}

/**
 * Frames a byte stream (TCP, a QUIC stream): feed chunks with `push`, take frames with
 * `next` (`null`: more bytes needed), and call `end` when the stream ends. Bad input is
 * reported as early as the bytes allow.
 */
export class StreamDecoder {
  private buf = new Uint8Array(0);

  constructor(private readonly maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {}

  /** Appends received bytes. */
  push(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
  }

  /** The next whole frame, or `null` when more bytes are needed. */
  next(): Frame | null {
    const header = peekHeader(this.buf, this.maxFrameSize);
    if (header === null) {
      return null;
    }
    const len = HEADER_LEN + header.fieldsLen + header.payloadLen;
    if (this.buf.length < len) {
      return null;
    }
    const frame = this.buf.subarray(0, len);
    this.buf = this.buf.slice(len);
    return fromParts(header, frame);
  }

  /** The end of the stream: throws `Truncated` if part of a frame is left. */
  end(): void {
    if (this.buf.length > 0) {
      throw new DecodeError("Truncated", `the stream ended inside a frame (${this.buf.length} bytes)`);
    }
  }
}

/** Lowercase hex of `bytes`. */
export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) {
    out += byte.toString(16).padStart(2, "0");
  }
  return out;
}

class Writer {
  private parts: Uint8Array[] = [];
  len = 0;

  field(tag: number, value: Uint8Array): void {
    if (value.length > 0xffff) {
      throw new EncodeError(`field ${tag}: value longer than 65535 bytes`);
    }
    this.parts.push(Uint8Array.of(tag, value.length >> 8, value.length & 0xff), value);
    this.len += 3 + value.length;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.len);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

function beUint(value: number, width: 1 | 2 | 4, what: string): Uint8Array {
  const max = 2 ** (8 * width) - 1;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new EncodeError(`${what}: ${value} is not an integer in 0..=${max}`);
  }
  const out = new Uint8Array(width);
  for (let i = width - 1, v = value; i >= 0; i--, v = Math.floor(v / 256)) {
    out[i] = v % 256;
  }
  return out;
}

function beU64(value: bigint, what: string): Uint8Array {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) {
    throw new EncodeError(`${what}: ${value} is outside u64`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value);
  return out;
}

function idField(w: Writer, tag: number, value: string, what: string): void {
  const raw = utf8(value);
  if (raw.length < 1 || raw.length > MAX_ID_LEN) {
    throw new EncodeError(`${what} must be 1..=128 bytes of UTF-8`);
  }
  w.field(tag, raw);
}

function tokenField(w: Writer, token: Uint8Array): void {
  if (token.length < 1 || token.length > MAX_TOKEN_LEN) {
    throw new EncodeError("a token must be 1..=2048 bytes");
  }
  w.field(Tag.TOKEN, token);
}

function messageField(w: Writer, message: string): void {
  const raw = utf8(message);
  if (raw.length > MAX_MESSAGE_LEN) {
    throw new EncodeError("a message is at most 1024 bytes");
  }
  if (raw.length > 0) {
    w.field(Tag.MESSAGE, raw);
  }
}

function metaField(w: Writer, meta: Meta): void {
  if (meta.length === 0) {
    return;
  }
  const parts: number[] = [];
  for (const [key, value] of meta) {
    const k = utf8(key);
    if (k.length < 1 || k.length > 255) {
      throw new EncodeError("a metadata key must be 1..=255 bytes");
    }
    if (value.length > 0xffff) {
      throw new EncodeError("a metadata value is at most 65535 bytes");
    }
    parts.push(k.length, ...k, value.length >> 8, value.length & 0xff, ...value);
  }
  w.field(Tag.META, Uint8Array.from(parts));
}

/**
 * Encodes `frame` canonically: fields in ascending tag order, absent optional fields
 * (an empty message, empty metadata) left out, id 0 for types without one.
 *
 * @throws {EncodeError} a value outside its documented limit, or a frame over `maxFrameSize`.
 */
export function encodeFrame(frame: Frame, maxFrameSize = DEFAULT_MAX_FRAME_SIZE): Uint8Array {
  const w = new Writer();
  let payload: Uint8Array = new Uint8Array(0);
  let flags = 0;
  switch (frame.type) {
    case "Login":
      idField(w, Tag.APP, frame.app, "app");
      idField(w, Tag.DEVICE, frame.device, "device");
      tokenField(w, frame.token);
      metaField(w, frame.meta);
      break;
    case "LoginAck":
      w.field(Tag.HEARTBEAT_MS, beUint(frame.heartbeatMs, 4, "heartbeatMs"));
      w.field(Tag.CONN_ID, beU64(frame.connId, "connId"));
      if (frame.expiresAtMs !== null) {
        w.field(Tag.EXPIRES_AT_MS, beU64(frame.expiresAtMs, "expiresAtMs"));
      }
      break;
    case "Ping":
    case "Pong":
      payload = frame.payload;
      break;
    case "Request":
    case "Response":
      w.field(Tag.BUSINESS, beUint(frame.business, 4, "business"));
      metaField(w, frame.meta);
      payload = frame.payload;
      break;
    case "Push":
      w.field(Tag.BUSINESS, beUint(frame.business, 4, "business"));
      metaField(w, frame.meta);
      if (frame.group !== null) {
        idField(w, Tag.GROUP, frame.group, "group");
      }
      if (frame.seq !== null) {
        w.field(Tag.SEQ, beU64(frame.seq, "seq"));
      }
      if (frame.epoch !== null) {
        w.field(Tag.EPOCH, beU64(frame.epoch, "epoch"));
      }
      flags = frame.ackRequired ? FLAG_ACK_REQUIRED : 0;
      payload = frame.payload;
      break;
    case "PushAck":
      break;
    case "JoinGroup":
    case "JoinAck":
      idField(w, Tag.GROUP, frame.group, "group");
      if (frame.seq != null && frame.epoch != null) {
        w.field(Tag.SEQ, beU64(frame.seq, "seq"));
        w.field(Tag.EPOCH, beU64(frame.epoch, "epoch"));
      }
      if (frame.type === "JoinAck" && frame.recovered != null) {
        w.field(Tag.RECOVERED, Uint8Array.of(frame.recovered ? 1 : 0));
      }
      break;
    case "LeaveGroup":
    case "LeaveAck":
      idField(w, Tag.GROUP, frame.group, "group");
      break;
    case "TokenExpiring":
      w.field(Tag.EXPIRES_AT_MS, beU64(frame.deadlineMs, "deadlineMs"));
      break;
    case "TokenRefresh":
      tokenField(w, frame.token);
      break;
    case "TokenRefreshAck":
      if (frame.expiresAtMs !== null) {
        w.field(Tag.EXPIRES_AT_MS, beU64(frame.expiresAtMs, "expiresAtMs"));
      }
      break;
    case "Kick":
    case "Error":
    case "Close":
      w.field(Tag.CODE, beUint(frame.code, 2, "code"));
      messageField(w, frame.message);
      break;
    case "GoAway":
      messageField(w, frame.message);
      w.field(Tag.RETRY_AFTER_MS, beUint(frame.retryAfterMs, 4, "retryAfterMs"));
      break;
    case "QualityReport":
      if (!Number.isInteger(frame.network) || frame.network < 0 || frame.network > MAX_NETWORK) {
        throw new EncodeError(`network ${frame.network} is not 0..=3`);
      }
      w.field(Tag.NETWORK, Uint8Array.of(frame.network));
      payload = frame.payload;
      break;
  }
  if (w.len > 0xffff) {
    throw new EncodeError("the fields section exceeds 65535 bytes");
  }
  const total = HEADER_LEN + w.len + payload.length;
  if (total > maxFrameSize) {
    throw new EncodeError(`a ${total}-byte frame exceeds the maximum of ${maxFrameSize}`);
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint16(0, MAGIC);
  out[2] = VERSION;
  out[3] = FrameType[frame.type];
  out[4] = flags;
  view.setUint16(6, w.len);
  view.setUint32(8, payload.length);
  view.setUint32(12, hasId(frame.type) ? beUintCheck((frame as { id: number }).id) : 0);
  out.set(w.bytes(), HEADER_LEN);
  out.set(payload, HEADER_LEN + w.len);
  return out;
}

function beUintCheck(id: number): number {
  if (!Number.isInteger(id) || id < 0 || id > 0xffff_ffff) {
    throw new EncodeError(`id ${id} is not a u32`);
  }
  return id;
}
