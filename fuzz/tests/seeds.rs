//! Seed corpora that are generated rather than written by hand.
//!
//! - ledger_model: scenarios written as operations; each must pass its checks.
//! - record_codec: its input is read through `arbitrary`, so its seeds are deterministic
//!   pseudo-random bytes of a few sizes, from which the fuzzer finds its own way.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --test seeds -- --ignored write_seeds` rewrites
//! the `seed-*` files of both; request_parse's seeds are plain text, written by hand.

use onceledger_fuzz::checks;
use onceledger_fuzz::model::{
    AccountSpec, AuthorizeSpec, CaptureSpec, ChargeSpec, LegSpec, Op, RefundSpec, TransferSpec,
    VoidSpec,
};

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
const AMOUNT_9999: u8 = 5;
const AMOUNT_MAX: u8 = 6;
const AMOUNT_ZERO: u8 = 8;
const X: u8 = 3;
/// Into `model::EXPIRIES`.
const TTL_DEFAULT: u8 = 0;
const EXPIRES_IN_HOUR: u8 = 1;
const EXPIRES_IN_59: u8 = 4;
const CAPTURE_TRUE: u8 = 5;
/// Into `model::capture_amount`.
const CAPTURE_ALL: u8 = 0;
const CAPTURE_HALF: u8 = 2;
const CAPTURE_ABOVE_HOLD: u8 = 4;
const CAPTURE_ZERO: u8 = 5;
/// Into `model::refund_amount`.
const REFUND_REST: u8 = 0;
const REFUND_ONE: u8 = 2;
const REFUND_ABOVE_REST: u8 = 3;
/// Charge selectors: newest charge first; past the charges, the ids that name none.
const NEWEST: u8 = 0;
const SECOND_NEWEST: u8 = 1;
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

fn authorize(key: u8, source: u8, destination: u8, amount: u8, expires: u8) -> Op {
    Op::Authorize(AuthorizeSpec {
        charge: ChargeSpec {
            key,
            source,
            destination,
            amount,
            currency: EUR,
            metadata: 2,
        },
        expires,
    })
}

fn capture(key: u8, charge: u8, amount: u8) -> Op {
    Op::Capture(CaptureSpec {
        key,
        charge,
        amount,
    })
}

fn void(key: u8, charge: u8) -> Op {
    Op::Void(VoidSpec { key, charge })
}

fn refund(key: u8, charge: u8, amount: u8) -> Op {
    Op::Refund(RefundSpec {
        key,
        charge,
        amount,
        metadata: 1,
    })
}

