//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_latency: Family<PluginLabels, Histogram>,
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<PluginLabels, Histogram>,
    traps: Family<PluginLabels, Counter>,
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
        Metrics { registry, jobs, job_latency, requests, latency, traps, timeouts, memory_limit_hits }
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

    pub fn record_background(&self, plugin: &str, kind: &str, outcome: &str, elapsed: Duration) {
        let labels = JobLabels { plugin: plugin.to_owned(), kind: kind.to_owned(), outcome: outcome.to_owned() };
        self.jobs.get_or_create(&labels).inc();
        self.job_latency.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
