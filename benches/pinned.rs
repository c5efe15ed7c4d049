//! (b2) Section (b) with the load generator on its own core: the `keel` binary and a native
//! axum + sqlx server each run as a process pinned to core 0, the load generator (this
//! process) to core 1. On a 2-core machine, (b) has the client compete with the server for
//! both cores, which charges every extra scheduler wake-up in the server twice; here each side
//! gets one core to itself, as a server and its clients would on separate machines.

use super::{Row, load};
use anyhow::{Context, Result, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The native baseline as a process: `keel-bench --native-server <keel.db>`.
pub async fn native_server(db: &Path) -> Result<()> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true))
        .await?;
    let app = super::native_router(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("native listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` pinned to `core`; returns it and the first stdout line containing `marker`.
fn spawn_pinned(core: u32, program: &Path, args: &[&str], marker: &str) -> Result<(Killed, String)> {
    let mut child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg(program)
        .args(args)
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {} under taskset", program.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut found = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        if line.contains(marker) {
            found = Some(line);
            break;
        }
        seen.push(line);
    }
    // Keep reading so the child never blocks on a full pipe; remember the token line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(rx.try_iter());
    let found = found.with_context(|| format!("{} never printed `{marker}`", program.display()))?;
    Ok((Killed(child), format!("{found}\n{}", seen.join("\n"))))
}

fn pin_self(core: u32) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("taskset could not pin the load generator");
    }
    Ok(())
}

pub async fn http_throughput_pinned(root: &Path, quick: bool) -> Result<Vec<Row>> {
    let bin = std::env::var_os("KEEL_BIN").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/keel"));
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, "[limits]\nrate-limit-per-second = 0\n")?;
    let data = dir.path().join("data");
    let (_keel, printed) = spawn_pinned(
        0,
        &bin,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().context("path")?,
            "--config",
            config.to_str().context("path")?,
        ],
        "Keel is listening on",
    )?;
    let base =
        printed.lines().next().and_then(|l| l.split("listening on ").nth(1)).context("address")?.trim().to_owned();
    let token = printed.lines().map(str::trim).find(|l| l.starts_with("keel_")).context("token")?.to_owned();
    super::seed_helpdesk(root, &base, &token).await?;
    let me = std::env::current_exe()?;
    let db = data.join("keel.db");
    let (_native, printed) =
        spawn_pinned(0, &me, &["--native-server", db.to_str().context("path")?], "native listening on")?;
    let native_base = printed
        .lines()
        .next()
        .and_then(|l| l.split("listening on ").nth(1))
        .context("native address")?
        .trim()
        .to_owned();
    pin_self(1)?;

    let keel_url = format!("{base}/v1/plugins/helpdesk/tickets/1");
    // The same server's cheapest answer: no token, no tenant, no plugin. What is left above
    // it is the platform's cost of a department call.
    let floor_url = format!("{base}/healthz");
    let native_url = format!("http://{native_base}/tickets/1");
    let (clients, duration, rounds) =
        if quick { (4, Duration::from_millis(500), 1) } else { (8, Duration::from_secs(3), 3) };
    let _ = load(&keel_url, Some(&token), clients, Duration::from_millis(300)).await?;
    let _ = load(&native_url, None, clients, Duration::from_millis(300)).await?;
    let (mut keel, mut native, mut floor) = (None::<super::Load>, None::<super::Load>, None::<super::Load>);
    for _ in 0..rounds {
        let n = load(&native_url, None, clients, duration).await?;
        let k = load(&keel_url, Some(&token), clients, duration).await?;
        let f = load(&floor_url, None, clients, duration).await?;
        eprintln!(
            "(b2) round: native {:.0} req/s p99 {:?}; keel {:.0} req/s p99 {:?}; keel /healthz {:.0} req/s",
            n.rps, n.p99, k.rps, k.p99, f.rps
        );
        if native.as_ref().is_none_or(|b| n.rps > b.rps) {
            native = Some(n);
        }
        if keel.as_ref().is_none_or(|b| k.rps > b.rps) {
            keel = Some(k);
        }
        if floor.as_ref().is_none_or(|b| f.rps > b.rps) {
            floor = Some(f);
        }
    }
    // Let the rest of the bench use both cores again.
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "0,1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let (keel, native, floor) = (keel.context("no rounds")?, native.context("no rounds")?, floor.context("no rounds")?);
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    // The server has one core to itself and is kept busy: a request costs 1/rps of it.
    let core_us = |rps: f64| 1e6 / rps;
    let ratio = keel.rps / native.rps;
    Ok(vec![
        Row {
            name: format!("(b2) helpdesk get ticket, keel process on core 0, {clients} clients on core 1"),
            value: format!("{:.0} req/s, p99 {}", keel.rps, ms(keel.p99)),
            target: "",
            pass: None,
        },
        Row {
            name: "(b2) native axum + sqlx process on core 0, same read, same database file".into(),
            value: format!("{:.0} req/s, p99 {}", native.rps, ms(native.p99)),
            target: "",
            pass: None,
        },
        Row {
            name: "(b2) ratio keel / native (req/s): the figure that counts".into(),
            value: format!("{ratio:.2}"),
            target: "≥ 0.7",
            pass: Some(ratio >= 0.7),
        },
        Row {
            name: "(b2) core time per request: keel `GET /healthz` (HTTP alone) / native get / keel get".into(),
            value: format!(
                "{:.0} / {:.0} / {:.0} µs ({:.0} req/s on /healthz)",
                core_us(floor.rps),
                core_us(native.rps),
                core_us(keel.rps),
                floor.rps
            ),
            target: "",
            pass: None,
        },
    ])
}
