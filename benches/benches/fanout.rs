//! In-process group fan-out to 10,000 members with a 100-byte payload: the cost of one
//! `GroupRegistry::publish` up to every member's queue (no sockets).
//!
//! - `encode_once/inline`: one encoding shared by all members, pushed by the publisher.
//! - `encode_once/pool`: the same, in chunks of 1,024 over the bounded worker pool
//!   (2 workers, one per core here).
//! - `push_only`: the floor, one shared encoding pushed by a plain loop over the handles
//!   (no registry, no snapshot, no sequence number).
//! - `encode_per_member`: the naive way, one encoding per member, for comparison.
//!
//! Member queues are emptied between iterations, outside the timing.
//!
//! Run: `cargo bench -p longconn-benches --bench fanout`. Figures go to docs/BENCHMARKS.md.
//! With `LONGCONN_BENCH_METRICS=1` a Prometheus recorder is installed first (as the
//! gateway does), so the run includes the metrics' cost; compare with a run without.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use longconn_core::{SlowConsumerPolicy, Transmit};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{ConnHandle, PushMessage};

const MEMBERS: usize = 10_000;
const MAX_FRAME: usize = 64 * 1024;

fn members() -> Vec<ConnHandle> {
    (1..=MEMBERS as u64)
        .map(|id| ConnHandle::new(id, 1024, SlowConsumerPolicy::DropNewest))
        .collect()
}

fn registry(chunk: usize, members: &[ConnHandle]) -> GroupRegistry {
    let config = GroupConfig::builder()
        .fanout_chunk(chunk)
        .fanout_workers(2)
        .build()
        .unwrap();
    let registry = GroupRegistry::new(config);
    for member in members {
        registry.join(member, "stadium").unwrap();
    }
    registry
}

fn drain(members: &[ConnHandle]) {
    for member in members {
        drop(member.take_pushes());
    }
}

/// Installs the gateway's recorder when `LONGCONN_BENCH_METRICS=1`.
fn metrics_on() {
    if std::env::var("LONGCONN_BENCH_METRICS").as_deref() == Ok("1") {
        let installed = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
        if installed.is_ok() {
            longconn_server::metrics::describe();
            eprintln!("fanout bench: metrics recorder installed");
        }
    }
}

fn fanout(c: &mut Criterion) {
    metrics_on();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let message = PushMessage::new(7, Bytes::from(vec![b'x'; 100]));
    let members = members();
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(MEMBERS as u64));

    for (name, chunk) in [("encode_once/inline", 1 << 20), ("encode_once/pool", 1024)] {
        let registry = registry(chunk, &members);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let report = runtime
                        .block_on(registry.publish("stadium", &message))
                        .unwrap();
                    spent += start.elapsed();
                    assert_eq!(report.queued, MEMBERS);
                    drain(&members);
                }
                spent
            })
        });
        for member in &members {
            registry.leave(member.id(), "stadium");
        }
    }

    group.bench_function("push_only", |b| {
        let bytes = message.frame().to_bytes(MAX_FRAME).unwrap();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for member in &members {
                    member.push(Transmit::Encoded(bytes.clone()));
                }
                spent += start.elapsed();
                drain(&members);
            }
            spent
        })
    });
    group.bench_function("encode_per_member", |b| {
        let frame = message.frame();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for member in &members {
                    let bytes = frame.to_bytes(MAX_FRAME).unwrap();
                    member.push(Transmit::Encoded(bytes));
                }
                spent += start.elapsed();
                drain(&members);
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
