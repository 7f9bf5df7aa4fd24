//! The in-flight index: claim a key and release it (drop the claim), from one thread and from two
//! threads at once (this machine has two cores, like the server's default runtime on it).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use onceledger_core::idempotency::{Claim, IdempotencyKey, InFlightIndex};
use onceledger_core::ledger::TenantId;

/// Distinct keys each thread cycles through (UUID-shaped, like real clients' keys).
const KEYS_PER_THREAD: usize = 4096;
/// Claims held for the whole benchmark, standing for the requests in flight on a loaded server.
const BACKGROUND_CLAIMS: usize = 256;

fn keys(thread: usize) -> Vec<IdempotencyKey> {
    (0..KEYS_PER_THREAD)
        .map(|i| {
            let key = format!("{thread:08x}-5b7d-4e2a-9c4b-{i:012x}");
            IdempotencyKey::parse(key.as_bytes()).expect("valid key")
        })
        .collect()
}

/// `iters` claim+release pairs on each of two threads started together; the wall time of the
/// slower thread. Both threads use `keys[t]`, so equal key sets make them contend on every key.
fn two_threads(index: &Arc<InFlightIndex>, keys: [&[IdempotencyKey]; 2], iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let workers: Vec<_> = keys
            .iter()
            .map(|keys| {
                let (index, barrier) = (Arc::clone(index), &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    for i in 0..iters as usize {
                        drop(black_box(
                            index.claim(TenantId::DEFAULT, &keys[i % keys.len()]),
                        ));
                    }
                    started.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn inflight(c: &mut Criterion) {
    let index = InFlightIndex::new();
    let held: Vec<Claim> = keys(0xbeef)
        .iter()
        .take(BACKGROUND_CLAIMS)
        .map(|k| index.claim(TenantId::DEFAULT, k).expect("free key"))
        .collect();
    let (a, b) = (keys(0), keys(1));

    let mut group = c.benchmark_group("inflight");
    group.throughput(Throughput::Elements(1));
    group.bench_function("claim_release/1_thread", |bench| {
        let mut i = 0usize;
        bench.iter(|| {
            i = (i + 1) % a.len();
            drop(black_box(index.claim(TenantId::DEFAULT, &a[i])));
        })
    });
    // Two claims per iteration, one on each thread: time per claim+release = reported / 2.
    group.throughput(Throughput::Elements(2));
    group.bench_function("claim_release/2_threads_distinct_keys", |bench| {
        bench.iter_custom(|iters| two_threads(&index, [&a, &b], iters))
    });
    // Both threads race for the same key each time: one wins, the other is refused (the 409 path).
    group.bench_function("claim_release/2_threads_same_keys", |bench| {
        bench.iter_custom(|iters| two_threads(&index, [&a, &a], iters))
    });
    group.finish();
    assert_eq!(index.len(), BACKGROUND_CLAIMS, "every claim released");
    drop(held);
}

criterion_group!(benches, inflight);
criterion_main!(benches);
