#!/usr/bin/env python3
"""Generate docs/protocol-vectors.json, the test vectors of longconn wire protocol v1.

Run from the repository root (Python 3.8+, standard library only):

    python3 docs/tools/gen_protocol_vectors.py > docs/protocol-vectors.json

or give the output path as the only argument:

    python3 docs/tools/gen_protocol_vectors.py docs/protocol-vectors.json

The output is deterministic: vectors are sorted by name, object keys are sorted, and
running the script twice gives identical bytes. longconn-core/tests/vectors.rs decodes
every vector with the Rust codec and, when python3 is on PATH, checks that the file on
disk equals this script's output, so edit this script and regenerate rather than editing
the JSON by hand.

This is an independent encoder written from the byte layout (the header comment of
longconn-core/src/protocol/frame.rs and the tag table in fields.rs); it never calls the
Rust code. The layout, all integers big-endian:

    0  magic        u16  0x4C43 ("LC")
    2  version      u8   1
    3  type         u8   frame type (0x01 Login .. 0x14 QualityReport)
    4  flags        u8   bit 0 ACK_REQUIRED (Push only); other bits 0
    5  reserved     u8   0
    6  fields_len   u16  length of the fields section
    8  payload_len  u32  length of the payload
    12 id           u32  correlation id (0 for types without one)
    16 fields       fields_len bytes of TLV fields: tag u8, len u16, value
       payload      payload_len bytes, opaque

Canonical encoding: each field once, in ascending tag order; optional fields that are
absent are left out, and so are an empty message and empty metadata.
"""

import base64
import binascii
import hashlib
import hmac
import json
import struct
import sys

PROTOCOL_VERSION = 1
MAGIC = 0x4C43
HEADER = struct.Struct(">HBBBBHII")
assert HEADER.size == 16
# The receiver's maximum frame size the vectors assume. Smaller than SessionConfig's
# default (65,536) so that the exactly-at-the-limit vector stays small; every valid vector
# also decodes under the default, and frame_too_large_over_default_limit exceeds both.
MAX_FRAME_SIZE = 4096
FLAG_ACK_REQUIRED = 0x01

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

MAX_ID_LEN = 128
MAX_TOKEN_LEN = 2048
MAX_MESSAGE_LEN = 1024
MAX_NETWORK = 3  # QualityReport NETWORK: 0 unknown, 1 wifi, 2 cellular, 3 wired

# Field tags.
APP = 0x01
DEVICE = 0x02
TOKEN = 0x03
BUSINESS = 0x04
META = 0x05
GROUP = 0x06
SEQ = 0x07
CODE = 0x08
MESSAGE = 0x09
RETRY_AFTER_MS = 0x0A
HEARTBEAT_MS = 0x0B
CONN_ID = 0x0C
EXPIRES_AT_MS = 0x0D
EPOCH = 0x0E
RECOVERED = 0x0F
NETWORK = 0x10

# Field kinds:
#   id       required text, 1..=128 bytes of UTF-8
#   opt_id   optional text, 1..=128 bytes of UTF-8 (JSON null when absent)
#   token    required opaque bytes, 1..=2048 (JSON key ends in _hex)
#   meta     metadata entries; left out when empty
#   message  text, 0..=1024 bytes; left out when empty
#   u8/u16/u32/u64   required big-endian integers of that width
#   opt_u64          optional u64 (JSON null when absent)
#   opt_bool         optional one byte, 0 or 1 (JSON null when absent)
#
# name: (type byte, has correlation id, may carry a payload, [(json key, tag, kind)])
FRAME_TYPES = {
    "Login": (0x01, True, False, [
        ("app", APP, "id"), ("device", DEVICE, "id"), ("token_hex", TOKEN, "token"),
        ("meta", META, "meta")]),
    "LoginAck": (0x02, True, False, [
        ("conn_id", CONN_ID, "u64"), ("heartbeat_ms", HEARTBEAT_MS, "u32"),
        ("expires_at_ms", EXPIRES_AT_MS, "opt_u64")]),
    "Ping": (0x03, True, True, []),
    "Pong": (0x04, True, True, []),
    "Request": (0x05, True, True, [("business", BUSINESS, "u32"), ("meta", META, "meta")]),
    "Response": (0x06, True, True, [("business", BUSINESS, "u32"), ("meta", META, "meta")]),
    "Push": (0x07, True, True, [
        ("business", BUSINESS, "u32"), ("group", GROUP, "opt_id"), ("seq", SEQ, "opt_u64"),
        ("epoch", EPOCH, "opt_u64"), ("meta", META, "meta")]),
    "PushAck": (0x08, True, False, []),
    "JoinGroup": (0x09, True, False, [
        ("group", GROUP, "id"), ("seq", SEQ, "opt_u64"), ("epoch", EPOCH, "opt_u64")]),
    "JoinAck": (0x0A, True, False, [
        ("group", GROUP, "id"), ("seq", SEQ, "opt_u64"), ("epoch", EPOCH, "opt_u64"),
        ("recovered", RECOVERED, "opt_bool")]),
    "LeaveGroup": (0x0B, True, False, [("group", GROUP, "id")]),
    "LeaveAck": (0x0C, True, False, [("group", GROUP, "id")]),
    "TokenExpiring": (0x0D, False, False, [("deadline_ms", EXPIRES_AT_MS, "u64")]),
    "TokenRefresh": (0x0E, True, False, [("token_hex", TOKEN, "token")]),
    "TokenRefreshAck": (0x0F, True, False, [("expires_at_ms", EXPIRES_AT_MS, "opt_u64")]),
    "Kick": (0x10, False, False, [("code", CODE, "u16"), ("message", MESSAGE, "message")]),
    "GoAway": (0x11, False, False, [
        ("retry_after_ms", RETRY_AFTER_MS, "u32"), ("message", MESSAGE, "message")]),
    "Error": (0x12, True, False, [("code", CODE, "u16"), ("message", MESSAGE, "message")]),
    "Close": (0x13, False, False, [("code", CODE, "u16"), ("message", MESSAGE, "message")]),
    "QualityReport": (0x14, True, True, [("network", NETWORK, "u8")]),
}
TYPE_CODE = {name: spec[0] for name, spec in FRAME_TYPES.items()}
assert sorted(TYPE_CODE.values()) == list(range(0x01, 0x15))

