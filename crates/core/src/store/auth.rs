//! Tenants, API tokens, and which tenant owns each outbox event and charge.
//!
//! Tenant 0 (`default`) exists in every store without a row: it owns everything written before
//! tenants existed and is the operator's tenant. Tokens are stored as blake3 digests only.
//! Ownership of ledger rows: accounts and idempotency records carry the tenant in their keys;
//! charges and outbox events are numbered densely per node, so their owner is kept beside them:
//! `tenant_events` (tenant, seq) for every event (a tenant's events are one range scan) and
//! `charge_tenants` for charges of tenants other than 0 (absent means tenant 0).
//!
//! One exception keeps a single-tenant store's commits light: until another tenant has an event,
//! every event is tenant 0's, so its events get no `tenant_events` row. The `default_rows_from`
//! counter says from which seq on tenant 0's events have rows (`u64::MAX` until another tenant's
//! first event, whose seq it then takes). Below it, the outbox itself is tenant 0's list. A row
//! per event was two of the ~18 pages a one-charge commit writes.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{Record, decode, encode};
use super::entries::EntryTables;
use super::journal::{Logged, Redo};
use super::schema::{
    AUTH_COUNTERS, CHARGE_TENANTS, OUTBOX, TENANT_EVENTS, TENANT_NAMES, TENANTS, TOKENS,
};
use super::{Event, Store, StoreError};
use crate::ids::{DEFAULT_TENANT_NAME, Role, TenantId, TokenDigest};

/// One stored token, as the cache needs it (no secret: the store has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: u64,
    pub tenant: TenantId,
    pub role: Role,
    pub digest: TokenDigest,
    pub revoked: bool,
}

const COUNTER_NEXT_TENANT_ID: &str = "next_tenant_id";
const COUNTER_NEXT_TOKEN_ID: &str = "next_token_id";
/// Tenant 0's events numbered from this seq on have a `tenant_events` row (see the module doc).
const COUNTER_DEFAULT_ROWS_FROM: &str = "default_rows_from";
/// `default_rows_from` while no tenant but 0 exists: none of its events needs a row.
const DEFAULT_ROWS_NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: u32,
    pub name: String,
    pub created_at_ms: u64,
}

impl Record for TenantRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "tenant";
}

/// A token as stored: never the token itself, only its digest and the prefix listings show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: u64,
    pub tenant: u32,
    pub role: Role,
    pub digest: TokenDigest,
    /// `olt_` and 8 hex digits, for telling tokens apart in listings.
    pub prefix: String,
    pub created_at_ms: u64,
    pub revoked_at_ms: Option<u64>,
}

impl Record for TokenRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "token";
}

impl TokenRecord {
    pub fn entry(&self) -> TokenEntry {
        TokenEntry {
            id: self.id,
            tenant: TenantId(self.tenant),
            role: self.role,
            digest: self.digest,
            revoked: self.revoked_at_ms.is_some(),
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(TENANT_NAMES)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TENANT_EVENTS)?;
    txn.open_table(CHARGE_TENANTS)?;
    let tenants = txn.open_table(TENANTS)?;
    let mut counters = txn.open_table(AUTH_COUNTERS)?;
    if counters.get(COUNTER_DEFAULT_ROWS_FROM)?.is_none() {
        // A new store, or one from before the mark, whose writer gave every event a row: with
        // no other tenant the outbox is tenant 0's list (its old rows are then merely unused).
        let from = if tenants.first()?.is_none() {
            DEFAULT_ROWS_NEVER
        } else {
            1
        };
        counters.insert(COUNTER_DEFAULT_ROWS_FROM, from)?;
    }
    Ok(())
}

/// From which seq on tenant 0's events have a `tenant_events` row (1 for a store the mark has
/// not been settled in, where every event has one).
fn default_rows_from(counters: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(counters
        .get(COUNTER_DEFAULT_ROWS_FROM)?
        .map_or(1, |v| v.value()))
}

/// The tenancy tables inside one write transaction.
pub struct AuthTables<'txn> {
    tenants: Logged<'txn, u32, &'static [u8]>,
    names: Logged<'txn, &'static str, u32>,
    tokens: Logged<'txn, u64, &'static [u8]>,
    tenant_events: Logged<'txn, (u32, u64), ()>,
    charge_tenants: Logged<'txn, u64, u32>,
    counters: Logged<'txn, &'static str, u64>,
    /// `default_rows_from`, as read at open or set by another tenant's first event.
    default_rows_from: u64,
}

