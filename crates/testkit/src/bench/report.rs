//! The results of a run: one struct, printed for people or as one JSON line for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::plan::Workload;
use super::prom::ServerDelta;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub url: String,
    pub workload: Workload,
    pub connections: u32,
    /// Second connections used by concurrent duplicates (0 without `--duplicate-share`).
    pub partner_connections: u32,
    pub seed: u64,
    pub amount: u64,
    pub customers: u32,
    pub merchants: u32,
    pub retry_share: f64,
    pub duplicate_share: f64,
    pub setup_accounts: u64,
    pub setup_seconds: f64,
    /// From the first request of the measured phase to the last answer.
    pub elapsed_seconds: f64,
    /// Requests answered during the measured phase (every HTTP response counts, duplicates twice).
    pub requests: u64,
    pub requests_per_s: f64,
    /// Charges the server executed during the measured phase (201 without `Idempotent-Replayed`).
    pub new_charges: u64,
    pub new_charges_per_s: f64,
    /// Request slots by kind: new charges, retries of finished keys, concurrent duplicate pairs.
    pub picked: BTreeMap<&'static str, u64>,
    pub latency_us: Latency,
    pub latency_us_by_kind: BTreeMap<&'static str, Latency>,
    /// Answers by HTTP status, measured phase only.
    pub statuses: BTreeMap<String, u64>,
    pub replayed: u64,
    /// 409 answers to sends that had no concurrent twin (a retry raced the key's release).
    pub in_flight_without_twin: u64,
    pub transport_errors: u64,
    pub last_transport_error: Option<String>,
    /// The lifecycle workload's figures; absent for the other workloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleReport>,
    /// `None` when the server restarted during the run (its counters started again from zero).
    pub server: Option<ServerDelta>,
    pub check: Check,
}

/// What the lifecycle workload did in the measured phase. Payments count when their last
/// operation got its answer in the measured phase; operations count fresh successes (without
/// `Idempotent-Replayed`), each one durable commit on the server.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleReport {
    pub payments: u64,
    pub payments_per_s: f64,
    pub operations: u64,
    pub operations_per_s: f64,
    /// Payments drawn, finished or not (the rest were finished by the resolution phase).
    pub payments_started: u64,
    /// Finished payments by what followed the authorization: capture, capture_refund, void.
    pub payments_by_shape: BTreeMap<&'static str, u64>,
    pub commits_by_operation: BTreeMap<&'static str, u64>,
    pub latency_us_by_operation: BTreeMap<&'static str, Latency>,
    /// The partial refund of each refunded payment, in minor units.
    pub refund_amount: u64,
}

/// Money moved against logical operations. `ok` needs every line to agree.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    /// Distinct logical charges (idempotency keys) that got a 201, fresh or replayed.
    pub logical_charges: u64,
    /// `logical_charges × amount`.
    pub expected_money: u64,
    /// Sum of `debits_posted` over the run's customers.
    pub debits: u64,
    /// Sum of `credits_posted` over the run's merchants.
    pub credits: u64,
    /// Credits on customers plus debits on merchants; only refunds move money that way.
    pub wrong_way: u64,
    /// Lifecycle only: refunds that succeeded × the refund amount, which `wrong_way` must equal
    /// (0 is expected when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_expected: Option<u64>,
    /// Lifecycle only: pending totals over the run's accounts, which must be 0 once every
    /// authorization was captured or voided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    /// `onceledger_charges_applied_total` after minus before the run (assumes no other client);
    /// `None` when the server restarted during the run, so the counter spans two processes.
    pub charges_applied_delta: Option<u64>,
    /// Charges sent without an answer, settled afterwards by re-sending their key.
    pub resolved_after_run: u64,
    /// Charges still unsettled: the check cannot be exact while there are any.
    pub unresolved: u64,
    /// Double executions, replays whose body differed, unexpected statuses.
    pub anomalies: u64,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency {
                count: 0,
                p50: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Latency {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} answers)",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

