//! Platform admins' health page: whether the database answers, what is installed and running,
//! and the key figures of this host's metrics (plugin calls, faults, latency, background
//! work, capacity, storage), read from the API's `/readyz` and `/metrics` like any monitor.

use super::pages::refused;
use super::session::Session;
use super::{ConsoleState, layout, message_for, respond};
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use maud::{Markup, html};
use std::collections::BTreeMap;

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/console/health", get(health))
}

/// One line of Prometheus text: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text exposition; lines it cannot read are skipped (a monitor
/// page must not fail on a format detail).
pub(super) fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches(',');
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            let (key, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            inner = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: name.to_owned(), labels, value })
}

/// The smallest bucket bound holding at least `q` of a histogram's observations (cumulative
/// `le` buckets, as Prometheus writes them), in seconds; `None` without observations.
pub(super) fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.iter().find(|(le, _)| le.is_infinite()).map(|(_, n)| *n)?;
    if total <= 0.0 {
        return None;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted.into_iter().find(|(_, n)| *n >= q * total).map(|(le, _)| le)
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".to_owned(),
        Some(s) if s.is_infinite() => "over 26 s".to_owned(),
        Some(s) if s < 0.001 => format!("≤ {:.0} µs", s * 1e6),
        Some(s) if s < 1.0 => format!("≤ {:.1} ms", s * 1e3),
        Some(s) => format!("≤ {s:.1} s"),
    }
}

/// What a plugin's calls came to on this host.
#[derive(Default)]
struct CallFigures {
    calls: f64,
    refused: f64,
    faults: f64,
    buckets: Vec<(f64, f64)>,
}

/// Outcomes that are the caller's doing; the rest of the non-`ok` ones are the plugin's or
/// the platform's.
const CALLER_OUTCOMES: [&str; 2] = ["client_error", "conflict"];

async fn health(State(state): State<ConsoleState>, session: Session) -> Response {
    // `/metrics` answers anyone who reaches it (operators keep it off the public network);
    // it names every tenant, so the console shows it to platform admins only.
    if !session.principal.is_platform_admin() {
        return message_for(
            Some(&session),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The health page is for platform admins.",
        );
    }
    let plugins = session.api(&state, Method::GET, "/v1/admin/plugins", None).await;
    if !plugins.ok() {
        return refused(&session, &plugins);
    }
    let tenants = session.api(&state, Method::GET, "/v1/admin/tenants", None).await;
    let ready = session.api(&state, Method::GET, "/readyz", None).await;
    let metrics = session.api(&state, Method::GET, "/metrics", None).await;
    let samples = parse_samples(metrics.body.as_str().unwrap_or(""));
    let plugin_items = plugins.body["items"].as_array().cloned().unwrap_or_default();
    let tenant_items = tenants.body["items"].as_array().cloned().unwrap_or_default();
    let suspended = tenant_items.iter().filter(|t| t["status"] == "suspended").count();

    let mut calls: BTreeMap<String, CallFigures> = BTreeMap::new();
    let mut background: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut refusals: BTreeMap<String, f64> = BTreeMap::new();
    let mut storage: Vec<(String, String, f64, f64)> = Vec::new();
    let mut gauge = BTreeMap::new();
    for sample in &samples {
        let plugin = sample.label("plugin").to_owned();
        match sample.name.as_str() {
            "keel_plugin_requests_total" => {
                let figures = calls.entry(plugin).or_default();
                figures.calls += sample.value;
                match sample.label("outcome") {
                    "ok" => {}
                    outcome if CALLER_OUTCOMES.contains(&outcome) => figures.refused += sample.value,
                    _ => figures.faults += sample.value,
                }
            }
            "keel_plugin_request_duration_seconds_bucket" => {
                let le = match sample.label("le") {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap_or(f64::INFINITY),
                };
                calls.entry(plugin).or_default().buckets.push((le, sample.value));
            }
            "keel_background_runs_total" => {
                *background.entry(plugin).or_default().entry(sample.label("outcome").to_owned()).or_default() +=
                    sample.value;
            }
            "keel_admission_refused_total" => {
                *refusals.entry(sample.label("reason").to_owned()).or_default() += sample.value
            }
            "keel_storage_documents" => storage.push((sample.label("tenant").to_owned(), plugin, sample.value, 0.0)),
            "keel_storage_bytes" => {
                if let Some(row) = storage.iter_mut().find(|r| r.0 == sample.label("tenant") && r.1 == plugin) {
                    row.3 = sample.value;
                }
            }
            "keel_instances_in_use" | "keel_instance_memory_reserved_bytes" | "keel_admission_waiting" => {
                *gauge.entry(sample.name.clone()).or_insert(0.0) += sample.value;
            }
            _ => {}
        }
    }
    storage.sort_by(|a, b| b.3.total_cmp(&a.3).then_with(|| a.0.cmp(&b.0)));
    let gauge_of = |name: &str| gauge.get(name).copied().unwrap_or(0.0);
    let count = |n: f64| format!("{n:.0}");

    let content = html! {
        section.card aria-labelledby="readiness" {
            h2 #readiness { "Readiness" }
            @if ready.ok() {
                p { span.on { "Ready" } " The database answers; this host serves requests." }
            } @else {
                p.error role="alert" { span.off { "Not ready" } " " (ready.detail()) }
            }
            p {
                (plugin_items.len()) " plugins installed, "
                (plugin_items.iter().filter(|p| p["enabled"] == true).count()) " on for the platform; "
                (tenant_items.len()) " tenants, " (suspended) " suspended."
            }
        }
        p.hint { "The figures below are this host's, counted since it started. With several replicas, each shows its own; a monitor scraping /metrics sees them all." }
        h2 { "Plugin calls" }
        @if calls.is_empty() {
            p { "No plugin has been called on this host yet." }
        } @else {
            table {
                caption.visually-hidden { "Plugin calls" }
                thead { tr {
                    th scope="col" { "Plugin" } th scope="col" { "Calls" }
                    th scope="col" { "Refused (caller's error)" } th scope="col" { "Faults" }
                    th scope="col" { "Median" } th scope="col" { "95th percentile" }
                } }
                tbody {
                    @for (plugin, f) in &calls {
                        tr {
                            th scope="row" data-label="Plugin" { (plugin) }
                            td data-label="Calls" { (count(f.calls)) }
                            td data-label="Refused" { (count(f.refused)) }
                            td data-label="Faults" { @if f.faults > 0.0 { strong.off { (count(f.faults)) } } @else { "0" } }
                            td data-label="Median" { (duration(quantile(&f.buckets, 0.5))) }
                            td data-label="95th percentile" { (duration(quantile(&f.buckets, 0.95))) }
                        }
                    }
                }
            }
            p.hint { "Faults are traps, timeouts, memory-cap hits, malformed answers and failed commits: each cost only its own request." }
        }
        h2 { "Background work" }
        @if background.is_empty() {
            p { "No job, schedule or event delivery has run on this host yet." }
        } @else {
            table {
                caption.visually-hidden { "Background work" }
                thead { tr { th scope="col" { "Plugin" } th scope="col" { "Done" } th scope="col" { "Retried" } th scope="col" { "Dead" } } }
                tbody {
                    @for (plugin, outcomes) in &background {
                        @let of = |o: &str| outcomes.get(o).copied().unwrap_or(0.0);
                        tr {
                            th scope="row" data-label="Plugin" { (plugin) }
                            td data-label="Done" { (count(of("done"))) }
                            td data-label="Retried" { (count(of("retry"))) }
                            td data-label="Dead" { @if of("dead") > 0.0 { strong.off { (count(of("dead"))) } } @else { "0" } }
                        }
                    }
                }
            }
        }
        h2 { "Capacity" }
        dl.record {
            dt { "Instances running now" } dd { (count(gauge_of("keel_instances_in_use"))) }
            dt { "Memory reserved by them" } dd { (mib(gauge_of("keel_instance_memory_reserved_bytes"))) }
            dt { "Calls waiting for an instance" } dd { (count(gauge_of("keel_admission_waiting"))) }
            dt { "Calls refused for capacity" } dd {
                @if refusals.is_empty() { "none" } @else {
                    @for (i, (reason, n)) in refusals.iter().enumerate() {
                        @if i > 0 { ", " } (count(*n)) " " (reason.replace('_', " "))
                    }
                }
            }
        }
        h2 { "Storage" }
        (storage_table(&storage))
    };
    respond(StatusCode::OK, layout("Health", Some(&session), None, content))
}

