// The longconn client over WebSocket: login, heartbeat, reconnect with full jitter,
// request/response with timeouts, pushes, groups, connection state and per-group
// positions. It follows the client state table of docs/PROTOCOL.md ("Client state
// table"), as the Rust SDK's ClientSession does.

import {
  Code,
  DecodeError,
  DEFAULT_MAX_FRAME_SIZE,
  type Frame,
  MAX_NETWORK,
  type Meta,
  codeName,
  decodeMessage,
  encodeFrame,
  utf8,
} from "./codec.js";
import { type ReportTransport, REPORT_TRANSPORTS, encodeQualityReport, latencyBucket } from "./quality.js";

/** The SDK's version, sent to the control layer as `sdk_version`. */
export const SDK_VERSION = "0.1.0";

/**
 * Where a client is:
 * - `idle`: created, `connect()` not called yet;
 * - `connecting`: asking the control layer (if any) and opening the WebSocket;
 * - `loggingIn`: connected, token being fetched, `Login` sent, `LoginAck` awaited;
 * - `connected`: logged in; calls, pushes and heartbeats flow;
 * - `draining`: the gateway sent `GoAway`; as `connected` until it closes;
 * - `waiting`: the connection ended; reconnecting after a delay;
 * - `closed`: stopped for good (`close()`, kicked, refused, out of attempts).
 */
export type ConnectionState =
  | "idle"
  | "connecting"
  | "loggingIn"
  | "connected"
  | "draining"
  | "waiting"
  | "closed";

/** Why a connection (or an attempt) ended. */
export type EndReason =
  | { kind: "dialFailed"; detail: string }
  | { kind: "transportEnded"; wsCode: number }
  | { kind: "droppedByApp" }
  | { kind: "tokenUnavailable"; detail: string }
  | { kind: "loginRefused"; code: number }
  | { kind: "loginTimeout" }
  | { kind: "heartbeatLost" }
  | { kind: "closedByGateway"; code: number; message: string }
  | { kind: "kicked"; code: number; message: string }
  | { kind: "protocolError"; code: number; detail: string }
  | { kind: "closedByApp" };

/** What a state change carries: the new state, and for `waiting`/`closed` why and for how long. */
export interface StateChange {
  state: ConnectionState;
  /** Set when a connection or attempt ended. */
  reason?: EndReason;
  /** `waiting`: the delay before the next attempt, in milliseconds. */
  retryInMs?: number;
  /** `connected`: the gateway's connection id. */
  connId?: bigint;
}

/** A push from the gateway. */
export interface Push {
  business: number;
  /** The group it was published to, or `null` for a push to this device. */
  group: string | null;
  /** Position in the group's log: `seq` within `epoch` (both `null` outside groups). */
  seq: bigint | null;
  epoch: bigint | null;
  meta: Meta;
  payload: Uint8Array;
  /**
   * Group pushes: `true` when `seq` skipped values within the same epoch since the last
   * push this client saw for the group, i.e. pushes were missed (while disconnected).
   */
  gap: boolean;
}

/** A group's last seen position: the `(epoch, seq)` of the last push received for it. */
export interface Position {
  epoch: bigint | null;
  seq: bigint;
}

/** A backend's answer to `request`. */
export interface Response {
  business: number;
  meta: Meta;
  payload: Uint8Array;
}

/** A call failed. `code` is a wire code (PROTOCOL.md section 5) or one of the SDK's own reasons. */
export class CallError extends Error {
  /**
   * - `"rejected"`: the gateway answered `Error` (see `code`);
   * - `"timeout"`: no answer within the call's timeout;
   * - `"abandoned"`: the connection ended while the call was open;
   * - `"notConnected"`: called while waiting to reconnect;
   * - `"closed"`: the client is closed.
   */
  readonly reason: "rejected" | "timeout" | "abandoned" | "notConnected" | "closed";
  /** The wire code for `rejected`, else `undefined`. */
  readonly code: number | undefined;

  constructor(reason: CallError["reason"], message: string, code?: number) {
    super(message);
    this.name = "CallError";
    this.reason = reason;
    this.code = code;
  }
}

/** The part of the browser's `WebSocket` this SDK uses. */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** Timers, clock and randomness: the browser's by default; tests pass a simulated clock. */
export interface Environment {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Uniform in [0, 1). */
  random(): number;
}

/** A token, or a function that fetches one (called before every login and on `TokenExpiring`). */
export type TokenSource = string | Uint8Array | (() => Promise<string | Uint8Array>);

/** Control-layer settings (docs/CONTROL.md): the client asks `POST {url}/v1/access` before connecting. */
export interface ControlOptions {
  /** Base URL of the control layer, e.g. `http://127.0.0.1:7190`. */
  url: string;
  /** Reported platform (default `web`). */
  platform?: string;
  /** Reported app version (default `0.0.0`). */
  appVersion?: string;
  /** Reported network (default `unknown`). */
  network?: "wifi" | "cellular" | "unknown";
}