impl<'txn> AuthTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction, redo: &'txn Redo) -> Result<Self, StoreError> {
        let counters = Logged::open(txn, redo, AUTH_COUNTERS)?;
        Ok(AuthTables {
            tenants: Logged::open(txn, redo, TENANTS)?,
            names: Logged::open(txn, redo, TENANT_NAMES)?,
            tokens: Logged::open(txn, redo, TOKENS)?,
            tenant_events: Logged::open(txn, redo, TENANT_EVENTS)?,
            charge_tenants: Logged::open(txn, redo, CHARGE_TENANTS)?,
            default_rows_from: default_rows_from(&*counters)?,
            counters,
        })
    }

    fn take(&mut self, counter: &str) -> Result<u64, StoreError> {
        let next = self.counters.get(counter)?.map_or(1, |v| v.value());
        self.counters.insert(counter, next + 1)?;
        Ok(next)
    }

    pub fn tenant_id(&self, name: &str) -> Result<Option<TenantId>, StoreError> {
        if name == DEFAULT_TENANT_NAME {
            return Ok(Some(TenantId::DEFAULT));
        }
        Ok(self.names.get(name)?.map(|v| TenantId(v.value())))
    }

    /// The name of a tenant id (`?` and the id for one that has no row, which cannot happen
    /// for ids this store handed out).
    pub fn tenant_name(&self, tenant: TenantId) -> Result<String, StoreError> {
        if tenant == TenantId::DEFAULT {
            return Ok(DEFAULT_TENANT_NAME.into());
        }
        Ok(match self.tenants.get(tenant.0)? {
            Some(bytes) => decode::<TenantRecord>(bytes.value())?.name,
            None => format!("?{}", tenant.0),
        })
    }

    /// `None` when the name is taken (`default` always is).
    pub fn create_tenant(
        &mut self,
        name: &str,
        now_ms: u64,
    ) -> Result<Option<TenantRecord>, StoreError> {
        if self.tenant_id(name)?.is_some() {
            return Ok(None);
        }
        let id =
            u32::try_from(self.take(COUNTER_NEXT_TENANT_ID)?).map_err(|_| StoreError::Corrupt {
                record: "counter",
                detail: "tenant ids exhausted".into(),
            })?;
        let record = TenantRecord {
            id,
            name: name.to_owned(),
            created_at_ms: now_ms,
        };
        self.tenants.insert(id, encode(&record).as_slice())?;
        self.names.insert(name, id)?;
        Ok(Some(record))
    }

    pub fn create_token(
        &mut self,
        tenant: TenantId,
        role: Role,
        digest: TokenDigest,
        prefix: String,
        now_ms: u64,
    ) -> Result<TokenRecord, StoreError> {
        let record = TokenRecord {
            id: self.take(COUNTER_NEXT_TOKEN_ID)?,
            tenant: tenant.0,
            role,
            digest,
            prefix,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        self.tokens.insert(record.id, encode(&record).as_slice())?;
        Ok(record)
    }

    /// Revokes a token (once: a second revocation keeps the first time). `None`: no such token.
    pub fn revoke_token(
        &mut self,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let Some(mut record) = self
            .tokens
            .get(id)?
            .map(|v| decode::<TokenRecord>(v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        if record.revoked_at_ms.is_none() {
            record.revoked_at_ms = Some(now_ms);
            self.tokens.insert(id, encode(&record).as_slice())?;
        }
        Ok(Some(record))
    }

    /// Records that `tenant` owns event `seq` (no row for tenant 0 below `default_rows_from`).
    pub fn own_event(&mut self, tenant: TenantId, seq: u64) -> Result<(), StoreError> {
        if tenant != TenantId::DEFAULT && self.default_rows_from == DEFAULT_ROWS_NEVER {
            // The first event of another tenant: the outbox stops being tenant 0's list here.
            self.default_rows_from = seq;
            self.counters.insert(COUNTER_DEFAULT_ROWS_FROM, seq)?;
        }
        if tenant != TenantId::DEFAULT || seq >= self.default_rows_from {
            self.tenant_events.insert((tenant.0, seq), ())?;
        }
        Ok(())
    }

    /// The tenant that owns ledger entry `number` (a charge, settlement, refund or transfer).
    pub fn entry_tenant(&self, number: u64) -> Result<TenantId, StoreError> {
        Ok(TenantId(
            self.charge_tenants.get(number)?.map_or(0, |t| t.value()),
        ))
    }

    /// Records that `tenant` owns ledger entry `number` (nothing to write for tenant 0). Account
    /// recovery reads it to find the tenant of each posting.
    pub fn own_entry(&mut self, tenant: TenantId, number: u64) -> Result<(), StoreError> {
        if tenant != TenantId::DEFAULT {
            self.charge_tenants.insert(number, tenant.0)?;
        }
        Ok(())
    }

    /// Outbox retention: deletes up to `rows_max` ownership rows of events below `first_held`.
    pub fn prune_event_owners(
        &mut self,
        first_held: u64,
        rows_max: usize,
    ) -> Result<usize, StoreError> {
        let mut tenant_ids = vec![0u32];
        for entry in self.tenants.iter()? {
            tenant_ids.push(entry?.0.value());
        }
        let mut removed = 0;
        for tenant in tenant_ids {
            let stale: Vec<u64> = self
                .tenant_events
                .range((tenant, 0)..(tenant, first_held))?
                .take(rows_max - removed)
                .map(|entry| entry.map(|(key, _)| key.value().1))
                .collect::<Result<_, _>>()?;
            for seq in &stale {
                self.tenant_events.remove((tenant, *seq))?;
            }
            removed += stale.len();
            if removed >= rows_max {
                break;
            }
        }
        Ok(removed)
    }
}

/// Charge number → owning tenant, for charges of tenants other than 0 (the invariant checker).
pub(super) fn charge_owners(
    txn: &redb::ReadTransaction,
) -> Result<std::collections::HashMap<u64, u32>, StoreError> {
    let table = txn.open_table(CHARGE_TENANTS)?;
    table
        .iter()?
        .map(|entry| {
            entry
                .map(|(n, t)| (n.value(), t.value()))
                .map_err(StoreError::from)
        })
        .collect()
}

/// Event seq → every tenant recorded as its owner, and `default_rows_from` (the invariant checker
/// wants exactly one owner: a row, or below the mark tenant 0 without one).
pub(super) fn event_owners(
    txn: &redb::ReadTransaction,
) -> Result<(std::collections::HashMap<u64, Vec<u32>>, u64), StoreError> {
    let table = txn.open_table(TENANT_EVENTS)?;
    let mut owners: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
    for entry in table.iter()? {
        let (tenant, seq) = entry?.0.value();
        owners.entry(seq).or_default().push(tenant);
    }
    Ok((owners, default_rows_from(&txn.open_table(AUTH_COUNTERS)?)?))
}

/// Read side.
impl Store {
    /// Every tenant, `default` (id 0) first.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        let mut all = vec![TenantRecord {
            id: 0,
            name: DEFAULT_TENANT_NAME.into(),
            created_at_ms: 0,
        }];
        for entry in table.iter()? {
            all.push(decode(entry?.1.value())?);
        }
        Ok(all)
    }

    /// Every token, revoked ones included, in id order.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        table
            .iter()?
            .map(|entry| decode(entry?.1.value()))
            .collect()
    }

    /// The tenant that owns charge `number` (tenant 0 unless recorded otherwise).
    pub fn charge_tenant(&self, number: u64) -> Result<TenantId, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHARGE_TENANTS)?;
        Ok(TenantId(table.get(number)?.map_or(0, |v| v.value())))
    }

    /// Up to `limit` of `tenant`'s events with `seq > after`, in seq order. Events that outbox
    /// retention deleted are skipped.
    pub fn tenant_events_after(
        &self,
        tenant: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let txn = self.db.begin_read()?;
        let owned = txn.open_table(TENANT_EVENTS)?;
        let outbox = txn.open_table(OUTBOX)?;
        let entries = EntryTables::open(&txn)?;
        let mut events = Vec::with_capacity(limit.min(256));
        let mut start = after.saturating_add(1);
        if tenant == TenantId::DEFAULT {
            // Below the mark every event is tenant 0's and has no row: the outbox is the list.
            let rows_from = default_rows_from(&txn.open_table(AUTH_COUNTERS)?)?;
            if start < rows_from {
                events = entries.events_in_range(&outbox, start..rows_from, limit)?;
                start = rows_from;
            }
        }
        for entry in owned.range((tenant.0, start)..=(tenant.0, u64::MAX))? {
            if events.len() == limit {
                break;
            }
            let seq = entry?.0.value().1;
            // An owned event the outbox no longer holds was deleted by retention: skipped.
            if let Some(bytes) = outbox.get(seq)? {
                events.push(entries.join_event(seq, bytes.value())?);
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::ledger::{Account, AccountId, Currency, NewAccount};

    /// Opens one account per name in `tenant`, each an `account.created` event.
    fn open_accounts(store: &Store, tenant: TenantId, names: &[&str]) {
        store
            .commit_batch(|tables| {
                for name in names {
                    let new = NewAccount {
                        id: AccountId::parse(name).expect("valid id"),
                        currency: Currency::parse("EUR").expect("currency"),
                        overdraft_limit: None,
                    };
                    tables.create_account(tenant, Account::open(&new, 1), 1)?;
                }
                Ok(())
            })
            .expect("committed");
    }

    fn seqs(store: &Store, tenant: TenantId, after: u64, limit: usize) -> Vec<u64> {
        let events = store.tenant_events_after(tenant, after, limit);
        events.expect("listed").iter().map(|e| e.seq).collect()
    }

    fn ownership_rows(store: &Store) -> u64 {
        let txn = store.db.begin_read().expect("read");
        txn.open_table(TENANT_EVENTS)
            .expect("table")
            .len()
            .expect("len")
    }

    #[test]
    fn tenant_0_needs_no_ownership_rows_until_another_tenant_has_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        open_accounts(&store, TenantId::DEFAULT, &["a", "b", "c"]);
        assert_eq!(
            ownership_rows(&store),
            0,
            "a single-tenant store writes none"
        );

        let other = store
            .commit_batch(|tables| tables.auth().create_tenant("shop", 1))
            .expect("committed")
            .expect("new tenant");
        let other = TenantId(other.id);
        open_accounts(&store, other, &["a", "b"]);
        open_accounts(&store, TenantId::DEFAULT, &["d", "e"]);
        drop(store);
        // The mark is stored: a reopened store lists the same way.
        let store = Store::open(dir.path()).expect("reopens");

        assert_eq!(seqs(&store, TenantId::DEFAULT, 0, 100), [1, 2, 3, 6, 7]);
        assert_eq!(seqs(&store, other, 0, 100), [4, 5]);
        // Pages across the mark: from the outbox below it, from the rows above it.
        assert_eq!(seqs(&store, TenantId::DEFAULT, 1, 3), [2, 3, 6]);
        assert_eq!(seqs(&store, TenantId::DEFAULT, 3, 100), [6, 7]);
        assert_eq!(seqs(&store, TenantId::DEFAULT, 6, 100), [7]);
        assert_eq!(
            ownership_rows(&store),
            4,
            "rows from the mark on, for both tenants"
        );
        super::super::check::assert_consistent(&store);
    }

    #[test]
    fn a_store_whose_events_all_have_rows_keeps_listing_them() {
        // A store written before the mark: every event has its row. Opened with another tenant
        // present, the mark settles at 1 and tenant 0's list comes from its rows alone.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        let other = store
            .commit_batch(|tables| tables.auth().create_tenant("shop", 1))
            .expect("committed")
            .expect("new tenant");
        let other = TenantId(other.id);
        open_accounts(&store, TenantId::DEFAULT, &["a"]);
        open_accounts(&store, other, &["a"]);
        open_accounts(&store, TenantId::DEFAULT, &["b"]);
        {
            // Rewind to the old layout: a row for every event, no mark.
            let txn = store.db.begin_write().expect("write");
            {
                let mut rows = txn.open_table(TENANT_EVENTS).expect("table");
                for seq in [1, 3] {
                    rows.insert((0, seq), ()).expect("row");
                }
                let mut counters = txn.open_table(AUTH_COUNTERS).expect("table");
                counters.remove(COUNTER_DEFAULT_ROWS_FROM).expect("removed");
            }
            txn.commit().expect("committed");
        }
        drop(store);

        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(seqs(&store, TenantId::DEFAULT, 0, 100), [1, 3]);
        assert_eq!(seqs(&store, other, 0, 100), [2]);
        super::super::check::assert_consistent(&store);
    }
}
