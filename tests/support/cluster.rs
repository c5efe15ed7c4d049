//! Whole `keel` processes on a PostgreSQL server of their own: for tests of several hosts
//! (one killed mid-work) and of the database going away under them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The `keel` binary: `KEEL_BIN`, else the debug build beside the plugin artifacts (`cargo
/// xtask test` builds it). Fails loudly when it is missing.
pub fn keel_binary() -> PathBuf {
    let path = std::env::var_os("KEEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/keel"));
    assert!(
        path.is_file(),
        "missing the keel binary at {} (build it with `cargo build -p keel-host --bin keel`; `cargo xtask test` does)",
        path.display()
    );
    path
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/throwaway-postgres")
}

/// A PostgreSQL server started for one test (`scripts/throwaway-postgres start --durable`),
/// so the test may crash and start it without disturbing others; a commit it acknowledged
/// survives the crash. Removed on drop.
pub struct Postgres {
    /// `postgres://keel@127.0.0.1:<port>/postgres`
    pub url: String,
    dir: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        let out = Command::new(script())
            .args(["start", "--durable"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run throwaway-postgres");
        assert!(out.status.success(), "PostgreSQL could not start for this test");
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("throwaway-postgres printed no {name}: {text}"))
                .to_owned()
        };
        Postgres { url: value("KEEL_TEST_PG_URL"), dir: value("KEEL_PG_DIR") }
    }

    /// A new database on this server; its URL.
    pub fn database(&self, name: &str) -> String {
        let (server, name) = (self.url.clone(), name.to_owned());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(keel_host::backend::postgres::create_database(&server, &name))
        })
        .join()
        .expect("database thread")
        .expect("create a database")
    }

    /// Stops the server at once (`pg_ctl -m immediate`: connections are cut, as in a crash).
    pub fn halt(&self) {
        let status = Command::new(script()).args(["halt", &self.dir]).status().expect("run throwaway-postgres");
        assert!(status.success(), "could not stop PostgreSQL");
    }

    /// Starts it again on the same port and data.
    pub fn resume(&self) {
        let status = Command::new(script()).args(["resume", &self.dir]).status().expect("run throwaway-postgres");
        assert!(status.success(), "could not start PostgreSQL again");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.dir]).status();
    }
}

/// A `keel serve` process with a data directory of its own. Killed on drop.
pub struct KeelProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// The admin token, when this process was the first on its database.
    pub bootstrap_token: Option<String>,
    data: TempDir,
}

impl KeelProcess {
    /// Starts `keel serve` with `config` (TOML, without `data-dir` and `listen`, which are
    /// set here) and waits until it listens.
    pub fn start(config: &str) -> KeelProcess {
        KeelProcess::start_logging(config, "info,sqlx=warn,wasmtime=warn,cranelift=warn")
    }

    /// [`KeelProcess::start`], logging only warnings (a line per request costs a benchmark).
    pub fn start_quiet(config: &str) -> KeelProcess {
        KeelProcess::start_logging(config, "warn")
    }

    fn start_logging(config: &str, log: &str) -> KeelProcess {
        let data = tempfile::tempdir().expect("temp dir");
        let file = data.path().join("keel.toml");
        let config = format!("data-dir = {:?}\nlisten = \"127.0.0.1:0\"\n{config}", data.path().join("state"));
        std::fs::write(&file, config).expect("write config");
        let log_file = std::fs::File::create(data.path().join("keel.log")).expect("log file");
        let mut child = Command::new(keel_binary())
            .args(["serve", "--config"])
            .arg(&file)
            .env("KEEL_LOG", log)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start keel");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let started = Instant::now();
        let mut base = None;
        let mut bootstrap_token = None;
        let mut expect_token = false;
        // Address first, then (first start only) the token two lines later.
        while let Some(Ok(line)) = lines.next() {
            if let Some(address) = line.strip_prefix("Keel is listening on ") {
                base = Some(address.trim().to_owned());
            } else if line.starts_with("Admin token") {
                expect_token = true;
            } else if expect_token {
                bootstrap_token = Some(line.trim().to_owned());
                break;
            } else if line.starts_with("Use the admin token") {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "keel took too long to start");
        }
        // Keep reading, so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let Some(base) = base else {
            let log = std::fs::read_to_string(data.path().join("keel.log")).unwrap_or_default();
            panic!("keel did not start:\n{log}");
        };
        KeelProcess { child, base, bootstrap_token, data }
    }

    /// SIGKILL: no shutdown, no cleanup; its leases are left to expire.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("keel.log")).unwrap_or_default()
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
