//! (i) Departments at a business's scale: HR imports 10,000 employees from a spreadsheet (a
//! head, 100 team leads, everyone else under a lead) over HTTP, against the same documents
//! committed natively through the store in one transaction; then the org chart as of a date
//! over all of them; then a month's pay run for all of them (payroll asking HR for a page of
//! 500 people's working time at a time), from start to calculated, and the same run for
//! 1,000 employees to show how it grows.

use super::{Row, artifact};
use anyhow::{Context, Result, bail};
use keel_host::backend::sqlite::SqliteDocumentStore;
use keel_host::storage::{Condition, DocumentStore, Scope, Write, WriteAudit, WriteOp};
use keel_host::{Config, Server};
use std::path::Path;
use std::time::{Duration, Instant};

const PEOPLE: usize = 10_000;
const LEADS: usize = 100;

fn staff_csv(people: usize) -> Vec<u8> {
    let mut out = String::from("legal_name,email,title,department,manager_email,hire_date\n");
    out.push_str("Head Person,head@example.com,Head,eng,,2018-01-01\n");
    for lead in 0..LEADS {
        out.push_str(&format!("Lead {lead},lead{lead}@example.com,Team lead,eng,head@example.com,2019-01-01\n"));
    }
    for i in 0..people - LEADS - 1 {
        out.push_str(&format!(
            "Person {i},person{i}@example.com,Engineer,eng,lead{}@example.com,2020-0{}-01\n",
            i % LEADS,
            1 + i % 9
        ));
    }
    out.into_bytes()
}

