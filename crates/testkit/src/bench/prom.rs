//! The few server counters the load generator reads from `GET /metrics`, before and after a run.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

pub const COMMITS: &str = "onceledger_commits_total";
pub const BATCH_SUM: &str = "onceledger_commit_batch_commands_sum";
pub const BATCH_COUNT: &str = "onceledger_commit_batch_commands_count";
pub const CHARGES_APPLIED: &str = "onceledger_charges_applied_total";
pub const PROCESS_START: &str = "process_start_time_seconds";

/// One scrape: sample name (labels included, as written) to value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Parses the Prometheus/OpenMetrics text format leniently: comment lines and lines that do
    /// not parse are skipped, because only a handful of known samples matter here and a new
    /// metric the server adds must not break the load generator.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The name runs to the end of the label set if there is one, else to the first space.
            let name_end = match line.find('{') {
                Some(open) if line[..open].find(' ').is_none() => match line[open..].find('}') {
                    Some(close) => open + close + 1,
                    None => continue,
                },
                _ => match line.find(' ') {
                    Some(space) => space,
                    None => continue,
                },
            };
            let (name, rest) = line.split_at(name_end);
            // After the value an optional timestamp or exemplar may follow.
            let Some(value) = rest.split_whitespace().next() else {
                continue;
            };
            if let Ok(value) = value.parse::<f64>() {
                samples.insert(name.to_owned(), value);
            }
        }
        Scrape(samples)
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
}

/// A counter the run's numbers need is missing, or went down between two scrapes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsError {
    Missing {
        name: String,
    },
    /// A counter only grows within one process: it went down because the server restarted.
    WentDown {
        name: String,
    },
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Missing { name } => write!(f, "/metrics has no {name}"),
            MetricsError::WentDown { name } => write!(
                f,
                "{name} went down during the run: was the server restarted?"
            ),
        }
    }
}

impl std::error::Error for MetricsError {}

/// Server-side numbers of the measured phase: differences between two scrapes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerDelta {
    pub commits: u64,
    pub committed_commands: u64,
    pub mean_batch_commands: f64,
    pub commits_per_s: f64,
}

impl ServerDelta {
    pub fn between(
        before: &Scrape,
        after: &Scrape,
        seconds: f64,
    ) -> Result<ServerDelta, MetricsError> {
        let delta = |name: &str| -> Result<u64, MetricsError> {
            let value = |scrape: &Scrape| {
                scrape.get(name).ok_or_else(|| MetricsError::Missing {
                    name: name.to_owned(),
                })
            };
            let difference = value(after)? - value(before)?;
            if difference < 0.0 {
                return Err(MetricsError::WentDown {
                    name: name.to_owned(),
                });
            }
            // Counters are integers; the text format carries them as floats.
            Ok(difference.round() as u64)
        };
        let commits = delta(COMMITS)?;
        let committed_commands = delta(BATCH_SUM)?;
        let batches = delta(BATCH_COUNT)?;
        Ok(ServerDelta {
            commits,
            committed_commands,
            mean_batch_commands: if batches == 0 {
                0.0
            } else {
                committed_commands as f64 / batches as f64
            },
            commits_per_s: if seconds > 0.0 {
                commits as f64 / seconds
            } else {
                0.0
            },
        })
    }
}

/// Whether the server process between two scrapes is another one (killed and started again, say):
/// its counters then started again from zero and a difference of them means nothing. A server
/// that does not export its start time is taken to be the same process.
pub fn restarted(before: &Scrape, after: &Scrape) -> bool {
    match (before.get(PROCESS_START), after.get(PROCESS_START)) {
        (Some(before), Some(after)) => before != after,
        _ => false,
    }
}

/// `after - before` of one counter, or an error naming it.
pub fn counter_delta(before: &Scrape, after: &Scrape, name: &str) -> Result<u64, MetricsError> {
    let missing = || MetricsError::Missing {
        name: name.to_owned(),
    };
    let before = before.get(name).ok_or_else(missing)?;
    let after = after.get(name).ok_or_else(missing)?;
    if after < before {
        return Err(MetricsError::WentDown {
            name: name.to_owned(),
        });
    }
    Ok((after - before).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP onceledger_commits Write transactions committed (one fsync each).
# TYPE onceledger_commits counter
onceledger_commits_total 12
# TYPE onceledger_commit_batch_commands histogram
onceledger_commit_batch_commands_sum 48.0
onceledger_commit_batch_commands_count 12
onceledger_commit_batch_commands_bucket{le=\"1.0\"} 3
onceledger_idempotency_requests_total{outcome=\"new\"} 40 1700000000
onceledger_charges_applied_total 40
garbage line
# EOF
";

    #[test]
    fn reads_plain_labelled_and_timestamped_samples() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.get(COMMITS), Some(12.0));
        assert_eq!(scrape.get(BATCH_SUM), Some(48.0));
        assert_eq!(
            scrape.get("onceledger_commit_batch_commands_bucket{le=\"1.0\"}"),
            Some(3.0)
        );
        assert_eq!(
            scrape.get("onceledger_idempotency_requests_total{outcome=\"new\"}"),
            Some(40.0)
        );
        assert_eq!(scrape.get("garbage"), None);
    }

    #[test]
    fn delta_of_two_scrapes() {
        let before = Scrape::parse(TEXT);
        let after = Scrape::parse(
            "onceledger_commits_total 22\nonceledger_commit_batch_commands_sum 248\n\
             onceledger_commit_batch_commands_count 22\nonceledger_charges_applied_total 240\n",
        );
        let delta = ServerDelta::between(&before, &after, 2.0).expect("all present");
        assert_eq!(
            delta,
            ServerDelta {
                commits: 10,
                committed_commands: 200,
                mean_batch_commands: 20.0,
                commits_per_s: 5.0
            }
        );
        assert_eq!(counter_delta(&before, &after, CHARGES_APPLIED), Ok(200));
        assert!(counter_delta(&after, &before, CHARGES_APPLIED).is_err());
    }

    #[test]
    fn a_changed_start_time_is_a_restart() {
        let first = Scrape::parse("process_start_time_seconds 1796500000.125\n");
        let same = Scrape::parse("process_start_time_seconds 1796500000.125\n");
        let second = Scrape::parse("process_start_time_seconds 1796500009.5\n");
        let silent = Scrape::parse("onceledger_commits_total 3\n");
        assert!(!restarted(&first, &same));
        assert!(restarted(&first, &second));
        assert!(
            !restarted(&first, &silent),
            "no start time: assume one process"
        );
    }
}
