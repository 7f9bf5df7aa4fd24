//! Tenants and tokens on a data directory: the first admin token of a fresh node, and the
//! `onceledger tenant` / `onceledger token` commands.
//!
//! These write the store directly, which the type system allows only to the one owner of an
//! unshared store (`&mut Store`): a command on a stopped node's directory, or `serve` before it
//! starts the writer. They work only while no server runs on the directory: redb locks the file,
//! and the commands say so instead of waiting. On a running node the admin
//! endpoints do the same through the server, which also updates its in-memory token table at once.

use std::path::{Path, PathBuf};

use crate::auth::{DEFAULT_TENANT_NAME, Role, TokenSecret, is_valid_tenant_name};
use onceledger_core::clock::now_ms;
use onceledger_core::ledger::TenantId;
use onceledger_core::store::{Store, StoreError, TenantRecord, TokenRecord};

pub use onceledger_client::token::ADMIN_TOKEN_FILE_NAME;
use onceledger_client::token::TokenError;

/// What can go wrong in the tenant and token commands and in making the first admin token. The
/// messages are one sentence for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenCommandError {
    /// The store did not open: most often a server runs on it and holds redb's lock.
    Open {
        data_dir: PathBuf,
        source: StoreError,
    },
    /// A read or a commit of the store failed; `doing` says which ("read tokens", ...).
    Store {
        doing: &'static str,
        source: StoreError,
    },
    /// The admin token file could not be written.
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No token could be made (no randomness from the operating system).
    NoToken(TokenError),
    InvalidTenantName,
    TenantExists(String),
    NoSuchTenant(String),
    /// Admin tokens belong to the operator's tenant only.
    AdminOutsideDefaultTenant,
    NoSuchToken(u64),
}

impl std::fmt::Display for TokenCommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenCommandError::Open { data_dir, source } => write!(
                f,
                "cannot open the store in {} ({source}); if a server runs on it, use its admin endpoints (/v1/tenants, /v1/tokens) instead",
                data_dir.display()
            ),
            TokenCommandError::Store { doing, source } => write!(f, "cannot {doing}: {source}"),
            TokenCommandError::TokenFile { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            TokenCommandError::NoToken(error) => write!(f, "{error}"),
            TokenCommandError::InvalidTenantName => {
                f.write_str("a tenant name is 1 to 64 of A-Z a-z 0-9 _ . -")
            }
            TokenCommandError::TenantExists(name) => write!(f, "tenant {name} exists already"),
            TokenCommandError::NoSuchTenant(name) => write!(
                f,
                "no tenant {name}; create it with `onceledger tenant create {name}`"
            ),
            TokenCommandError::AdminOutsideDefaultTenant => write!(
                f,
                "admin tokens belong to the operator's tenant, {DEFAULT_TENANT_NAME}"
            ),
            TokenCommandError::NoSuchToken(id) => write!(f, "no token {id}"),
        }
    }
}

impl std::error::Error for TokenCommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenCommandError::Open { source, .. } | TokenCommandError::Store { source, .. } => {
                Some(source)
            }
            TokenCommandError::TokenFile { source, .. } => Some(source),
            TokenCommandError::NoToken(source) => Some(source),
            _ => None,
        }
    }
}

fn store_error(doing: &'static str) -> impl FnOnce(StoreError) -> TokenCommandError {
    move |source| TokenCommandError::Store { doing, source }
}

/// Opens a stopped node's store for a command; a running server holds the lock.
pub fn open_for_command(data_dir: &Path) -> Result<Store, TokenCommandError> {
    Store::open(data_dir).map_err(|source| TokenCommandError::Open {
        data_dir: data_dir.to_path_buf(),
        source,
    })
}

/// When the store holds no usable admin token (a fresh directory, or every admin token was
/// revoked), makes one, writes it to `admin.token` (mode 0600, the token alone on one line) and
/// returns it so `serve` can print it once. Returns `None` when an admin token exists.
pub fn ensure_admin_token(
    store: &mut Store,
    data_dir: &Path,
) -> Result<Option<(TokenSecret, PathBuf)>, TokenCommandError> {
    let tokens = store.tokens().map_err(store_error("read tokens"))?;
    if tokens
        .iter()
        .any(|t| t.role == Role::Admin && t.revoked_at_ms.is_none())
    {
        return Ok(None);
    }
    let secret = TokenSecret::generate().map_err(TokenCommandError::NoToken)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE_NAME);
    // The file first: a token committed but never written down would lock the operator out.
    write_secret_file(&path, secret.expose())?;
    create_token(store, TenantId::DEFAULT, Role::Admin, &secret)
        .map_err(store_error("store the admin token"))?;
    Ok(Some((secret, path)))
}

/// Writes `secret` and a newline to `path`, readable by the owner only, durably: a power cut
/// cannot keep the token's row in the store while losing its file.
fn write_secret_file(path: &Path, secret: &str) -> Result<(), TokenCommandError> {
    let line = format!("{secret}\n");
    onceledger_core::durable_fs::replace_private_file(path, line.as_bytes()).map_err(|source| {
        TokenCommandError::TokenFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn create_token(
    store: &mut Store,
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
pub fn tenant_create(store: &mut Store, name: &str) -> Result<TenantRecord, TokenCommandError> {
    if !is_valid_tenant_name(name) {
        return Err(TokenCommandError::InvalidTenantName);
    }
    store
        .write_batch(|tables| tables.auth().create_tenant(name, now_ms()))
        .map_err(store_error("store the tenant"))?
        .ok_or_else(|| TokenCommandError::TenantExists(name.to_owned()))
}

/// `onceledger token create --tenant NAME --role ROLE`: the token, to be shown once.
pub fn token_create(
    store: &mut Store,
    tenant: &str,
    role: Role,
) -> Result<(TokenRecord, TokenSecret), TokenCommandError> {
    if role == Role::Admin && tenant != DEFAULT_TENANT_NAME {
        return Err(TokenCommandError::AdminOutsideDefaultTenant);
    }
    let id = store
        .tenants()
        .map_err(store_error("read tenants"))?
        .into_iter()
        .find(|t| t.name == tenant)
        .map(|t| TenantId(t.id))
        .ok_or_else(|| TokenCommandError::NoSuchTenant(tenant.to_owned()))?;
    let secret = TokenSecret::generate().map_err(TokenCommandError::NoToken)?;
    let record = create_token(store, id, role, &secret).map_err(store_error("store the token"))?;
    Ok((record, secret))
}

/// `onceledger token revoke ID`.
pub fn token_revoke(store: &mut Store, id: u64) -> Result<TokenRecord, TokenCommandError> {
    store
        .write_batch(|tables| tables.auth().revoke_token(id, now_ms()))
        .map_err(store_error("revoke"))?
        .ok_or_else(|| TokenCommandError::NoSuchToken(id))
}