DESCRIPTION = " ".join("""
Test vectors for the longconn wire protocol, version 1. Generated by
docs/tools/gen_protocol_vectors.py (an independent Python encoder; run
`python3 docs/tools/gen_protocol_vectors.py > docs/protocol-vectors.json`), checked by
longconn-core/tests/vectors.rs. Do not edit by hand.
Top level: protocol_version; max_frame_size, the receiver's maximum frame size (header
included) that every vector assumes (no valid vector is larger, so they also decode
under any larger maximum; the FrameTooLarge vectors exceed it); valid; invalid. Both
lists are sorted by name.
VALID vectors: {name, hex, canonical, frame, note?}. `hex` is one complete frame.
Decoding it (as a stream, whole or one byte at a time, or as one message) yields exactly
`frame`. If `canonical` is true, encoding `frame` yields exactly `hex`; if false, `hex` is
a non-canonical encoding (unknown tags, fields out of order, an explicitly empty
optional field, a known field the type does not use, a non-zero id on a type without
one) and encoding the decoded frame yields different bytes that decode to the same frame.
`frame` has: type (the frame type name, e.g. "Login"); flags (the header flags byte: 1
for a Push with ack_required, else 0); id (the u32 correlation id, present only for
types that have one: not TokenExpiring, Kick, GoAway, Close); then the type's fields by
their Rust names: text fields (app, device, group, message) as JSON strings; opaque
bytes as lowercase hex in keys ending in _hex (token_hex, payload_hex; payload_hex only
for Ping, Pong, Request, Response, Push); integers (business, conn_id, heartbeat_ms,
expires_at_ms, deadline_ms, seq, epoch, retry_after_ms) as JSON numbers, which can be as large
as 2^64-1, so parse them as exact integers; code as its numeric u16 value (values
outside the code registry are kept, as Code::Other in Rust); optional fields
(expires_at_ms, Push group, seq and epoch) as null when absent; a message absent from the wire
is ""; meta as a list of [key, value] pairs in wire order, the value a string if it is
valid UTF-8, else {"hex": "..."}; Push also has ack_required (bool); QualityReport has
network (0..=3, one byte on the wire) and payload_hex (the report body of section 4.1).
INVALID vectors: {name, hex, error, tag?, decoders, note}. `error` is the name of the
longconn_core::Error variant the decoder must report. `tag`, when present, is the tag
that MalformedField, InvalidUtf8, DuplicateField or MissingField carries (0 for
MalformedField about the frame as a whole: a payload on a type without one, or bytes
after the frame). `decoders` lists where the vector applies: "stream" means the bytes
are fed to the streaming decoder (all at once, and one byte at a time) followed by end
of stream, and the first error reported must be `error`; for "Truncated" the decoder
reports nothing until end of stream. "message" means the bytes are decoded as one
complete message (e.g. one WebSocket message), where trailing bytes are an error.
QUALITY_REPORT_BODIES (PROTOCOL.md section 4.1): {name, hex, report} for a valid body,
where encoding `report` yields exactly `hex`, or {name, hex, error, note} for a body a
decoder must refuse, `error` naming the longconn_core::protocol::ReportError variant.
`report` is {version, transports: [{transport (tcp, tls, ws, wss, quic), connect_attempts,
connect_latency (10 counts), pings, rtt (10 counts)}]}.
""".split())


def hexs(data):
    return binascii.hexlify(data).decode("ascii")


def unhex(text):
    return binascii.unhexlify(text.encode("ascii"))


# ---------------------------------------------------------------------------
# Byte-level builders
# ---------------------------------------------------------------------------

