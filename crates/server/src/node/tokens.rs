//! Tenants and tokens on a data directory: the first admin token of a fresh node, and the
//! `onceledger tenant` / `onceledger token` commands.
//!
//! These write the store directly, so they work only while no server runs on the directory:
//! redb locks the file, and the commands say so instead of waiting. On a running node the admin
//! endpoints do the same through the server, which also updates its in-memory token table at once.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::{DEFAULT_TENANT_NAME, Role, TokenSecret, is_valid_tenant_name};
use onceledger_core::clock::now_ms;
use onceledger_core::ledger::TenantId;
use onceledger_core::store::{Store, StoreError, TenantRecord, TokenRecord};

pub use onceledger_client::token::ADMIN_TOKEN_FILE_NAME;

/// Opens a stopped node's store for a command; a running server holds the lock.
pub fn open_for_command(data_dir: &Path) -> Result<Store, String> {
    Store::open(data_dir).map_err(|e| {
        format!(
            "cannot open the store in {} ({e}); if a server runs on it, use its admin endpoints (/v1/tenants, /v1/tokens) instead",
            data_dir.display()
        )
    })
}

/// When the store holds no usable admin token (a fresh directory, or every admin token was
/// revoked), makes one, writes it to `admin.token` (mode 0600, the token alone on one line) and
/// returns it so `serve` can print it once. Returns `None` when an admin token exists.
pub fn ensure_admin_token(
    store: &Store,
    data_dir: &Path,
) -> Result<Option<(TokenSecret, PathBuf)>, String> {
    let tokens = store
        .tokens()
        .map_err(|e| format!("cannot read tokens: {e}"))?;
    if tokens
        .iter()
        .any(|t| t.role == Role::Admin && t.revoked_at_ms.is_none())
    {
        return Ok(None);
    }
    let secret = TokenSecret::generate().map_err(|e| e.to_string())?;
    let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
    // The file first: a token committed but never written down would lock the operator out.
    write_secret_file(&path, secret.expose())?;
    create_token(store, TenantId::DEFAULT, Role::Admin, &secret)
        .map_err(|e| format!("cannot store the admin token: {e}"))?;
    Ok(Some((secret, path)))
}

/// Writes `secret` and a newline to `path`, readable by the owner only. Written to a temporary
/// file and renamed, so the file is never seen half written or with wider permissions.
fn write_secret_file(path: &Path, secret: &str) -> Result<(), String> {
    let temporary = path.with_extension("token.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn create_token(
    store: &Store,
    tenant: TenantId,
    role: Role,
    secret: &TokenSecret,
) -> Result<TokenRecord, StoreError> {
    store.write_batch(|tables| {
        tables.auth().create_token(
            tenant,
            role,
            crate::auth::digest(secret),
            secret.shown_prefix(),
            now_ms(),
        )
    })
}

/// `onceledger tenant create NAME`.
pub fn tenant_create(store: &Store, name: &str) -> Result<TenantRecord, String> {
    if !is_valid_tenant_name(name) {
        return Err("a tenant name is 1 to 64 of A-Z a-z 0-9 _ . -".into());
    }
    store
        .write_batch(|tables| tables.auth().create_tenant(name, now_ms()))
        .map_err(|e| format!("cannot store the tenant: {e}"))?
        .ok_or_else(|| format!("tenant {name} exists already"))
}

/// `onceledger token create --tenant NAME --role ROLE`: the token, to be shown once.
pub fn token_create(
    store: &Store,
    tenant: &str,
    role: Role,
) -> Result<(TokenRecord, TokenSecret), String> {
    if role == Role::Admin && tenant != DEFAULT_TENANT_NAME {
        return Err(format!(
            "admin tokens belong to the operator's tenant, {DEFAULT_TENANT_NAME}"
        ));
    }
    let id = store
        .tenants()
        .map_err(|e| format!("cannot read tenants: {e}"))?
        .into_iter()
        .find(|t| t.name == tenant)
        .map(|t| TenantId(t.id))
        .ok_or_else(|| {
            format!("no tenant {tenant}; create it with `onceledger tenant create {tenant}`")
        })?;
    let secret = TokenSecret::generate().map_err(|e| e.to_string())?;
    let record = create_token(store, id, role, &secret)
        .map_err(|e| format!("cannot store the token: {e}"))?;
    Ok((record, secret))
}

/// `onceledger token revoke ID`.
pub fn token_revoke(store: &Store, id: u64) -> Result<TokenRecord, String> {
    store
        .write_batch(|tables| tables.auth().revoke_token(id, now_ms()))
        .map_err(|e| format!("cannot revoke: {e}"))?
        .ok_or_else(|| format!("no token {id}"))
}
