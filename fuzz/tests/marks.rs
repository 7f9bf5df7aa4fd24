//! Simulated power loss at the store's rare moments, deterministically (issue 21): seeded inputs of
//! the ledger_model target, dense in new charges and power losses, through the same model and
//! fault disk as the fuzzer (`src/model.rs`, `src/backend.rs`), with the small marks of
//! `Marks::SMALL` (a checkpoint after every three journaled commits, an account flush every three
//! charges, keys merged from four in memory on).
//!
//! Each input must pass every check of the model (nothing acknowledged lost after a power loss,
//! nothing applied twice, replays byte for byte, the invariant checker clean). Over all inputs,
//! the test then requires that each moment was crossed many times and that many power losses
//! came right after a commit that crossed it: the unsynced writes of a checkpoint, a flush or a
//! merge thrown away, and the store opened on what was left.

use onceledger_fuzz::model::{self, AccountSpec, ChargeSpec, OPS_MAX, Op};
use onceledger_fuzz::system::Crossings;

/// Inputs per run, each of `OPS_MAX` operations: a few seconds of a release build.
const INPUTS: u64 = 100;
/// Power losses right after a commit that crossed each mark, over all inputs, at least. The
/// inputs are fixed, but how the writer batches a burst is up to thread timing, so this is a
/// floor well under what a run reaches (about 35, 45 and 100; the test prints the figures).
const POWER_LOSSES_RIGHT_AFTER_MIN: u64 = 15;

// Selectors into the pools of src/model.rs.
const ALICE: u8 = 0;
const BANK: u8 = 1;
const SHOP: u8 = 2;
const EUR: u8 = 0;
const UNLIMITED: u8 = 1;
const LIMIT_ZERO: u8 = 0;
const POWER_LOSS: u8 = 0;
const PROCESS_KILL: u8 = 1;

/// A linear congruential generator (Knuth's MMIX constants), so each input is the same on every
/// run; the high bits are the random ones.
struct Rng(u64);

impl Rng {
    fn byte(&mut self, below: u8) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(below)) as u8
    }
}

fn account(key: u8, account: u8, limit: u8) -> Op {
    Op::CreateAccount(AccountSpec {
        key,
        account,
        currency: EUR,
        limit,
    })
}

/// One input: three accounts, then mostly new charges from the bank (each a commit), with
/// power losses every few operations, some process kills, bursts, retries and armed faults (a
/// storage operation that fails, or a sync that fails and loses the file's unsynced pages).
fn input(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut ops = vec![
        account(0, BANK, UNLIMITED),
        account(1, SHOP, LIMIT_ZERO),
        account(2, ALICE, LIMIT_ZERO),
    ];
    let mut next_key = 3u8;
    while ops.len() < OPS_MAX {
        let op = match rng.byte(16) {
            0..=9 => {
                // A new key while there are any, then keys again (replays or 422s).
                let key = if next_key < model::KEYS_COUNT {
                    next_key += 1;
                    next_key - 1
                } else {
                    rng.byte(model::KEYS_COUNT)
                };
                Op::Charge(ChargeSpec {
                    key,
                    source: BANK,
                    destination: [SHOP, ALICE][usize::from(rng.byte(2))],
                    amount: rng.byte(6),
                    currency: EUR,
                    metadata: rng.byte(4),
                })
            }
            10 => Op::Burst {
                count: 2 + rng.byte(3),
            },
            11 => Op::Retry {
                nth: rng.byte(255),
                reformat: rng.byte(2) == 1,
            },
            12 | 13 => Op::Restart { how: POWER_LOSS },
            14 if rng.byte(2) == 0 => Op::Restart { how: PROCESS_KILL },
            _ => Op::ArmFault {
                after: rng.byte(255),
                lose_pages: rng.byte(2) == 1,
            },
        };
        ops.push(op);
    }
    Op::encode_all(&ops)
}

#[test]
fn power_losses_right_after_checkpoints_flushes_and_merges_lose_nothing() {
    let mut total = Crossings::default();
    for seed in 0..INPUTS {
        let crossings = model::run(&input(seed));
        total.crossed.checkpoints += crossings.crossed.checkpoints;
        total.crossed.account_flushes += crossings.crossed.account_flushes;
        total.crossed.key_merges += crossings.crossed.key_merges;
        total.power_losses += crossings.power_losses;
        let right_after = &mut total.power_losses_right_after;
        right_after.checkpoints += crossings.power_losses_right_after.checkpoints;
        right_after.account_flushes += crossings.power_losses_right_after.account_flushes;
        right_after.key_merges += crossings.power_losses_right_after.key_merges;
    }
    eprintln!("{INPUTS} inputs of {OPS_MAX} operations: {total:?}");
    let crossed = total.crossed;
    for (moment, count) in [
        ("checkpoints", crossed.checkpoints),
        ("account flushes", crossed.account_flushes),
        ("key merges", crossed.key_merges),
    ] {
        assert!(count >= INPUTS, "{count} {moment} in {INPUTS} inputs");
    }
    let right_after = total.power_losses_right_after;
    for (moment, count) in [
        ("a checkpoint", right_after.checkpoints),
        ("an account flush", right_after.account_flushes),
        ("a key merge", right_after.key_merges),
    ] {
        assert!(
            count >= POWER_LOSSES_RIGHT_AFTER_MIN,
            "only {count} power losses right after {moment}: {total:?}"
        );
    }
}