/** Options of `new Client(...)`. Every duration is in milliseconds. */
export interface ClientOptions {
  /** App id. */
  app: string;
  /** Device id, unique within the app; a second login of the same device replaces the first. */
  device: string;
  /** The gateway's WebSocket URL (`ws://host:7101/ws`). Not needed with `control`. */
  url?: string;
  /** The login token (or how to fetch one). Not needed with `control`, which issues tokens. */
  token?: TokenSource;
  /** Ask the control layer for endpoints and a token instead of `url` and `token`. */
  control?: ControlOptions;
  /** Login metadata (`META` of `Login`). */
  meta?: Record<string, string>;
  /** Upper bound of the ping interval (the gateway's `LoginAck` interval applies if smaller). Default 30,000. */
  heartbeatMs?: number;
  /** No `Pong` within this long after a `Ping`: the connection is dead. Default 2 x the heartbeat. */
  pongTimeoutMs?: number;
  /** Reconnect backoff: attempt n waits uniform [0, min(capMs, baseMs * 2^n)]. Defaults 1,000 and 30,000. */
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** Stop after this many failed attempts in a row (default: never stop). */
  maxAttempts?: number;
  /** Default timeout of `request`, `join` and `leave`. Default 10,000. */
  requestTimeoutMs?: number;
  /** Dial (WebSocket open) timeout. Default 10,000. */
  connectTimeoutMs?: number;
  /** From the socket's open to `LoginAck`. Default 10,000. */
  loginTimeoutMs?: number;
  /** Largest frame sent or accepted. Default 65,536. */
  maxFrameSize?: number;
  /** The WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocket?: new (url: string) => SocketLike;
  /** `fetch` for the control layer (default `globalThis.fetch`). */
  fetch?: (url: string, init: { method: string; headers: Record<string, string>; body: string }) => Promise<{
    ok: boolean;
    status: number;
    json(): Promise<unknown>;
  }>;
  /** Timers and randomness (default the global ones). */
  env?: Environment;
  /**
   * Send a `QualityReport` (PROTOCOL.md 4.1: connect attempts and heartbeat round trips
   * per transport) this often while connected. Default off: a gateway without
   * `QualityReport` support closes the session on it.
   */
  qualityReportMs?: number;
  /** The `NETWORK` of quality reports: 0 unknown (default), 1 wifi, 2 cellular, 3 wired. */
  network?: number;
}

/** Events a client emits; subscribe with `client.on(name, listener)`. */
export interface ClientEvents {
  /** Every state change. */
  state: (change: StateChange) => void;
  /** Every push (group pushes also go to the group's listener given to `join`). */
  push: (push: Push) => void;
  /** A group joined before a reconnect could not be joined again; it is forgotten. */
  rejoinFailed: (group: string, code: number) => void;
  /**
   * A group was joined again after a reconnect, from its last position. `recovered`: the
   * pushes missed meanwhile follow, in order (the gateway kept them); otherwise resync.
   */
  rejoined: (group: string, recovered: boolean) => void;
  /** The gateway says the token expires at `deadlineMs`; the SDK refreshes it from the token source. */
  tokenExpiring: (deadlineMs: bigint) => void;
}

const defaultEnv: Environment = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
  random: () => Math.random(),
};

interface OpenCall {
  /** `silent`: a token refresh or a quality report, whose answer nobody awaits. */
  kind: "request" | "join" | "leave" | "silent";
  group?: string;
  /** `join`: the group's listener, registered when the `JoinAck` arrives. */
  listener?: GroupListener;
  /** `join` sent by the client itself after a reconnect. */
  rejoin?: boolean;
  timer: unknown;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

interface HeldCall {
  frame: Frame;
  call: OpenCall;
}

interface Access {
  endpoints: string[];
  token: string;
  expiresAtMs: number;
  heartbeatMs: number;
  baseMs: number;
  capMs: number;
  reaccessAfter: number;
}

type GroupListener = (push: Push) => void;

/**
 * A longconn client. It connects on `connect()`, logs in, keeps the connection alive,
 * and reconnects with full jitter until `close()`, rejoining its groups each time.
 *
 * ```ts
 * const client = new Client({ url: "ws://127.0.0.1:7101/ws", app: "demo", device: "tab-1", token });
 * client.on("state", (s) => console.log(s.state));
 * client.connect();
 * await client.join("room", (push) => console.log(new TextDecoder().decode(push.payload)));
 * const answer = await client.request(7, "hello", { meta: { group: "room" } });
 * ```
 */
export class Client {
  private readonly opts: ClientOptions;
  private readonly env: Environment;
  private readonly maxFrame: number;
  private readonly listeners: { [K in keyof ClientEvents]: Set<ClientEvents[K]> } = {
    state: new Set(),
    push: new Set(),
    rejoinFailed: new Set(),
    rejoined: new Set(),
    tokenExpiring: new Set(),
  };
  private _state: ConnectionState = "idle";
  private socket: SocketLike | null = null;
  /** Bumped for every connection attempt; callbacks of an older socket are ignored. */
  private generation = 0;
  private nextId = 2;
  private readonly calls = new Map<number, OpenCall>();
  private held: HeldCall[] = [];
  /** Joined groups (kept across reconnects) and their listeners. */
  private readonly groups = new Map<string, GroupListener | undefined>();
  private readonly _positions = new Map<string, Position>();
  /** Failed attempts since the last successful login. */
  private attempt = 0;
  private expiredRetried = false;
  private goAwayRetryMs: number | null = null;
  private heartbeatMs = 30_000;
  private pingId: number | null = null;
  private heartbeatTimer: unknown = null;
  private pongTimer: unknown = null;
  private phaseTimer: unknown = null;
  private reconnectTimer: unknown = null;
  private qualityTimer: unknown = null;
  private renewTimer: unknown = null;
  private readonly quality = new QualityCounters();
  /** The transport of the current or last attempt. */
  private transport: ReportTransport = "ws";
  private attemptStartedAt: number | null = null;
  private pingSentAt = 0;
  private access: Access | null = null;
  private endpointIndex = 0;
  private failuresSinceAccess = 0;
  private _connId: bigint | null = null;

