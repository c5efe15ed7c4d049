//! People who sign in: users of a tenant with argon2id password hashes, and the throttle that
//! locks a (tenant, username) after repeated failed sign-ins.

use crate::clock::Clock;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Serialize;
use sqlx::{Row, SqlitePool};
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
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why a sign-in failed. Unknown users and wrong passwords are the same failure.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the tenant, username or password is wrong")]
    InvalidCredentials,
    #[error("too many failed sign-ins; try again later")]
    Locked { retry_after_ms: i64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct UserStore {
    pool: SqlitePool,
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

impl UserStore {
    pub fn new(pool: SqlitePool, clock: Arc<Clock>) -> Self {
        UserStore { pool, clock, decoy_hash: Default::default() }
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
        if display_name.is_empty() || display_name.len() > 100 {
            return Err(UserError::InvalidDisplayName);
        }
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
            return Err(UserError::WeakPassword);
        }
        let password = password.to_owned();
        let hashed = tokio::task::spawn_blocking(move || hash(&password))
            .await
            .map_err(|e| UserError::Hash(e.to_string()))??;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the operating system's random source failed");
        let user = User {
            id: format!("usr_{}", hex::encode(id)),
            tenant: tenant.to_owned(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            role: role.to_owned(),
            created_at: self.clock.now_ms(),
        };
        let inserted = sqlx::query(
            "INSERT INTO users (id, tenant_id, username, display_name, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, username) DO NOTHING",
        )
        .bind(&user.id)
        .bind(tenant)
        .bind(username)
        .bind(&user.display_name)
        .bind(hashed)
        .bind(role)
        .bind(user.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(UserError::Exists(username.to_owned()));
        }
        Ok(user)
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<User>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, tenant_id, username, display_name, role, created_at FROM users WHERE tenant_id = ? ORDER BY username")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| User {
                id: r.get(0),
                tenant: r.get(1),
                username: r.get(2),
                display_name: r.get(3),
                role: r.get(4),
                created_at: r.get(5),
            })
            .collect())
    }

    /// Checks a password, applying the lockout. Returns the user on success.
    pub async fn verify(&self, tenant: &str, username: &str, password: &str) -> Result<User, LoginError> {
        let now = self.clock.now_ms();
        let locked_until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE tenant_id = ? AND username = ?")
                .bind(tenant)
                .bind(username)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        if let Some(until) = locked_until.filter(|u| *u > now) {
            return Err(LoginError::Locked { retry_after_ms: until - now });
        }
        let row = sqlx::query(
            "SELECT u.id, u.display_name, u.role, u.created_at, u.password_hash FROM users u JOIN tenants t ON t.id = u.tenant_id \
             WHERE u.tenant_id = ? AND u.username = ? AND t.status = 'active'",
        )
        .bind(tenant)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let stored = row.as_ref().map(|r| r.get::<String, _>(4));
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
        match row {
            Some(r) if matches => {
                sqlx::query("DELETE FROM login_attempts WHERE tenant_id = ? AND username = ?")
                    .bind(tenant)
                    .bind(username)
                    .execute(&self.pool)
                    .await?;
                Ok(User {
                    id: r.get(0),
                    tenant: tenant.to_owned(),
                    username: username.to_owned(),
                    display_name: r.get(1),
                    role: r.get(2),
                    created_at: r.get(3),
                })
            }
            _ => {
                sqlx::query(
                    "INSERT INTO login_attempts (tenant_id, username, failures, locked_until) VALUES (?, ?, 1, NULL) \
                     ON CONFLICT (tenant_id, username) DO UPDATE SET \
                     failures = CASE WHEN locked_until IS NOT NULL AND locked_until <= ? THEN 1 ELSE failures + 1 END, \
                     locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= ? THEN 1 ELSE failures + 1 END) >= ? THEN ? ELSE NULL END",
                )
                .bind(tenant)
                .bind(username)
                .bind(now)
                .bind(now)
                .bind(MAX_FAILURES)
                .bind(now + LOCKOUT_MS)
                .execute(&self.pool)
                .await?;
                Err(LoginError::InvalidCredentials)
            }
        }
    }
}
