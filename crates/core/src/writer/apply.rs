//! One command inside the batch's transaction: re-check the key, apply the ledger rules, and write
//! the idempotency record together with the command's effects.

use bytes::Bytes;

use super::lifecycle;
use super::{StoredAnswer, WriteOutcome, WriteRequest};
use crate::ids::{Role, TokenDigest};
use crate::ledger::{Account, Command, Decline, NewAccount, NewCharge, TenantId, post_charge};
use crate::render as present;
use crate::store::{BatchTables, Effect, IdempotencyRecord, Redrive, StoreError};

/// A decline is an `Ok` here: it is a final answer that gets stored. Only a storage failure is an
/// `Err`, and it fails the whole batch. The effect comes back when the command executed now.
pub(super) fn apply(
    tables: &mut BatchTables<'_>,
    request: &WriteRequest,
    context: &Context,
) -> Result<(WriteOutcome, Option<Effect>), StoreError> {
    let now_ms = context.now_ms;
    // The in-flight index already refused concurrent duplicates; this check inside the write
    // transaction is what makes "at most once" independent of that index's timing.
    if let Some(record) = tables.idempotency_record(request.tenant, &request.key)? {
        let outcome = if record.fingerprint == request.fingerprint {
            WriteOutcome::Replayed(StoredAnswer {
                status: record.status,
                body: Bytes::from(record.body),
            })
        } else {
            WriteOutcome::FingerprintMismatch
        };
        return Ok((outcome, None));
    }
    let (status, body, effect) = match execute(tables, request, context)? {
        Ok((status, body, effect)) => (status, body, effect),
        Err(decline) => {
            let (status, body) = present::decline(&decline);
            (status, body, Effect::None)
        }
    };
    let record = IdempotencyRecord {
        fingerprint: request.fingerprint,
        status,
        body,
        finished_at_ms: now_ms,
        effect,
    };
    tables.put_idempotency_record(request.tenant, &request.key, &record)?;
    Ok((
        WriteOutcome::Executed(StoredAnswer {
            status,
            body: Bytes::from(record.body),
        }),
        Some(record.effect),
    ))
}

pub(super) type Executed = (u16, Vec<u8>, Effect);
/// What a command comes to: executed (status, stored body, effect), or declined (a final answer
/// too), or a storage failure that fails the batch.
pub(super) type Execution = Result<Result<Executed, Decline>, StoreError>;

/// What every command of a commit shares.
pub(super) struct Context {
    /// The commit's clock: every command of a batch sees the same instant.
    pub now_ms: u64,
    /// An authorization's lifetime when the request names none (`--authorization-ttl`).
    pub authorization_ttl_ms: u64,
}

/// One function per command; each reads what it needs through the batch's tables, so it sees the
/// balances the earlier commands of the batch left.
fn execute(tables: &mut BatchTables<'_>, request: &WriteRequest, context: &Context) -> Execution {
    let tenant = request.tenant;
    let now_ms = context.now_ms;
    match &request.command {
        Command::CreateAccount(new) => create_account(tables, tenant, new, now_ms),
        Command::CreateCharge(charge) => create_charge(tables, tenant, charge, now_ms),
        Command::Authorize(new) => lifecycle::authorize(tables, tenant, new, context),
        Command::SettleCharge { charge, how } => {
            lifecycle::settle_charge(tables, tenant, charge, *how, now_ms)
        }
        Command::CreateRefund(new) => lifecycle::create_refund(tables, tenant, new, now_ms),
        Command::CreateTransfer(new) => lifecycle::create_transfer(tables, tenant, new, now_ms),
        Command::RedriveDeadLetter { id } => redrive(tables, *id, now_ms),
        Command::CreateTenant { name } => Ok(match tables.auth().create_tenant(name, now_ms)? {
            Some(record) => Ok((201, present::tenant(&record), Effect::Administrative)),
            None => Err(Decline::TenantExists { name: name.clone() }),
        }),
        Command::CreateToken {
            tenant: name,
            role,
            secret,
        } => create_token(tables, name, *role, secret.as_ref(), now_ms),
        Command::RevokeToken { id } => Ok(match tables.auth().revoke_token(*id, now_ms)? {
            Some(record) => {
                let name = tables.auth().tenant_name(TenantId(record.tenant))?;
                Ok((200, present::token(&record, &name), Effect::Administrative))
            }
            None => Err(Decline::TokenNotFound { id: *id }),
        }),
    }
}

fn create_account(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    new: &NewAccount,
    now_ms: u64,
) -> Execution {
    if tables.account(tenant, &new.id)?.is_some() {
        return Ok(Err(Decline::AccountExists {
            account: new.id.clone(),
        }));
    }
    let account = Account::open(new, now_ms);
    let body = present::account(&account);
    let event_seq = tables.create_account(tenant, account, now_ms)?;
    let effect = Effect::AccountCreated {
        account: new.id.clone(),
        event_seq,
    };
    Ok(Ok((201, body, effect)))
}

/// The ledger rules decide (`post_charge`); the batch keeps both accounts in memory, so the next
/// command of the batch sees the balances this one left.
fn create_charge(
    tables: &mut BatchTables<'_>,
    tenant: TenantId,
    charge: &NewCharge,
    now_ms: u64,
) -> Execution {
    let (mut source, mut destination) =
        match lifecycle::accounts(tables, tenant, [&charge.source, &charge.destination])? {
            Ok(pair) => pair,
            Err(decline) => return Ok(Err(decline)),
        };
    let postings = match post_charge(charge, &mut source, &mut destination) {
        Ok(postings) => postings,
        Err(decline) => return Ok(Err(decline)),
    };
    tables.stage_account(tenant, source);
    tables.stage_account(tenant, destination);
    let stored = tables.record_charge(tenant, charge, &postings, now_ms)?;
    let effect = Effect::ChargeSucceeded {
        charge_number: stored.number,
    };
    let progress = crate::ledger::ChargeProgress::immediate(&stored);
    Ok(Ok((
        201,
        present::charge(&stored, &progress, tables.charge_ids()),
        effect,
    )))
}

fn redrive(tables: &mut BatchTables<'_>, id: u64, now_ms: u64) -> Execution {
    Ok(match tables.replication().redrive(id, now_ms)? {
        Redrive::NotFound => Err(Decline::DeadLetterNotFound { id }),
        Redrive::StillRefused(letter) => Err(Decline::RedriveRefused {
            id,
            reason: letter.reason,
        }),
        Redrive::Applied(letter) => Ok((
            200,
            present::dead_letter(&letter),
            Effect::DeadLetterRedriven { id },
        )),
        // Applied by an earlier redrive: shown, not applied again.
        Redrive::AlreadyApplied(letter) => Ok((200, present::dead_letter(&letter), Effect::None)),
    })
}

fn create_token(
    tables: &mut BatchTables<'_>,
    name: &str,
    role: Role,
    secret: Option<&(TokenDigest, String)>,
    now_ms: u64,
) -> Execution {
    let Some(tenant) = tables.auth().tenant_id(name)? else {
        return Ok(Err(Decline::TenantNotFound {
            name: name.to_owned(),
        }));
    };
    // The handler always fills the secret in; without one there is nothing to store.
    let Some((digest, prefix)) = secret else {
        return Err(StoreError::Corrupt {
            record: "token request",
            detail: "no token digest".into(),
        });
    };
    let record = (tables.auth()).create_token(tenant, role, *digest, prefix.clone(), now_ms)?;
    Ok(Ok((
        201,
        present::token(&record, name),
        Effect::Administrative,
    )))
}