impl LifecycleReport {
    /// Payments and operations per second, then each operation's latency.
    fn write(&self, out: &mut String) {
        let count = |map: &BTreeMap<&str, u64>, name: &str| map.get(name).copied().unwrap_or(0);
        let shapes = &self.payments_by_shape;
        let _ = writeln!(
            out,
            "  payments/s      {:.1}  ({} payments: {} captured, {} captured and refunded {} each, {} voided; {} started)",
            self.payments_per_s,
            self.payments,
            count(shapes, "capture"),
            count(shapes, "capture_refund"),
            self.refund_amount,
            count(shapes, "void"),
            self.payments_started
        );
        let commits: Vec<String> = self
            .commits_by_operation
            .iter()
            .map(|(operation, n)| format!("{operation} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  operations/s    {:.1}  ({} commits: {})",
            self.operations_per_s,
            self.operations,
            commits.join(", ")
        );
        for (operation, latency) in &self.latency_us_by_operation {
            if latency.count > 0 {
                let _ = writeln!(out, "    {operation:<13} {}", latency.line());
            }
        }
    }
}

impl Check {
    /// A check of the given measures, not yet judged.
    pub fn measured(logical_charges: u64, debits: u64, credits: u64) -> Check {
        Check {
            ok: false,
            logical_charges,
            expected_money: 0,
            debits,
            credits,
            wrong_way: 0,
            refunded_expected: None,
            pending: None,
            charges_applied_delta: None,
            resolved_after_run: 0,
            unresolved: 0,
            anomalies: 0,
            failures: Vec::new(),
        }
    }

    /// Compares every measure of money moved with the logical operations; fills `ok`,
    /// `expected_money` and `failures`.
    pub fn judged(mut self, amount: u64) -> Check {
        let mut failures = Vec::new();
        let logical = self.logical_charges;
        let expected_money = logical.checked_mul(amount);
        match expected_money {
            None => failures.push("logical charges × amount overflows u64".to_owned()),
            Some(expected) => {
                if self.debits != expected {
                    failures.push(format!(
                        "customers were debited {}, but {logical} charges × {amount} = {expected}",
                        self.debits
                    ));
                }
                if self.credits != expected {
                    failures.push(format!(
                        "merchants were credited {}, but {logical} charges × {amount} = {expected}",
                        self.credits
                    ));
                }
            }
        }
        match self.refunded_expected {
            None if self.wrong_way != 0 => failures.push(format!(
                "{} moved the wrong way (customers credited or merchants debited)",
                self.wrong_way
            )),
            Some(refunded) if self.wrong_way != refunded => failures.push(format!(
                "{} moved back from merchants to customers, but the refunds that succeeded add up to {refunded}",
                self.wrong_way
            )),
            _ => {}
        }
        if let Some(pending) = self.pending
            && pending != 0
        {
            failures.push(format!(
                "{pending} is still pending (held) after every payment was captured or voided"
            ));
        }
        if let Some(applied) = self.charges_applied_delta
            && applied != logical
        {
            failures.push(format!(
                "onceledger_charges_applied_total grew by {applied}, but {logical} logical charges got a 201 (another client writing to this server also shows here)"
            ));
        }
        if self.unresolved != 0 {
            failures.push(format!(
                "{} charges were sent without an answer and could not be settled afterwards",
                self.unresolved
            ));
        }
        if self.anomalies != 0 {
            failures.push(format!("{} anomalies (see the samples)", self.anomalies));
        }
        self.ok = failures.is_empty();
        self.expected_money = expected_money.unwrap_or(u64::MAX);
        self.failures = failures;
        self
    }
}

impl Report {
    pub fn json(&self) -> String {
        // Serializing plain numbers, strings and maps with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The readable report: the run, its throughput and latency, the answers, the check.
    pub fn human(&self, anomaly_samples: &[String]) -> String {
        let mut out = String::new();
        // The writers drop `writeln!`'s result: writing into a String cannot fail.
        self.write_run(&mut out);
        self.write_answers(&mut out);
        self.write_check(&mut out, anomaly_samples);
        out
    }

    /// What ran against what, how long setup took, and the measured phase's rates and latency.
    fn write_run(&self, out: &mut String) {
        let partners = if self.partner_connections > 0 {
            format!(" (+{} for duplicates)", self.partner_connections)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "onceledger bench: {} workload against {}, {} connections{partners}, run {}, seed {}",
            self.workload.name(),
            self.url,
            self.connections,
            self.run_id,
            self.seed
        );
        let _ = writeln!(
            out,
            "  setup           {} accounts ({} customers, {} merchants) in {:.2} s",
            self.setup_accounts, self.customers, self.merchants, self.setup_seconds
        );
        let _ = writeln!(
            out,
            "  measured        {:.2} s; slots: {} new, {} retries, {} duplicate pairs",
            self.elapsed_seconds,
            self.picked.get("new").copied().unwrap_or(0),
            self.picked.get("retry").copied().unwrap_or(0),
            self.picked.get("duplicate").copied().unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "  new charges/s   {:.1}  ({} new charges)",
            self.new_charges_per_s, self.new_charges
        );
        let _ = writeln!(
            out,
            "  requests/s      {:.1}  ({} requests)",
            self.requests_per_s, self.requests
        );
        let _ = writeln!(out, "  latency         {}", self.latency_us.line());
        for (kind, latency) in &self.latency_us_by_kind {
            if latency.count > 0 {
                let _ = writeln!(out, "    {kind:<13} {}", latency.line());
            }
        }
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle.write(out);
        }
    }

