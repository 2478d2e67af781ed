#!/usr/bin/env python3
"""Generates docs/protocol-vectors.json: test vectors for the longconn wire protocol.

This is an independent encoder, written from docs/PROTOCOL.md and not from the Rust
code, so the Rust tests (longconn-core/tests/vectors.rs) check the code against the
specification rather than against itself.

    python3 docs/tools/gen_protocol_vectors.py > docs/protocol-vectors.json

Output is deterministic: running it twice gives identical bytes.
"""
import json
import struct
import sys

MAGIC = 0x4C43
VERSION = 1
MAX_FRAME_SIZE = 65536
FLAG_ACK_REQUIRED = 0x01

TYPES = {
    "Login": 0x01, "LoginAck": 0x02, "Ping": 0x03, "Pong": 0x04, "Request": 0x05,
    "Response": 0x06, "Push": 0x07, "PushAck": 0x08, "JoinGroup": 0x09, "JoinAck": 0x0A,
    "LeaveGroup": 0x0B, "LeaveAck": 0x0C, "TokenExpiring": 0x0D, "TokenRefresh": 0x0E,
    "TokenRefreshAck": 0x0F, "Kick": 0x10, "GoAway": 0x11, "Error": 0x12, "Close": 0x13,
}
# Frame types whose header id is a correlation id; the others send 0 and ignore it.
HAS_ID = {"Login", "LoginAck", "Ping", "Pong", "Request", "Response", "Push", "PushAck",
          "JoinGroup", "JoinAck", "LeaveGroup", "LeaveAck", "TokenRefresh",
          "TokenRefreshAck", "Error"}
HAS_PAYLOAD = {"Ping", "Pong", "Request", "Response", "Push"}

TAG = {"app": 0x01, "device": 0x02, "token": 0x03, "business": 0x04, "meta": 0x05,
       "group": 0x06, "seq": 0x07, "code": 0x08, "message": 0x09,
       "retry_after_ms": 0x0A, "heartbeat_ms": 0x0B, "conn_id": 0x0C,
       "expires_at_ms": 0x0D}
# Which JSON key fills each field, per frame type (key, tag, kind); a key whose value is
# None (or empty, for message and meta) is left out of the frame.
LAYOUT = {
    "Login": [("app", "text"), ("device", "text"), ("token", "bytes"), ("meta", "meta")],
    "LoginAck": [("heartbeat_ms", "u32"), ("conn_id", "u64"), ("expires_at_ms", "u64")],
    "Ping": [], "Pong": [], "PushAck": [],
    "Request": [("business", "u32"), ("meta", "meta")],
    "Response": [("business", "u32"), ("meta", "meta")],
    "Push": [("business", "u32"), ("meta", "meta"), ("group", "text"), ("seq", "u64")],
    "JoinGroup": [("group", "text")], "JoinAck": [("group", "text")],
    "LeaveGroup": [("group", "text")], "LeaveAck": [("group", "text")],
    "TokenExpiring": [("deadline_ms", "u64")],
    "TokenRefresh": [("token", "bytes")],
    "TokenRefreshAck": [("expires_at_ms", "u64")],
    "Kick": [("code", "u16"), ("message", "text")],
    "Error": [("code", "u16"), ("message", "text")],
    "Close": [("code", "u16"), ("message", "text")],
    "GoAway": [("message", "text"), ("retry_after_ms", "u32")],
}
# `deadline_ms` travels in the EXPIRES_AT_MS field.
FIELD_TAG = dict(TAG, deadline_ms=TAG["expires_at_ms"])


def tlv(tag, value):
    return struct.pack(">BH", tag, len(value)) + value


def meta_bytes(entries):
    out = b""
    for entry in entries:
        key = entry["key"].encode()
        value = bytes.fromhex(entry["value_hex"])
        out += struct.pack(">B", len(key)) + key + struct.pack(">H", len(value)) + value
    return out


def field_value(kind, value):
    if kind == "text":
        return value.encode()
    if kind == "bytes":
        return bytes.fromhex(value)
    if kind == "meta":
        return meta_bytes(value)
    return struct.pack({"u16": ">H", "u32": ">I", "u64": ">Q"}[kind], value)


