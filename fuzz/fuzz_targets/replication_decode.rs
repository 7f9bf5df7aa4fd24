#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| onceledger_fuzz::checks::replication_decode(data));
