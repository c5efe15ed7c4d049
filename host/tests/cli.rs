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
    let (_dir, server, url, token) = server().await;
    let artifact = artifact.to_str().unwrap().to_owned();

    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || keel(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (ok, out) = run(vec!["install".into(), artifact.clone()]).await.unwrap();
    // The version the bundled helpdesk declares.
    let manifest = include_str!("../../plugins/helpdesk/plugin.toml");
    let version = manifest.lines().find_map(|l| l.strip_prefix("version = ")).unwrap().trim_matches('"');
    assert!(ok && out.starts_with(&format!("installed helpdesk {version}")), "{out}");
    let (ok, out) = run(vec!["list".into()]).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("helpdesk") && l.contains(version) && l.contains("true")), "{out}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_sets_and_resets_a_tenants_quotas() {
    let (_dir, server, url, token) = server().await;
    let run = |token: &str, args: &[&str]| {
        let (url, token) = (url.clone(), token.to_owned());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
    };
    let (ok, out) = run(&token, &["tenant", "create", "acme", "--name", "Acme"]).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&token, &["tenant", "quota", "show", "acme"]).await.unwrap();
    assert!(ok && out.contains("all plugins") && out.contains("2000000") && out.contains("2048.0 MiB"), "{out}");
    assert!(out.contains("instances 0 of 62 in use"), "{out}");

    let set = quota_set("10", "3", "5", "2");
    let (ok, out) = run(&token, &set).await.unwrap();
    assert!(ok && out.contains("3.0 MiB"), "{out}");
    let stored = server.state.store.quotas("acme").await.unwrap();
    assert_eq!(
        (stored.tenant_documents, stored.tenant_bytes, stored.plugin_documents, stored.plugin_bytes),
        (10, 3 << 20, 5, 2 << 20)
    );
    // A plugin's quota above the tenant's is refused with the server's code.
    let bad = quota_set("1", "3", "5", "2");
    let (ok, out) = run(&token, &bad).await.unwrap();
    assert!(!ok && out.contains("invalid-field"), "{out}");
    // A tenant admin reads its quotas but cannot change them.
    let (ok, out) =
        run(&token, &["token", "create", "--tenant", "acme", "--name", "ops", "--role", "tenant-admin"]).await.unwrap();
    assert!(ok, "{out}");
    let acme = out.split_whitespace().next().unwrap().to_owned();
    let (ok, out) = run(&acme, &["tenant", "quota", "show", "acme"]).await.unwrap();
    assert!(ok && out.contains("tenant acme"), "{out}");
    let (ok, out) = run(&acme, &set).await.unwrap();
    assert!(!ok && out.contains("forbidden"), "{out}");

    let (ok, out) = run(&token, &["tenant", "quota", "reset", "acme"]).await.unwrap();
    assert!(ok && out.contains("2048.0 MiB"), "{out}");
    assert_eq!(server.state.store.quotas("acme").await.unwrap().tenant_documents, 2_000_000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_sets_and_resets_plugin_settings_with_secrets_from_stdin() {
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures/hostile.wasm");
    assert!(artifact.exists(), "missing {}; run `cargo xtask build-plugins`", artifact.display());
    let (_dir, server, url, token) = server().await;
    let run = |args: &[&str], stdin: Option<&str>| {
        let (url, token, stdin) = (url.clone(), token.clone(), stdin.map(str::to_owned));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), stdin.as_deref())
        })
    };
    let (ok, out) = run(&["plugin", "install", artifact.to_str().unwrap()], None).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["plugin", "settings", "show", "hostile"], None).await.unwrap();
    let line = |out: &str, name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(
        ok && line(&out, "retries").split_whitespace().collect::<Vec<_>>() == ["retries", "integer", "no", "3"],
        "{out}"
    );
    assert!(line(&out, "api-key").ends_with("(secret, not set)"), "{out}");

    // Values are typed by the declaration: `10` an integer, `true` a boolean, `42` a string.
    let secret = "sk-from-stdin-5150";
    let set = ["plugin", "settings", "set", "hostile", "retries=10", "loud=true", "greeting=42", "--secret", "api-key"];
    let (ok, out) = run(&set, Some(&format!("{secret}\n"))).await.unwrap();
    assert!(ok, "{out}");
    assert!(!out.contains(secret), "the secret is echoed: {out}");
    assert!(line(&out, "api-key").ends_with("(secret, set)"), "{out}");
    let manifest = server.state.registry.get("hostile").unwrap().record.manifest.clone();
    let effective = server.state.settings.effective("default", &manifest).await.unwrap();
    let read = |name: &str| effective.get(name).cloned().unwrap_or_default();
    assert_eq!(
        (read("retries"), read("loud"), read("greeting"), read("api-key")),
        ("10".into(), "true".into(), "42".into(), secret.into())
    );

    // A secret is never taken from the command line.
    let (ok, out) =
        run(&["plugin", "settings", "set", "hostile", "api-key=sk-on-the-command-line"], None).await.unwrap();
    assert!(!ok && out.contains("--secret api-key"), "{out}");
    // Bad input is refused before or by the server, naming the setting.
    let (ok, out) = run(&["plugin", "settings", "set", "hostile", "retries=many"], None).await.unwrap();
    assert!(!ok && out.contains("setting `retries` is an integer"), "{out}");
    let (ok, out) = run(&["plugin", "settings", "set", "hostile", "retries=11"], None).await.unwrap();
    assert!(!ok && out.contains("invalid-setting") && out.contains("`retries`"), "{out}");
    let (ok, out) = run(&["plugin", "settings", "set", "hostile", "volume=11"], None).await.unwrap();
    assert!(!ok && out.contains("unknown-setting"), "{out}");

    let (ok, out) = run(&["plugin", "settings", "reset", "hostile", "retries", "api-key"], None).await.unwrap();
    assert!(ok && line(&out, "retries").split_whitespace().last() == Some("3"), "{out}");
    assert!(line(&out, "api-key").ends_with("(secret, not set)"), "{out}");
    server.shutdown().await;
}

