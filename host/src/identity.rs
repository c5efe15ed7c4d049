//! Who is calling: API tokens and the [`Principal`] they authenticate as.
//!
//! This is the single place identity is established: every request passes through
//! [`TokenStore::authenticate`] (via the `Principal` extractor in `api::auth`) and every
//! permission decision reads the resulting `Principal`.
//!
//! Tokens look like `keel_<prefix>_<secret>`: the prefix is stored in clear for lookup and
//! display, the whole token only as a sha-256 hash (tokens carry 256 random bits, so a slow
//! password hash adds nothing).

use crate::backend::BackendError;
use crate::clock::Clock;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tenant every caller belongs to until tenants can be created.
pub const DEFAULT_TENANT: &str = "default";

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Installs and manages plugins and tenants; acts in the default tenant with every
    /// plugin permission.
    PlatformAdmin,
    /// Manages one tenant: its plugins, tokens and grants; every plugin permission there.
    TenantAdmin,
    /// Uses one tenant's departments with the permissions the tenant grants to its role
    /// (`member` or a tenant-defined role such as `agent`).
    Member,
}

/// Names a tenant may give its own roles: 2-32 characters of a-z, 0-9 and '-'.
pub fn valid_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    (2..=32).contains(&name.len())
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::Member => "member",
        }
    }

    /// The built-in role of a stored role name; any other valid name is a tenant-defined
    /// role, which has member standing plus that role's grants.
    pub fn of(name: &str) -> Option<Role> {
        match name {
            "platform-admin" => Some(Role::PlatformAdmin),
            "tenant-admin" => Some(Role::TenantAdmin),
            other if valid_role_name(other) => Some(Role::Member),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The user the token was issued to at sign-in; `None` for service tokens.
    pub user_id: Option<String>,
    /// The user's display name, or the token's name.
    pub name: String,
    pub role: Role,
    /// The stored role name: grants are looked up by it (`member`, `agent`, ...).
    pub role_name: String,
    /// The tenant the caller acts in; plugin storage is scoped to it.
    pub tenant: String,
}

impl Principal {
    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// Whether the caller may manage `tenant` (its plugins, tokens and grants).
    pub fn may_administer(&self, tenant: &str) -> bool {
        match self.role {
            Role::PlatformAdmin => true,
            Role::TenantAdmin => self.tenant == tenant,
            Role::Member => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was given")]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the token is unknown, revoked or expired")]
    Rejected,
    #[error("the tenant is suspended")]
    Suspended,
    #[error("token store unavailable: {0}")]
    Unavailable(String),
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    /// The visible part of the token (`keel_<prefix>_...`).
    pub prefix: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A token just created: the only time its secret is visible.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: String,
    pub prefix: String,
    pub token: String,
    pub created_at: i64,
}

/// How long a verified token is trusted without asking the database again. This bounds how
/// long another replica may keep accepting a token after it is revoked; the replica that
/// revokes forgets it at once.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
const TOKEN_CACHE_MAX: usize = 10_000;

struct CachedPrincipal {
    principal: Principal,
    expires_at: Option<i64>,
    verified_at: Instant,
}

/// A stored token as authentication needs it, with its user's and tenant's state.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    /// sha-256 of the whole token, hex.
    pub secret_hash: String,
    pub name: String,
    pub role: String,
    pub tenant: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub user_id: Option<String>,
    /// The signed-in user's display name, for tokens of a user.
    pub user_display_name: Option<String>,
    /// Whether the token's user is disabled (its tokens were revoked too; this guards a row
    /// read while that happened).
    pub user_disabled: bool,
    /// Whether the token's tenant is active (a token of no tenant row counts as active).
    pub tenant_active: bool,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub tenant: &'a str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub user_id: Option<&'a str>,
}

/// Token rows in the backend; [`TokenStore`] verifies and caches above it.
#[async_trait::async_trait]
pub trait TokenRows: Send + Sync + 'static {
    /// A tenant's tokens, newest first, without secrets.
    async fn tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, BackendError>;
    /// Marks a tenant's token revoked at `now` (kept if it already was); `false` if the
    /// tenant has no such token.
    async fn revoke(&self, tenant: &str, token_id: &str, now: i64) -> Result<bool, BackendError>;
    async fn insert(&self, token: &NewToken<'_>) -> Result<(), BackendError>;
    /// How many tokens exist at all.
    async fn count(&self) -> Result<u64, BackendError>;
    /// The token whose public prefix is `prefix`.
    async fn by_prefix(&self, prefix: &str) -> Result<Option<TokenRow>, BackendError>;
    /// Records a use at `now`.
    async fn touch(&self, token_id: &str, now: i64) -> Result<(), BackendError>;
}

#[derive(Clone)]
pub struct TokenStore {
    rows: Arc<dyn TokenRows>,
    /// Expiry, revocation and last use read the platform clock, so tests can move it.
    clock: Arc<Clock>,
    /// Verified tokens by the sha-256 of the whole token: a request must present the token
    /// itself to hit an entry.
    verified: Arc<Mutex<HashMap<String, CachedPrincipal>>>,
    /// Bumped by every forgetting: a verification that read the token's row before a
    /// revocation must not cache what it read after the cache was cleared.
    forgotten: Arc<std::sync::atomic::AtomicU64>,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// Compares in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenStore {
    pub fn new(rows: Arc<dyn TokenRows>, clock: Arc<Clock>) -> Self {
        TokenStore { rows, clock, verified: Arc::new(Mutex::new(HashMap::new())), forgotten: Arc::default() }
    }

