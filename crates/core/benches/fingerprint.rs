//! The request fingerprint (blake3 over method, path and canonical body) of typical charges.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use onceledger_core::idempotency::{Fingerprint, canonical_body};
use onceledger_core::ledger::{AccountId, Amount, Command, Currency, Metadata, NewCharge};

fn charge(metadata_pairs: usize) -> Command {
    let pairs: BTreeMap<String, String> = (0..metadata_pairs)
        .map(|i| (format!("key-{i}"), "v".repeat(100)))
        .collect();
    Command::CreateCharge(NewCharge {
        source: AccountId::parse("b1a2b3c4-c1234").expect("valid id"),
        destination: AccountId::parse("b1a2b3c4-m567").expect("valid id"),
        amount: Amount::new(1250).expect("valid amount"),
        currency: Currency::parse("EUR").expect("valid currency"),
        metadata: Metadata::new(pairs).expect("valid metadata"),
    })
}

fn fingerprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    group.throughput(Throughput::Elements(1));
    // No metadata (what `onceledger bench` sends) and the most metadata pairs allowed.
    for (name, pairs) in [("charge", 0), ("charge_16_metadata_pairs", 16)] {
        let canonical = canonical_body(&charge(pairs));
        group.bench_function(format!("{name}_{}_bytes", canonical.len()), |b| {
            b.iter(|| {
                Fingerprint::of(
                    black_box("POST"),
                    black_box("/v1/charges"),
                    black_box(&canonical),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fingerprint);
criterion_main!(benches);