/// `keel tenant quota set acme ...` with the four quotas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_switches_a_tenants_plugins_and_purges_one() {
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/bundled/helpdesk.wasm");
    assert!(artifact.exists(), "missing {}; run `cargo xtask build-plugins`", artifact.display());
    let (_dir, server, url, token) = server().await;
    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
    };
    let args = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let (ok, out) = run(vec!["plugin".into(), "install".into(), artifact.to_str().unwrap().into()]).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(args("tenant create acme --name Acme")).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(args("tenant plugin list acme")).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("helpdesk") && l.contains(" no ")), "{out}");
    let (ok, out) = run(args("tenant plugin enable acme helpdesk")).await.unwrap();
    assert!(ok && out.contains("helpdesk is on for acme"), "{out}");
    assert!(server.state.tenancy.is_enabled("acme", "helpdesk"));
    let (ok, out) = run(args("tenant plugin list acme")).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("helpdesk") && l.contains(" yes ")), "{out}");
    // A purge needs the plugin off, and its name again.
    let (ok, out) = run(args("tenant plugin purge acme helpdesk --confirm helpdesk")).await.unwrap();
    assert!(!ok && out.contains("plugin-enabled"), "{out}");
    let (ok, out) = run(args("tenant plugin disable acme helpdesk")).await.unwrap();
    assert!(ok && out.contains("helpdesk is off for acme"), "{out}");
    assert!(!server.state.tenancy.is_enabled("acme", "helpdesk"));
    // Export to a file, import into another tenant; a failed export leaves no file.
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("acme-helpdesk.jsonl");
    let file_arg = file.to_str().unwrap().to_owned();
    let (ok, out) = run(args(&format!("tenant plugin export acme helpdesk -o {file_arg}"))).await.unwrap();
    assert!(ok && out.contains("0 documents"), "{out}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("{\"format\":\"keel-plugin-data\""), "{written}");
    assert!(
        written.trim_end().ends_with("{\"kind\":\"end\",\"documents\":0,\"settings\":0,\"sequences\":0}"),
        "{written}"
    );
    let (ok, out) = run(args("tenant create globex --name Globex")).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(args(&format!("tenant plugin import globex helpdesk {file_arg}"))).await.unwrap();
    assert!(ok && out.contains("imported into helpdesk for globex (from acme"), "{out}");
    let missing = files.path().join("nope.jsonl");
    let (ok, out) = run(args(&format!("tenant plugin export acme crm -o {}", missing.display()))).await.unwrap();
    assert!(!ok && out.contains("plugin-not-found"), "{out}");
    assert!(std::fs::read_dir(files.path()).unwrap().count() == 1, "only the first export's file");
    let (ok, out) = run(args("tenant plugin purge acme helpdesk --confirm crm")).await.unwrap();
    assert!(!ok && out.contains("confirmation-mismatch"), "{out}");
    let (ok, out) = run(args("tenant plugin purge acme helpdesk --confirm helpdesk")).await.unwrap();
    assert!(ok && out.contains("purged helpdesk for acme: 0 documents"), "{out}");
    server.shutdown().await;
}

