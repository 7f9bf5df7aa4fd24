//! An account's four totals, and the model of what a run's plan implies for every account: the
//! verdict compares the node's accounts, the hub's mirrors of them and this model.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The four totals of an account (API.md, "Accounts"); `balance` and `available` follow from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
}

impl Totals {
    /// The four totals of an account's JSON (a node's account or a hub's mirror of one); `None`
    /// if one is missing or not a whole number.
    pub fn of_account(account: &Value) -> Option<Totals> {
        let total = |field: &str| account[field].as_u64();
        Some(Totals {
            debits_posted: total("debits_posted")?,
            credits_posted: total("credits_posted")?,
            debits_pending: total("debits_pending")?,
            credits_pending: total("credits_pending")?,
        })
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "posted -{} +{}, pending -{} +{}",
            self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending
        )
    }
}

/// What the plan implies for each account, built by replaying the planned effects (never the
/// answers): every operation of the plan takes effect once, or the run fails.
#[derive(Debug, Clone, Default)]
pub struct Model {
    accounts: BTreeMap<String, Totals>,
}

impl Model {
    /// A model in which `ids` exist with zero totals (an account nothing touches is compared
    /// too).
    pub fn with_accounts<'a>(ids: impl IntoIterator<Item = &'a str>) -> Model {
        Model {
            accounts: ids
                .into_iter()
                .map(|id| (id.to_owned(), Totals::default()))
                .collect(),
        }
    }

    /// `amount` posted from `source` to `destination`: an immediate charge, a capture, a refund
    /// (from the charge's destination back to its source), a transfer's leg.
    pub fn post(&mut self, source: &str, destination: &str, amount: u64) {
        self.account(source).debits_posted += amount;
        self.account(destination).credits_posted += amount;
    }

    /// `amount` held from `source` for `destination`: an authorization still open at the end.
    pub fn hold(&mut self, source: &str, destination: &str, amount: u64) {
        self.account(source).debits_pending += amount;
        self.account(destination).credits_pending += amount;
    }

    fn account(&mut self, id: &str) -> &mut Totals {
        self.accounts.entry(id.to_owned()).or_default()
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&str, &Totals)> {
        self.accounts
            .iter()
            .map(|(id, totals)| (id.as_str(), totals))
    }
}

/// One account of the run as the plan, the node and the hub's mirror have it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountTotals {
    pub id: String,
    pub plan: Totals,
    pub node: Totals,
    pub hub: Totals,
}

impl AccountTotals {
    pub fn matches(&self) -> bool {
        self.node == self.plan && self.hub == self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the model: a capture and a transfer leg post, an open authorization holds, a
    /// refund posts back; untouched accounts stay in at zero.
    #[test]
    fn the_model_posts_and_holds() {
        let mut model = Model::with_accounts(["c0", "m", "p", "idle"]);
        model.post("c0", "m", 100);
        model.hold("c0", "m", 7);
        model.post("m", "c0", 30);
        model.post("m", "p", 5);
        let totals: BTreeMap<_, _> = model.accounts().map(|(id, t)| (id, *t)).collect();
        let expect = |dp, cp, dh, ch| Totals {
            debits_posted: dp,
            credits_posted: cp,
            debits_pending: dh,
            credits_pending: ch,
        };
        assert_eq!(totals["c0"], expect(100, 30, 7, 0));
        assert_eq!(totals["m"], expect(35, 100, 0, 7));
        assert_eq!(totals["p"], expect(0, 5, 0, 0));
        assert_eq!(totals["idle"], Totals::default());
    }

    /// Guards the reading of an account's JSON: all four totals, or none.
    #[test]
    fn totals_are_read_from_an_account() {
        let account = serde_json::json!({"debits_posted": 1, "credits_posted": 2,
            "debits_pending": 3, "credits_pending": 4, "balance": 1});
        assert_eq!(
            Totals::of_account(&account),
            Some(Totals {
                debits_posted: 1,
                credits_posted: 2,
                debits_pending: 3,
                credits_pending: 4
            })
        );
        assert_eq!(
            Totals::of_account(&serde_json::json!({"credits_posted": 2})),
            None
        );
    }
}