/// A server with HR on and `people` employees imported; returns it with the import's time.
async fn staffed(root: &Path, dir: &Path, people: usize) -> Result<(Server, String, String, Duration)> {
    let mut config = Config { data_dir: dir.join("keel"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    config.limits.rate_limit_per_second = 0;
    let server = Server::start(config).await?;
    let token = server.bootstrap_token.clone().context("token")?;
    let (record, _) = server.state.registry.install(artifact(root, "bundled/hr")?, None).await?;
    server.state.tenancy.set_enabled("default", &record.id, true).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let department = http
        .put(format!("{base}/v1/plugins/hr/departments/eng"))
        .bearer_auth(&token)
        .body(r#"{"name":"Engineering"}"#)
        .send()
        .await?;
    if !department.status().is_success() {
        bail!("creating the department answered {}", department.status());
    }
    let started = Instant::now();
    let reply = http
        .post(format!("{base}/v1/imports/hr/employees"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(staff_csv(people))
        .send()
        .await?;
    let import = started.elapsed();
    let status = reply.status();
    let report: serde_json::Value = reply.json().await?;
    if !status.is_success() || report["rows"] != people {
        bail!("the import answered {status}: {report}");
    }
    Ok((server, token, base, import))
}

pub async fn departments(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let http = reqwest::Client::new();
    // How the pay run grows: the same run over a tenth of the staff, on a server of its own.
    let small_dir = tempfile::tempdir()?;
    let (small, small_token, small_base, _) = staffed(root, small_dir.path(), PEOPLE / 10).await?;
    let (small_run, _) = pay_run(root, &small, &http, &small_base, &small_token, PEOPLE / 10).await?;
    small.shutdown().await;

    let dir = tempfile::tempdir()?;
    let (server, token, base, import) = staffed(root, dir.path(), PEOPLE).await?;

    // Native: the same number of documents (employee + history entry each), one transaction.
    let pool = keel_host::backend::sqlite::open_pool(&dir.path().join("native.db")).await?;
    let store = SqliteDocumentStore::new(pool);
    let audit = WriteAudit { actor: "bench".into(), actor_name: "bench".into(), request_id: "bench".into() };
    let scope = Scope { tenant: "default".into(), plugin: "hr".into() };
    let body = r#"{"number":1,"legal_name":"Person","email":"p@example.com","title":"Engineer"}"#;
    let writes: Vec<Write> = (0..PEOPLE * 2)
        .map(|i| Write {
            collection: if i % 2 == 0 { "employees".into() } else { "history".into() },
            key: format!("{i:010}"),
            condition: Condition::Absent,
            version: 1,
            op: WriteOp::Put { body: body.into(), index: Vec::new(), search: None },
        })
        .collect();
    let started = Instant::now();
    store.commit(&scope, &writes, 1, &audit).await?;
    let native = started.elapsed();

    let runs = if quick { 2 } else { 5 };
    let mut charts = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let reply =
            http.get(format!("{base}/v1/plugins/hr/org-chart?as_of=2021-01-01")).bearer_auth(&token).send().await?;
        let took = started.elapsed();
        let chart: serde_json::Value = reply.json().await?;
        if chart["employees"] != PEOPLE {
            bail!("the org chart counted {} people", chart["employees"]);
        }
        charts.push(took);
    }
    charts.sort();
    let chart = charts[charts.len() / 2];
    let (pay_run, setup) = pay_run(root, &server, &http, &base, &token, PEOPLE).await?;
    let rate = |d: Duration| PEOPLE as f64 / d.as_secs_f64();
    eprintln!(
        "(i) HR import {PEOPLE}: {:.0} rows/s ({import:?}); native {native:?}; org chart median {chart:?}",
        rate(import)
    );
    server.shutdown().await;
    Ok(vec![
        Row {
            name: format!("(i) HR import of {PEOPLE} employees from CSV over HTTP (managers by email, all checked)"),
            value: format!(
                "{:.0} rows/s ({:.2} s); native commit of the same {} documents {:.2} s ({:.1}×)",
                rate(import),
                import.as_secs_f64(),
                PEOPLE * 2,
                native.as_secs_f64(),
                import.as_secs_f64() / native.as_secs_f64()
            ),
            target: "",
            pass: None,
        },
        Row {
            name: format!("(i) HR org chart as of a date over {PEOPLE} employees, median of {runs}"),
            value: format!("{:.0} ms", chart.as_secs_f64() * 1000.0),
            target: "",
            pass: None,
        },
        Row {
            name: format!(
                "(i) payroll: a month's pay run for {PEOPLE} employees (5 components each, HR's working time in pages of 500)"
            ),
            value: format!(
                "{:.2} s start to calculated ({:.0} payslips/s); {} employees: {:.2} s ({:.0} payslips/s); recording {PEOPLE} compensations took {:.1} s",
                pay_run.as_secs_f64(),
                PEOPLE as f64 / pay_run.as_secs_f64(),
                PEOPLE / 10,
                small_run.as_secs_f64(),
                (PEOPLE / 10) as f64 / small_run.as_secs_f64(),
                setup.as_secs_f64()
            ),
            target: "≤ 2 s",
            pass: None,
        },
    ])
}

/// Payroll over the imported staff: five components, a tax table, a salary for everyone
/// (recorded by 8 clients at once), then one run of January 2021, timed from the request
/// to the run's `calculated` state.
async fn pay_run(
    root: &Path,
    server: &Server,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    people: usize,
) -> Result<(Duration, Duration)> {
    let (record, _) = server.state.registry.install(artifact(root, "bundled/payroll")?, None).await?;
    server.state.tenancy.set_enabled("default", &record.id, true).await?;
    let (client, bearer) = (http.clone(), token.to_owned());
    let put = move |path: String, body: serde_json::Value| {
        let (http, token) = (client.clone(), bearer.clone());
        async move {
            let reply = http.put(path).bearer_auth(token).json(&body).send().await?;
            if !reply.status().is_success() {
                bail!("{} answered {}", reply.url().clone(), reply.text().await?);
            }
            anyhow::Ok(())
        }
    };
    for (code, component) in [
        (
            "pension",
            serde_json::json!({ "name": "Pension", "kind": "deduction", "pre_tax": true, "formula": "base * 0.05" }),
        ),
        (
            "employer_pension",
            serde_json::json!({ "name": "Employer pension", "kind": "employer", "formula": "base * 0.03" }),
        ),
        (
            "meal",
            serde_json::json!({ "name": "Meal", "kind": "earning", "amount": "100", "prorated": true, "unpaid_leave": true }),
        ),
        ("transport", serde_json::json!({ "name": "Transport", "kind": "earning", "amount": "45.50" })),
        ("union", serde_json::json!({ "name": "Union dues", "kind": "deduction", "formula": "min(gross * 0.01, 25)" })),
    ] {
        put(format!("{base}/v1/plugins/payroll/components/{code}"), component).await?;
    }
    put(
        format!("{base}/v1/plugins/payroll/tax"),
        serde_json::json!({ "allowance": "12000", "brackets": [{ "up_to": "50000", "rate": "0.2" }, { "up_to": null, "rate": "0.4" }] }),
    )
    .await?;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (next, put, base) = (next.clone(), put.clone(), base.to_owned());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n > people {
                    return anyhow::Ok(());
                }
                let salary = 30_000 + (n % 50) * 1_000;
                put(
                    format!("{base}/v1/plugins/payroll/employees/{n}/compensation"),
                    serde_json::json!({ "effective": "2020-01-01", "pay": { "salary": salary.to_string() }, "currency": "EUR",
                        "components": [{ "code": "pension" }, { "code": "employer_pension" }, { "code": "meal" },
                                       { "code": "transport" }, { "code": "union" }] }),
                )
                .await?;
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    let setup = started.elapsed();

    let started = Instant::now();
    let reply = http
        .post(format!("{base}/v1/plugins/payroll/runs"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "period": "2021-01" }))
        .send()
        .await?;
    let run: serde_json::Value = reply.json().await?;
    let path = format!("{base}/v1/plugins/payroll/runs/{}", run["id"]);
    loop {
        let now: serde_json::Value = http.get(&path).bearer_auth(token).send().await?.json().await?;
        if now["state"] == "calculated" {
            if now["calculated"] != people {
                bail!("the run calculated {} of {people}: {now}", now["calculated"]);
            }
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the run did not finish in 15 minutes: {now}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // Where the time went: the chunks themselves (claim to commit) against the whole.
    let (chunks, busy) = super::background_runs(http, base, "payroll").await?;
    eprintln!(
        "(i) pay run {people}: {took:?} (compensation setup {setup:?}); {chunks} chunks, {:.0} ms in them ({:.1} ms each)",
        busy * 1000.0,
        busy * 1000.0 / chunks
    );
    Ok((took, setup))
}