fn quota_set<'a>(documents: &'a str, mb: &'a str, plugin_documents: &'a str, plugin_mb: &'a str) -> [&'a str; 12] {
    #[rustfmt::skip]
    let args = ["tenant", "quota", "set", "acme", "--documents", documents, "--mb", mb,
        "--plugin-documents", plugin_documents, "--plugin-mb", plugin_mb];
    args
}

/// A server on a fresh data directory (kept while the returned guard lives), its base URL
/// and its bootstrap token.
async fn server() -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let token = server.bootstrap_token.clone().unwrap();
    (dir, server, url, token)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_retries_jobs_runs_schedules_and_replays_events() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    config.jobs.poll_interval_ms = 50;
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let token = server.bootstrap_token.clone().unwrap();
    let http = reqwest::Client::new();
    for plugin in ["relay", "listener"] {
        let bytes = std::fs::read(fixtures.join(format!("{plugin}.wasm")))
            .unwrap_or_else(|e| panic!("missing fixture {plugin} ({e}); run `cargo xtask build-plugins`"));
        let installed = http
            .post(format!("{url}/v1/admin/plugins"))
            .bearer_auth(&token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(installed.status().as_u16(), 201);
    }
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{url}{path}")).bearer_auth(&token).json(&body).send();
    let job: serde_json::Value =
        post("/v1/plugins/relay/jobs", serde_json::json!({ "name": "record" })).await.unwrap().json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    post("/v1/plugins/relay/publish", serde_json::json!({})).await.unwrap();

    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, out) = run(args(&["job", "list", "--status", "done"])).await.unwrap();
        assert!(ok, "{out}");
        // (Counting jobs and deliveries only: the relay's */5 schedule may fire on the real clock.)
        let finished = out.lines().filter(|l| l.starts_with("job_") && !l.contains(" schedule ")).count();
        if finished == 3 {
            assert!(out.lines().any(|l| l.starts_with(&job_id) && l.contains("record")), "{out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job and two deliveries never finished:\n{out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An id is one path segment, however it is spelled: it cannot reach another endpoint.
    let (ok, out) = run(args(&["job", "show", "../../../admin/plugins"])).await.unwrap();
    assert!(!ok && out.contains("job-not-found"), "{out}");
    let (ok, out) = run(args(&["job", "show", ".."])).await.unwrap();
    assert!(!ok && out.contains("`..` is not an id"), "{out}");
    let (ok, out) = run(args(&["job", "show", &job_id])).await.unwrap();
    assert!(ok && out.contains("\"outcome\": \"done\""), "{out}");
    let (ok, out) = run(args(&["job", "retry", &job_id])).await.unwrap();
    assert!(!ok && out.contains("job-state-conflict"), "a done job is not retried: {out}");
    let (ok, out) = run(args(&["schedule", "list"])).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with("relay") && l.contains("*/5 * * * * Europe/Paris")), "{out}");
    let (ok, out) = run(args(&["schedule", "run", "relay", "tick"])).await.unwrap();
    assert!(ok && out.starts_with("queued job_"), "{out}");
    let (ok, out) = run(args(&["event", "list"])).await.unwrap();
    assert!(ok && out.lines().any(|l| l.contains("relay.pinged")), "{out}");
    let (ok, out) = run(args(&["event", "replay", "listener", "--from", "1", "--to", "1"])).await.unwrap();
    assert!(ok && out.contains("queued 1 deliveries to listener"), "{out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_a_task_with_a_progress_bar_and_cancels_one() {
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures/batch.wasm");
    let bytes = std::fs::read(&artifact)
        .unwrap_or_else(|e| panic!("missing batch fixture ({e}); run `cargo xtask build-plugins`"));
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { data_dir: dir.path().into(), listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    config.jobs.poll_interval_ms = 20;
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let token = server.bootstrap_token.clone().unwrap();
    let http = reqwest::Client::new();
    let installed =
        http.post(format!("{url}/v1/admin/plugins")).bearer_auth(&token).header("content-type", "application/wasm");
    assert_eq!(installed.body(bytes).send().await.unwrap().status().as_u16(), 201);
    let start = |path: &'static str, body: serde_json::Value| {
        let request = http.post(format!("{url}/v1/plugins/batch{path}")).bearer_auth(&token).json(&body);
        async move {
            let reply: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            reply["task"].as_str().expect("a task id").to_owned()
        }
    };
    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // `watch` draws the bar until the task ends, and succeeds when it finished.
    let seed = start("/seed", serde_json::json!({ "count": 3000, "chunk": 500 })).await;
    let (ok, out) = run(args(&["task", "watch", &seed, "--every", "0.05"])).await.unwrap();
    assert!(ok, "{out}");
    let last = out.rsplit('\r').next().unwrap();
    assert!(last.contains("[##############################] 100% 3,000 / 3,000 units, 6 chunks, done"), "{out:?}");
    let (ok, out) = run(args(&["task", "list"])).await.unwrap();
    assert!(ok && out.lines().any(|l| l.starts_with(&seed) && l.contains("Seed 3000 items")), "{out}");

    // A cancelled task: `watch` says so and fails; `cancel` again is refused.
    let touch = start("/touch", serde_json::json!({ "count": 3000, "chunk": 5 })).await;
    let (ok, out) = run(args(&["task", "cancel", &touch])).await.unwrap();
    assert!(ok && out.starts_with(&format!("cancelled {touch}")), "{out}");
    let (ok, out) = run(args(&["task", "watch", &touch])).await.unwrap();
    assert!(!ok && out.contains("is cancelled"), "{out}");
    let (ok, out) = run(args(&["task", "cancel", &touch])).await.unwrap();
    assert!(!ok && out.contains("job-state-conflict"), "{out}");
    let (ok, out) = run(args(&["task", "show", "task_nope"])).await.unwrap();
    assert!(!ok && out.contains("task-not-found"), "{out}");
}

