//! `keel dev`: a scaffolded plugin is served, its source is edited while `keel dev` runs, and
//! the new behaviour is served without a restart, with the data kept, while a request that
//! was already running finishes on the old build.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_dev_rebuilds_and_serves_an_edited_plugin_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // Shared with the scaffold test, so only one of them compiles the plugin's dependencies.
    let target: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let created = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["plugin", "new", "demo"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let project = tmp.path().join("demo");

    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["dev", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&project)
        .env("CARGO_TARGET_DIR", &target)
        .env("KEEL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |prefix: &str, within: Duration| -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!("keel dev never printed `{prefix}`"),
            }
        }
    };
    let base =
        wait_for("keel dev: host on ", Duration::from_secs(30)).trim_start_matches("keel dev: host on ").to_owned();
    let token = wait_for("keel dev: admin token ", Duration::from_secs(5))
        .trim_start_matches("keel dev: admin token ")
        .to_owned();
    let serving = wait_for("keel dev: serving", Duration::from_secs(600));
    assert!(serving.contains("demo 0.1.0-dev.1"), "{serving}");

    let http = reqwest::Client::new();
    let note = format!("{base}/v1/plugins/demo/notes/first");
    let put = http.put(&note).bearer_auth(&token).body(r#"{"text":"kept"}"#).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let get = || async {
        http.get(&note).bearer_auth(&token).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(get().await.get("edited"), None);

    // A request that reached the plugin before the edit (its body still on the way) must
    // finish on the build it started on, even when the body arrives after the reload.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut in_flight = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /v1/plugins/demo/notes/first HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-length: 2\r\nconnection: close\r\n\r\n"
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();

    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(r#""version": note.version })"#, r#""version": note.version, "edited": true })"#);
    assert_ne!(source, edited, "test setup: the scaffold's get_note changed shape");
    let saved = Instant::now();
    std::fs::write(&lib, edited).unwrap();

    let reloaded = wait_for("keel dev: reloaded", Duration::from_secs(300));
    assert!(reloaded.contains("demo 0.1.0-dev.2"), "{reloaded}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = get().await;
        if body["edited"] == true {
            break body;
        }
        assert!(Instant::now() < deadline, "the edit was never served: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("keel dev: edit to served in {} ms ({reloaded})", saved.elapsed().as_millis());
    assert_eq!(body["text"], "kept", "the data outlives the reload");
    in_flight.write_all(b"{}").await.unwrap();
    let mut raw = String::new();
    in_flight.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let old_build: serde_json::Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap().trim()).unwrap();
    assert_eq!((old_build["text"].as_str(), old_build.get("edited")), (Some("kept"), None), "{raw}");

    // A broken edit keeps the last good build serving.
    std::fs::write(&lib, "this is not rust").unwrap();
    let failed = wait_for("keel dev: build 3 failed", Duration::from_secs(300));
    assert!(failed.contains("still serving the previous one"), "{failed}");
    assert_eq!(get().await["edited"], true);
    child.kill().unwrap();
    child.wait().unwrap();
}