def header(type_code, flags, fields_len, payload_len, frame_id, reserved=0,
           magic=MAGIC, version=VERSION):
    return struct.pack(">HBBBBHII", magic, version, type_code, flags, reserved,
                       fields_len, payload_len, frame_id)


def encode(frame):
    """Encodes a decoded-frame dict (the JSON form) canonically."""
    name = frame["type"]
    fields = b""
    for key, kind in LAYOUT[name]:
        value = frame.get(key)
        if value is None or (kind in ("meta",) and not value) or (key == "message" and value == ""):
            continue
        fields += tlv(FIELD_TAG[key], field_value(kind, value))
    payload = bytes.fromhex(frame.get("payload_hex", ""))
    flags = FLAG_ACK_REQUIRED if frame.get("ack_required") else 0
    return header(TYPES[name], flags, len(fields), len(payload), frame.get("id", 0)) + fields + payload


def raw(type_name, fields=b"", payload=b"", frame_id=0, flags=0, reserved=0, **kw):
    """A frame built field by field, for vectors the canonical encoder cannot make."""
    code = TYPES[type_name] if isinstance(type_name, str) else type_name
    return header(code, flags, len(fields), len(payload), frame_id, reserved, **kw) + fields + payload


def meta(*pairs):
    return [{"key": k, "value_hex": v.encode().hex()} for k, v in pairs]


def frame(type_name, **values):
    """The full JSON form of a frame: every field of its type, None where absent."""
    out = {"type": type_name}
    if type_name in HAS_ID:
        out["id"] = values.pop("id", 0)
    for key, kind in LAYOUT[type_name]:
        default = [] if kind == "meta" else ("" if key == "message" else None)
        out[key] = values.pop(key, default)
    if type_name == "Push":
        out["ack_required"] = values.pop("ack_required", False)
    if type_name in HAS_PAYLOAD:
        out["payload_hex"] = values.pop("payload_hex", "")
    assert not values, f"unknown keys for {type_name}: {values}"
    return out


def valid_vectors():
    v = []

    def add(name, f, hex_=None, canonical=True):
        entry = {"name": name, "hex": hex_ or encode(f).hex(), "frame": f}
        if not canonical:
            entry["canonical"] = False
        v.append(entry)

    add("ping_worked_example", frame("Ping", id=7, payload_hex=b"ping".hex()))
    add("login_minimal", frame("Login", id=1, app="demo", device="d1", token=b"t".hex()))
    add("login_with_meta", frame("Login", id=2, app="demo", device="phone-1",
                                 token=b"lc1.k1.token".hex(),
                                 meta=meta(("os", "ios"), ("v", "1.2.3"), ("empty", ""))))
    add("login_max_length_ids", frame("Login", id=0xFFFFFFFF, app="a" * 128,
                                      device="\u00e9" * 64, token=("ff" * 2048)))
    add("login_ack", frame("LoginAck", id=1, conn_id=(7 << 48) | 12345, heartbeat_ms=30000,
                           expires_at_ms=1_764_000_000_000))
    add("login_ack_no_expiry", frame("LoginAck", id=1, conn_id=1, heartbeat_ms=1))
    add("ping_empty", frame("Ping", id=0))
    add("pong", frame("Pong", id=7, payload_hex=b"ping".hex()))
    add("request", frame("Request", id=9, business=1, meta=meta(("trace", "abc123")),
                         payload_hex=("cd" * 128)))
    add("request_empty_payload", frame("Request", id=10, business=0xFFFFFFFF))
    add("response", frame("Response", id=9, business=1, payload_hex=b"echo".hex()))
    add("push_full", frame("Push", id=5, ack_required=True, business=7, group="room-1",
                           seq=42, meta=meta(("k", "v")), payload_hex=("ab" * 128)))
    add("push_minimal", frame("Push", id=0, business=3))
    add("push_ack", frame("PushAck", id=5))
    add("join_group", frame("JoinGroup", id=11, group="room-1"))
    add("join_ack", frame("JoinAck", id=11, group="room-1"))
    add("leave_group", frame("LeaveGroup", id=12, group="\u623f\u95f4"))
    add("leave_ack", frame("LeaveAck", id=12, group="room-1"))
    add("token_expiring", frame("TokenExpiring", deadline_ms=1_764_000_030_000))
    add("token_refresh", frame("TokenRefresh", id=13, token=b"new-token".hex()))
    add("token_refresh_ack", frame("TokenRefreshAck", id=13, expires_at_ms=1_764_003_600_000))
    add("token_refresh_ack_no_expiry", frame("TokenRefreshAck", id=14))
    add("kick_replaced", frame("Kick", code=2, message="logged in elsewhere"))
    add("go_away", frame("GoAway", retry_after_ms=5000))
    add("go_away_with_message", frame("GoAway", retry_after_ms=0, message="maintenance"))
    add("error_busy", frame("Error", id=9, code=303, message="too many requests in flight"))
    add("error_unknown_code", frame("Error", id=9, code=4242))
    add("close_normal", frame("Close", code=0))
    add("close_idle_timeout", frame("Close", code=5, message=""))

    # Non-canonical inputs that must still decode.
    unknown_tag = tlv(0x04, struct.pack(">I", 1)) + tlv(0x7E, b"future field")
    add("request_with_unknown_tag_skipped",
        frame("Request", id=3, business=1, payload_hex="00"),
        raw("Request", unknown_tag, b"\x00", frame_id=3).hex(), canonical=False)
    out_of_order = tlv(0x07, struct.pack(">Q", 1)) + tlv(0x04, struct.pack(">I", 2))
    add("push_fields_out_of_order", frame("Push", id=4, business=2, seq=1),
        raw("Push", out_of_order, frame_id=4).hex(), canonical=False)
    add("kick_header_id_ignored", frame("Kick", code=3),
        raw("Kick", tlv(0x08, struct.pack(">H", 3)), frame_id=99).hex(), canonical=False)
    add("close_empty_message_field", frame("Close", code=0),
        raw("Close", tlv(0x08, b"\x00\x00") + tlv(0x09, b"")).hex(), canonical=False)
    return v