    /// The answers by status, transport errors, and the server's commit numbers.
    fn write_answers(&self, out: &mut String) {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        let _ = writeln!(
            out,
            "  statuses        {}  (replayed {}, 409 without a twin {}, transport errors {})",
            statuses.join("  "),
            self.replayed,
            self.in_flight_without_twin,
            self.transport_errors
        );
        if let Some(error) = &self.last_transport_error {
            let _ = writeln!(out, "  last transport error: {error}");
        }
        let _ = match &self.server {
            Some(server) => writeln!(
                out,
                "  server          {} commits, mean batch {:.2} commands, {:.1} commits/s",
                server.commits, server.mean_batch_commands, server.commits_per_s
            ),
            None => writeln!(
                out,
                "  server          restarted during the run (process_start_time_seconds changed): its counters started again from zero, so no commit figures and no counter check"
            ),
        };
    }

    /// The money check, its failures, and the anomaly samples.
    fn write_check(&self, out: &mut String, anomaly_samples: &[String]) {
        let c = &self.check;
        let verdict = if c.ok { "OK" } else { "FAILED" };
        let _ = writeln!(
            out,
            "  check           {verdict}: {} logical charges × {} = {}; debits {}, credits {}, charges_applied {}; resolved after run {}, unresolved {}, anomalies {}",
            c.logical_charges,
            self.amount,
            c.expected_money,
            c.debits,
            c.credits,
            c.charges_applied_delta
                .map_or_else(|| "not compared".to_owned(), |delta| format!("+{delta}")),
            c.resolved_after_run,
            c.unresolved,
            c.anomalies
        );
        for failure in &c.failures {
            let _ = writeln!(out, "    failure: {failure}");
        }
        for sample in anomaly_samples {
            let _ = writeln!(out, "    anomaly: {sample}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(logical: u64, debits: u64, credits: u64, tweak: impl Fn(&mut Check)) -> Check {
        let mut check = Check::measured(logical, debits, credits);
        check.charges_applied_delta = Some(logical);
        tweak(&mut check);
        check.judged(3)
    }

    #[test]
    fn check_passes_only_when_every_measure_agrees() {
        let ok = check(10, 30, 30, |_| {});
        assert!(ok.ok, "{:?}", ok.failures);
        assert_eq!(ok.expected_money, 30);
        assert!(!check(10, 33, 30, |_| {}).ok);
        assert!(!check(10, 30, 27, |_| {}).ok);
        assert!(!check(10, 30, 30, |c| c.charges_applied_delta = Some(11)).ok);
        // A restart leaves the money to carry the check, and the money must still agree.
        assert!(check(10, 30, 30, |c| c.charges_applied_delta = None).ok);
        assert!(!check(10, 30, 29, |c| c.charges_applied_delta = None).ok);
        assert!(!check(10, 30, 30, |c| c.wrong_way = 1).ok);
        assert!(!check(10, 30, 30, |c| c.unresolved = 1).ok);
        assert!(!check(10, 30, 30, |c| c.anomalies = 1).ok);
        assert!(check(10, 30, 30, |c| c.resolved_after_run = 4).ok);
        assert!(!check(u64::MAX, 0, 0, |_| {}).ok);
    }

    /// Guards the lifecycle's money check: refunds must account for exactly the money moved
    /// back, and no hold may be left.
    #[test]
    fn lifecycle_check_wants_refunds_matched_and_nothing_pending() {
        let lifecycle = |wrong_way, refunded, pending| {
            check(10, 30, 30, |c| {
                c.charges_applied_delta = None;
                c.wrong_way = wrong_way;
                c.refunded_expected = Some(refunded);
                c.pending = Some(pending);
            })
        };
        assert!(lifecycle(4, 4, 0).ok);
        assert!(!lifecycle(4, 2, 0).ok);
        assert!(!lifecycle(0, 2, 0).ok);
        assert!(!lifecycle(4, 4, 1).ok);
    }

    #[test]
    fn latency_of_an_empty_histogram_is_zero() {
        let histogram = Histogram::<u64>::new_with_bounds(1, 1000, 3).expect("bounds");
        assert_eq!(Latency::of(&histogram).count, 0);
    }
}
