//! Partitions of origins: which hub of a fleet applies which terminal's events.
//!
//! A hub applies each origin's events in order through its inbox, so all of one origin's events
//! must reach one hub. A fleet scales out by splitting the origins, never single events, over
//! hubs: a terminal publishes on `PREFIX.<k>.<node>`, where `k` is its partition, and the hub of
//! partition `k` consumes only `PREFIX.<k>.>` (a JetStream filter subject), so it never receives
//! another partition's messages and never waits (NAKs) for an event another hub holds.

use std::fmt;
use std::str::FromStr;

/// How many partitions a fleet may have at most. Each partition needs a hub process; past this
/// a fleet is better served by several streams.
pub const PARTITIONS_MAX: u32 = 1024;

/// The partition of `node_id` among `count`: the first 8 bytes of blake3(node id), read big
/// endian, modulo `count` (API.md, "Fleets on NATS JetStream"). Terminals and hubs compute it
/// alike; it depends on nothing but the id, so a terminal keeps its partition across restarts.
pub fn partition_of(node_id: &str, count: u32) -> u32 {
    assert!(count >= 1, "a fleet has at least one partition");
    let hash = blake3::hash(node_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let partition = u64::from_be_bytes(first) % u64::from(count);
    // Lossless: the remainder is below `count`, a u32.
    partition as u32
}

/// The subject a terminal publishes its events on: `PREFIX.<k>.<node>`.
pub fn subject_of(prefix: &str, node_id: &str, count: u32) -> String {
    format!("{prefix}.{}.{node_id}", partition_of(node_id, count))
}

/// One partition of a fleet of `count`: what `consume --partition K/N` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Partition {
    /// The whole fleet in one partition: the default, a single hub applies every origin.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Partition, PartitionError> {
        if count == 0 || count > PARTITIONS_MAX {
            return Err(PartitionError::Count(count));
        }
        if index >= count {
            return Err(PartitionError::Index { index, count });
        }
        Ok(Partition { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this partition's hub applies `node_id`'s events.
    pub fn holds(&self, node_id: &str) -> bool {
        partition_of(node_id, self.count) == self.index
    }

    /// The JetStream filter subject of this partition's consumer. With one partition there is
    /// none: the hub owns every origin, whatever subject (and whatever partition count) a
    /// terminal published with, so it also takes terminals configured with another N and those
    /// of builds before partitions (`PREFIX.<node>`).
    pub fn filter_subject(&self, prefix: &str) -> String {
        if self.count == 1 {
            String::new()
        } else {
            format!("{prefix}.{}.>", self.index)
        }
    }

    /// Why `node_id`'s events are parked here instead of applied (the dead letter's reason).
    pub fn misrouted_reason(&self, node_id: &str) -> String {
        format!(
            "node {node_id} is in partition {} of {} and this hub consumes partition {self}: \
             the terminal publishes with another --nats-partitions than the hubs' N",
            partition_of(node_id, self.count),
            self.count,
        )
    }
}

/// The description a hub gives its durable consumer, so that terminals (and `nats consumer ls`)
/// can tell which partition, of which N, a consumer applies.
pub fn hub_description(partition: Partition) -> String {
    format!("{HUB_DESCRIPTION_PREFIX}{partition}")
}

/// The partition a consumer's description names, if a hub of this build wrote it.
pub fn partition_in_description(description: &str) -> Option<Partition> {
    description
        .strip_prefix(HUB_DESCRIPTION_PREFIX)?
        .parse()
        .ok()
}

const HUB_DESCRIPTION_PREFIX: &str = "onceledger hub, partition ";

/// Whether a JetStream filter subject takes `subject`: tokens are separated by `.`, `*` stands
/// for one token and a final `>` for one or more; an empty filter takes every subject.
pub fn filter_takes(filter: &str, subject: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(actual)) if literal == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Partition {
    type Err = PartitionError;

    /// `K/N`, for example `0/2`.
    fn from_str(text: &str) -> Result<Partition, PartitionError> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| PartitionError::Syntax(text.to_owned()))?;
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| PartitionError::Syntax(text.to_owned()))
        };
        Partition::new(number(index)?, number(count)?)
    }
}

