//! Seed corpora that are generated rather than written by hand.
//!
//! - ledger_model: scenarios written as operations; each must pass its checks.
//! - record_codec: its input is read through `arbitrary`, so its seeds are deterministic
//!   pseudo-random bytes of a few sizes, from which the fuzzer finds its own way.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --test seeds -- --ignored write_seeds` rewrites
//! the `seed-*` files of both; request_parse's seeds are plain text, written by hand.

use onceledger_fuzz::checks;
use onceledger_fuzz::model::{AccountSpec, ChargeSpec, Op};

// Selectors into the pools of src/model.rs.
const ALICE: u8 = 0;
const BANK: u8 = 1;
const SHOP: u8 = 2;
const EUR: u8 = 0;
const USD: u8 = 3;
const LOWER_CASE_EUR: u8 = 4;
const LIMIT_ZERO: u8 = 0;
const UNLIMITED: u8 = 1;
const LIMIT_100: u8 = 2;
const AMOUNT_50: u8 = 2;
const AMOUNT_100: u8 = 3;
const AMOUNT_1000: u8 = 4;
const AMOUNT_MAX: u8 = 6;
const AMOUNT_ZERO: u8 = 8;
/// The high bit of a key selector sends the key as a quoted Structured Field string.
const QUOTED: u8 = 0x80;
const POWER_LOSS: u8 = 0;
const PROCESS_KILL: u8 = 1;
const CLEAN: u8 = 2;

fn account(key: u8, account: u8, currency: u8, limit: u8) -> Op {
    Op::CreateAccount(AccountSpec {
        key,
        account,
        currency,
        limit,
    })
}

fn charge(key: u8, source: u8, destination: u8, amount: u8) -> Op {
    Op::Charge(ChargeSpec {
        key,
        source,
        destination,
        amount,
        currency: EUR,
        metadata: 1,
    })
}

fn setup() -> Vec<Op> {
    vec![
        account(0, BANK, EUR, UNLIMITED),
        account(1, ALICE, EUR, LIMIT_ZERO),
        account(2, SHOP, EUR, LIMIT_100),
    ]
}

fn retry(nth: u8, reformat: bool) -> Op {
    Op::Retry { nth, reformat }
}

/// The setup, then a charge (request 3) whose commit's last sync fails after its header was
/// written: the client gets a 503, yet the commit is durable unless the power goes.
fn charge_answered_503_but_durable() -> Vec<Op> {
    let mut ops = setup();
    ops.extend([
        Op::ArmFault {
            after: 17,
            lose_pages: false,
        },
        charge(3, BANK, ALICE, AMOUNT_100),
    ]);
    ops
}