  constructor(options: ClientOptions) {
    if (!options.url && !options.control) {
      throw new TypeError("give `url` (with `token`) or `control`");
    }
    if (options.url && !options.control && options.token === undefined) {
      throw new TypeError("`token` is required with `url` (or use `control`)");
    }
    this.opts = options;
    this.env = options.env ?? defaultEnv;
    this.maxFrame = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  }

  /** The current state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** The gateway's id for the current connection, while connected. */
  get connId(): bigint | null {
    return this._connId;
  }

  /** The groups this client is in (rejoined after every reconnect). */
  get joinedGroups(): string[] {
    return [...this.groups.keys()];
  }

  /**
   * The last `(epoch, seq)` received for `group`, kept across reconnects: what a rejoin
   * resumes from. A gateway keeping the group's history replays the missed pushes (the
   * `rejoined` event says `recovered`); otherwise a gap is reported through `Push.gap`.
   */
  position(group: string): Position | undefined {
    return this._positions.get(group);
  }

  /** Every group's last position. */
  positions(): Map<string, Position> {
    return new Map(this._positions);
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => {
      this.listeners[event].delete(listener);
    };
  }

  /** Starts connecting (once). */
  connect(): void {
    if (this._state !== "idle") {
      return;
    }
    this.dial();
  }

  /** Sends `Close {normal}` if connected and stops for good; open calls fail with `abandoned`. */
  close(): void {
    if (this._state === "closed") {
      return;
    }
    if (this.isConnected()) {
      this.sendFrame({ type: "Close", code: Code.normal, message: "" });
    }
    this.teardown();
    this.failAll("closed", "the client was closed");
    this.setState({ state: "closed", reason: { kind: "closedByApp" } });
  }

  /**
   * Drops the current connection without a goodbye, as a network loss would (for tests
   * and demos): the client reconnects with backoff and rejoins its groups.
   */
  dropConnection(): void {
    if (this.socket === null || this._state === "closed" || this._state === "waiting") {
      return;
    }
    this.connectionEnded({ kind: "droppedByApp" });
  }

  /**
   * Sends a request to the backend of `business`; resolves with its `Response`, rejects
   * with a `CallError` (`rejected` with the gateway's code, `timeout`, `abandoned`,
   * `notConnected` while waiting to reconnect, `closed`). Calls made while connecting
   * are sent once logged in.
   */
  request(
    business: number,
    payload: Uint8Array | string,
    options: { meta?: Record<string, string> | Meta; timeoutMs?: number } = {},
  ): Promise<Response> {
    const body = typeof payload === "string" ? utf8(payload) : payload;
    return this.call("request", (id) => ({
      type: "Request",
      id,
      business,
      meta: toMeta(options.meta),
      payload: body,
    }), options.timeoutMs) as Promise<Response>;
  }

  /**
   * Joins `group`; `listener` gets the group's pushes. The group is rejoined after every
   * reconnect until `leave`. Rejects with a `CallError` (`group_full`, `group_limit`,
   * `group_forbidden`, ...).
   */
  async join(group: string, listener?: GroupListener, options: { timeoutMs?: number } = {}): Promise<void> {
    await this.call("join", (id) => ({ type: "JoinGroup", id, group }), options.timeoutMs, group, listener);
  }

  /** Leaves `group` and forgets its listener and position. */
  async leave(group: string, options: { timeoutMs?: number } = {}): Promise<void> {
    await this.call("leave", (id) => ({ type: "LeaveGroup", id, group }), options.timeoutMs, group);
  }

