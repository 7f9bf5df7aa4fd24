//! The role matrix: which role may use which route. A pure function of the role and the path, so
//! a refusal (403) comes before the body is read or validated.
//!
//! | routes | admin | client | replicator |
//! |---|---|---|---|
//! | `/v1/accounts…`, `/v1/charges…`, `/v1/refunds…`, `/v1/transfers…`, `/v1/events` | yes (its tenant; events: all) | yes (its tenant) | no |
//! | `POST /v1/replication/events` | yes | yes (filed under its tenant) | — |
//! | `/v1/replication/origins…`, `/v1/dead-letters…` (hub operator) | yes | no | no |
//! | `/v1/tenants…`, `/v1/tokens…` | yes | no | no |
//! | `/metrics` when `--metrics-auth` | yes | no | no |

use super::Role;
use crate::routes::REPLICATION_EVENTS_PATH;

/// The answer of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// 403: the token is valid, its role may not do this.
    Forbidden,
}

/// May `role` use `path`? Unknown paths are allowed here so that the router answers 404.
pub fn access(role: Role, path: &str) -> Access {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let allowed = match role {
        Role::Admin => true,
        Role::Client => {
            !(under("/v1/replication")
                || under("/v1/dead-letters")
                || under("/v1/tenants")
                || under("/v1/tokens")
                || path == "/metrics")
        }
        Role::Replicator => path == REPLICATION_EVENTS_PATH,
    };
    if allowed {
        Access::Allowed
    } else {
        Access::Forbidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        use Access::*;
        let cases = [
            ("/v1/accounts", [Allowed, Allowed, Forbidden]),
            ("/v1/accounts/alice", [Allowed, Allowed, Forbidden]),
            ("/v1/charges", [Allowed, Allowed, Forbidden]),
            ("/v1/charges/ch_1", [Allowed, Allowed, Forbidden]),
            ("/v1/accounts/alice/postings", [Allowed, Allowed, Forbidden]),
            ("/v1/accounts/alice/balance", [Allowed, Allowed, Forbidden]),
            ("/v1/refunds", [Allowed, Allowed, Forbidden]),
            ("/v1/transfers", [Allowed, Allowed, Forbidden]),
            (
                "/v1/replication/origins/n1/accounts/a/postings",
                [Allowed, Forbidden, Forbidden],
            ),
            ("/v1/events", [Allowed, Allowed, Forbidden]),
            ("/v1/replication/events", [Allowed, Forbidden, Allowed]),
            ("/v1/replication/origins", [Allowed, Forbidden, Forbidden]),
            (
                "/v1/replication/origins/n1/accounts/a",
                [Allowed, Forbidden, Forbidden],
            ),
            ("/v1/dead-letters", [Allowed, Forbidden, Forbidden]),
            (
                "/v1/dead-letters/1/redrive",
                [Allowed, Forbidden, Forbidden],
            ),
            ("/v1/tenants", [Allowed, Forbidden, Forbidden]),
            ("/v1/tokens", [Allowed, Forbidden, Forbidden]),
            ("/v1/tokens/3/revoke", [Allowed, Forbidden, Forbidden]),
            ("/metrics", [Allowed, Forbidden, Forbidden]),
            ("/v1/tokensx", [Allowed, Allowed, Forbidden]),
        ];
        for (path, [admin, client, replicator]) in cases {
            assert_eq!(access(Role::Admin, path), admin, "admin {path}");
            assert_eq!(access(Role::Client, path), client, "client {path}");
            assert_eq!(
                access(Role::Replicator, path),
                replicator,
                "replicator {path}"
            );
        }
    }
}
