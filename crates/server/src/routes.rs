//! Route paths that more than one module names: the parser routes them, the role matrix
//! (`auth::policy`) decides who may use them, the hub sink sends to them. A leaf, so that none of
//! those imports another for a constant.

/// The replication endpoint, whose bodies may be larger than other requests'.
pub const REPLICATION_EVENTS_PATH: &str = "/v1/replication/events";