    /// Forgets cached verifications of a token (on revocation).
    pub fn forget(&self, token_id: &str) {
        let mut cache = self.verified.lock().expect("token cache lock");
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.retain(|_, c| c.principal.token_id != token_id);
    }

    /// Forgets every cached verification (another host revoked a token or suspended a tenant).
    pub fn forget_all(&self) {
        let mut cache = self.verified.lock().expect("token cache lock");
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.clear();
    }

    /// Forgets cached verifications of a user's tokens (password reset, user disabled).
    pub fn forget_user(&self, user_id: &str) {
        let mut cache = self.verified.lock().expect("token cache lock");
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.retain(|_, c| c.principal.user_id.as_deref() != Some(user_id));
    }

    /// Forgets cached verifications of every token of a tenant (on suspension).
    pub fn forget_tenant(&self, tenant: &str) {
        let mut cache = self.verified.lock().expect("token cache lock");
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.retain(|_, c| c.principal.tenant != tenant);
    }

    /// A tenant's tokens, newest first, without secrets.
    pub async fn list(&self, tenant: &str) -> Result<Vec<TokenInfo>, BackendError> {
        self.rows.tokens(tenant).await
    }

    /// Revokes a tenant's token. Returns false if the tenant has no such token.
    pub async fn revoke(&self, tenant: &str, token_id: &str) -> Result<bool, BackendError> {
        let done = self.rows.revoke(tenant, token_id, self.clock.now_ms()).await?;
        self.forget(token_id);
        Ok(done)
    }

    /// Creates a service token for the role named `role` in `tenant`.
    pub async fn issue(
        &self,
        name: &str,
        role: &str,
        tenant: &str,
        expires_at: Option<i64>,
    ) -> Result<IssuedToken, BackendError> {
        self.issue_for(name, role, tenant, expires_at, None).await
    }

    /// Creates a token; bound to a user when it comes from sign-in.
    pub async fn issue_for(
        &self,
        name: &str,
        role: &str,
        tenant: &str,
        expires_at: Option<i64>,
        user_id: Option<&str>,
    ) -> Result<IssuedToken, BackendError> {
        let prefix = hex::encode(random_bytes::<5>());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let token = format!("keel_{prefix}_{secret}");
        let id = format!("tok_{}", hex::encode(random_bytes::<8>()));
        let created_at = self.clock.now_ms();
        let secret_hash = sha256_hex(&token);
        self.rows
            .insert(&NewToken {
                id: &id,
                prefix: &prefix,
                secret_hash: &secret_hash,
                name,
                role,
                tenant,
                created_at,
                expires_at,
                user_id,
            })
            .await?;
        Ok(IssuedToken { id, prefix, token, created_at })
    }

    /// At first start (no tokens at all), creates the bootstrap platform-admin token and
    /// returns it so it can be shown once.
    pub async fn ensure_bootstrap(
        &self,
        tenancy: &dyn crate::tenancy::TenancyRows,
    ) -> Result<Option<IssuedToken>, BackendError> {
        if self.rows.count().await? > 0 {
            return Ok(None);
        }
        let default = crate::tenancy::Tenant {
            id: DEFAULT_TENANT.to_owned(),
            name: "Default tenant".to_owned(),
            status: crate::tenancy::TenantStatus::Active,
            created_at: self.clock.now_ms(),
        };
        // Already there when a start failed after making it: nothing to do then.
        tenancy.insert_tenant(&default).await?;
        self.issue("bootstrap admin", Role::PlatformAdmin.as_str(), DEFAULT_TENANT, None).await.map(Some)
    }

    /// Resolves an `Authorization` header value to a principal.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AuthError::Malformed)?
            .trim();
        let prefix = token
            .strip_prefix("keel_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(prefix, _)| prefix)
            .filter(|p| p.len() == 10 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(AuthError::Malformed)?;
        let hash = sha256_hex(token);
        let now = self.clock.now_ms();
        if let Some(cached) = self.verified.lock().expect("token cache lock").get(&hash)
            && cached.verified_at.elapsed() < TOKEN_CACHE_TTL
            && cached.expires_at.is_none_or(|t| t > now)
        {
            return Ok(cached.principal.clone());
        }
        let forgotten = self.forgotten.load(std::sync::atomic::Ordering::Acquire);
        let row = self
            .rows
            .by_prefix(prefix)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?
            .ok_or(AuthError::Rejected)?;
        if !constant_time_eq(row.secret_hash.as_bytes(), hash.as_bytes()) {
            return Err(AuthError::Rejected);
        }
        let expires_at = row.expires_at;
        let expired = expires_at.is_some_and(|t| t <= now);
        let revoked = row.revoked_at.is_some();
        let role = Role::of(&row.role);
        let (Some(role), false, false, false) = (role, expired, revoked, row.user_disabled) else {
            return Err(AuthError::Rejected);
        };
        if !row.tenant_active {
            return Err(AuthError::Suspended);
        }
        // Record use at most once a minute per token, so reads do not become writes.
        if row.last_used_at.is_none_or(|t| now - t > 60_000) {
            let _ = self.rows.touch(&row.id, now).await;
        }
        let principal = Principal {
            token_id: row.id,
            user_id: row.user_id,
            name: row.user_display_name.unwrap_or(row.name),
            role,
            role_name: row.role,
            tenant: row.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
        };
        let mut cache = self.verified.lock().expect("token cache lock");
        if self.forgotten.load(std::sync::atomic::Ordering::Acquire) != forgotten {
            // Something was forgotten while the row was read: it may predate a revocation.
            return Ok(principal);
        }
        if cache.len() >= TOKEN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, CachedPrincipal { principal: principal.clone(), expires_at, verified_at: Instant::now() });
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
