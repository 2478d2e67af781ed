// The live room: one Client per tab, joined to one group. Messages go up as requests to
// the demo business (the gateway publishes them to the group) and come back as pushes.
// Query parameters: ?name=alice&room=lobby
import { Client, CallError, codeName } from "./sdk/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const name = (params.get("name") || `guest-${Math.random().toString(16).slice(2, 6)}`).slice(0, 40);
const room = (params.get("room") || "lobby").slice(0, 64);
const device = `${name}-${Math.random().toString(16).slice(2, 8)}`;
const decoder = new TextDecoder();

$("me-name").textContent = name;
$("me-device").textContent = device;
$("room-name").textContent = room;

function line(className, text) {
  const li = document.createElement("li");
  li.className = className;
  li.textContent = text;
  append(li);
  return li;
}

function append(li) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function system(text, level = "") {
  return line(`system ${level}`.trim(), text);
}

function message(from, text, seq, mine) {
  const li = document.createElement("li");
  li.className = mine ? "message mine" : "message";
  li.dataset.from = from;
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  meta.textContent = `${mine ? "you" : from} · ${time}${seq === null ? "" : ` · #${seq}`}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.textContent = text;
  li.append(meta, bubble);
  append(li);
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${path}: ${json.message || response.status}`);
  return json;
}

const config = await (await fetch("config")).json();
const scheme = location.protocol === "https:" ? "wss" : "ws";
const client = new Client({
  url: `${scheme}://${location.hostname}:${config.ws_port}${config.ws_path}`,
  app: config.app,
  device,
  token: async () => (await postJson("token", { device })).token,
  reconnectBaseMs: 500,
  reconnectCapMs: 5000,
});
// For the browser test and for poking around in the console.
window.demo = { client, name, room, device };

const STATE_LABELS = {
  idle: "idle",
  connecting: "connecting…",
  loggingIn: "logging in…",
  connected: "connected",
  draining: "draining",
  waiting: "reconnecting",
  closed: "closed",
};

let connectedOnce = false;
let reconnects = 0;
let lastSeq = null;

client.on("state", (change) => {
  const pill = $("state");
  pill.className = `state state-${change.state}`;
  pill.dataset.state = change.state;
  let label = STATE_LABELS[change.state];
  if (change.state === "waiting" && change.retryInMs !== undefined) {
    label += ` in ${(change.retryInMs / 1000).toFixed(1)} s`;
  }
  $("state-text").textContent = label;
  if (change.state === "connected") {
    $("conn-id").textContent = `0x${change.connId.toString(16)}`;
    if (connectedOnce) {
      reconnects += 1;
      $("reconnects").textContent = String(reconnects);
      system(`reconnected; rejoining ${room}`);
    }
    connectedOnce = true;
    refreshMembers();
  } else {
    $("conn-id").textContent = "–";
  }
  if (change.state === "waiting") {
    system(`connection lost (${describe(change.reason)}); retrying in ${(change.retryInMs / 1000).toFixed(1)} s`, "warn");
  }
  if (change.state === "closed" && change.reason?.kind !== "closedByApp") {
    system(`stopped: ${describe(change.reason)}`, "error");
  }
});

function describe(reason) {
  if (!reason) return "unknown";
  switch (reason.kind) {
    case "droppedByApp":
      return "dropped on purpose";
    case "dialFailed":
      return "gateway unreachable";
    case "transportEnded":
      return `socket closed, ${reason.wsCode}`;
    case "closedByGateway":
    case "kicked":
    case "loginRefused":
      return `${reason.kind}: ${codeName(reason.code)}`;
    default:
      return reason.kind;
  }
}

client.on("rejoinFailed", (group, code) => system(`could not rejoin ${group}: ${codeName(code)}`, "error"));
client.on("rejoined", (group, recovered) => {
  if (recovered) {
    system(`back in ${group}: what was missed is replayed from the gateway's history`);
  } else {
    system(`back in ${group}: the gateway's history could not cover the time offline`, "warn");
  }
});

function onPush(push) {
  const from = push.meta.find(([key]) => key === "from");
  let body;
  try {
    body = JSON.parse(decoder.decode(push.payload));
  } catch {
    body = { name: "?", text: decoder.decode(push.payload) };
  }
  if (push.gap && lastSeq !== null) {
    const missed = push.seq - lastSeq - 1n;
    const what = missed === 1n ? "1 message" : `${missed} messages`;
    system(`${what} missed while offline and not recovered`, "warn");
  }
  lastSeq = push.seq;
  const fromDevice = from ? decoder.decode(from[1]) : "";
  message(body.name || fromDevice, String(body.text ?? ""), push.seq, fromDevice === device);
  const position = client.position(room);
  if (position) {
    const epoch = position.epoch === null ? "–" : position.epoch.toString(16).slice(0, 6);
    $("position").textContent = `#${position.seq} · epoch ${epoch}`;
  }
}

async function refreshMembers() {
  try {
    const response = await fetch(`rooms/${encodeURIComponent(room)}`);
    if (response.ok) {
      $("members").textContent = String((await response.json()).members);
    }
  } catch {
    // The next poll tries again.
  }
}
setInterval(refreshMembers, 2000);

$("drop").addEventListener("click", () => {
  system("dropping the socket…", "warn");
  client.dropConnection();
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await client.request(config.business, JSON.stringify({ name, text }), { meta: { group: room } });
  } catch (err) {
    const why = err instanceof CallError ? `${err.reason}: ${err.message}` : String(err);
    system(`not sent (${why})`, "error");
    input.value = text;
  }
});

client.connect();
system(`joining ${room} as ${name}…`);
try {
  await client.join(room, onPush);
  system(`joined ${room}`);
  refreshMembers();
} catch (err) {
  system(`could not join ${room}: ${err.message}`, "error");
}