/// A transfer of `legs` (1 to 3 of them) in EUR.
fn transfer(key: u8, legs: &[(u8, u8, u8)]) -> Op {
    let mut leg = [LegSpec {
        source: BANK,
        destination: SHOP,
        amount: AMOUNT_50,
    }; 3];
    for (at, &(source, destination, amount)) in legs.iter().enumerate() {
        leg[at] = LegSpec {
            source,
            destination,
            amount,
        };
    }
    Op::Transfer(TransferSpec {
        key,
        currency: EUR,
        legs: legs.len() as u8 - 1,
        leg,
        metadata: 2,
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
    out.extend(lifecycle_scenarios());
    out
}

/// The lifecycle operations (issue 19). The setup gives the bank no limit, alice 0 and the
/// shop 100.
fn lifecycle_scenarios() -> Vec<(&'static str, Vec<Op>)> {
    let mut out = Vec::new();
    out.push(("seed-lifecycle-capture-refund", {
        let mut ops = setup();
        ops.extend([
            authorize(3, BANK, ALICE, AMOUNT_1000, TTL_DEFAULT),
            capture(4, NEWEST, CAPTURE_ABOVE_HOLD), // 400 capture-exceeds-authorization
            capture(5, NEWEST, CAPTURE_HALF),       // 500 of 1000, the rest released
            capture(6, NEWEST, CAPTURE_ALL),        // 400 charge-state-invalid: succeeded
            void(7, NEWEST),                        // the same
            refund(8, NEWEST, REFUND_ONE),
            refund(9, NEWEST, REFUND_ABOVE_REST), // 400 refund-exceeds-charge
            refund(10, NEWEST, REFUND_REST),      // the other 499
            refund(11, NEWEST, REFUND_REST),      // nothing left: 400
            retry(5, true),
            retry(8, false),
            Op::RetryChanged { nth: 9 },
            Op::Restart { how: POWER_LOSS },
            retry(10, true),
        ]);
        ops
    }));
    out.push(("seed-lifecycle-holds-and-void", {
        let mut ops = setup();
        ops.extend([
            charge(3, BANK, ALICE, AMOUNT_100),
            authorize(4, ALICE, SHOP, AMOUNT_1000, EXPIRES_IN_HOUR), // 402: alice has 100
            authorize(5, ALICE, SHOP, AMOUNT_100, EXPIRES_IN_HOUR),  // holds all of it
            charge(6, ALICE, SHOP, AMOUNT_50), // 402: the hold counts against available
            capture(7, SECOND_NEWEST, CAPTURE_ALL), // the immediate charge: charge-state-invalid
            refund(8, NEWEST, REFUND_REST),    // an authorization: charge-state-invalid
            void(9, NEWEST),                   // released
            charge(10, ALICE, SHOP, AMOUNT_50), // now it passes
            capture(11, SECOND_NEWEST, CAPTURE_ALL), // canceled: charge-state-invalid
            capture(12, 3, CAPTURE_ALL),       // past the three charges: an id never issued, 404
            void(13, 4),                       // the legacy form of charge 1: 404
            authorize(14, ALICE, SHOP, AMOUNT_50, EXPIRES_IN_59), // refused by the parser
            authorize(14, ALICE, SHOP, AMOUNT_50, CAPTURE_TRUE), // an immediate charge
            capture(15, NEWEST, CAPTURE_ZERO), // refused by the parser
            Op::Restart { how: PROCESS_KILL },
        ]);
        ops
    }));
    out.push(("seed-lifecycle-transfers", {
        let mut ops = setup();
        ops.extend([
            account(3, X, USD, UNLIMITED),
            // A sale with a fee: bank to shop, shop to alice (the second leg spends the first).
            transfer(4, &[(BANK, SHOP, AMOUNT_1000), (SHOP, ALICE, AMOUNT_100)]),
            // The second leg takes the shop (900) below its limit (100): 402 naming leg 1, and
            // the first leg is not posted either.
            transfer(5, &[(BANK, ALICE, AMOUNT_50), (SHOP, BANK, AMOUNT_9999)]),
            // The third leg is in another currency: 400 currency-mismatch, leg 2.
            transfer(
                6,
                &[
                    (BANK, ALICE, AMOUNT_50),
                    (ALICE, SHOP, AMOUNT_50),
                    (BANK, X, AMOUNT_50),
                ],
            ),
            transfer(7, &[(ALICE, BANK, AMOUNT_100), (BANK, BANK, AMOUNT_50)]), // refused
            transfer(7, &[(ALICE, BANK, AMOUNT_MAX), (BANK, X, AMOUNT_50)]),    // 402, leg 0
            // No charge yet: past the two unknown ids, the transfer's id, which names none: 404.
            refund(8, 2, REFUND_REST),
            retry(5, true),
            Op::RetryChanged { nth: 4 },
            Op::Restart { how: CLEAN },
        ]);
        ops
    }));
    out.push(("seed-lifecycle-burst-capture-void", {
        let mut ops = setup();
        ops.extend([
            authorize(3, BANK, SHOP, AMOUNT_100, TTL_DEFAULT),
            // One batch: one of capture and void wins, the other finds it ended.
            Op::Burst { count: 3 },
            capture(4, NEWEST, CAPTURE_HALF),
            void(5, NEWEST),
            refund(6, NEWEST, REFUND_REST),
            Op::Restart { how: POWER_LOSS },
            retry(5, false),
        ]);
        ops
    }));
    out.push(("seed-lifecycle-crashes", {
        let mut ops = setup();
        ops.extend([
            authorize(3, BANK, ALICE, AMOUNT_1000, TTL_DEFAULT),
            // A process kill right after an authorization: recovery replays its holds.
            Op::Restart { how: PROCESS_KILL },
            // The capture's journal sync fails after its write: 503, yet durable without a power
            // loss; the retry at once gets a 503 again, the reopen finds it stored.
            Op::ArmFault {
                after: 1,
                lose_pages: false,
            },
            capture(4, NEWEST, CAPTURE_HALF),
            retry(4, true),
            Op::Restart { how: PROCESS_KILL },
            retry(4, false),
            // The refund's first storage operation fails: 503, and it never happened.
            Op::ArmFault {
                after: 0,
                lose_pages: true,
            },
            refund(5, NEWEST, REFUND_ONE),
            Op::Restart { how: POWER_LOSS },
            refund(6, NEWEST, REFUND_ONE),
            authorize(7, BANK, SHOP, AMOUNT_50, EXPIRES_IN_HOUR),
            Op::Restart { how: POWER_LOSS },
            void(8, NEWEST),
        ]);
        ops
    }));
    out
}

/// The ledger_model inputs committed before the lifecycle operations existed. The opcodes those
/// take (7 to 11, and 136 to 223) appear in none of them, so each still decodes as it did.
const INPUTS_BEFORE_LIFECYCLE: [&str; 38] = [
    "long-060ecdaa061f",
    "long-09b69a29f5eb",
    "long-10324d1a03a6",
    "long-1489f923c4dc",
    "long-1ad3fa27bd50",
    "long-1b366cf829ae",
    "long-23555b4b2091",
    "long-2e40ad9d7288",
    "long-2feba6587e1d",
    "long-38b7b78be329",
    "long-4fb5bc4f27ea",
    "long-612e22568bed",
    "long-6408f975ab58",
    "long-6c87b0791686",
    "long-6ca87a7f972b",
    "long-7821ac3e9141",
    "long-7947c68699ed",
    "long-8a1b89a2be03",
    "long-95665552f6b5",
    "long-9abb9a38fbdd",
    "long-9e61207a43de",
    "long-a28c2bdfcc60",
    "long-add0f9fbcaaa",
    "long-cdbbad4278ed",
    "long-ce3ca7c11198",
    "long-d18b18d0bd5f",
    "long-dceca95a6723",
    "long-e46c7f35b528",
    "long-e843d19d7ffb",
    "long-ed2c7fd01f2e",
    "seed-503-but-durable",
    "seed-503-then-retry-before-restart",
    "seed-burst",
    "seed-charges-and-retries",
    "seed-fault-then-retry",
    "seed-fsync-loses-pages",
    "seed-refused-and-overflow",
    "seed-restarts",
];

#[test]
fn inputs_from_before_the_lifecycle_decode_as_they_did() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/ledger_model");
    for name in INPUTS_BEFORE_LIFECYCLE {
        let bytes = match std::fs::read(corpus.join(name)) {
            Ok(bytes) => bytes,
            Err(error) => panic!("{name}: {error}"),
        };
        let ops = Op::decode_all(&bytes);
        assert!(
            ops.iter().all(|op| !op.is_lifecycle()),
            "{name} decodes differently now: {ops:?}"
        );
    }
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