def tlv(tag, value, length=None):
    """One field; `length` overrides the len written (to build broken fields)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return struct.pack(">BH", tag, len(value) if length is None else length) + value


def meta_entry(key, value, key_len=None, value_len=None):
    if isinstance(key, str):
        key = key.encode("utf-8")
    if isinstance(value, str):
        value = value.encode("utf-8")
    return (struct.pack(">B", len(key) if key_len is None else key_len) + key
            + struct.pack(">H", len(value) if value_len is None else value_len) + value)


def raw_frame(type_code, fields=b"", payload=b"", id=0, flags=0, reserved=0, magic=MAGIC,
              version=PROTOCOL_VERSION, fields_len=None, payload_len=None):
    """A frame from explicit parts; lengths default to the real ones."""
    if isinstance(type_code, str):
        type_code = TYPE_CODE[type_code]
    header = HEADER.pack(
        magic, version, type_code, flags, reserved,
        len(fields) if fields_len is None else fields_len,
        len(payload) if payload_len is None else payload_len,
        id)
    return header + fields + payload


def header_only(type_code, fields_len=0, payload_len=0, **kw):
    """Just the 16 header bytes (for errors a decoder reports from the header alone)."""
    return raw_frame(type_code, fields_len=fields_len, payload_len=payload_len, **kw)


# ---------------------------------------------------------------------------
# Frames as JSON objects, and their canonical encoding
# ---------------------------------------------------------------------------

def meta_json(pairs):
    out = []
    for key, value in pairs:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = {"hex": hexs(value)}
        out.append([key, value])
    return out


def frame(type_name, **values):
    """The JSON object of a frame: defaults filled in, bytes turned into hex."""
    _code, has_id, has_payload, fields = FRAME_TYPES[type_name]
    obj = {"type": type_name}
    if has_id:
        obj["id"] = values.pop("id", 0)
    ack = values.pop("ack_required", False)
    if type_name == "Push":
        obj["ack_required"] = ack
    else:
        assert not ack
    obj["flags"] = FLAG_ACK_REQUIRED if ack else 0
    for key, _tag, kind in fields:
        src = key[:-4] if key.endswith("_hex") else key
        if src in values:
            value = values.pop(src)
        elif kind in ("opt_id", "opt_u64", "opt_bool"):
            value = None
        elif kind == "meta":
            value = []
        elif kind == "message":
            value = ""
        else:
            raise ValueError("%s: required field %s missing" % (type_name, src))
        if kind == "token":
            value = hexs(value)
        elif kind == "meta":
            value = meta_json(value)
        obj[key] = value
    if has_payload:
        obj["payload_hex"] = hexs(values.pop("payload", b""))
    if values:
        raise ValueError("%s: unexpected values %r" % (type_name, sorted(values)))
    return obj


def encode_meta(entries):
    out = b""
    for key, value in entries:
        key = key.encode("utf-8")
        value = unhex(value["hex"]) if isinstance(value, dict) else value.encode("utf-8")
        assert 1 <= len(key) <= 255 and len(value) <= 0xFFFF
        out += meta_entry(key, value)
    return out


def encode(obj):
    """The canonical encoding of a frame given as its JSON object."""
    code, has_id, has_payload, fields = FRAME_TYPES[obj["type"]]
    expected_keys = {"type", "flags"} | {key for key, _t, _k in fields}
    if has_id:
        expected_keys.add("id")
    if has_payload:
        expected_keys.add("payload_hex")
    if obj["type"] == "Push":
        expected_keys.add("ack_required")
    assert set(obj) == expected_keys, (obj["type"], sorted(set(obj) ^ expected_keys))
    flags = FLAG_ACK_REQUIRED if obj.get("ack_required") else 0
    assert obj["flags"] == flags
    out = []
    for key, tag, kind in fields:
        value = obj[key]
        if kind in ("id", "opt_id"):
            if value is None:
                continue
            raw = value.encode("utf-8")
            assert 1 <= len(raw) <= MAX_ID_LEN, (key, len(raw))
        elif kind == "token":
            raw = unhex(value)
            assert 1 <= len(raw) <= MAX_TOKEN_LEN
        elif kind == "message":
            raw = value.encode("utf-8")
            assert len(raw) <= MAX_MESSAGE_LEN
            if not raw:
                continue
        elif kind == "meta":
            raw = encode_meta(value)
            if not raw:
                continue
        elif kind == "u8":
            assert 0 <= value <= MAX_NETWORK
            raw = struct.pack(">B", value)
        elif kind == "u16":
            assert 0 <= value <= 0xFFFF
            raw = struct.pack(">H", value)
        elif kind == "u32":
            assert 0 <= value <= U32_MAX
            raw = struct.pack(">I", value)
        elif kind == "opt_bool":
            if value is None:
                continue
            assert value in (True, False)
            raw = bytes([1 if value else 0])
        elif kind in ("u64", "opt_u64"):
            if value is None:
                continue
            assert 0 <= value <= U64_MAX
            raw = struct.pack(">Q", value)
        else:
            raise AssertionError(kind)
        out.append((tag, raw))
    out.sort(key=lambda field: field[0])  # canonical order: ascending tags
    fields_bytes = b"".join(tlv(tag, raw) for tag, raw in out)
    assert len(fields_bytes) <= 0xFFFF
    payload = unhex(obj["payload_hex"]) if has_payload else b""
    data = raw_frame(code, fields_bytes, payload, id=obj.get("id", 0), flags=flags)
    assert len(data) <= MAX_FRAME_SIZE
    return data


# ---------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------

VALID = []
INVALID = []


def valid(name, obj, note=None):
    """A canonical vector: the bytes are the canonical encoding of `obj`."""
    entry = {"name": name, "hex": hexs(encode(obj)), "canonical": True, "frame": obj}
    if note:
        entry["note"] = note
    VALID.append(entry)


def noncanonical(name, data, obj, note):
    """A vector whose bytes decode to `obj` but are not its canonical encoding."""
    assert encode(obj) != data, name
    assert len(data) <= MAX_FRAME_SIZE
    VALID.append({"name": name, "hex": hexs(data), "canonical": False, "frame": obj,
                  "note": note})


def invalid(name, data, error, note, tag=None, decoders=("message", "stream")):
    entry = {"name": name, "hex": hexs(data), "error": error, "note": note,
             "decoders": sorted(decoders)}
    if tag is not None:
        entry["tag"] = tag
    INVALID.append(entry)


def ascii_bytes(n, start=0):
    return bytes((start + i) % 256 for i in range(n))


TOKEN_2048 = ascii_bytes(2048)
GROUP_128_UTF8 = "群" * 42 + "ab"  # 42 * 3 + 2 = 128 bytes, 44 characters
assert len(GROUP_128_UTF8.encode("utf-8")) == 128


def add_valid():
    # Login
    valid("login_minimal", frame("Login", id=1, app="demo", device="phone-1",
                                 token=b"secret-token"))
    valid("login_with_metadata", frame(
        "Login", id=2, app="demo", device="phone-1", token=b"secret-token",
        meta=[("os", "ios"), ("sdk", "1.4.2"), ("lang", "zh-CN"), ("empty", ""),
              ("bin", b"\x00\xff\x10"), ("os", "repeated keys are kept in order")]),
        note="metadata entries keep their wire order; an empty value, a binary value and "
             "a repeated key are all allowed")
    valid("login_max_lengths", frame(
        "Login", id=U32_MAX, app="a" * MAX_ID_LEN, device="d" * MAX_ID_LEN,
        token=TOKEN_2048, meta=[("k" * 255, "")]),
        note="128-byte app and device ids, a 2048-byte token, a 255-byte metadata key, "
             "id u32::MAX")
    valid("login_utf8_and_binary_token", frame(
        "Login", id=3, app="应用", device="设备-📱", token=b"\x00\x01\xfe\xff",
        meta=[("地区", "上海")]),
        note="ids are UTF-8 text; the token is opaque bytes")
    valid("login_one_byte_fields", frame("Login", id=0, app="a", device="d", token=b"t"))

    # LoginAck
    valid("login_ack_without_expiry", frame("LoginAck", id=1, conn_id=42, heartbeat_ms=30000))
    valid("login_ack_with_expiry", frame(
        "LoginAck", id=7, conn_id=0x0102030405060708, heartbeat_ms=25000,
        expires_at_ms=1767225600000))
    valid("login_ack_max_values", frame(
        "LoginAck", id=U32_MAX, conn_id=U64_MAX, heartbeat_ms=U32_MAX,
        expires_at_ms=U64_MAX))
    valid("login_ack_zero_values", frame(
        "LoginAck", id=0, conn_id=0, heartbeat_ms=0, expires_at_ms=0),
        note="an expiry of 0 is present (Some(0)), not absent")

    # Ping / Pong
    valid("ping_empty", frame("Ping"), note="the smallest frame: a bare 16-byte header")
    valid("ping_with_payload", frame("Ping", id=5, payload=struct.pack(">Q", 1767225600123)))
    valid("ping_max_id", frame("Ping", id=U32_MAX, payload=b"x"))
    valid("ping_exactly_max_frame_size", frame(
        "Ping", id=9, payload=ascii_bytes(MAX_FRAME_SIZE - 16)),
        note="header + payload is exactly max_frame_size, which is allowed")
    valid("pong_empty", frame("Pong", id=5))
    valid("pong_with_payload", frame("Pong", id=5, payload=struct.pack(">Q", 1767225600123)))

    # Request / Response
    valid("request_minimal", frame("Request", id=10, business=1))
    valid("request_with_metadata_and_payload", frame(
        "Request", id=11, business=1001,
        meta=[("trace-id", "4bf92f3577b34da6"), ("content-type", "application/json"),
              ("x", "")],
        payload=b'{"op":"get","key":"k1"}'))
    valid("request_max_business", frame(
        "Request", id=12, business=U32_MAX, payload=b"\x00\x01\x02\xff"))
    valid("request_business_zero_binary_metadata", frame(
        "Request", id=13, business=0, meta=[("sig", b"\x80\x81\x82")]))
    valid("response_minimal", frame("Response", id=10, business=1))
    valid("response_with_metadata_and_payload", frame(
        "Response", id=11, business=1001, meta=[("status", "200"), ("cache", "miss")],
        payload=b'{"value":"v1"}'))
    valid("response_empty_payload_max_id", frame("Response", id=U32_MAX, business=7))

    # Push
    valid("push_minimal", frame("Push", business=7, payload=b"hi"),
          note="no ack wanted, id 0")
    valid("push_ack_required", frame(
        "Push", id=42, ack_required=True, business=7, payload=b"hello"),
        note="flags bit 0 (ACK_REQUIRED) set")
    valid("push_ack_required_empty_payload", frame("Push", id=43, ack_required=True, business=8))
    valid("push_group_with_seq", frame(
        "Push", id=44, ack_required=True, business=8, group="room-1", seq=1,
        payload=b"group message"))
    valid("push_group_with_epoch_and_seq", frame(
        "Push", business=8, group="room-1", seq=7, epoch=0x1234_5678_9ABC_DEF0,
        payload=b"m"), note="a group log position: (epoch, offset)")
    valid("push_group_without_seq", frame("Push", business=8, group="room-1", payload=b"m"))
    valid("push_seq_without_group", frame("Push", business=8, seq=0, payload=b"m"),
          note="a seq of 0 is present (Some(0)); group and seq are independent")
    valid("push_all_fields_max_values", frame(
        "Push", id=U32_MAX, ack_required=True, business=U32_MAX, group="g" * MAX_ID_LEN,
        seq=U64_MAX, meta=[("a", "1"), ("b", "2"), ("c", b"\xfe")],
        payload=ascii_bytes(300)))
    valid("push_ack", frame("PushAck", id=42))
    valid("push_ack_max_id", frame("PushAck", id=U32_MAX))

    # Groups
    valid("join_group", frame("JoinGroup", id=20, group="room-1"))
    valid("join_group_one_byte_group", frame("JoinGroup", id=21, group="g"))
    valid("join_group_max_length_utf8_group", frame("JoinGroup", id=22, group=GROUP_128_UTF8),
          note="the 128-byte limit counts bytes: 44 characters, 128 bytes of UTF-8")
    valid("join_ack", frame("JoinAck", id=20, group="room-1"))
    # Recovery (PROTOCOL.md section 4.2)
    valid("join_group_with_position", frame(
        "JoinGroup", id=24, group="room-1", seq=41, epoch=0x1234_5678_9ABC_DEF0),
        note="a rejoin asking for the pushes after (epoch, seq)")
    valid("join_ack_with_position", frame(
        "JoinAck", id=20, group="room-1", seq=0, epoch=0x1234_5678_9ABC_DEF0),
        note="a first join to a group with history: its last position")
    valid("join_ack_recovered", frame(
        "JoinAck", id=24, group="room-1", seq=141, epoch=0x1234_5678_9ABC_DEF0,
        recovered=True), note="pushes 42..=141 follow, in order, before any live push")
    valid("join_ack_not_recovered", frame(
        "JoinAck", id=24, group="room-1", seq=3, epoch=0x0F0F_0F0F, recovered=False),
        note="epoch changed or gap older than the history: resync")
    valid("join_ack_recovered_without_position", frame(
        "JoinAck", id=24, group="room-1", recovered=False),
        note="a gateway without history for the group answers a rejoin so")
    valid("leave_group", frame("LeaveGroup", id=23, group="room-1"))
    valid("leave_ack", frame("LeaveAck", id=23, group="room-1"))
    valid("leave_ack_max_length_group", frame("LeaveAck", id=U32_MAX, group="z" * MAX_ID_LEN))

    # Tokens
    valid("token_expiring", frame("TokenExpiring", deadline_ms=1767225660000),
          note="the deadline travels in the EXPIRES_AT_MS field (tag 0x0d); no id")
    valid("token_expiring_extremes", frame("TokenExpiring", deadline_ms=U64_MAX))
    valid("token_expiring_zero", frame("TokenExpiring", deadline_ms=0))
    valid("token_refresh", frame("TokenRefresh", id=30, token=b"new-token"))
    valid("token_refresh_max_token", frame("TokenRefresh", id=31, token=TOKEN_2048[::-1]))
    valid("token_refresh_one_byte_token", frame("TokenRefresh", id=32, token=b"\x00"))
    valid("token_refresh_ack_without_expiry", frame("TokenRefreshAck", id=30))
    valid("token_refresh_ack_with_expiry", frame(
        "TokenRefreshAck", id=31, expires_at_ms=1767229200000))

    # Kick / GoAway / Error / Close
    valid("kick_replaced", frame("Kick", code=2), note="code 2 = replaced; no message")
    valid("kick_slow_consumer_with_message", frame(
        "Kick", code=7, message="outbound queue full"))
    valid("go_away", frame("GoAway", retry_after_ms=5000))
    valid("go_away_with_message", frame(
        "GoAway", retry_after_ms=0, message="draining for deploy"),
        note="canonical order puts MESSAGE (0x09) before RETRY_AFTER_MS (0x0a)")
    valid("go_away_max_retry", frame("GoAway", retry_after_ms=U32_MAX))
    valid("error_busy", frame("Error", id=11, code=303))
    valid("error_with_message", frame(
        "Error", id=12, code=300, message="no backend for business 99"))
    valid("error_unknown_code", frame("Error", id=13, code=9999),
          note="9999 is not in the code registry; decoders keep it (Code::Other(9999))")
    valid("error_code_max_message_max", frame(
        "Error", id=0, code=0xFFFF, message="m" * (MAX_MESSAGE_LEN - 4) + "错!"),
        note="code 65535 (unregistered) and a message of exactly 1024 bytes")
    valid("close_normal", frame("Close", code=0))
    valid("close_with_message", frame("Close", code=103, message="malformed frame"))
    valid("close_unknown_code", frame("Close", code=4242))
    valid("close_utf8_message", frame("Close", code=1, message="服务器维护中，请稍后重连"))

    # QualityReport (section 4.1): NETWORK is one byte; the payload is the report body.
    valid("quality_report_wifi", frame(
        "QualityReport", id=40, network=1, payload=report_body(EXAMPLE_REPORT)),
        note="the example body of PROTOCOL.md 4.1 (tcp and quic entries)")
    valid("quality_report_empty_unknown_network", frame(
        "QualityReport", id=41, network=0, payload=b"\x01\x00"),
        note="a version-1 body with no entries; network 0 = unknown")
    valid("quality_report_wired_opaque_payload", frame(
        "QualityReport", id=U32_MAX, network=3, payload=b"rtt=40"),
        note="the frame codec does not look into the body; the session checks it")

    # Non-canonical encodings that decoders accept.
    noncanonical(
        "ping_unknown_tag_skipped",
        raw_frame("Ping", tlv(0x20, b"future field"), b"abc", id=1),
        frame("Ping", id=1, payload=b"abc"),
        "tag 0x20 is not assigned; decoders skip unknown tags so peers can add fields")
    noncanonical(
        "join_group_unknown_tags_around_known",
        raw_frame("JoinGroup", tlv(0x00, b"") + tlv(GROUP, "room") + tlv(0xFF, b"\x01\x02"),
                  id=2),
        frame("JoinGroup", id=2, group="room"),
        "unknown tags 0x00 and 0xff before and after a known field are skipped")
    noncanonical(
        "request_repeated_unknown_tag",
        raw_frame("Request", tlv(0x20, b"a") + tlv(BUSINESS, struct.pack(">I", 5))
                  + tlv(0x20, b"b"), b"p", id=3),
        frame("Request", id=3, business=5, payload=b"p"),
        "an unknown tag may repeat; only known tags are checked for duplicates")
    noncanonical(
        "login_fields_out_of_order",
        raw_frame("Login", tlv(TOKEN, b"tok") + tlv(META, meta_entry("os", "android"))
                  + tlv(DEVICE, "dev") + tlv(APP, "app"), id=4),
        frame("Login", id=4, app="app", device="dev", token=b"tok",
              meta=[("os", "android")]),
        "decoders accept fields in any order; ascending tag order is only the canonical "
        "form")
    noncanonical(
        "login_ack_fields_out_of_order",
        raw_frame("LoginAck", tlv(EXPIRES_AT_MS, struct.pack(">Q", 99))
                  + tlv(CONN_ID, struct.pack(">Q", 8))
                  + tlv(HEARTBEAT_MS, struct.pack(">I", 1000)), id=5),
        frame("LoginAck", id=5, conn_id=8, heartbeat_ms=1000, expires_at_ms=99),
        "fields in descending tag order")
    noncanonical(
        "go_away_fields_out_of_order",
        raw_frame("GoAway", tlv(RETRY_AFTER_MS, struct.pack(">I", 250)) + tlv(MESSAGE, "bye")),
        frame("GoAway", retry_after_ms=250, message="bye"),
        "RETRY_AFTER_MS (0x0a) before MESSAGE (0x09)")
    noncanonical(
        "close_explicit_empty_message",
        raw_frame("Close", tlv(CODE, struct.pack(">H", 0)) + tlv(MESSAGE, b"")),
        frame("Close", code=0),
        "an empty MESSAGE field equals an absent one; the canonical form leaves it out")
    noncanonical(
        "request_explicit_empty_metadata",
        raw_frame("Request", tlv(BUSINESS, struct.pack(">I", 9)) + tlv(META, b""), id=6),
        frame("Request", id=6, business=9),
        "an empty META field equals an absent one; the canonical form leaves it out")
    noncanonical(
        "ping_with_unused_known_field",
        raw_frame("Ping", tlv(BUSINESS, struct.pack(">I", 1)) + tlv(APP, "ignored"), id=7),
        frame("Ping", id=7),
        "known fields that the frame type does not use are checked (see "
        "malformed_unused_known_field) and then ignored")
    noncanonical(
        "kick_nonzero_header_id",
        raw_frame("Kick", tlv(CODE, struct.pack(">H", 3)), id=77),
        frame("Kick", code=3),
        "Kick has no correlation id; a non-zero id in the header is ignored and encoders "
        "write 0")


def field_u32(tag, value):
    return tlv(tag, struct.pack(">I", value))


def field_u64(tag, value):
    return tlv(tag, struct.pack(">Q", value))


def field_u16(tag, value):
    return tlv(tag, struct.pack(">H", value))


def add_invalid():
    ping = encode(frame("Ping", id=1, payload=b"abcd"))
    max_payload = MAX_FRAME_SIZE - 16

    # BadMagic: checked as soon as two bytes are in.
    invalid("bad_magic_zero_header", bytes(16), "BadMagic", "16 zero bytes")
    invalid("bad_magic_byte_swapped", b"\x43\x4c" + ping[2:], "BadMagic",
            "magic written little-endian (43 4C)")
    invalid("bad_magic_http_request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "BadMagic",
            "an HTTP request sent to the frame port")
    invalid("bad_magic_tls_client_hello", unhex("160301020001") + bytes(10), "BadMagic",
            "the start of a TLS record sent to a plaintext port")
    invalid("bad_magic_two_bytes_at_eof", b"\x4c\x44", "BadMagic",
            "two bytes are enough to reject the magic; reported instead of Truncated")
    invalid("bad_magic_and_bad_version", raw_frame("Ping", magic=0x0000, version=9),
            "BadMagic", "the magic is checked before the version")

    # UnsupportedVersion: checked as soon as three bytes are in.
    invalid("unsupported_version_0", raw_frame("Ping", version=0), "UnsupportedVersion",
            "version byte 0")
    invalid("unsupported_version_2", raw_frame("Ping", b"", b"x", id=1, version=2),
            "UnsupportedVersion", "version byte 2")
    invalid("unsupported_version_255", raw_frame("Close", field_u16(CODE, 0), version=255),
            "UnsupportedVersion", "version byte 0xff")
    invalid("unsupported_version_three_bytes_at_eof", b"\x4c\x43\x02", "UnsupportedVersion",
            "three bytes are enough to reject the version; reported instead of Truncated")
    invalid("unsupported_version_and_unknown_type", header_only(0xEE, version=2),
            "UnsupportedVersion", "the version is checked before the frame type")

    # FrameTooLarge: checked from the header alone; the body is never needed.
    invalid("frame_too_large_by_one_byte", header_only("Ping", payload_len=max_payload + 1),
            "FrameTooLarge", "16 + %d = %d bytes announced, one more than max_frame_size; "
            "only the header is sent" % (max_payload + 1, MAX_FRAME_SIZE + 1))
    invalid("frame_too_large_max_fields_len", header_only("Login", fields_len=0xFFFF),
            "FrameTooLarge", "16 + 65535 = 65551 bytes announced")
    invalid("frame_too_large_over_default_limit", header_only("Ping", payload_len=65521),
            "FrameTooLarge", "65537 bytes: also over SessionConfig's default maximum of 65536")
    invalid("frame_too_large_payload_len_u32_max", header_only("Push", payload_len=U32_MAX),
            "FrameTooLarge", "payload_len 2^32-1")
    invalid("frame_too_large_fields_and_payload", header_only(
        "Request", fields_len=0x8000, payload_len=0x8000), "FrameTooLarge",
        "fields_len + payload_len together exceed the maximum")
    invalid("frame_too_large_before_unknown_type", header_only(0xEE, payload_len=U32_MAX,
                                                               flags=0xFF, reserved=0xFF),
            "FrameTooLarge", "the size is checked before the type, flags and reserved byte")

    # UnknownFrameType
    invalid("unknown_frame_type_0x00", raw_frame(0x00), "UnknownFrameType", "type 0 is unused")
    invalid("unknown_frame_type_0x7f", raw_frame(0x7F, id=1), "UnknownFrameType",
            "type 0x7f is unassigned (new types are allocated upwards from the last one)")
    invalid("unknown_frame_type_0xff", raw_frame(0xFF, b"", b"xyz"), "UnknownFrameType",
            "type 0xff")
    invalid("unknown_frame_type_before_flags", raw_frame(0x20, flags=0xFF, reserved=1),
            "UnknownFrameType", "the type is checked before the flags and reserved byte")

    # ReservedBits: undefined flags, ACK_REQUIRED on a type other than Push, reserved byte.
    invalid("reserved_bits_ack_flag_on_ping", raw_frame("Ping", flags=FLAG_ACK_REQUIRED,
                                                        id=1), "ReservedBits",
            "ACK_REQUIRED is defined for Push only")
    invalid("reserved_bits_ack_flag_on_push_ack", raw_frame("PushAck", flags=1, id=42),
            "ReservedBits", "ACK_REQUIRED on a PushAck")
    invalid("reserved_bits_ack_flag_on_request", raw_frame(
        "Request", field_u32(BUSINESS, 1), flags=1, id=1), "ReservedBits",
        "ACK_REQUIRED on a Request")
    invalid("reserved_bits_push_flag_bit_1", raw_frame(
        "Push", field_u32(BUSINESS, 1), b"x", flags=0x02), "ReservedBits",
        "flags bit 1 is undefined")
    invalid("reserved_bits_push_flag_bit_7_with_ack", raw_frame(
        "Push", field_u32(BUSINESS, 1), b"x", id=1, flags=0x81), "ReservedBits",
        "flags bit 7 is undefined even next to ACK_REQUIRED")
    invalid("reserved_byte_nonzero_ping", raw_frame("Ping", reserved=0x01, id=1),
            "ReservedBits", "header byte 5 must be 0")
    invalid("reserved_byte_nonzero_push", raw_frame(
        "Push", field_u32(BUSINESS, 1), b"x", id=1, flags=1, reserved=0x80), "ReservedBits",
        "header byte 5 must be 0 on a Push too")
    invalid("reserved_bits_before_payload_check", raw_frame("Login", b"", b"p", flags=1),
            "ReservedBits", "flags are checked before whether the type may carry a payload")

    # MalformedField about the frame as a whole (tag 0).
    login = (tlv(APP, "app") + tlv(DEVICE, "dev") + tlv(TOKEN, b"tok"))
    invalid("payload_on_login", raw_frame("Login", login, b"payload", id=1), "MalformedField",
            "Login may not carry a payload", tag=0)
    invalid("payload_on_push_ack", raw_frame("PushAck", b"", b"\x00", id=1), "MalformedField",
            "PushAck may not carry a payload, not even one byte", tag=0)
    invalid("payload_on_close", raw_frame("Close", field_u16(CODE, 0), b"bye"),
            "MalformedField", "Close may not carry a payload", tag=0)
    invalid("payload_on_token_expiring", header_only("TokenExpiring", fields_len=11,
                                                     payload_len=1),
            "MalformedField", "reported from the header alone, before the body arrives",
            tag=0)
    invalid("trailing_bytes_after_frame", ping + b"\x00", "MalformedField",
            "a message holds exactly one frame; a stream decoder would return the frame "
            "and keep the extra byte", tag=0, decoders=("message",))
    invalid("two_frames_in_one_message", ping + ping, "MalformedField",
            "a message holds exactly one frame", tag=0, decoders=("message",))

    # MalformedField: TLV structure.
    invalid("field_header_overruns_fields_section", raw_frame("Ping", b"\x07\x00", id=1),
            "MalformedField", "fields_len 2 cannot hold a 3-byte field header", tag=SEQ)
    invalid("field_header_overruns_after_a_field", raw_frame(
        "Request", field_u32(BUSINESS, 1) + b"\x05", id=1), "MalformedField",
        "one byte left after the last field", tag=META)
    invalid("field_value_overruns_fields_section", raw_frame(
        "JoinGroup", tlv(GROUP, "room", length=10), id=1), "MalformedField",
        "the group field says 10 bytes, the section holds 4", tag=GROUP)
    invalid("field_value_overruns_into_payload", raw_frame(
        "Request", tlv(BUSINESS, struct.pack(">I", 1), length=8), b"payload!", id=1),
        "MalformedField", "the field runs past fields_len into the payload, which is "
        "not part of the fields section", tag=BUSINESS)
    invalid("field_value_len_u16_max", raw_frame("Close", tlv(CODE, b"\x00\x00", length=0xFFFF)),
            "MalformedField", "a field length of 65535 in a 5-byte section", tag=CODE)

    # MalformedField: fixed-width values.
    invalid("business_3_bytes", raw_frame("Request", tlv(BUSINESS, b"\x00\x00\x01"), id=1),
            "MalformedField", "BUSINESS is a u32", tag=BUSINESS)
    invalid("business_5_bytes", raw_frame("Push", tlv(BUSINESS, b"\x00\x00\x00\x00\x01"),
                                          b"x"), "MalformedField", "BUSINESS is a u32",
            tag=BUSINESS)
    invalid("seq_7_bytes", raw_frame("Push", field_u32(BUSINESS, 1) + tlv(GROUP, "g")
                                     + tlv(SEQ, bytes(7)), b"x"),
            "MalformedField", "SEQ is a u64", tag=SEQ)
    invalid("conn_id_4_bytes", raw_frame("LoginAck", field_u32(HEARTBEAT_MS, 1000)
                                         + tlv(CONN_ID, bytes(4)), id=1),
            "MalformedField", "CONN_ID is a u64", tag=CONN_ID)
    invalid("heartbeat_ms_2_bytes", raw_frame("LoginAck", tlv(HEARTBEAT_MS, b"\x03\xe8")
                                              + field_u64(CONN_ID, 1), id=1),
            "MalformedField", "HEARTBEAT_MS is a u32", tag=HEARTBEAT_MS)
    invalid("epoch_7_bytes", raw_frame("Push", field_u32(BUSINESS, 1) + tlv(GROUP, "g")
                                       + tlv(EPOCH, bytes(7)), b"x"),
            "MalformedField", "EPOCH is a u64", tag=EPOCH)
    invalid("expires_at_ms_empty", raw_frame("TokenRefreshAck", tlv(EXPIRES_AT_MS, b""),
                                             id=1),
            "MalformedField", "an optional u64 field, when present, has 8 bytes",
            tag=EXPIRES_AT_MS)
    invalid("code_1_byte", raw_frame("Close", tlv(CODE, b"\x00")), "MalformedField",
            "CODE is a u16", tag=CODE)
    invalid("code_4_bytes", raw_frame("Error", tlv(CODE, bytes(4)), id=1), "MalformedField",
            "CODE is a u16", tag=CODE)
    invalid("retry_after_ms_8_bytes", raw_frame("GoAway", tlv(RETRY_AFTER_MS, bytes(8))),
            "MalformedField", "RETRY_AFTER_MS is a u32", tag=RETRY_AFTER_MS)
    invalid("malformed_unused_known_field", raw_frame("Ping", tlv(BUSINESS, b"\x01"), id=1),
            "MalformedField", "known fields are checked even on a type that ignores them",
            tag=BUSINESS)

    # MalformedField: length limits of ids, tokens and messages.
    invalid("app_id_empty", raw_frame("Login", tlv(APP, b"") + tlv(DEVICE, "d")
                                      + tlv(TOKEN, b"t"), id=1),
            "MalformedField", "ids are 1..=128 bytes", tag=APP)
    invalid("device_id_129_bytes", raw_frame("Login", tlv(APP, "a") + tlv(DEVICE, "d" * 129)
                                             + tlv(TOKEN, b"t"), id=1),
            "MalformedField", "ids are 1..=128 bytes", tag=DEVICE)
    invalid("group_id_empty", raw_frame("JoinGroup", tlv(GROUP, b""), id=1), "MalformedField",
            "ids are 1..=128 bytes", tag=GROUP)
    invalid("group_id_129_bytes_utf8", raw_frame("LeaveGroup", tlv(GROUP, GROUP_128_UTF8 + "c"),
                                                 id=1),
            "MalformedField", "129 bytes of valid UTF-8 (45 characters)", tag=GROUP)
    invalid("push_group_129_bytes", raw_frame("Push", field_u32(BUSINESS, 1)
                                              + tlv(GROUP, "g" * 129), b"x"),
            "MalformedField", "the optional Push group has the same limit", tag=GROUP)
    invalid("token_empty", raw_frame("TokenRefresh", tlv(TOKEN, b""), id=1), "MalformedField",
            "tokens are 1..=2048 bytes", tag=TOKEN)
    invalid("token_2049_bytes", raw_frame("Login", tlv(APP, "a") + tlv(DEVICE, "d")
                                          + tlv(TOKEN, TOKEN_2048 + b"!"), id=1),
            "MalformedField", "tokens are 1..=2048 bytes", tag=TOKEN)
    invalid("message_1025_bytes", raw_frame("Close", field_u16(CODE, 0)
                                            + tlv(MESSAGE, "m" * 1025)),
            "MalformedField", "messages are 0..=1024 bytes", tag=MESSAGE)
    invalid("message_too_long_before_utf8", raw_frame(
        "Kick", field_u16(CODE, 3) + tlv(MESSAGE, b"\xff" * 1025)), "MalformedField",
        "the length limit is checked before UTF-8", tag=MESSAGE)

    # MalformedField: metadata entries.
    invalid("metadata_value_overruns", raw_frame("Request", field_u32(BUSINESS, 1) + tlv(
        META, meta_entry("k", "v") + meta_entry("key", "abc", value_len=4)), id=1),
        "MalformedField", "the second entry's value_len runs past the META field", tag=META)
    invalid("metadata_key_overruns", raw_frame("Request", field_u32(BUSINESS, 1) + tlv(
        META, b"\x09abc"), id=1), "MalformedField", "key_len 9 with 3 bytes left",
        tag=META)
    invalid("metadata_missing_value_len", raw_frame("Login", login + tlv(
        META, b"\x02os"), id=1), "MalformedField",
        "the entry ends after its key, without value_len", tag=META)
    invalid("metadata_half_value_len", raw_frame("Response", field_u32(BUSINESS, 1) + tlv(
        META, b"\x02os\x00"), id=1), "MalformedField", "one byte of the 2-byte value_len",
        tag=META)
    invalid("metadata_empty_key", raw_frame("Push", field_u32(BUSINESS, 1) + tlv(
        META, meta_entry(b"", "v")), b"x"), "MalformedField", "metadata keys are 1..=255 "
        "bytes", tag=META)

    # MalformedField: RECOVERED is one byte, 0 or 1.
    invalid("join_ack_recovered_value_2", raw_frame("JoinAck", tlv(GROUP, "room") + tlv(
        RECOVERED, b"\x02"), id=1), "MalformedField", "RECOVERED must be 0 or 1",
        tag=RECOVERED)
    invalid("join_ack_recovered_two_bytes", raw_frame("JoinAck", tlv(GROUP, "room") + tlv(
        RECOVERED, b"\x00\x01"), id=1), "MalformedField", "RECOVERED is exactly one byte",
        tag=RECOVERED)

    # InvalidUtf8 in text fields and metadata keys.
    invalid("invalid_utf8_app", raw_frame("Login", tlv(APP, b"app\xff") + tlv(DEVICE, "d")
                                          + tlv(TOKEN, b"t"), id=1),
            "InvalidUtf8", "0xff never occurs in UTF-8", tag=APP)
    invalid("invalid_utf8_device_overlong", raw_frame("Login", tlv(APP, "a") + tlv(
        DEVICE, b"\xc0\xaf") + tlv(TOKEN, b"t"), id=1), "InvalidUtf8",
        "an overlong encoding of '/'", tag=DEVICE)
    invalid("invalid_utf8_group_surrogate", raw_frame("JoinAck", tlv(GROUP, b"\xed\xa0\x80"),
                                                      id=1),
            "InvalidUtf8", "an encoded UTF-16 surrogate (U+D800)", tag=GROUP)
    invalid("invalid_utf8_push_group", raw_frame("Push", field_u32(BUSINESS, 1)
                                                 + tlv(GROUP, b"room\x80"), b"x"),
            "InvalidUtf8", "a lone continuation byte", tag=GROUP)
    invalid("invalid_utf8_message_truncated_sequence", raw_frame(
        "Error", field_u16(CODE, 500) + tlv(MESSAGE, "错误".encode("utf-8")[:-1]), id=1),
        "InvalidUtf8", "the message ends inside a 3-byte sequence", tag=MESSAGE)
    invalid("invalid_utf8_metadata_key", raw_frame("Request", field_u32(BUSINESS, 1) + tlv(
        META, meta_entry(b"k\xfe", "v")), id=1), "InvalidUtf8",
        "metadata keys are UTF-8 (values are bytes); reported with the META tag", tag=META)

    # DuplicateField: a known tag twice, checked before the second value is parsed.
    invalid("duplicate_app", raw_frame("Login", tlv(APP, "a") + tlv(APP, "a") + tlv(DEVICE, "d")
                                       + tlv(TOKEN, b"t"), id=1),
            "DuplicateField", "APP twice, same value", tag=APP)
    invalid("duplicate_business", raw_frame("Request", field_u32(BUSINESS, 1)
                                            + field_u32(BUSINESS, 2), id=1),
            "DuplicateField", "BUSINESS twice", tag=BUSINESS)
    invalid("duplicate_code", raw_frame("Close", field_u16(CODE, 0) + field_u16(CODE, 0)),
            "DuplicateField", "CODE twice", tag=CODE)
    invalid("duplicate_group_not_adjacent", raw_frame(
        "Push", tlv(GROUP, "g1") + field_u32(BUSINESS, 1) + field_u64(SEQ, 1)
        + tlv(GROUP, "g2"), b"x"), "DuplicateField", "GROUP first and last", tag=GROUP)
    invalid("duplicate_expires_at_ms", raw_frame("LoginAck", field_u32(HEARTBEAT_MS, 1)
                                                 + field_u64(CONN_ID, 1)
                                                 + field_u64(EXPIRES_AT_MS, 1)
                                                 + field_u64(EXPIRES_AT_MS, 2), id=1),
            "DuplicateField", "EXPIRES_AT_MS twice", tag=EXPIRES_AT_MS)
    invalid("duplicate_before_malformed_value", raw_frame(
        "TokenRefresh", tlv(TOKEN, b"t") + tlv(TOKEN, b""), id=1), "DuplicateField",
        "the repeat is reported before its (empty, invalid) value is checked", tag=TOKEN)
    invalid("duplicate_unused_known_field", raw_frame(
        "Ping", field_u32(BUSINESS, 1) + field_u32(BUSINESS, 1), id=1), "DuplicateField",
        "duplicates of known tags are errors even on a type that ignores them",
        tag=BUSINESS)

    # MissingField: a required field is absent.
    invalid("login_missing_app", raw_frame("Login", tlv(DEVICE, "d") + tlv(TOKEN, b"t"), id=1),
            "MissingField", "Login requires APP", tag=APP)
    invalid("login_missing_token", raw_frame("Login", tlv(APP, "a") + tlv(DEVICE, "d"), id=1),
            "MissingField", "Login requires TOKEN", tag=TOKEN)
    invalid("login_ack_missing_heartbeat", raw_frame("LoginAck", field_u64(CONN_ID, 1), id=1),
            "MissingField", "LoginAck requires HEARTBEAT_MS", tag=HEARTBEAT_MS)
    invalid("login_ack_missing_conn_id", raw_frame("LoginAck", field_u32(HEARTBEAT_MS, 1),
                                                   id=1),
            "MissingField", "LoginAck requires CONN_ID", tag=CONN_ID)
    invalid("request_missing_business", raw_frame("Request", b"", b"payload", id=1),
            "MissingField", "Request requires BUSINESS", tag=BUSINESS)
    invalid("response_missing_business", raw_frame("Response", tlv(META, meta_entry("k", "v")),
                                                    id=1),
            "MissingField", "Response requires BUSINESS", tag=BUSINESS)
    invalid("push_missing_business", raw_frame("Push", tlv(GROUP, "g") + field_u64(SEQ, 1),
                                               b"x", id=1, flags=1),
            "MissingField", "Push requires BUSINESS", tag=BUSINESS)
    invalid("join_group_missing_group", raw_frame("JoinGroup", id=1), "MissingField",
            "JoinGroup requires GROUP", tag=GROUP)
    invalid("leave_ack_missing_group", raw_frame("LeaveAck", tlv(0x20, "room"), id=1),
            "MissingField", "an unknown tag does not stand in for GROUP", tag=GROUP)
    invalid("token_expiring_missing_deadline", raw_frame("TokenExpiring"), "MissingField",
            "TokenExpiring requires EXPIRES_AT_MS", tag=EXPIRES_AT_MS)
    invalid("token_refresh_missing_token", raw_frame("TokenRefresh", id=1), "MissingField",
            "TokenRefresh requires TOKEN", tag=TOKEN)
    invalid("kick_missing_code", raw_frame("Kick", tlv(MESSAGE, "bye")), "MissingField",
            "Kick requires CODE", tag=CODE)
    invalid("go_away_missing_retry_after", raw_frame("GoAway", tlv(MESSAGE, "draining")),
            "MissingField", "GoAway requires RETRY_AFTER_MS", tag=RETRY_AFTER_MS)
    invalid("error_missing_code", raw_frame("Error", id=1), "MissingField",
            "Error requires CODE", tag=CODE)
    invalid("close_missing_code", raw_frame("Close"), "MissingField", "Close requires CODE",
            tag=CODE)

    invalid("quality_report_missing_network", raw_frame("QualityReport", b"", b"\x01\x00", id=1),
            "MissingField", "QualityReport requires NETWORK", tag=NETWORK)
    invalid("quality_report_network_4", raw_frame("QualityReport", tlv(NETWORK, b"\x04"),
                                                  b"\x01\x00", id=1),
            "MalformedField", "NETWORK is 0..=3", tag=NETWORK)
    invalid("quality_report_network_2_bytes", raw_frame("QualityReport", tlv(NETWORK, b"\x00\x02"),
                                                        b"\x01\x00", id=1),
            "MalformedField", "NETWORK is one byte", tag=NETWORK)
    invalid("quality_report_duplicate_network", raw_frame(
        "QualityReport", tlv(NETWORK, b"\x01") + tlv(NETWORK, b"\x01"), b"\x01\x00", id=1),
        "DuplicateField", "NETWORK twice", tag=NETWORK)

    # Truncated: the input ends inside a frame.
    join = encode(frame("JoinGroup", id=1, group="room-1"))
    invalid("truncated_one_byte", b"\x4c", "Truncated", "one byte of the magic")
    invalid("truncated_magic_and_version", b"\x4c\x43\x01", "Truncated",
            "a good magic and version, then nothing")
    invalid("truncated_header_15_bytes", ping[:15], "Truncated", "one byte short of a header")
    invalid("truncated_header_only", ping[:16], "Truncated",
            "the header announces a 4-byte payload that never comes")
    invalid("truncated_inside_fields", join[:16 + 4], "Truncated",
            "the input ends inside the fields section")
    invalid("truncated_payload_one_byte_short", ping[:-1], "Truncated",
            "the last payload byte is missing")
    invalid("truncated_hides_field_errors", raw_frame(
        "Request", field_u32(BUSINESS, 1) + field_u32(BUSINESS, 2), id=1)[:-1], "Truncated",
        "fields are parsed only once the whole frame is in, so a duplicate field in an "
        "incomplete frame is reported as Truncated")


def b64url(data):
    """Unpadded base64url, as in login tokens (PROTOCOL.md section 10)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token(kid, secret, app, device, exp, bucket=None):
    """A login token, minted independently of the Rust code: the HMAC key is the
    secret's UTF-8 bytes as they are (no hex or base64 decoding, no hashing)."""
    parts = ["lc1" if bucket is None else "lc2", kid, b64url(app.encode()),
             b64url(device.encode()), str(exp)]
    if bucket is not None:
        parts.append(b64url(bucket.encode()))
    body = ".".join(parts)
    mac = hmac.new(secret.encode("utf-8"), body.encode("ascii"), hashlib.sha256).digest()
    return body + "." + b64url(mac)