fn scenarios() -> Vec<(&'static str, Vec<Op>)> {
    let mut out = Vec::new();
    out.push(("seed-charges-and-retries", {
        let mut ops = setup();
        ops.extend([
            charge(3, BANK, ALICE, AMOUNT_100),
            charge(4, ALICE, SHOP, AMOUNT_50),
            charge(5, ALICE, SHOP, AMOUNT_1000), // 402, stored
            Op::Retry {
                nth: 4,
                reformat: true,
            },
            Op::Retry {
                nth: 5,
                reformat: false,
            },
            Op::RetryChanged { nth: 3 },            // 422
            account(QUOTED | 3, 3, USD, UNLIMITED), // the quoted key is k3: 422
        ]);
        ops
    }));
    out.push(("seed-burst", {
        let mut ops = setup();
        ops.extend([
            Op::Burst { count: 4 },
            charge(3, BANK, ALICE, AMOUNT_100),
            charge(4, ALICE, SHOP, AMOUNT_100), // needs the charge before it in the batch
            charge(5, ALICE, SHOP, AMOUNT_50),  // declined, its neighbours are not
            charge(3, BANK, ALICE, AMOUNT_100), // the same key again: 409 or a replay
        ]);
        ops
    }));
    out.push(("seed-restarts", {
        let mut ops = setup();
        ops.extend([
            charge(3, BANK, ALICE, AMOUNT_100),
            Op::Restart { how: POWER_LOSS },
            Op::Retry {
                nth: 3,
                reformat: true,
            },
            charge(4, ALICE, SHOP, AMOUNT_50),
            Op::Restart { how: PROCESS_KILL },
            charge(5, SHOP, BANK, AMOUNT_50),
            Op::Restart { how: CLEAN },
            Op::Retry {
                nth: 4,
                reformat: false,
            },
        ]);
        ops
    }));
    out.push(("seed-fault-then-retry", {
        let mut ops = setup();
        ops.extend([
            Op::ArmFault {
                after: 3,
                lose_pages: false,
            },
            charge(3, BANK, ALICE, AMOUNT_100),
            charge(4, BANK, SHOP, AMOUNT_50),
            Op::Restart { how: POWER_LOSS },
            Op::Retry {
                nth: 3,
                reformat: false,
            },
            Op::Retry {
                nth: 4,
                reformat: false,
            },
        ]);
        ops
    }));
    out.push(("seed-fsync-loses-pages", {
        let mut ops = setup();
        ops.extend([
            Op::ArmFault {
                after: 5,
                lose_pages: true,
            },
            Op::Burst { count: 3 },
            charge(3, BANK, ALICE, AMOUNT_100),
            charge(4, BANK, SHOP, AMOUNT_50),
            charge(5, BANK, ALICE, AMOUNT_50),
            Op::Restart { how: PROCESS_KILL },
            Op::Retry {
                nth: 4,
                reformat: true,
            },
        ]);
        ops
    }));
    out.push(("seed-503-but-durable", {
        // The client gets a 503 (outcome unknown), yet after a restart without power loss the
        // charge is there, and the retry replays it (finding 3 of the fuzz README).
        let mut ops = charge_answered_503_but_durable();
        ops.extend([Op::Restart { how: PROCESS_KILL }, retry(3, false)]);
        ops
    }));
    out.push(("seed-503-then-retry-before-restart", {
        // As seed-503-but-durable, but the client retries at once, while the writer is still
        // poisoned: the retry is the next observation of the uncertain key (a 503 again, or a
        // replay if the failed commit is readable), then the reopen decides.
        let mut ops = charge_answered_503_but_durable();
        ops.extend([
            retry(3, true),
            Op::RetryChanged { nth: 3 },
            Op::Restart { how: PROCESS_KILL },
            retry(3, false),
        ]);
        ops
    }));
    out.push(("seed-refused-and-overflow", {
        vec![
            charge(0, BANK, ALICE, AMOUNT_100), // 404, stored under k0
            account(1, BANK, LOWER_CASE_EUR, UNLIMITED), // 400 from the parser: k1 stays free
            account(1, BANK, EUR, UNLIMITED),   // so k1 runs now
            account(2, ALICE, EUR, UNLIMITED),
            charge(3, BANK, BANK, AMOUNT_100), // same accounts: refused, k3 free
            charge(3, BANK, ALICE, AMOUNT_ZERO), // amount 0: refused
            charge(3, BANK, ALICE, AMOUNT_MAX),
            charge(4, BANK, ALICE, AMOUNT_MAX), // credits would pass 2^63-1
            account(5, SHOP, USD, UNLIMITED),
            Op::Charge(ChargeSpec {
                key: QUOTED | 5,
                source: SHOP,
                destination: BANK,
                amount: AMOUNT_50,
                currency: USD,
                metadata: 2,
            }), // k5 is finished: 422
        ]
    }));
    out
}

#[test]
fn seed_scenarios_pass() {
    for (name, ops) in scenarios() {
        let bytes = Op::encode_all(&ops);
        assert_eq!(Op::decode_all(&bytes), ops, "{name} survives its byte code");
        eprintln!("{name}");
        checks::ledger_model(&bytes);
    }
}

/// xorshift64*: reproducible bytes without a dependency.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn record_codec_seeds() -> Vec<(String, Vec<u8>)> {
    [16, 64, 256, 1024, 4096]
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            (
                format!("seed-random-{len}"),
                pseudo_random_bytes(i as u64 + 1, len),
            )
        })
        .collect()
}

#[test]
fn record_codec_seeds_pass() {
    for (name, bytes) in record_codec_seeds() {
        eprintln!("{name}");
        checks::record_codec(&bytes);
    }
}

#[test]
#[ignore = "rewrites the seed files; run by hand after changing an input format"]
fn write_seeds() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |path: std::path::PathBuf, bytes: &[u8]| {
        if let Err(error) = std::fs::write(&path, bytes) {
            panic!("{}: {error}", path.display());
        }
    };
    for (name, ops) in scenarios() {
        write(
            corpus.join("ledger_model").join(name),
            &Op::encode_all(&ops),
        );
    }
    for (name, bytes) in record_codec_seeds() {
        write(corpus.join("record_codec").join(name), &bytes);
    }
}
