//! Encode and decode cost of a frame with a 128-byte payload.
//!
//! Run: `cargo bench -p longconn-benches --bench codec`. Figures go to docs/BENCHMARKS.md.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use longconn_benches::{push_frame_128, request_frame_128};
use longconn_core::FrameCodec;
use std::hint::black_box;

const MAX: usize = 64 * 1024;
/// Frames in one read buffer: about 5 KiB, one socket read's worth.
const FRAMES_PER_BUFFER: usize = 32;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, frame) in [
        ("push_128", push_frame_128()),
        ("request_128", request_frame_128()),
    ] {
        // Into a reused write buffer: what a connection writer does.
        let mut codec = FrameCodec::new(MAX);
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(format!("{name}/into_buffer"), |b| {
            b.iter(|| {
                buf.clear();
                codec.encode(black_box(&frame), &mut buf).unwrap();
                black_box(buf.len())
            })
        });
        // Into one fresh shared Bytes: what a fan-out does once per group push.
        group.bench_function(format!("{name}/to_bytes"), |b| {
            b.iter(|| black_box(&frame).to_bytes(MAX).unwrap())
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, frame) in [
        ("push_128", push_frame_128()),
        ("request_128", request_frame_128()),
    ] {
        let one = frame.to_bytes(MAX).unwrap();
        // A read buffer holding many frames, decoded one after another: the stream case.
        // Time per frame = reported time / FRAMES_PER_BUFFER.
        let mut stream = BytesMut::new();
        for _ in 0..FRAMES_PER_BUFFER {
            stream.extend_from_slice(&one);
        }
        group.throughput(Throughput::Elements(FRAMES_PER_BUFFER as u64));
        group.bench_function(format!("{name}/stream_x{FRAMES_PER_BUFFER}"), |b| {
            // One read buffer, refilled and decoded again each iteration, as a connection
            // does: the refill (a 5 KiB copy, like the kernel's copy on `read`) is timed
            // with the decoding, so the figure per frame is slightly pessimistic.
            let mut buf = BytesMut::with_capacity(stream.len());
            let mut codec = FrameCodec::new(MAX);
            b.iter(|| {
                buf.reserve(stream.len());
                buf.extend_from_slice(&stream);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    black_box(frame);
                }
            })
        });
        // One frame that arrived as one message (WebSocket): no buffer split at all.
        group.throughput(Throughput::Elements(1));
        let codec = FrameCodec::new(MAX);
        group.bench_function(format!("{name}/message"), |b| {
            b.iter(|| codec.decode_message(black_box(one.clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
