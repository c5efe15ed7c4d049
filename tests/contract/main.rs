//! The API contract, tried as a client generated from the document would try it:
//! schemathesis (pinned, installed from PyPI into a virtual environment under `target/`)
//! runs its examples, coverage and stateful phases with every default check against a
//! server with the helpdesk, reading `/v1/openapi.json` as the platform admin sees it
//! (the platform's operations and the helpdesk's routes). Zero failures, or the test fails
//! with schemathesis's report.
//!
//! `schemathesis.toml` beside this file lists the few operations whose rules the document
//! cannot state (a cursor this API gave, a time zone that exists, ...), each with its code.

use keel_tests::TestServer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The schemathesis release the contract is checked with.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Fixed, so a run is repeatable; the cases it generates are bounded by `MAX_EXAMPLES`.
const SEED: &str = "20261128";
const MAX_EXAMPLES: &str = "100";

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
}

/// `st` from a virtual environment under the workspace's `target/`, made and filled from
/// PyPI when it is missing or holds another version. Fails loudly without python3.
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/contract-tools");
    let st = venv.join("bin/st");
    let wanted = SCHEMATHESIS.trim_start_matches("schemathesis==");
    let installed = Command::new(&st).arg("--version").output().ok().filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(wanted)) {
        return st;
    }
    eprintln!("installing {SCHEMATHESIS} into {}", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(made.is_ok_and(|s| s.success()), "python3 -m venv failed: the contract test needs Python 3 with venv");
    let pip = Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]).status();
    assert!(pip.is_ok_and(|s| s.success()), "pip install {SCHEMATHESIS} failed");
    st
}

/// One schemathesis run over the operations `filter` selects; panics with its report on
/// any failure, else returns its summary.
async fn run(st: &Path, s: &TestServer, filter: [&str; 2]) -> String {
    let report = tempfile::tempdir().expect("report dir");
    let url = format!("{}/v1/openapi.json", s.base);
    let mut command = Command::new(st);
    command
        // Its cache and reports stay out of the source tree.
        .current_dir(report.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", here())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(here().join("schemathesis.toml"))
        .arg("run")
        .arg(&url)
        .args(["--header", &format!("Authorization: Bearer {}", s.token)])
        .args(["--phases", "examples,coverage,stateful", "--max-examples", MAX_EXAMPLES])
        // Another seed explores other cases: `KEEL_CONTRACT_SEED=7 cargo test --test contract`.
        .args(["--seed", &std::env::var("KEEL_CONTRACT_SEED").unwrap_or_else(|_| SEED.to_owned())])
        .args(filter)
        .args(["--report", "junit", "--report-dir"])
        .arg(report.path());
    let output = tokio::task::spawn_blocking(move || command.output().expect("schemathesis runs"))
        .await
        .expect("schemathesis finishes");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "schemathesis found contract failures ({filter:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.rsplit("SUMMARY").next().unwrap_or(&stdout).to_owned();
    for phase in ["Examples", "Coverage", "Stateful"] {
        assert!(summary.contains(&format!("✅ {phase}")), "phase {phase} did not pass ({filter:?}):\n{summary}");
    }
    eprintln!("{filter:?}:{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_failure() {
    let st = schemathesis();
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    // The department's routes first, while it is installed and on: the platform's own
    // operations may switch it off or uninstall it.
    run(&st, &s, ["--include-path-regex", "^/v1/plugins/helpdesk/"]).await;
    let filed = s.get("/v1/plugins/helpdesk/tickets?limit=100").await.expect(200).body;
    assert!(
        !filed["items"].as_array().expect("a page").is_empty(),
        "the run filed tickets: its requests reached the plugin"
    );
    run(&st, &s, ["--exclude-path-regex", "^/v1/plugins/helpdesk/"]).await;
}