# The development key of the reference gateway (longconn_core::token::DEV_TOKEN_SECRET).
DEV_KEY_ID, DEV_SECRET = "dev", "longconn-development-secret-do-not-use"


def token_vectors():
    """Inputs and the expected token; `secret` is used as its UTF-8 bytes."""
    cases = [
        ("lc1_basic", "k1", "0123456789abcdef", "demo", "phone-1", 2000000000, None),
        ("lc2_bucket", "k1", "0123456789abcdef", "demo", "phone-1", 2000000000,
         "canary-quic"),
        ("lc1_dev_secret", DEV_KEY_ID, DEV_SECRET, "demo", "d1", 4102444800, None),
        ("lc1_utf8_ids", "rot-2", "a secret with spaces and ümlauts", "app/é",
         "device+1=?", 1700000000, None),
        ("lc2_utf8_bucket", "k_2", "0123456789abcdef0123456789abcdef", "a", "b",
         18446744073709551615, "βeta"),
    ]
    out = []
    for name, kid, secret, app, device, exp, bucket in cases:
        out.append({
            "name": name, "kid": kid, "secret": secret,
            "secret_hex": secret.encode("utf-8").hex(), "app": app, "device": device,
            "expires_unix_s": exp, "bucket": bucket,
            "token": token(kid, secret, app, device, exp, bucket),
        })
    return out