/// `keel key new`, `keel plugin sign|verify`, `keel key trust|list|distrust`, and an
/// install that sends the `.sig` beside the artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_signs_verifies_and_installs_signed_artifacts() {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/bundled/helpdesk.wasm");
    assert!(built.exists(), "missing {}; run `cargo xtask build-plugins`", built.display());
    let work = tempfile::tempdir().unwrap();
    let artifact = work.path().join("helpdesk.wasm");
    std::fs::copy(&built, &artifact).unwrap();
    let (_dir, server, url, token) = server().await;
    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            cli(&url, &token, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
        })
    };
    let args = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let dir = work.path().to_str().unwrap().to_owned();
    let file = artifact.to_str().unwrap().to_owned();

    let (ok, out) = run(args(&format!("key new acme-tools --dir {dir}"))).await.unwrap();
    assert!(ok && out.starts_with("ed25519:"), "{out}");
    let public = out.lines().next().unwrap().to_owned();
    let (ok, out) = run(args(&format!("key new acme-tools --dir {dir}"))).await.unwrap();
    assert!(!ok && out.contains("must not exist"), "a key is never overwritten: {out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.path().join("acme-tools.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the secret key is its owner's only: {mode:o}");
    }

    let (ok, out) = run(args(&format!("plugin sign {file} --key {dir}/acme-tools.key"))).await.unwrap();
    assert!(ok && out.contains(&public), "{out}");
    let (ok, out) = run(args(&format!("plugin verify {file} --key {dir}/acme-tools.pub"))).await.unwrap();
    assert!(ok && out.contains("valid signature"), "{out}");
    let (ok, out) = run(args(&format!("key new other --dir {dir}"))).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(args(&format!("plugin verify {file} --key {dir}/other.pub"))).await.unwrap();
    assert!(!ok && out.contains("not ed25519:"), "{out}");
    // One changed byte, and the signature no longer holds.
    let mut tampered = std::fs::read(&artifact).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    let tampered_path = work.path().join("tampered.wasm");
    std::fs::write(&tampered_path, tampered).unwrap();
    let (ok, out) =
        run(args(&format!("plugin verify {} --signature {file}.sig", tampered_path.display()))).await.unwrap();
    assert!(!ok && out.contains("does not match"), "{out}");

    let (ok, out) = run(args(&format!("key trust acme-tools {dir}/acme-tools.pub"))).await.unwrap();
    assert!(ok && out.contains("now trusts acme-tools"), "{out}");
    let (ok, out) = run(args("key list")).await.unwrap();
    assert!(ok && out.contains("signatures required: false") && out.contains(&public), "{out}");
    // The install sends `helpdesk.wasm.sig`; the version records its signer.
    let (ok, out) = run(args(&format!("plugin install {file}"))).await.unwrap();
    assert!(ok, "{out}");
    assert_eq!(server.state.registry.get("helpdesk").unwrap().record.signer.as_deref(), Some("acme-tools"));
    let (ok, out) = run(args("key distrust acme-tools")).await.unwrap();
    assert!(ok && out.contains("no longer trusts acme-tools"), "{out}");
    let (ok, out) = run(args("key distrust acme-tools")).await.unwrap();
    assert!(!ok && out.contains("key-not-found"), "{out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_versions_moves_a_tenant_and_rolls_out_the_rest() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins");
    let raw = std::fs::read(plugins.join("raw/keel_plugin_helpdesk.wasm")).expect("run `cargo xtask build-plugins`");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/helpdesk/plugin.toml")).unwrap();
    let version_line = manifest.lines().find(|l| l.starts_with("version = ")).unwrap().to_owned();
    let files = tempfile::tempdir().unwrap();
    for version in ["1.0.0", "2.0.0"] {
        let text = manifest.replacen(&version_line, &format!("version = \"{version}\""), 1);
        let artifact = keel_host::artifact::embed_manifest(&raw, &text).unwrap();
        std::fs::write(files.path().join(format!("helpdesk-{version}.wasm")), artifact).unwrap();
    }
    let (_dir, server, url, token) = server().await;
    let run = |args: String| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || cli(&url, &token, &args.split_whitespace().collect::<Vec<_>>(), None))
    };
    let file = |version: &str| files.path().join(format!("helpdesk-{version}.wasm")).display().to_string();
    let (ok, out) = run(format!("plugin install {}", file("1.0.0"))).await.unwrap();
    assert!(ok, "{out}");
    for tenant in ["acme", "globex"] {
        let (ok, out) = run(format!("tenant create {tenant} --name {tenant}")).await.unwrap();
        assert!(ok, "{out}");
        let (ok, out) = run(format!("tenant plugin enable {tenant} helpdesk")).await.unwrap();
        assert!(ok, "{out}");
    }
    let (ok, out) = run(format!("plugin install {}", file("2.0.0"))).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run("tenant plugin list acme".into()).await.unwrap();
    assert!(
        ok && out.lines().any(|l| l.starts_with("helpdesk") && l.contains("1.0.0") && l.contains("2.0.0")),
        "{out}"
    );

    let (ok, out) = run("tenant plugin upgrade acme helpdesk".into()).await.unwrap();
    assert!(ok && out.contains("acme runs helpdesk 2.0.0 (was 1.0.0"), "{out}");
    let (ok, out) = run("tenant plugin upgrade acme helpdesk --version 3.0.0".into()).await.unwrap();
    assert!(!ok && out.contains("version-not-found"), "{out}");
    let (ok, out) = run("plugin versions helpdesk".into()).await.unwrap();
    let line = |v: &str| out.lines().find(|l| l.starts_with(v)).unwrap_or_default().to_owned();
    assert!(ok && line("1.0.0").ends_with("default, globex") && line("2.0.0").ends_with("acme"), "{out}");
    assert!(line("2.0.0").contains("yes"), "the active version is marked: {out}");

    let (ok, out) = run("plugin rollout helpdesk --tenant globex".into()).await.unwrap();
    assert!(ok && out.contains("moved globex from 1.0.0 to 2.0.0"), "{out}");
    assert_eq!(server.state.tenancy.version_of("globex", "helpdesk").as_deref(), Some("2.0.0"));
    assert_eq!(server.state.tenancy.version_of("default", "helpdesk").as_deref(), Some("1.0.0"));
    let (ok, out) = run("plugin rollout helpdesk --tenant nobody".into()).await.unwrap();
    assert!(!ok && out.contains("stopped at nobody (not-switched-on)"), "{out}");
    let (ok, out) = run("plugin rollout helpdesk".into()).await.unwrap();
    assert!(ok && out.contains("moved default from 1.0.0") && out.contains("every tenant asked for runs"), "{out}");

    // 3.0.0 asks for a permission 2.0.0 did not: the tenant admin sees it and approves it.
    let text = manifest.replacen(&version_line, "version = \"3.0.0\"", 1).replacen(
        "[permissions]\n",
        "[permissions]\n\"helpdesk.export\" = \"Export tickets\"\n",
        1,
    );
    let artifact = keel_host::artifact::embed_manifest(&raw, &text).unwrap();
    std::fs::write(files.path().join("helpdesk-3.0.0.wasm"), artifact).unwrap();
    let (ok, out) = run(format!("plugin install {}", file("3.0.0"))).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run("tenant plugin upgrade acme helpdesk --dry-run".into()).await.unwrap();
    assert!(ok && out.contains("from 2.0.0 to 3.0.0") && out.contains("permission:helpdesk.export"), "{out}");
    let (ok, out) = run("tenant plugin upgrade acme helpdesk".into()).await.unwrap();
    assert!(!ok && out.contains("approval-required"), "{out}");
    let (ok, out) =
        run("tenant plugin upgrade acme helpdesk --approve permission:helpdesk.export".into()).await.unwrap();
    assert!(ok && out.contains("acme runs helpdesk 3.0.0"), "{out}");
    // Pinned, new tenants get 2.0.0; unpinned, the newest again.
    let (ok, out) = run("plugin pin helpdesk 2.0.0".into()).await.unwrap();
    assert!(ok && out.contains("get 2.0.0 (pinned)"), "{out}");
    assert_eq!(server.state.registry.get("helpdesk").unwrap().record.version, "2.0.0");
    let (ok, out) = run("plugin unpin helpdesk".into()).await.unwrap();
    assert!(ok && out.contains("get 3.0.0, the newest"), "{out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_users_resets_a_password_and_disables_and_enables_one() {
    let (_dir, server, url, token) = server().await;
    let run = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let (url, token) = (url.clone(), token.clone());
        tokio::task::spawn_blocking(move || cli(&url, &token, args, stdin))
    };
    let (ok, out) = run(&["tenant", "create", "acme", "--name", "Acme"], None).await.unwrap();
    assert!(ok, "{out}");
    let create = &["user", "create", "--tenant", "acme", "--username", "ana", "--display-name", "Ana"];
    let (ok, out) = run(create, Some("a long enough password\n")).await.unwrap();
    assert!(ok, "{out}");
    let login = |password: &str| {
        let verify = server.state.users.clone();
        let password = password.to_owned();
        async move { verify.verify("acme", "ana", &password).await.is_ok() }
    };
    assert!(login("a long enough password").await);

    let (ok, out) = run(&["user", "reset-password", "--tenant", "acme", "ana"], Some("short\n")).await.unwrap();
    assert!(!ok && out.contains("invalid-field"), "a short password is refused: {out}");
    let (ok, out) =
        run(&["user", "reset-password", "--tenant", "acme", "ana"], Some("another long password\n")).await.unwrap();
    assert!(ok && out.contains("their sessions have ended"), "{out}");
    assert!(!login("a long enough password").await && login("another long password").await);

    let (ok, out) = run(&["user", "disable", "--tenant", "acme", "ana"], None).await.unwrap();
    assert!(ok && out.contains("disabled ana"), "{out}");
    assert!(!login("another long password").await, "a disabled user cannot sign in");
    let (ok, out) = run(&["user", "list", "--tenant", "acme"], None).await.unwrap();
    assert!(ok && out.contains("ana") && out.contains("disabled "), "{out}");
    let (ok, out) = run(&["user", "enable", "--tenant", "acme", "ana"], None).await.unwrap();
    assert!(ok && out.contains("enabled ana"), "{out}");
    assert!(login("another long password").await);
    let (ok, out) = run(&["user", "disable", "--tenant", "acme", "nobody"], None).await.unwrap();
    assert!(!ok && out.contains("no user `nobody`"), "{out}");
    server.shutdown().await;
}
