//! The authentication check on the request path: parse the bearer header, hash the token, look
//! it up in the in-memory table of 1,000 tokens, compare in constant time (and, with a rate
//! limit, take from the token's bucket). What every `/v1` request pays before its body is read.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use onceledger_core::ledger::TenantId;
use onceledger_server::auth::{Authenticator, RateLimit, Role, TokenEntry, TokenSecret};

fn table(auth: &Authenticator) -> Vec<u8> {
    let secrets: Vec<TokenSecret> = (0..1000)
        .map(|_| TokenSecret::generate().expect("entropy"))
        .collect();
    auth.reload(secrets.iter().enumerate().map(|(i, s)| TokenEntry {
        id: i as u64 + 1,
        tenant: TenantId(i as u32 % 10),
        role: Role::Client,
        digest: onceledger_server::auth::digest(s),
        revoked: false,
    }));
    format!("Bearer {}", secrets[500].expose()).into_bytes()
}

fn authenticate(c: &mut Criterion) {
    let mut group = c.benchmark_group("authenticate");
    group.throughput(Throughput::Elements(1));
    let plain = Authenticator::new(None);
    let header = table(&plain);
    group.bench_function("known_token_1000_in_table", |b| {
        b.iter(|| plain.authenticate(black_box(Some(&header))))
    });
    let limited = Authenticator::new(Some(RateLimit {
        per_second: u32::MAX,
    }));
    let header = table(&limited);
    group.bench_function("known_token_with_rate_limit", |b| {
        b.iter(|| limited.authenticate(black_box(Some(&header))))
    });
    let unknown = format!("Bearer olt_{}", "7".repeat(64)).into_bytes();
    group.bench_function("unknown_token", |b| {
        b.iter(|| plain.authenticate(black_box(Some(&unknown))))
    });
    group.finish();
}

criterion_group!(benches, authenticate);
criterion_main!(benches);