  // ---- internals -------------------------------------------------------------------

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const listener of [...this.listeners[event]]) {
      try {
        (listener as (...a: Parameters<ClientEvents[K]>) => void)(...args);
      } catch (err) {
        // A failing listener must not break the connection.
        console.error(`longconn: a "${event}" listener threw`, err);
      }
    }
  }

  private setState(change: StateChange): void {
    this._state = change.state;
    this.emit("state", change);
  }

  private isConnected(): boolean {
    return this._state === "loggingIn" || this._state === "connected" || this._state === "draining";
  }

  private allocateId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff_ffff ? 2 : this.nextId + 1;
      if (!this.calls.has(id) && id !== this.pingId) {
        return id;
      }
    }
  }

  private call(
    kind: OpenCall["kind"],
    build: (id: number) => Frame,
    timeoutMs: number | undefined,
    group?: string,
    listener?: GroupListener,
  ): Promise<unknown> {
    if (this._state === "closed") {
      return Promise.reject(new CallError("closed", "the client is closed"));
    }
    if (this._state === "waiting") {
      return Promise.reject(new CallError("notConnected", "not connected; reconnecting"));
    }
    return new Promise((resolve, reject) => {
      const id = this.allocateId();
      const frame = build(id);
      // Encode now, so a bad argument fails this call and nothing else.
      try {
        encodeFrame(frame, this.maxFrame);
      } catch (err) {
        reject(err);
        return;
      }
      const ms = timeoutMs ?? this.opts.requestTimeoutMs ?? 10_000;
      const call: OpenCall = {
        kind,
        timer: null,
        resolve,
        reject,
        ...(group === undefined ? {} : { group }),
        ...(listener === undefined ? {} : { listener }),
      };
      call.timer = this.env.setTimeout(() => {
        this.calls.delete(id);
        this.held = this.held.filter((h) => h.call !== call);
        reject(new CallError("timeout", `no answer within ${ms} ms`));
      }, ms);
      this.calls.set(id, call);
      if (this._state === "connected" || this._state === "draining") {
        this.sendFrame(frame);
      } else {
        // Connecting or logging in: held until LoginAck (in order).
        this.held.push({ frame, call });
      }
    });
  }

  private settle(id: number): OpenCall | undefined {
    const call = this.calls.get(id);
    if (call !== undefined) {
      this.calls.delete(id);
      this.env.clearTimeout(call.timer);
    }
    return call;
  }

  private failAll(reason: CallError["reason"], message: string): void {
    for (const [id, call] of [...this.calls]) {
      if (call.kind === "silent") {
        this.settle(id);
        continue;
      }
      this.settle(id);
      call.reject(new CallError(reason, message));
    }
    this.held = [];
  }

  private sendFrame(frame: Frame): void {
    const socket = this.socket;
    if (socket === null) {
      return;
    }
    try {
      socket.send(encodeFrame(frame, this.maxFrame));
    } catch (err) {
      console.error("longconn: could not send a frame", err);
    }
  }

  private clearTimer(
    name: "heartbeatTimer" | "pongTimer" | "phaseTimer" | "reconnectTimer" | "qualityTimer" | "renewTimer",
  ): void {
    if (this[name] !== null) {
      this.env.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  /** Forgets the socket (closing it) and every connection timer. */
  private teardown(): void {
    this.generation++;
    if (this.pingId !== null) {
      this.quality.ping(this.transport, null);
    }
    for (const t of ["heartbeatTimer", "pongTimer", "phaseTimer", "reconnectTimer", "qualityTimer", "renewTimer"] as const) {
      this.clearTimer(t);
    }
    this.pingId = null;
    this._connId = null;
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    }
  }

  private dial(): void {
    this.setState({ state: "connecting" });
    const generation = ++this.generation;
    if (this.opts.control === undefined) {
      this.open(this.opts.url!);
      return;
    }
    void this.resolveEndpoint().then(
      (url) => {
        if (generation !== this.generation) {
          return;
        }
        this.open(url);
      },
      (err: unknown) => {
        if (generation !== this.generation) {
          return;
        }
        this.connectionEnded({ kind: "dialFailed", detail: `control layer: ${String(err)}` });
      },
    );
  }

  private async resolveEndpoint(): Promise<string> {
    const control = this.opts.control;
    if (control === undefined) {
      return this.opts.url!;
    }
    const expired = this.access !== null && this.access.expiresAtMs <= this.env.now();
    const reaccess =
      this.access !== null &&
      this.failuresSinceAccess >= Math.max(this.access.reaccessAfter, this.access.endpoints.length);
    if (this.access === null || expired || reaccess) {
      this.access = await this.fetchAccess(control);
      this.endpointIndex = 0;
      this.failuresSinceAccess = 0;
    }
    const endpoints = this.access.endpoints;
    return endpoints[this.endpointIndex % endpoints.length]!;
  }

  private async fetchAccess(control: ControlOptions): Promise<Access> {
    const fetchFn = this.opts.fetch ?? (globalThis.fetch as unknown as ClientOptions["fetch"]);
    if (fetchFn === undefined) {
      throw new Error("no fetch() to reach the control layer");
    }
    const response = await fetchFn(`${control.url.replace(/\/$/, "")}/v1/access`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        app: this.opts.app,
        device: this.opts.device,
        platform: control.platform ?? "web",
        app_version: control.appVersion ?? "0.0.0",
        sdk_version: SDK_VERSION,
        network: control.network ?? "unknown",
      }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (!response.ok) {
      const error = body["error"] as { code?: string; message?: string } | undefined;
      throw new Error(`POST /v1/access: ${response.status} ${error?.code ?? ""} ${error?.message ?? ""}`.trim());
    }
    return parseAccess(body);
  }

  private open(url: string): void {
    const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: new (url: string) => SocketLike }).WebSocket;
    if (Ctor === undefined) {
      this.connectionEnded({ kind: "dialFailed", detail: "no WebSocket implementation" });
      return;
    }
    let socket: SocketLike;
    try {
      socket = new Ctor(url);
    } catch (err) {
      this.connectionEnded({ kind: "dialFailed", detail: String(err) });
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.transport = url.startsWith("wss:") ? "wss" : "ws";
    this.attemptStartedAt = this.env.now();
    const generation = this.generation;
    const current = () => generation === this.generation;
    this.phaseTimer = this.env.setTimeout(() => {
      if (current()) {
        this.connectionEnded({ kind: "dialFailed", detail: "connect timeout" });
      }
    }, this.opts.connectTimeoutMs ?? 10_000);
    socket.onopen = () => {
      if (current()) {
        this.opened();
      }
    };
    socket.onmessage = (ev) => {
      if (current()) {
        this.received(ev.data);
      }
    };
    socket.onclose = (ev) => {
      if (!current()) {
        return;
      }
      if (this._state === "connecting") {
        this.connectionEnded({ kind: "dialFailed", detail: `WebSocket closed (${ev.code})` });
      } else {
        this.connectionEnded({ kind: "transportEnded", wsCode: ev.code });
      }
    };
    // An error is followed by close; the close decides.
    socket.onerror = () => {};
  }

  private opened(): void {
    this.clearTimer("phaseTimer");
    this.setState({ state: "loggingIn" });
    const generation = this.generation;
    this.phaseTimer = this.env.setTimeout(() => {
      if (generation === this.generation) {
        this.sendFrame({ type: "Close", code: Code.login_timeout, message: "" });
        this.connectionEnded({ kind: "loginTimeout" });
      }
    }, this.opts.loginTimeoutMs ?? 10_000);
    this.fetchToken().then(
      (token) => {
        if (generation !== this.generation) {
          return;
        }
        const meta = toMeta(this.opts.meta);
        this.sendFrame({ type: "Login", id: 1, app: this.opts.app, device: this.opts.device, token, meta });
      },
      (err: unknown) => {
        if (generation === this.generation) {
          this.connectionEnded({ kind: "tokenUnavailable", detail: String(err) });
        }
      },
    );
  }

  private async fetchToken(): Promise<Uint8Array> {
    let token: string | Uint8Array;
    if (this.opts.token !== undefined) {
      token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    } else if (this.access !== null) {
      token = this.access.token;
    } else {
      throw new Error("no token source");
    }
    return typeof token === "string" ? utf8(token) : token;
  }

  private received(data: unknown): void {
    if (typeof data === "string") {
      this.protocolError(Code.unsupported_message, "a text message is not a frame");
      return;
    }
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
    let frame: Frame;
    try {
      frame = decodeMessage(bytes, this.maxFrame);
    } catch (err) {
      if (err instanceof DecodeError) {
        this.protocolError(err.code, err.message);
        return;
      }
      throw err;
    }
    this.handleFrame(frame);
  }

  private protocolError(code: number, detail: string): void {
    this.sendFrame({ type: "Close", code, message: "" });
    this.connectionEnded({ kind: "protocolError", code, detail });
  }

  private handleFrame(frame: Frame): void {
    // Any connected state (CX1, CX2, CX3).
    switch (frame.type) {
      case "Ping":
        this.sendFrame({ type: "Pong", id: frame.id, payload: frame.payload });
        return;
      case "Kick":
        this.connectionEnded({ kind: "kicked", code: frame.code, message: frame.message });
        return;
      default:
        break;
    }
    if (this._state === "loggingIn") {
      this.handleLoggingIn(frame);
    } else {
      this.handleLoggedIn(frame);
    }
  }

  private handleLoggingIn(frame: Frame): void {
    if (frame.type === "LoginAck") {
      this.clearTimer("phaseTimer");
      this.attempt = 0;
      this.expiredRetried = false;
      this.goAwayRetryMs = null;
      this.failuresSinceAccess = 0;
      this._connId = frame.connId;
      if (this.attemptStartedAt !== null) {
        this.quality.connect(this.transport, this.env.now() - this.attemptStartedAt);
        this.attemptStartedAt = null;
      }
      const cap = this.access?.heartbeatMs ?? this.opts.heartbeatMs ?? 30_000;
      this.heartbeatMs = Math.max(100, Math.min(frame.heartbeatMs || cap, cap));
      this.setState({ state: "connected", connId: frame.connId });
      // Rejoin every group, then the held calls in order (CL3).
      for (const group of this.groups.keys()) {
        this.rejoin(group);
      }
      const held = this.held;
      this.held = [];
      for (const h of held) {
        if (this.calls.has(frameId(h.frame))) {
          this.sendFrame(h.frame);
        }
      }
      this.scheduleHeartbeat();
      this.scheduleQualityReport();
      this.scheduleRenewal(frame.expiresAtMs);
      return;
    }
    if (frame.type === "Close") {
      this.loginClosed(frame.code, frame.message);
      return;
    }
    if (frame.type === "Pong") {
      return;
    }
    this.protocolError(Code.unexpected_frame, `${frame.type} before LoginAck`);
  }

  private loginClosed(code: number, message: string): void {
    this.connectionEnded(
      code === Code.invalid_token || code === Code.forbidden || code === Code.expired_token
        ? { kind: "loginRefused", code }
        : { kind: "closedByGateway", code, message },
    );
  }

  private rejoin(group: string): void {
    const id = this.allocateId();
    const since = this._positions.get(group);
    const call: OpenCall = {
      kind: "join",
      group,
      rejoin: true,
      timer: null,
      resolve: () => {},
      reject: (err) => {
        if (err instanceof CallError && err.reason === "rejected") {
          this.groups.delete(group);
          this.emit("rejoinFailed", group, err.code ?? Code.internal);
        }
      },
    };
    this.calls.set(id, call);
    // Rejoin from the last position: a gateway with the group's history replays what
    // was missed (PROTOCOL.md, "Recovery").
    const position = since !== undefined && since.epoch !== null ? since : null;
    this.sendFrame({ type: "JoinGroup", id, group, seq: position?.seq ?? null, epoch: position?.epoch ?? null });
  }

  private handleLoggedIn(frame: Frame): void {
    switch (frame.type) {
      case "Pong":
        if (frame.id === this.pingId) {
          this.pingId = null;
          this.clearTimer("pongTimer");
          this.quality.ping(this.transport, this.env.now() - this.pingSentAt);
        }
        return;
      case "Response": {
        const call = this.settle(frame.id);
        call?.resolve({ business: frame.business, meta: frame.meta, payload: frame.payload });
        return;
      }
      case "Error": {
        const call = this.settle(frame.id);
        call?.reject(
          new CallError("rejected", `${codeName(frame.code)}${frame.message ? `: ${frame.message}` : ""}`, frame.code),
        );
        return;
      }
      case "JoinAck": {
        // The listener is in place before the next frame (a push may follow at once).
        const call = this.settle(frame.id);
        // A rejoin (no listener of its own) keeps the listener the group has.
        if (call?.group !== undefined && (call.listener !== undefined || !this.groups.has(call.group))) {
          this.groups.set(call.group, call.listener);
        }
        if (call?.group !== undefined && frame.seq != null && frame.epoch != null && !frame.recovered) {
          // A first join to a group with history, or a rejoin not recovered: the ack's
          // position is the base the next rejoin resumes from.
          this._positions.set(call.group, { epoch: frame.epoch, seq: frame.seq });
        }
        call?.resolve(undefined);
        if (call?.rejoin === true && call.group !== undefined) {
          this.emit("rejoined", call.group, frame.recovered === true);
        }
        return;
      }
      case "LeaveAck": {
        const call = this.settle(frame.id);
        if (call?.group !== undefined) {
          this.groups.delete(call.group);
          this._positions.delete(call.group);
        }
        call?.resolve(undefined);
        return;
      }
      case "TokenRefreshAck":
        this.settle(frame.id)?.resolve(frame.expiresAtMs);
        return;
      case "Push":
        this.deliver(frame);
        return;
      case "TokenExpiring":
        this.emit("tokenExpiring", frame.deadlineMs);
        this.refreshToken();
        return;
      case "GoAway":
        this.goAwayRetryMs = frame.retryAfterMs;
        if (this._state === "connected") {
          this.setState({ state: "draining" });
        }
        return;
      case "Close":
        this.connectionEnded({ kind: "closedByGateway", code: frame.code, message: frame.message });
        return;
      default:
        // LoginAck again, or a frame only a client sends (CA11).
        this.protocolError(Code.unexpected_frame, `unexpected ${frame.type}`);
    }
  }

  private deliver(frame: Extract<Frame, { type: "Push" }>): void {
    let gap = false;
    if (frame.group !== null && frame.seq !== null) {
      const last = this._positions.get(frame.group);
      if (last !== undefined && last.epoch === frame.epoch && frame.seq > last.seq + 1n) {
        gap = true;
      }
      this._positions.set(frame.group, { epoch: frame.epoch, seq: frame.seq });
    }
    const push: Push = {
      business: frame.business,
      group: frame.group,
      seq: frame.seq,
      epoch: frame.epoch,
      meta: frame.meta,
      payload: frame.payload,
      gap,
    };
    this.emit("push", push);
    if (frame.group !== null) {
      const listener = this.groups.get(frame.group);
      if (listener !== undefined) {
        try {
          listener(push);
        } catch (err) {
          console.error("longconn: a group listener threw", err);
        }
      }
    }
    if (frame.ackRequired) {
      this.sendFrame({ type: "PushAck", id: frame.id });
    }
  }

  /**
   * Fetches a fresh token (the token function; with the control layer
   * `/v1/token/refresh`, else `/v1/access`) and hands it to the gateway in band
   * (`TokenRefresh`, PROTOCOL.md CA8/CA13). Its `TokenRefreshAck` schedules the next
   * renewal.
   */
  private refreshToken(): void {
    const generation = this.generation;
    const refresh = async () => {
      const control = this.opts.control;
      if (control !== undefined && this.opts.token === undefined && this.access !== null) {
        try {
          await this.renewAccessToken(control);
        } catch {
          this.access = await this.fetchAccess(control);
        }
      }
      return this.fetchToken();
    };
    refresh().then(
      (token) => {
        if (generation !== this.generation) {
          return;
        }
        const id = this.allocateId();
        this.silentCall(id, (expiresAtMs) => {
          if (generation === this.generation) {
            this.scheduleRenewal(expiresAtMs);
          }
        });
        this.sendFrame({ type: "TokenRefresh", id, token });
      },
      (err: unknown) => console.error("longconn: token refresh failed", err),
    );
  }

  /** `POST /v1/token/refresh` with the current token (docs/CONTROL.md). */
  private async renewAccessToken(control: ControlOptions): Promise<void> {
    const fetchFn = this.opts.fetch ?? (globalThis.fetch as unknown as ClientOptions["fetch"]);
    if (fetchFn === undefined || this.access === null) {
      throw new Error("no fetch() or no token to renew");
    }
    const response = await fetchFn(`${control.url.replace(/\/$/, "")}/v1/token/refresh`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: this.access.token }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    const token = body["token"];
    const expires = body["expires_at_unix_s"];
    if (!response.ok || typeof token !== "string" || typeof expires !== "number") {
      throw new Error(`POST /v1/token/refresh: ${response.status}`);
    }
    this.access = { ...this.access, token, expiresAtMs: expires * 1000 };
  }

  /**
   * Renews the token at 80 % of its remaining lifetime (`LoginAck` or `TokenRefreshAck`
   * say when it expires), when the token can be fetched again (a token function or the
   * control layer); a fixed token is left to the gateway's `TokenExpiring`.
   */
  private scheduleRenewal(expiresAtMs: bigint | null): void {
    this.clearTimer("renewTimer");
    const renewable = typeof this.opts.token === "function" || (this.opts.control !== undefined && this.opts.token === undefined);
    if (expiresAtMs === null || !renewable) {
      return;
    }
    const left = Number(expiresAtMs) - this.env.now();
    if (!(left > 0)) {
      return;
    }
    const generation = this.generation;
    this.renewTimer = this.env.setTimeout(() => {
      this.renewTimer = null;
      if (generation === this.generation) {
        this.refreshToken();
      }
    }, Math.floor(left * 0.8));
  }

  private scheduleQualityReport(): void {
    const every = this.opts.qualityReportMs;
    if (every === undefined || every <= 0) {
      return;
    }
    const generation = this.generation;
    this.qualityTimer = this.env.setTimeout(() => {
      if (generation !== this.generation) {
        return;
      }
      this.qualityTimer = null;
      this.sendQualityReport();
      this.scheduleQualityReport();
    }, every);
  }

  /** Sends what was measured since the last report (nothing if nothing was), then starts counting again. */
  private sendQualityReport(): void {
    const report = this.quality.take();
    if (report.transports.length === 0) {
      return;
    }
    const network = this.opts.network ?? 0;
    const id = this.allocateId();
    this.silentCall(id);
    this.sendFrame({
      type: "QualityReport",
      id,
      network: Number.isInteger(network) && network >= 0 && network <= MAX_NETWORK ? network : 0,
      payload: encodeQualityReport(report),
    });
  }

  /** Registers `id` as a call whose answer (an ack or an `Error`) is dropped, so no later call reuses it meanwhile. */
  private silentCall(id: number, onAck: (value: bigint | null) => void = () => {}): void {
    const ms = this.opts.requestTimeoutMs ?? 10_000;
    const call: OpenCall = {
      kind: "silent",
      timer: null,
      resolve: (value) => onAck((value ?? null) as bigint | null),
      reject: () => {},
    };
    call.timer = this.env.setTimeout(() => this.calls.delete(id), ms);
    this.calls.set(id, call);
  }

  private scheduleHeartbeat(): void {
    this.clearTimer("heartbeatTimer");
    const generation = this.generation;
    this.heartbeatTimer = this.env.setTimeout(() => {
      if (generation !== this.generation) {
        return;
      }
      this.heartbeatTimer = null;
      if (this.pingId === null) {
        this.pingId = this.allocateId();
        this.pingSentAt = this.env.now();
        this.sendFrame({ type: "Ping", id: this.pingId, payload: new Uint8Array(0) });
        const pongMs = this.opts.pongTimeoutMs ?? 2 * this.heartbeatMs;
        this.pongTimer = this.env.setTimeout(() => {
          if (generation === this.generation) {
            this.attempt = 0;
            this.connectionEnded({ kind: "heartbeatLost" });
          }
        }, pongMs);
      }
      this.scheduleHeartbeat();
    }, this.heartbeatMs);
  }

  /** Every end of a connection or attempt: decide between reconnecting and stopping. */
  private connectionEnded(reason: EndReason): void {
    const wasDraining = this._state === "draining";
    const wasLoggedIn = this._state === "connected" || wasDraining;
    if (this.attemptStartedAt !== null) {
      this.quality.connect(this.transport, null);
      this.attemptStartedAt = null;
    }
    this.teardown();
    this.failAll("abandoned", `the connection ended (${reason.kind})`);
    if (this.opts.control !== undefined) {
      if (wasLoggedIn) {
        // A session that ended after login starts again from the first endpoint.
        this.endpointIndex = 0;
      } else {
        // A failed attempt moves on to the next endpoint.
        this.failuresSinceAccess++;
        this.endpointIndex++;
      }
    }
    const stop = this.stopReason(reason);
    if (stop !== null) {
      this.setState({ state: "closed", reason });
      return;
    }
    let delay: number;
    if (reason.kind === "closedByGateway" && reason.code === Code.try_later) {
      // CL9: the gateway is over its accept rate and says when to come back; the
      // jitter spreads the refused clients over half that again.
      const retry = tryLaterDelayMs(reason.message);
      delay = retry + this.env.random() * Math.max(retry / 2, 100);
      this.attempt = 0;
    } else if (wasDraining && this.goAwayRetryMs !== null) {
      const retry = this.goAwayRetryMs;
      delay = retry + this.env.random() * Math.max(retry / 2, 100);
      this.attempt = 0;
    } else if (wasLoggedIn && reason.kind === "closedByGateway" && reason.code === Code.going_away) {
      delay = this.env.random() * 100;
    } else {
      const failed = this.attempt;
      this.attempt++;
      if (this.opts.maxAttempts !== undefined && this.attempt > this.opts.maxAttempts) {
        this.setState({ state: "closed", reason });
        return;
      }
      delay = this.backoff(failed);
    }
    this.goAwayRetryMs = null;
    this.setState({ state: "waiting", reason, retryInMs: Math.round(delay) });
    this.reconnectTimer = this.env.setTimeout(() => {
      this.reconnectTimer = null;
      this.dial();
    }, delay);
  }

  /** Full jitter: uniform in [0, min(cap, base * 2^attempt)]. */
  private backoff(attempt: number): number {
    const base = this.access?.baseMs ?? this.opts.reconnectBaseMs ?? 1000;
    const cap = this.access?.capMs ?? this.opts.reconnectCapMs ?? 30_000;
    const window = Math.min(cap, base * 2 ** Math.min(attempt, 30));
    return this.env.random() * window;
  }

  /** `null` to reconnect; else the client stops. */
  private stopReason(reason: EndReason): EndReason | null {
    switch (reason.kind) {
      case "kicked":
        return reason.code === Code.replaced || reason.code === Code.kicked ? reason : null;
      case "loginRefused":
        if (reason.code === Code.expired_token && !this.expiredRetried) {
          // A token may expire in transit or come from a cache: one retry with a fresh one.
          this.expiredRetried = true;
          if (this.access !== null) {
            this.access.expiresAtMs = 0;
          }
          return null;
        }
        return reason;
      default:
        return null;
    }
  }
}

