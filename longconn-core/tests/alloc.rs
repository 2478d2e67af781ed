//! Proves the allocation claims of the codec with a counting allocator: decoding a frame
//! allocates nothing (its fields and payload are slices of the read buffer), and encoding
//! into a buffer with room allocates nothing.
// A `GlobalAlloc` implementation is `unsafe` by definition; this test-only allocator just
// forwards to the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use longconn_core::{Frame, FrameCodec, Metadata, Text};

struct Counting;

thread_local! {
    /// Only allocations made by the measuring thread, inside `count`, are counted, and
    /// each thread has its own count: tests run in parallel.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get) - before)
}

const MAX: usize = 64 * 1024;

fn push_128() -> Frame {
    Frame::Push {
        id: 1,
        ack_required: true,
        business: 7,
        group: Some(Text::from_static("room-1")),
        seq: Some(42),
        epoch: None,
        meta: Metadata::from_pairs([("trace", "abc123")]).unwrap(),
        payload: Bytes::from(vec![0xAB; 128]),
    }
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = count(|| Vec::<u8>::with_capacity(10));
    drop(v);
    assert_eq!(n, 1, "a sanity check that the counter works");
}

#[test]
fn decoding_a_stream_of_frames_allocates_nothing_per_frame() {
    let frame = push_128();
    let one = frame.to_bytes(MAX).unwrap();
    let mut stream = BytesMut::with_capacity(one.len() * 1000);
    for _ in 0..1000 {
        stream.extend_from_slice(&one);
    }
    let mut codec = FrameCodec::new(MAX);
    // The first split turns the read buffer into a shared one: one small allocation per
    // buffer, as a connection's read buffer pays once. Every later frame is a slice.
    let (first, allocations) = count(|| codec.decode(&mut stream).unwrap().unwrap());
    println!("first frame of a buffer: {allocations} allocations");
    assert_eq!(first, frame);
    assert!(allocations <= 1);
    let (decoded, allocations) = count(|| {
        let mut frames = 0;
        while let Some(decoded) = codec.decode(&mut stream).unwrap() {
            assert_eq!(decoded, frame);
            frames += 1;
        }
        frames
    });
    println!("next {decoded} frames: {allocations} allocations");
    assert_eq!(decoded, 999);
    assert_eq!(allocations, 0, "{allocations} allocations for 999 frames");
}

#[test]
fn decoding_a_message_allocates_nothing() {
    let frame = push_128();
    let message = frame.to_bytes(MAX).unwrap();
    let codec = FrameCodec::new(MAX);
    // Shares the buffer once up front, as a transport's read buffer already is.
    let shared = message.clone();
    drop(shared);
    let (decoded, allocations) = count(|| codec.decode_message(message.clone()).unwrap());
    println!("decode_message: {allocations} allocations");
    assert_eq!(decoded, frame);
    assert_eq!(allocations, 0);
}

#[test]
fn encoding_into_a_buffer_with_room_allocates_nothing() {
    let frame = push_128();
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::with_capacity(4096);
    let (_, allocations) = count(|| {
        for _ in 0..10 {
            buf.clear();
            codec.encode(&frame, &mut buf).unwrap();
        }
    });
    println!("encode x10: {allocations} allocations");
    assert_eq!(allocations, 0);
    assert_eq!(codec.decode_message(buf.split().freeze()).unwrap(), frame);
}
