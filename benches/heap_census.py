#!/usr/bin/env python3
"""Ranks a heaptrack "leaked" flame graph (demangled folded stacks, one per line,
`frame;frame;... bytes`) of a gateway killed while holding N idle connections, by
allocation site, in bytes per connection. Used by benches/heap-census.sh.

The rules name what each site is (quinn 0.11, quinn-proto 0.11, rustls 0.23, tokio 1;
docs/BENCHMARKS.md, "Idle memory, QUIC census"); the first rule that matches a stack
wins. `--other` lists the stacks no rule matched.
"""
import collections
import sys

RULES = [
    ("fixed (endpoint buffers, runtime, startup)", (
        "new_with_abstract_socket", "rtld.c", "Stdout", " (builder.rs)",
        "bind_with (quic.rs)", "lang_start")),
    ("quinn: connection event channel, first block (tokio mpsc, 32 slots)",
     ("block.rs",)),
    ("quinn: connection event channel, Chan (Arc)", ("channel_from_list",)),
    ("quinn: io poller (Box)", ("create_io_poller",)),
    ("quinn: driver timer (boxed Sleep)", ("new_timer",)),
    ("tokio: task cells (gateway session task, quinn ConnectionDriver)",
     ("new_task", "bind_new_task")),
    ("quinn: ConnectionInner (Arc; State with proto::Connection inline)",
     ("new (connection.rs)|new<> (sync.rs)",)),
    ("quinn: Connecting (oneshots)", ("new (connection.rs)",)),
    ("rustls: handshake buffers allocated with the session", ("for_server",)),
    ("rustls: TlsSession (Box; quic::ServerConnection)", ("start_session",)),
    ("quinn-proto: next 1-RTT packet keys (prepared for a key update)",
     ("next_packet_keys", "next_1rtt_keys")),
    ("quinn-proto: 1-RTT packet and header keys", ("packet_key", "header_protection_key")),
    ("rustls: TLS record-layer encrypter/decrypter (unused by QUIC)",
     ("encrypter (tls13.rs)", "decrypter (tls13.rs)")),
    ("quinn-proto: sent_packets (BTreeMap leaf)", ("sent (spaces.rs)", "finish_and_track")),
    ("quinn: State::send_buffer (one MTU, kept)", ("drive_transmit",)),
    ("rustls: deframer buffer (read_hs)", ("buffers.rs",)),
    ("quinn: event queue of the experimental patch (lazy_chan)", ("lazy_chan",)),
    ("connection ids (endpoint index, CID state)", (
        "new_cid", "send_new_identifiers", "cid_state", "issue_first_cids",
        "update_rem_cid", "insert (endpoint.rs)", "insert_initial_incoming",
        "add_connection", "handle_event (endpoint.rs)", "retire_cids",
        "handle_event (mod.rs)|rev.rs")),
    ("quinn-proto: crypto streams (pending frames, assembler)",
     ("write_crypto", "read_crypto")),
    ("quinn-proto: stream state (send/recv, assembler, blocked maps)", (
        "send_stream.rs", "recv_stream.rs", "send.rs", "recv.rs", "assembler",
        "btree_range_set", "send_buffer.rs")),
    ("longconn: session, hub, driver", (
        "driver.rs", "hub.rs", "device_key", "timers.rs", "login_limit", "server.rs")),
    ("rustls: other", ("tls13.rs", "hs.rs", "rustls")),
]


def matches(stack, keys):
    # "a|b": both a and b in the stack.
    return any(all(part in stack for part in key.split("|")) for key in keys)


def main():
    path, conns = sys.argv[1], int(sys.argv[2])
    show_other = "--other" in sys.argv[3:]
    totals = collections.Counter()
    other = []
    total = 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, cost = line.rstrip("\n").rpartition(" ")
        if not cost.isdigit():
            continue
        cost = int(cost)
        total += cost
        for name, keys in RULES:
            if matches(stack, keys):
                totals[name] += cost
                break
        else:
            totals["other"] += cost
            other.append((cost, stack))
    fixed = totals[RULES[0][0]]
    print(f"live heap {total} B over {conns} connections: {total / conns:.0f} B each, "
          f"{(total - fixed) / conns:.0f} B without the fixed part")
    print("| B per connection | share | site |")
    print("|---:|---:|---|")
    for name, cost in totals.most_common():
        share = "" if name == RULES[0][0] else f"{100 * cost / (total - fixed):.1f} %"
        print(f"| {cost / conns:,.0f} | {share} | {name} |")
    if show_other:
        for cost, stack in sorted(other, reverse=True)[:20]:
            print(f"{cost / conns:8.1f}", " | ".join(stack.split(";")[-12:])[:400])


if __name__ == "__main__":
    main()