def invalid_vectors():
    ping = raw("Ping", payload=b"ping", frame_id=7)
    v = []

    def add(name, data, error, note, truncated=False):
        entry = {"name": name, "hex": data.hex(), "error": error, "note": note}
        if truncated:
            entry["at_eof"] = True
        v.append(entry)

    add("bad_magic", b"GET / HTTP/1.1\r\n", "BadMagic", "an HTTP request, not a frame")
    add("bad_magic_two_bytes", b"\x4c\x44", "BadMagic", "detected after two bytes")
    add("unsupported_version", raw("Ping", version=2), "UnsupportedVersion", "version 2")
    add("unsupported_version_three_bytes", b"\x4c\x43\x00", "UnsupportedVersion",
        "detected after three bytes")
    add("frame_too_large", header(TYPES["Push"], 0, 0, MAX_FRAME_SIZE, 1),
        "FrameTooLarge", "16 + 65536 bytes announced; detected from the header alone")
    add("unknown_frame_type", raw(0x14), "UnknownFrameType", "type 0x14 is not assigned")
    add("unknown_frame_type_zero", raw(0x00), "UnknownFrameType", "type 0 is not assigned")
    add("ack_flag_on_request", raw("Request", tlv(0x04, b"\x00\x00\x00\x01"), flags=1),
        "ReservedBits", "ACK_REQUIRED is only defined for Push")
    add("unknown_flag_on_push", raw("Push", tlv(0x04, b"\x00\x00\x00\x01"), flags=2),
        "ReservedBits", "flag bit 1 is reserved")
    add("reserved_byte_set", raw("Ping", reserved=1), "ReservedBits", "byte 5 must be 0")
    add("payload_on_join", raw("JoinGroup", tlv(0x06, b"g"), b"x"), "MalformedField",
        "JoinGroup carries no payload")
    add("field_header_overruns", raw("Ping", b"\x04\x00"), "MalformedField",
        "two bytes of a three-byte field header")
    add("field_value_overruns", raw("Request", b"\x04\x00\x09\x00\x00\x00\x01"),
        "MalformedField", "length 9 but only 4 value bytes in the section")
    add("business_wrong_width", raw("Request", tlv(0x04, b"\x00\x01")), "MalformedField",
        "BUSINESS is a 4-byte integer")
    add("seq_wrong_width", raw("Push", tlv(0x04, b"\x00\x00\x00\x01") + tlv(0x07, b"\x01")),
        "MalformedField", "SEQ is an 8-byte integer")
    add("code_wrong_width", raw("Close", tlv(0x08, b"\x00\x00\x00")), "MalformedField",
        "CODE is a 2-byte integer")
    add("empty_app", raw("Login", tlv(0x01, b"") + tlv(0x02, b"d") + tlv(0x03, b"t")),
        "MalformedField", "ids are 1..=128 bytes")
    add("app_too_long", raw("Login", tlv(0x01, b"a" * 129) + tlv(0x02, b"d") + tlv(0x03, b"t")),
        "MalformedField", "ids are 1..=128 bytes")
    add("token_too_long", raw("TokenRefresh", tlv(0x03, b"t" * 2049)), "MalformedField",
        "tokens are 1..=2048 bytes")
    add("message_too_long", raw("Close", tlv(0x08, b"\x00\x00") + tlv(0x09, b"m" * 1025)),
        "MalformedField", "messages are at most 1024 bytes")
    add("metadata_entry_overruns", raw("Request", tlv(0x04, b"\x00\x00\x00\x01") +
                                       tlv(0x05, b"\x02os\x00\x05ios")),
        "MalformedField", "value length 5 but 3 bytes left")
    add("metadata_empty_key", raw("Request", tlv(0x04, b"\x00\x00\x00\x01") +
                                  tlv(0x05, b"\x00\x00\x00")),
        "MalformedField", "metadata keys are 1..=255 bytes")
    add("invalid_utf8_device", raw("Login", tlv(0x01, b"a") + tlv(0x02, b"\xff\xfe") +
                                   tlv(0x03, b"t")),
        "InvalidUtf8", "text fields are UTF-8")
    add("invalid_utf8_metadata_key", raw("Request", tlv(0x04, b"\x00\x00\x00\x01") +
                                         tlv(0x05, b"\x01\xff\x00\x00")),
        "InvalidUtf8", "metadata keys are UTF-8")
    add("duplicate_field", raw("Push", tlv(0x04, b"\x00\x00\x00\x01") * 2), "DuplicateField",
        "BUSINESS twice")
    add("missing_business", raw("Request", payload=b"x"), "MissingField",
        "Request requires BUSINESS")
    add("missing_token", raw("Login", tlv(0x01, b"a") + tlv(0x02, b"d")), "MissingField",
        "Login requires TOKEN")
    add("missing_code", raw("Close"), "MissingField", "Close requires CODE")
    add("missing_group", raw("JoinGroup", frame_id=1), "MissingField",
        "JoinGroup requires GROUP")
    add("truncated_header", ping[:10], "Truncated", "stream ends inside the header",
        truncated=True)
    add("truncated_body", ping[:-1], "Truncated", "stream ends one byte short",
        truncated=True)
    return v


def main():
    doc = {
        "description": (
            "Test vectors for the longconn wire protocol, version 1 (docs/PROTOCOL.md). "
            "Generated by docs/tools/gen_protocol_vectors.py; do not edit by hand. "
            "'valid': each 'hex' decodes to 'frame'. A frame lists every field of its "
            "type: 'type' (frame type name), 'id' (only for types with a correlation "
            "id), text fields as strings, 'token' and 'payload_hex' as hex, 'meta' as a "
            "list of {key, value_hex}, 'code' as its number, absent optional fields as "
            "null, an absent message as \"\". Unless 'canonical' is false, encoding "
            "'frame' gives exactly 'hex'. 'invalid': decoding 'hex' (with the stream at "
            "its end when 'at_eof' is true) fails with the error kind in 'error' "
            "(the Rust longconn_core::Error variant names). All use max_frame_size."
        ),
        "protocol_version": VERSION,
        "max_frame_size": MAX_FRAME_SIZE,
        "valid": valid_vectors(),
        "invalid": invalid_vectors(),
    }
    json.dump(doc, sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
