// The body of a QualityReport frame (type 0x14; docs/PROTOCOL.md section 4.1): per
// transport, connect attempts and pings with their latency histograms.

/** Transport ids of a report entry, in id order. */
export const REPORT_TRANSPORTS = ["tcp", "tls", "ws", "wss", "quic"] as const;
/** A transport a report entry is about. */
export type ReportTransport = (typeof REPORT_TRANSPORTS)[number];
/** The report body version this SDK writes and reads. */
export const REPORT_VERSION = 1;
/** Largest report body, bytes. */
export const MAX_REPORT_LEN = 256;
/** Bytes of one entry. */
export const REPORT_ENTRY_LEN = 45;
/** Upper bounds (inclusive, ms) of the 10 latency buckets; the last one is open. */
export const LATENCY_BUCKETS_MS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, Infinity] as const;

/** One transport's counts since the previous report. */
export interface TransportReport {
  transport: ReportTransport;
  /** Connect attempts that ended (success or failure). */
  connectAttempts: number;
  /** Successful attempts by latency bucket (10 counts). */
  connectLatency: number[];
  /** Pings whose fate is known (answered or lost). */
  pings: number;
  /** Answered pings by round-trip bucket (10 counts). */
  rtt: number[];
}

/** A report body: the entries in ascending transport id order. */
export interface QualityReportBody {
  version: number;
  transports: TransportReport[];
}

/** Why a body breaks section 4.1 (the names of `longconn_core::protocol::ReportError`'s variants). */
export type ReportErrorKind =
  | "TooLong"
  | "Truncated"
  | "UnsupportedVersion"
  | "UnknownTransport"
  | "TransportOrder"
  | "CountsInconsistent"
  | "TrailingBytes";

/** A report body that breaks section 4.1 (decoding), or a report that cannot be written (encoding). */
export class ReportError extends Error {
  readonly kind: ReportErrorKind;

  constructor(kind: ReportErrorKind, detail: string) {
    super(`${kind}: ${detail}`);
    this.name = "ReportError";
    this.kind = kind;
  }
}

/** The bucket (0..=9) of a latency in milliseconds. */
export function latencyBucket(ms: number): number {
  const i = LATENCY_BUCKETS_MS.findIndex((bound) => ms <= bound);
  return i < 0 ? LATENCY_BUCKETS_MS.length - 1 : i;
}

const sum = (counts: number[]) => counts.reduce((a, b) => a + b, 0);

/** Decodes a report body, checking it as the gateway does. */
export function decodeQualityReport(body: Uint8Array): QualityReportBody {
  if (body.length > MAX_REPORT_LEN) {
    throw new ReportError("TooLong", `${body.length} bytes, more than ${MAX_REPORT_LEN}`);
  }
  if (body.length < 2) {
    throw new ReportError("Truncated", "no version and count");
  }
  const version = body[0]!;
  if (version !== REPORT_VERSION) {
    throw new ReportError("UnsupportedVersion", `version ${version}`);
  }
  const count = body[1]!;
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const transports: TransportReport[] = [];
  let at = 2;
  let last = -1;
  for (let n = 0; n < count; n++) {
    if (body.length - at < REPORT_ENTRY_LEN) {
      throw new ReportError("Truncated", `entry ${n} is cut short`);
    }
    const id = body[at]!;
    const transport = REPORT_TRANSPORTS[id];
    if (transport === undefined) {
      throw new ReportError("UnknownTransport", `transport id ${id}`);
    }
    if (id <= last) {
      throw new ReportError("TransportOrder", `transport id ${id} after ${last}`);
    }
    last = id;
    const u16 = (offset: number) => view.getUint16(at + offset);
    const buckets = (offset: number) => Array.from({ length: 10 }, (_, i) => u16(offset + 2 * i));
    const entry: TransportReport = {
      transport,
      connectAttempts: u16(1),
      connectLatency: buckets(3),
      pings: u16(23),
      rtt: buckets(25),
    };
    if (sum(entry.connectLatency) > entry.connectAttempts || sum(entry.rtt) > entry.pings) {
      throw new ReportError("CountsInconsistent", `${transport}: more successes than attempts`);
    }
    transports.push(entry);
    at += REPORT_ENTRY_LEN;
  }
  if (at !== body.length) {
    throw new ReportError("TrailingBytes", `${body.length - at} bytes after the last entry`);
  }
  return { version, transports };
}

/** Encodes a report body; throws `ReportError` for a report the gateway would refuse. */
export function encodeQualityReport(report: QualityReportBody): Uint8Array {
  if (report.version !== REPORT_VERSION) {
    throw new ReportError("UnsupportedVersion", `version ${report.version}`);
  }
  const out = new Uint8Array(2 + REPORT_ENTRY_LEN * report.transports.length);
  if (out.length > MAX_REPORT_LEN) {
    throw new ReportError("TooLong", `${report.transports.length} entries`);
  }
  out[0] = report.version;
  out[1] = report.transports.length;
  const view = new DataView(out.buffer);
  let last = -1;
  report.transports.forEach((entry, n) => {
    const id = REPORT_TRANSPORTS.indexOf(entry.transport);
    if (id < 0) {
      throw new ReportError("UnknownTransport", String(entry.transport));
    }
    if (id <= last) {
      throw new ReportError("TransportOrder", `${entry.transport} out of order`);
    }
    last = id;
    const counts = [entry.connectAttempts, ...entry.connectLatency, entry.pings, ...entry.rtt];
    if (
      entry.connectLatency.length !== 10 ||
      entry.rtt.length !== 10 ||
      counts.some((c) => !Number.isInteger(c) || c < 0 || c > 0xffff)
    ) {
      throw new ReportError("CountsInconsistent", `${entry.transport}: counts must be 10 buckets of u16`);
    }
    if (sum(entry.connectLatency) > entry.connectAttempts || sum(entry.rtt) > entry.pings) {
      throw new ReportError("CountsInconsistent", `${entry.transport}: more successes than attempts`);
    }
    const at = 2 + REPORT_ENTRY_LEN * n;
    out[at] = id;
    counts.forEach((c, i) => view.setUint16(at + 1 + 2 * i, c));
  });
  return out;
}