/// Why `--partition` or `--nats-partitions` cannot be used. One sentence for the operator each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionError {
    /// Not of the form `K/N`.
    Syntax(String),
    /// `N` is 0 or above [`PARTITIONS_MAX`].
    Count(u32),
    /// `K` is not below `N`.
    Index { index: u32, count: u32 },
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::Syntax(text) => {
                write!(f, "{text:?} is not a partition K/N (for example 0/2)")
            }
            PartitionError::Count(count) => write!(
                f,
                "a fleet has 1 to {PARTITIONS_MAX} partitions, not {count}"
            ),
            PartitionError::Index { index, count } => write!(
                f,
                "partition {index} does not exist among {count} (they are 0 to {})",
                count - 1
            ),
        }
    }
}

impl std::error::Error for PartitionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_blake3s_first_eight_bytes_big_endian_modulo_n() {
        // Pinned on blake3's published test vector (the hash of no input begins af1349b9 f5f9a1a6):
        // a change of the formula would move the terminals of every fleet to other hubs, so it
        // must fail here first.
        let first: u64 = 0xaf13_49b9_f5f9_a1a6;
        for count in [1, 2, 3, 4, 7, 1000, PARTITIONS_MAX] {
            assert_eq!(u64::from(partition_of("", count)), first % u64::from(count));
        }
        assert_eq!(partition_of("", 2), 0);
        assert_eq!(partition_of("", 3), 1);
        assert_eq!(
            subject_of("onceledger.events", "till-1", 1),
            "onceledger.events.0.till-1"
        );
    }

    #[test]
    fn every_origin_is_in_exactly_one_partition() {
        for count in [1u32, 2, 5] {
            for n in 0..200 {
                let node = format!("n{n}");
                let holders = (0..count)
                    .filter(|&k| Partition::new(k, count).expect("valid").holds(&node))
                    .count();
                assert_eq!(holders, 1, "{node} among {count}");
            }
        }
    }

    #[test]
    fn k_of_n_parses_and_refuses_what_names_no_partition() {
        assert_eq!("1/4".parse(), Partition::new(1, 4));
        assert_eq!("0/1".parse::<Partition>(), Ok(Partition::WHOLE));
        for bad in ["", "1", "1/", "/2", "a/2", "-1/2", "1/2/3", " 1/2"] {
            assert!(
                matches!(bad.parse::<Partition>(), Err(PartitionError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            "2/2".parse::<Partition>(),
            Err(PartitionError::Index { index: 2, count: 2 })
        );
        assert_eq!("0/0".parse::<Partition>(), Err(PartitionError::Count(0)));
        assert_eq!(
            "0/1025".parse::<Partition>(),
            Err(PartitionError::Count(1025))
        );
    }

    #[test]
    fn a_filter_takes_the_subjects_its_wildcards_match() {
        let subject = "onceledger.events.1.till.7";
        assert!(filter_takes("", subject));
        assert!(filter_takes("onceledger.events.>", subject));
        assert!(filter_takes("onceledger.events.1.>", subject));
        assert!(filter_takes("onceledger.*.1.till.*", subject));
        assert!(filter_takes(subject, subject));
        assert!(!filter_takes("onceledger.events.0.>", subject));
        assert!(
            !filter_takes("onceledger.events.1.*", subject),
            "* is one token"
        );
        assert!(
            !filter_takes("onceledger.events.1.till.7.>", subject),
            "> needs a token"
        );
        assert!(!filter_takes("onceledger.events.1", subject));
    }

    #[test]
    fn a_hubs_description_names_its_partition() {
        let partition = Partition::new(3, 8).expect("valid");
        let description = hub_description(partition);
        assert_eq!(partition_in_description(&description), Some(partition));
        assert_eq!(partition_in_description("someone else's consumer"), None);
    }

    #[test]
    fn one_partition_takes_every_subject_and_more_filter_on_their_own() {
        assert_eq!(Partition::WHOLE.filter_subject("p"), "");
        let second = Partition::new(1, 2).expect("valid");
        assert_eq!(
            second.filter_subject("onceledger.events"),
            "onceledger.events.1.>"
        );
        let reason = Partition::new(0, 2)
            .expect("valid")
            .misrouted_reason("till-9");
        assert!(reason.contains("partition 0/2"), "{reason}");
    }
}
