//! (e) Noisy neighbours: the calm tenant's helpdesk p99 alone and during each attack of the
//! noisy tenant (the same attacks the `noisy` test suite bounds), the calm tenant's scheduled
//! check's lateness during a job flood, the process's peak memory growth; and what admission
//! control costs a call that is not contended.

use super::Row;
use anyhow::Result;
use keel_host::runtime::{Admission, AdmissionLimits, Lane};
use keel_tests::neighbours::{Attack, Neighbours, peak_rss, quantile, reset_peak_rss, rss};
use std::time::{Duration, Instant};

pub async fn neighbours(quick: bool) -> Result<Vec<Row>> {
    let probes = if quick { 100 } else { 500 };
    // First, on a quiet process: what the writer costs is measured alone.
    let mut rows = largest_commits().await?;
    // The cheapest calm request seen alone: what admission control's cost is held against.
    let mut calm_median = Duration::MAX;
    for attack in Attack::ALL {
        let n = Neighbours::start().await;
        n.prepare(attack).await;
        n.probe(100).await;
        let mut idle = n.probe(probes).await;
        let idle_p99 = quantile(&mut idle, 0.99);
        calm_median = calm_median.min(quantile(&mut idle, 0.5));
        let before = rss();
        reset_peak_rss();
        let (mut during, outcomes) = n.under(attack, n.probe(probes)).await;
        let grew = peak_rss().saturating_sub(before);
        let during_p99 = quantile(&mut during, 0.99);
        eprintln!(
            "(e) {}: calm p99 {idle_p99:?} → {during_p99:?}, +{} MiB; attacker got {:?}",
            attack.name(),
            grew >> 20,
            outcomes.codes
        );
        rows.push(Row {
            name: format!("(e) calm helpdesk p99, alone → during {}", attack.name()),
            value: format!(
                "{} → {} (×{:.1}); peak memory +{} MiB",
                ms(idle_p99),
                ms(during_p99),
                during_p99.as_secs_f64() / idle_p99.as_secs_f64(),
                grew >> 20
            ),
            target: "≤ max(10× alone, 50 ms)",
            pass: Some(during_p99 <= (idle_p99 * 10).max(Duration::from_millis(50))),
        });
        if attack == Attack::JobFlood {
            rows.push(schedule_lateness(&n).await?);
        }
        n.stop().await;
    }
    rows.push(admission_cost(calm_median).await);
    Ok(rows)
}

/// How long the largest commit a call may make holds the database's single writer: the
/// commit budget (8 MiB) as eight 1 MiB documents, and as a thousand 8 KiB documents (the
/// most writes a call may make), each with its audit rows, on a fresh database.
async fn largest_commits() -> Result<Vec<Row>> {
    use keel_host::backend::sqlite::SqliteDocumentStore;
    use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
    let dir = tempfile::tempdir()?;
    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("commits.db")).await?;
    let store = SqliteDocumentStore::new(pool);
    let audit = WriteAudit { actor: "bench".into(), actor_name: "bench".into(), request_id: "bench".into() };
    let mut rows = Vec::new();
    for (count, size) in [(8usize, (1usize << 20) - 64), (1000, 8 * 1024 - 64)] {
        let mut took = Vec::new();
        for round in 0..5 {
            let scope = Scope { tenant: format!("t{count}-{round}"), plugin: "p".into() };
            let body = format!("\"{}\"", "x".repeat(size));
            let writes: Vec<Write> = (0..count)
                .map(|i| Write {
                    collection: "c".into(),
                    key: format!("k{i:06}"),
                    condition: Condition::Absent,
                    version: 1,
                    op: WriteOp::Put { body: body.clone(), index: vec![], search: None },
                })
                .collect();
            let started = Instant::now();
            store.commit(&scope, &writes, 0, &audit).await?;
            took.push(started.elapsed());
        }
        let median = quantile(&mut took, 0.5);
        let max = quantile(&mut took, 1.0);
        rows.push(Row {
            name: format!("(e) the largest commit a call may make ({count} × {} KiB): writer held", (size + 64) >> 10),
            value: format!("median {}, max {} of 5", ms(median), ms(max)),
            target: "",
            pass: None,
        });
    }
    Ok(rows)
}

/// How late the calm tenant's every-minute check starts while the noisy tenant floods the queue.
async fn schedule_lateness(n: &Neighbours) -> Result<Row> {
    Ok(Row {
        name: "(e) calm's every-minute check during the job flood: start after due time".into(),
        value: format!("{} ms", n.schedule_lateness_during_flood().await),
        target: "≤ 5,000 ms",
        pass: None,
    })
}

/// Admission on the uncontended path: admit and release one call (the bookkeeping every call
/// now does), against the median of the calm tenant's helpdesk request alone.
async fn admission_cost(calm_median: Duration) -> Row {
    let admission = Admission::new(AdmissionLimits::for_pool(128, 4, 4 << 30));
    let n = 200_000u32;
    for _ in 0..10_000 {
        drop(admission.admit("t", "p", Lane::Request, 44 << 20).await);
    }
    let started = Instant::now();
    for _ in 0..n {
        let permit = admission.admit("t", "p", Lane::Request, 44 << 20).await;
        let lane = admission.scan_lane("t");
        drop(lane.acquire().await);
        drop(permit);
    }
    let took = started.elapsed();
    let per_call = took / n;
    let share = per_call.as_secs_f64() / calm_median.as_secs_f64();
    Row {
        name: "(e) admission control per call, uncontended (admit + scan lane + release)".into(),
        value: format!(
            "{:.0} ns: {:.2}% of a calm helpdesk request alone (median)",
            per_call.as_secs_f64() * 1e9,
            share * 100.0
        ),
        target: "≤ 5% of a request",
        pass: Some(share <= 0.05),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