# ---------------------------------------------------------------------------
# QualityReport bodies (PROTOCOL.md section 4.1)
# ---------------------------------------------------------------------------

REPORT_TRANSPORTS = ["tcp", "tls", "ws", "wss", "quic"]
REPORT_ENTRY = struct.Struct(">BH10HH10H")  # 45 bytes
assert REPORT_ENTRY.size == 45


def report_entry(transport, connect_attempts=0, connect_latency=(0,) * 10, pings=0,
                 rtt=(0,) * 10):
    return {"transport": transport, "connect_attempts": connect_attempts,
            "connect_latency": list(connect_latency), "pings": pings, "rtt": list(rtt)}


def report_body(report, count=None):
    """The body bytes of a report given as its JSON object (no checks: any counts)."""
    out = struct.pack(">BB", report["version"],
                      len(report["transports"]) if count is None else count)
    for e in report["transports"]:
        out += REPORT_ENTRY.pack(REPORT_TRANSPORTS.index(e["transport"]),
                                 e["connect_attempts"], *e["connect_latency"], e["pings"],
                                 *e["rtt"])
    return out


EXAMPLE_REPORT = {"version": 1, "transports": [
    report_entry("tcp", 3, (0, 0, 1, 1, 0, 0, 0, 0, 0, 0), 10, (0, 0, 2, 5, 2, 0, 0, 0, 0, 0)),
    report_entry("quic", 1, (0, 0, 0, 0, 1, 0, 0, 0, 0, 0), 0),
]}