fn mib(bytes: f64) -> String {
    if bytes < 1024.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}

/// The 20 largest (tenant, plugin) stores.
fn storage_table(rows: &[(String, String, f64, f64)]) -> Markup {
    html! {
        @if rows.is_empty() {
            p { "Nothing is stored yet." }
        } @else {
            table {
                caption.visually-hidden { "Storage by tenant and plugin" }
                thead { tr { th scope="col" { "Tenant" } th scope="col" { "Plugin" } th scope="col" { "Documents" } th scope="col" { "Size" } } }
                tbody {
                    @for (tenant, plugin, documents, bytes) in rows.iter().take(20) {
                        tr {
                            th scope="row" data-label="Tenant" { (tenant) }
                            td data-label="Plugin" { (plugin) }
                            td data-label="Documents" { (format!("{documents:.0}")) }
                            td data-label="Size" { (mib(*bytes)) }
                        }
                    }
                }
            }
            @if rows.len() > 20 { p.hint { "The 20 largest of " (rows.len()) "." } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_parse_with_escaped_labels_and_skip_the_rest() {
        let text = "# HELP x y\n\
                    keel_plugin_requests_total{plugin=\"help\\\"desk\",outcome=\"ok\"} 3\n\
                    keel_instances_in_use 2\n\
                    garbage line\n\
                    keel_plugin_request_duration_seconds_bucket{le=\"+Inf\",plugin=\"a\"} 7 1700000000\n";
        let samples = parse_samples(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].label("plugin"), "help\"desk");
        assert_eq!(samples[0].label("outcome"), "ok");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("keel_instances_in_use", 2.0));
        assert_eq!(samples[2].label("le"), "+Inf");
        assert_eq!(samples[2].value, 7.0);
    }

    #[test]
    fn a_quantile_is_the_first_bucket_holding_that_share() {
        // 10 observations: 2 under 1 ms, 8 under 4 ms, all 10 under 16 ms.
        let buckets = [(0.004, 8.0), (0.001, 2.0), (0.016, 10.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.004));
        assert_eq!(quantile(&buckets, 0.2), Some(0.001));
        assert_eq!(quantile(&buckets, 0.95), Some(0.016));
        assert_eq!(quantile(&[(f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(duration(Some(0.004)), "≤ 4.0 ms");
        assert_eq!(duration(Some(0.0002)), "≤ 200 µs");
    }
}