function frameId(frame: Frame): number {
  return "id" in frame ? frame.id : 0;
}

function toMeta(meta: Record<string, string> | Meta | undefined): Meta {
  if (meta === undefined) {
    return [];
  }
  if (Array.isArray(meta)) {
    return meta;
  }
  return Object.entries(meta).map(([k, v]) => [k, utf8(v)]);
}

/** Reads the control layer's `/v1/access` answer (docs/CONTROL.md). */
export function parseAccess(body: Record<string, unknown>): Access {
  const endpoints = Array.isArray(body["endpoints"]) ? (body["endpoints"] as Array<Record<string, unknown>>) : [];
  const ws = endpoints
    .filter((e) => e["transport"] === "ws" || e["transport"] === "wss")
    .map((e) => String(e["url"]));
  if (ws.length === 0) {
    throw new Error("the control layer offered no ws or wss endpoint");
  }
  const token = body["token"];
  if (typeof token !== "string" || token.length === 0) {
    throw new Error("the control layer's answer has no token");
  }
  const reconnect = (body["reconnect"] ?? {}) as Record<string, unknown>;
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  return {
    endpoints: ws,
    token,
    expiresAtMs: num(body["expires_at_unix_s"], Number.MAX_SAFE_INTEGER / 1000) * 1000,
    heartbeatMs: num(body["heartbeat_ms"], 30_000),
    baseMs: num(reconnect["base_ms"], 1000),
    capMs: num(reconnect["cap_ms"], 30_000),
    reaccessAfter: num(body["reaccess_after_failures"], 3),
  };
}