QUALITY_REPORT_BODIES = []


def body_valid(name, report):
    for e in report["transports"]:
        assert sum(e["connect_latency"]) <= e["connect_attempts"] and sum(e["rtt"]) <= e["pings"]
    QUALITY_REPORT_BODIES.append({"name": name, "hex": hexs(report_body(report)),
                                  "report": report})


def body_invalid(name, data, error, note):
    QUALITY_REPORT_BODIES.append({"name": name, "hex": hexs(data), "error": error, "note": note})


def add_quality_report_bodies():
    body_valid("empty", {"version": 1, "transports": []})
    body_valid("example", EXAMPLE_REPORT)
    body_valid("all_five_transports_max_counts", {"version": 1, "transports": [
        report_entry(t, 0xFFFF, (0xFFFF,) + (0,) * 9, 0xFFFF, (0,) * 9 + (0xFFFF,))
        for t in REPORT_TRANSPORTS]})
    body_valid("failures_only", {"version": 1, "transports": [
        report_entry("ws", 4, (0,) * 10, 3, (0,) * 10)]})
    example = report_body(EXAMPLE_REPORT)
    tcp = example[2:2 + 45]
    body_invalid("too_long", b"\x01\x00" + b"\x00" * 255, "TooLong",
                 "257 bytes: more than 256, checked first")
    body_invalid("truncated_empty", b"", "Truncated", "no version and count")
    body_invalid("truncated_version_only", b"\x02", "Truncated",
                 "one byte: truncation is checked before the version")
    body_invalid("unsupported_version", b"\x02\x00", "UnsupportedVersion", "version 2")
    body_invalid("truncated_entry", example[:-1], "Truncated", "the last entry is cut short")
    body_invalid("count_above_entries", b"\x01\x01", "Truncated",
                 "the count announces an entry that is not there")
    body_invalid("unknown_transport", b"\x01\x01\x05" + tcp[1:], "UnknownTransport",
                 "transport id 5")
    body_invalid("transport_repeated", b"\x01\x02" + tcp + tcp, "TransportOrder",
                 "tcp twice")
    body_invalid("transport_descending", b"\x01\x02" + example[2 + 45:] + tcp,
                 "TransportOrder", "quic before tcp")
    body_invalid("connects_above_attempts", report_body({"version": 1, "transports": [
        report_entry("tcp", 1, (1, 1) + (0,) * 8)]}), "CountsInconsistent",
        "2 successful connects of 1 attempt")
    body_invalid("pongs_above_pings", report_body({"version": 1, "transports": [
        report_entry("ws", 0, (0,) * 10, 1, (2,) + (0,) * 9)]}), "CountsInconsistent",
        "2 answered pings of 1")
    body_invalid("trailing_byte", b"\x01\x00\x00", "TrailingBytes", "a byte after no entries")
    QUALITY_REPORT_BODIES.sort(key=lambda v: v["name"])


def main(argv):
    add_valid()
    add_invalid()
    add_quality_report_bodies()
    for group in (VALID, INVALID):
        group.sort(key=lambda v: v["name"])
    names = [v["name"] for v in VALID + INVALID]
    assert len(names) == len(set(names)), "vector names must be unique"
    assert {v["frame"]["type"] for v in VALID} == set(FRAME_TYPES)
    doc = {
        "description": DESCRIPTION,
        "protocol_version": PROTOCOL_VERSION,
        "max_frame_size": MAX_FRAME_SIZE,
        "valid": VALID,
        "invalid": INVALID,
        "tokens": token_vectors(),
        "quality_report_bodies": QUALITY_REPORT_BODIES,
    }
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    data = text.encode("utf-8")
    if len(argv) > 2:
        sys.exit("usage: gen_protocol_vectors.py [OUTPUT]")
    if len(argv) == 2:
        with open(argv[1], "wb") as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main(sys.argv)
