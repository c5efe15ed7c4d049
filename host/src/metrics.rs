//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    plugin: String,
    /// ok, client_error, conflict, trap, timeout, memory_limit, bad_response, commit_failed
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    plugin: String,
    /// job, schedule or event
    kind: String,
    /// done, retry, dead, lease_lost
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    plugin: String,
    /// tenant_instances, plugin_instances, tenant_memory, too_large, pool, pool_memory
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    tenant: String,
    plugin: String,
}

pub struct Metrics {
    admission_refused: Family<RefusalLabels, Counter>,
    instances: Gauge,
    reserved_memory: Gauge,
    admission_waiting: Gauge,
    storage_documents: Family<StorageLabels, Gauge>,
    storage_bytes: Family<StorageLabels, Gauge>,
    quota_refusals: Family<StorageLabels, Counter>,
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_latency: Family<PluginLabels, Histogram>,
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<PluginLabels, Histogram>,
    traps: Family<PluginLabels, Counter>,
    repeats: Family<PluginLabels, Counter>,
    timeouts: Family<PluginLabels, Counter>,
    memory_limit_hits: Family<PluginLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keel");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let latency = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~26 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 19))
        });
        let traps = Family::<PluginLabels, Counter>::default();
        let repeats = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_call_repeats",
            "Plugin calls run again because their commit lost a race with another call",
            repeats.clone(),
        );
        let timeouts = Family::<PluginLabels, Counter>::default();
        let memory_limit_hits = Family::<PluginLabels, Counter>::default();
        registry.register("plugin_requests", "Plugin requests by outcome", requests.clone());
        registry.register(
            "plugin_request_duration_seconds",
            "Plugin request latency, routing to response",
            latency.clone(),
        );
        registry.register(
            "plugin_traps",
            "Plugin calls that trapped (panics, unreachable, bad memory access)",
            traps.clone(),
        );
        registry.register("plugin_timeouts", "Plugin calls stopped at their deadline", timeouts.clone());
        registry.register(
            "plugin_memory_limit_hits",
            "Plugin calls stopped at their memory cap",
            memory_limit_hits.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        let job_latency = Family::<PluginLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 19))
        });
        registry.register("background_runs", "Job, schedule and event-delivery attempts by outcome", jobs.clone());
        registry.register(
            "background_run_duration_seconds",
            "Background attempt duration, claim to commit",
            job_latency.clone(),
        );
        let admission_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "admission_refused",
            "Plugin calls not started because a tenant's, a plugin's or the platform's share was in use",
            admission_refused.clone(),
        );
        let instances = Gauge::default();
        let reserved_memory = Gauge::default();
        let admission_waiting = Gauge::default();
        registry.register("instances_in_use", "Plugin instances admitted and running now", instances.clone());
        registry.register(
            "instance_memory_reserved_bytes",
            "Memory reserved by the plugin calls running now (their caps plus host buffers)",
            reserved_memory.clone(),
        );
        registry.register("admission_waiting", "Plugin calls waiting for an instance", admission_waiting.clone());
        let storage_documents = Family::<StorageLabels, Gauge>::default();
        let storage_bytes = Family::<StorageLabels, Gauge>::default();
        let quota_refusals = Family::<StorageLabels, Counter>::default();
        registry.register("storage_documents", "Documents stored per tenant and plugin", storage_documents.clone());
        registry.register(
            "storage_bytes",
            "Bytes (keys and bodies) stored per tenant and plugin",
            storage_bytes.clone(),
        );
        registry.register(
            "quota_refusals",
            "Commits refused because they would pass a storage quota",
            quota_refusals.clone(),
        );
        Metrics {
            admission_refused,
            instances,
            reserved_memory,
            admission_waiting,
            storage_documents,
            storage_bytes,
            quota_refusals,
            registry,
            jobs,
            job_latency,
            requests,
            latency,
            traps,
            repeats,
            timeouts,
            memory_limit_hits,
        }
    }
}

impl Metrics {
    pub fn record_call(&self, plugin: &str, outcome: &str, elapsed: Duration) {
        let p = PluginLabels { plugin: plugin.to_owned() };
        self.requests.get_or_create(&OutcomeLabels { plugin: plugin.to_owned(), outcome: outcome.to_owned() }).inc();
        self.latency.get_or_create(&p).observe(elapsed.as_secs_f64());
        match outcome {
            "trap" => self.traps.get_or_create(&p).inc(),
            "timeout" => self.timeouts.get_or_create(&p).inc(),
            "memory_limit" => self.memory_limit_hits.get_or_create(&p).inc(),
            _ => 0,
        };
    }

    pub fn record_repeat(&self, plugin: &str) {
        self.repeats.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).inc();
    }

    pub fn record_background(&self, plugin: &str, kind: &str, outcome: &str, elapsed: Duration) {
        let labels = JobLabels { plugin: plugin.to_owned(), kind: kind.to_owned(), outcome: outcome.to_owned() };
        self.jobs.get_or_create(&labels).inc();
        self.job_latency.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).observe(elapsed.as_secs_f64());
    }

    pub fn record_refusal(&self, plugin: &str, reason: &str) {
        self.admission_refused
            .get_or_create(&RefusalLabels { plugin: plugin.to_owned(), reason: reason.to_owned() })
            .inc();
    }

    pub fn record_quota_refusal(&self, tenant: &str, plugin: &str) {
        self.quota_refusals
            .get_or_create(&StorageLabels { tenant: tenant.to_owned(), plugin: plugin.to_owned() })
            .inc();
    }

    /// What the admission controller holds now (set at each scrape).
    pub fn set_admission(&self, snapshot: crate::runtime::admission::AdmissionSnapshot) {
        self.instances.set(i64::from(snapshot.instances));
        self.reserved_memory.set(i64::try_from(snapshot.memory_bytes).unwrap_or(i64::MAX));
        self.admission_waiting.set(i64::try_from(snapshot.waiting).unwrap_or(i64::MAX));
    }

    /// What each tenant's plugins store (set at each scrape).
    pub fn set_storage(&self, usage: &[(String, String, crate::storage::Usage)]) {
        self.storage_documents.clear();
        self.storage_bytes.clear();
        for (tenant, plugin, u) in usage {
            let labels = StorageLabels { tenant: tenant.clone(), plugin: plugin.clone() };
            self.storage_documents.get_or_create(&labels).set(i64::try_from(u.documents).unwrap_or(i64::MAX));
            self.storage_bytes.get_or_create(&labels).set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
