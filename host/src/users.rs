//! People who sign in: users of a tenant with argon2id password hashes, and the throttle that
//! locks a (tenant, username) after repeated failed sign-ins.

use crate::backend::BackendError;
use crate::clock::Clock;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Consecutive failures before a (tenant, username) is locked, and for how long.
pub const MAX_FAILURES: i64 = 5;
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 256;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub created_at: i64,
    /// When a tenant admin disabled the user; a disabled user cannot sign in and its sign-in
    /// tokens were revoked.
    pub disabled_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("usernames are 1-64 characters of letters, digits, '.', '_', '-' and '@'")]
    InvalidUsername,
    #[error("display names are 1-100 characters")]
    InvalidDisplayName,
    #[error("passwords are {MIN_PASSWORD}-{MAX_PASSWORD} characters")]
    WeakPassword,
    #[error("user `{0}` already exists in this tenant")]
    Exists(String),
    #[error("no user `{0}` in this tenant")]
    NotFound(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Database(#[from] BackendError),
}

/// Why a sign-in failed. Unknown users and wrong passwords are the same failure.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the tenant, username or password is wrong")]
    InvalidCredentials,
    #[error("too many failed sign-ins; try again later")]
    Locked { retry_after_ms: i64 },
    #[error(transparent)]
    Database(#[from] BackendError),
}

/// User rows in the backend; [`UserStore`] validates, hashes and throttles above it.
#[async_trait::async_trait]
pub trait UserRows: Send + Sync + 'static {
    /// Adds a user; `false` if the tenant has one of that username (nothing changed).
    async fn insert(&self, user: &User, password_hash: &str) -> Result<bool, BackendError>;
    /// A tenant's users, by username.
    async fn users(&self, tenant: &str) -> Result<Vec<User>, BackendError>;
    /// One of a tenant's users, by id.
    async fn user(&self, tenant: &str, id: &str) -> Result<Option<User>, BackendError>;
    /// Replaces the user's password hash, forgets its failed sign-ins and revokes its sign-in
    /// tokens at `now`, in one transaction; `false` if the tenant has no such user.
    async fn set_password(&self, tenant: &str, id: &str, password_hash: &str, now: i64) -> Result<bool, BackendError>;
    /// Disables the user at `now` (revoking its sign-in tokens; an earlier `disabled_at` is
    /// kept), or enables it with `None`; `false` if the tenant has no such user.
    async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled_at: Option<i64>,
        now: i64,
    ) -> Result<bool, BackendError>;
    /// Until when sign-ins as (tenant, username) are refused, if a lockout was recorded.
    async fn locked_until(&self, tenant: &str, username: &str) -> Result<Option<i64>, BackendError>;
    /// The user and password hash, if the user exists, is not disabled and its tenant is active.
    async fn credentials(&self, tenant: &str, username: &str) -> Result<Option<(User, String)>, BackendError>;
    /// Forgets failed sign-ins (after a good one).
    async fn clear_failures(&self, tenant: &str, username: &str) -> Result<(), BackendError>;
    /// Counts a failed sign-in at `now`: a lockout that has ended starts the count again, and
    /// the `max_failures`th failure locks until `now + lockout_ms`.
    async fn record_failure(
        &self,
        tenant: &str,
        username: &str,
        now: i64,
        max_failures: i64,
        lockout_ms: i64,
    ) -> Result<(), BackendError>;
}

#[derive(Clone)]
pub struct UserStore {
    rows: std::sync::Arc<dyn UserRows>,
    /// The lockout reads the platform clock, so tests can move it.
    clock: Arc<Clock>,
    /// Verified against when the user does not exist, so both failures cost the same time.
    /// Made on first need: hashing costs tens of milliseconds, which start-up should not pay.
    decoy_hash: std::sync::Arc<std::sync::OnceLock<String>>,
}

fn valid_username(u: &str) -> bool {
    (1..=64).contains(&u.len()) && u.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

fn hash(password: &str) -> Result<String, UserError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Checks a password's length and hashes it off the async threads (argon2 takes tens of ms).
async fn hash_checked(password: &str) -> Result<String, UserError> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
        return Err(UserError::WeakPassword);
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash(&password)).await.map_err(|e| UserError::Hash(e.to_string()))?
}

impl UserStore {
    pub fn new(rows: Arc<dyn UserRows>, clock: Arc<Clock>) -> Self {
        UserStore { rows, clock, decoy_hash: Default::default() }
    }

    pub async fn create(
        &self,
        tenant: &str,
        username: &str,
        display_name: &str,
        password: &str,
        role: &str,
    ) -> Result<User, UserError> {
        if !valid_username(username) {
            return Err(UserError::InvalidUsername);
        }
        let display_name = display_name.trim();
        if display_name.is_empty() || display_name.chars().count() > 100 {
            return Err(UserError::InvalidDisplayName);
        }
        let hashed = hash_checked(password).await?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the operating system's random source failed");
        let user = User {
            id: format!("usr_{}", hex::encode(id)),
            tenant: tenant.to_owned(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            role: role.to_owned(),
            created_at: self.clock.now_ms(),
            disabled_at: None,
        };
        if !self.rows.insert(&user, &hashed).await? {
            return Err(UserError::Exists(username.to_owned()));
        }
        Ok(user)
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<User>, BackendError> {
        self.rows.users(tenant).await
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<User, UserError> {
        self.rows.user(tenant, id).await?.ok_or_else(|| UserError::NotFound(id.to_owned()))
    }

    /// Sets a new password. The user's sign-in tokens are revoked and a lockout is lifted, so
    /// a reset both shuts out whoever knew the old password and lets the owner back in.
    pub async fn reset_password(&self, tenant: &str, id: &str, password: &str) -> Result<User, UserError> {
        let user = self.get(tenant, id).await?;
        let hashed = hash_checked(password).await?;
        if !self.rows.set_password(tenant, id, &hashed, self.clock.now_ms()).await? {
            return Err(UserError::NotFound(id.to_owned()));
        }
        Ok(user)
    }

    /// Disables (revoking the user's sign-in tokens) or enables a user; idempotent.
    pub async fn set_disabled(&self, tenant: &str, id: &str, disabled: bool) -> Result<User, UserError> {
        let now = self.clock.now_ms();
        if !self.rows.set_disabled(tenant, id, disabled.then_some(now), now).await? {
            return Err(UserError::NotFound(id.to_owned()));
        }
        self.get(tenant, id).await
    }

    /// Checks a password, applying the lockout. Returns the user on success.
    pub async fn verify(&self, tenant: &str, username: &str, password: &str) -> Result<User, LoginError> {
        let now = self.clock.now_ms();
        if let Some(until) = self.rows.locked_until(tenant, username).await?.filter(|u| *u > now) {
            return Err(LoginError::Locked { retry_after_ms: until - now });
        }
        let (user, stored) = self.rows.credentials(tenant, username).await?.unzip();
        let decoy = self.decoy_hash.clone();
        let attempt = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let stored = match &stored {
                Some(s) => s.as_str(),
                None => decoy.get_or_init(|| hash("decoy password for absent users").unwrap_or_default()).as_str(),
            };
            PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(attempt.as_bytes(), &h).is_ok())
        })
        .await
        .unwrap_or(false);
        match user {
            Some(user) if matches => {
                self.rows.clear_failures(tenant, username).await?;
                Ok(user)
            }
            _ => {
                self.rows.record_failure(tenant, username, now, MAX_FAILURES, LOCKOUT_MS).await?;
                Err(LoginError::InvalidCredentials)
            }
        }
    }
}
