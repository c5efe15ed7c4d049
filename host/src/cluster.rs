//! Several hosts on one database: how each learns of the changes another made to what hosts
//! keep in memory (which plugins run, which tenants enabled them, what roles grant) or
//! cache (verified tokens, settings).
//!
//! A backend that several hosts can share keeps a generation per [`Topic`], moved in the
//! same transaction as the change it announces, and wakes the other hosts (PostgreSQL:
//! `NOTIFY`). Each host's [`Watcher`] compares the generations with those it last saw, when
//! woken and at least every `poll` interval (the fallback when a wake-up is lost), and
//! reloads what moved. Every `resync` interval it reloads everything anyway, so a host whose
//! reads failed for a while converges without waiting for the next change.
//!
//! The bound: a change committed through one host is in force on every other within `poll`
//! (one second by default), usually within milliseconds; the caches of tokens and settings
//! expire on their own within five seconds whatever happens to the feed.

use crate::backend::BackendError;
use crate::identity::TokenStore;
use crate::plugins::PluginRegistry;
use crate::settings::SettingsStore;
use crate::tenancy::TenantStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a change is about: each names what a host reloads when it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Which tenants enable which plugins, and what their roles grant.
    Tenancy,
    /// Installed plugins: versions, artifacts, the switch.
    Plugins,
    /// Token revocations and tenant suspensions.
    Tokens,
    /// Plugin settings.
    Settings,
}

impl Topic {
    /// In the order a follower reloads them: plugins before tenancy, so a version another
    /// host moved a tenant to is loaded here before this host routes the tenant to it.
    pub const ALL: [Topic; 4] = [Topic::Plugins, Topic::Tenancy, Topic::Tokens, Topic::Settings];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Tenancy => "tenancy",
            Topic::Plugins => "plugins",
            Topic::Tokens => "tokens",
            Topic::Settings => "settings",
        }
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The announcements of a database several hosts share. A backend for one host (SQLite)
/// has none.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Each topic's generation; a topic never announced is absent.
    async fn generations(&self) -> Result<BTreeMap<Topic, i64>, BackendError>;
    /// Returns once a change may have been announced, or after `timeout`.
    async fn wait(&self, timeout: Duration);
}

/// What a host holds that other hosts' changes can make stale.
#[derive(Clone)]
pub struct Followers {
    pub tenancy: Arc<TenantStore>,
    pub registry: Arc<PluginRegistry>,
    pub tokens: TokenStore,
    pub settings: SettingsStore,
}

/// Follows a [`ChangeFeed`] for one host.
pub struct Watcher {
    pub feed: Arc<dyn ChangeFeed>,
    pub followers: Followers,
    /// Longest time between two looks at the generations.
    pub poll: Duration,
    /// Everything is reloaded at least this often.
    pub resync: Duration,
}

impl Watcher {
    pub fn spawn(self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Nothing seen yet: the first look reloads everything, so a change another host
            // made while this one was starting (after it loaded) is not missed.
            let mut seen: BTreeMap<Topic, i64> = BTreeMap::new();
            let mut synced: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = self.feed.wait(self.poll) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                let now = match self.feed.generations().await {
                    Ok(now) => now,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the change feed");
                        continue;
                    }
                };
                let everything = synced.is_none_or(|at| at.elapsed() >= self.resync);
                let mut all_reloaded = true;
                for topic in Topic::ALL {
                    let moved = now.get(&topic) != seen.get(&topic);
                    if (everything || moved) && self.reload(topic).await.is_err() {
                        // Not marked seen: the next look tries again.
                        all_reloaded = false;
                        continue;
                    }
                    if let Some(generation) = now.get(&topic) {
                        seen.insert(topic, *generation);
                    }
                }
                if everything && all_reloaded {
                    synced = Some(Instant::now());
                }
            }
        })
    }

    /// Reloads what `topic` covers.
    pub async fn reload(&self, topic: Topic) -> Result<(), ()> {
        let f = &self.followers;
        let outcome = match topic {
            Topic::Tenancy => f.tenancy.reload().await.map_err(|e| e.to_string()),
            Topic::Plugins => f.registry.sync().await.map(|_| ()).map_err(|e| e.to_string()),
            Topic::Tokens => {
                f.tokens.forget_all();
                Ok(())
            }
            Topic::Settings => {
                f.settings.forget_all();
                Ok(())
            }
        };
        outcome.map_err(|error| tracing::warn!(topic = topic.as_str(), %error, "cannot reload after a change"))
    }
}