export type { Access };

/** Counts since the last quality report, per transport (PROTOCOL.md 4.1); each count stops at 65,535. */
class QualityCounters {
  private entries = new Map<ReportTransport, { attempts: number; latency: number[]; pings: number; rtt: number[] }>();

  private entry(transport: ReportTransport) {
    let e = this.entries.get(transport);
    if (e === undefined) {
      e = { attempts: 0, latency: Array(10).fill(0), pings: 0, rtt: Array(10).fill(0) };
      this.entries.set(transport, e);
    }
    return e;
  }

  /** A connect attempt ended: its latency to `LoginAck`, or `null` for a failure. */
  connect(transport: ReportTransport, latencyMs: number | null): void {
    const e = this.entry(transport);
    if (e.attempts >= 0xffff) return;
    e.attempts++;
    if (latencyMs !== null) e.latency[latencyBucket(latencyMs)]++;
  }

  /** A heartbeat's fate is known: its round trip, or `null` when it was lost. */
  ping(transport: ReportTransport, rttMs: number | null): void {
    const e = this.entry(transport);
    if (e.pings >= 0xffff) return;
    e.pings++;
    if (rttMs !== null) e.rtt[latencyBucket(rttMs)]++;
  }

  /** The report body for everything counted so far; the counts restart from zero. */
  take() {
    const transports = REPORT_TRANSPORTS.flatMap((transport) => {
      const e = this.entries.get(transport);
      return e === undefined || (e.attempts === 0 && e.pings === 0)
        ? []
        : [{ transport, connectAttempts: e.attempts, connectLatency: e.latency, pings: e.pings, rtt: e.rtt }];
    });
    this.entries = new Map();
    return { version: 1, transports };
  }
}

/**
 * The delay of a `Close try_later` (PROTOCOL.md, table row CL9): its message
 * `retry_after_ms=<N>`, at most 60,000 ms; 1,000 ms when the message does not say.
 */
export function tryLaterDelayMs(message: string): number {
  const match = /^retry_after_ms=\s*(\d+)\s*$/.exec(message);
  if (match === null) {
    return 1000;
  }
  return Math.min(Number(match[1]), 60_000);
}
