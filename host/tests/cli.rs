//! The `keel plugin ...` commands against a running server.

use keel_host::{Config, Server};
use std::path::Path;
use std::process::Command;

fn keel(server: &str, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["plugin"])
        .args(args)
        .env("KEEL_SERVER", server)
        .env("KEEL_TOKEN", token)
        .output()
        .expect("keel runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_installs_lists_disables_enables_and_uninstalls() {
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/bundled/helpdesk.wasm");
    assert!(artifact.exists(), "missing {}; run `cargo xtask build-plugins`", artifact.display());
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let token = server.bootstrap_token.clone().unwrap();
    let artifact = artifact.to_str().unwrap().to_owned();

    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || keel(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (ok, out) = run(vec!["install".into(), artifact.clone()]).await.unwrap();
    assert!(ok && out.starts_with("installed helpdesk 0.1.0"), "{out}");
    let (ok, out) = run(vec!["list".into()]).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("helpdesk") && l.contains("0.1.0") && l.contains("true")), "{out}");
    let (ok, _) = run(vec!["disable".into(), "helpdesk".into()]).await.unwrap();
    assert!(ok);
    assert_eq!(server.state.registry.get("helpdesk").map(|p| p.record.enabled), Some(false));
    let (ok, _) = run(vec!["enable".into(), "helpdesk".into()]).await.unwrap();
    assert!(ok);
    let (ok, out) = run(vec!["show".into(), "helpdesk".into()]).await.unwrap();
    assert!(ok && out.contains("\"digest\""), "{out}");
    let (ok, _) = run(vec!["uninstall".into(), "helpdesk".into(), "--purge".into()]).await.unwrap();
    assert!(ok);
    assert!(server.state.registry.get("helpdesk").is_none());

    // Errors carry the server's problem code, and a non-zero exit.
    let (ok, out) = run(vec!["enable".into(), "helpdesk".into()]).await.unwrap();
    assert!(!ok && out.contains("plugin-not-found"), "{out}");
    let (ok, out) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || keel(&url, "keel_0000000000_wrong", &["list"])
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("invalid-token"), "{out}");

    // Tenants, tokens and users.
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || cli(&url, &token, &["tenant", "create", "acme", "--name", "Acme Ltd"], None)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("created tenant acme"), "{out}");
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || cli(&url, &token, &["tenant", "list"], None)
    })
    .await
    .unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("acme") && l.contains("active")), "{out}");
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || {
            cli(&url, &token, &["token", "create", "--tenant", "acme", "--name", "ops", "--role", "tenant-admin"], None)
        }
    })
    .await
    .unwrap();
    assert!(ok && out.starts_with("keel_"), "{out}");
    let acme_token = out.split_whitespace().next().unwrap().to_owned();
    let token_id = out.split("id ").nth(1).unwrap().trim_end_matches([')', '\n']).split(')').next().unwrap().to_owned();
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, acme_token) = (url.clone(), acme_token.clone());
        move || {
            cli(
                &url,
                &acme_token,
                &[
                    "user",
                    "create",
                    "--tenant",
                    "acme",
                    "--username",
                    "ana",
                    "--display-name",
                    "Ana",
                    "--role",
                    "member",
                ],
                Some("a long enough password\n"),
            )
        }
    })
    .await
    .unwrap();
    assert!(ok && out.contains("created user ana"), "{out}");
    assert_eq!(server.state.users.list("acme").await.unwrap().len(), 1);
    let (ok, out) = tokio::task::spawn_blocking({
        let (url, token) = (url.clone(), token.clone());
        move || cli(&url, &token, &["token", "revoke", "--tenant", "acme", &token_id], None)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, out) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || cli(&url, &acme_token, &["tenant", "list"], None)
    })
    .await
    .unwrap();
    assert!(!ok && out.contains("invalid-token"), "a revoked token must stop working: {out}");
    server.shutdown().await;
}

fn cli(server: &str, token: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("KEEL_SERVER", server)
        .env("KEEL_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keel runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("keel finishes");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
