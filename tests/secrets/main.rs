//! Tokens and passwords never appear in clear in the database or in the logs; secret plugin
//! settings (which the plugin must read, so they are stored) never appear in the logs.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_contain(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

// The only test in this binary, so the global subscriber sees every log line of the server.
#[tokio::test]
async fn tokens_are_not_stored_or_logged_in_clear() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this process");

    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/hostile"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    let member = s.token_for("acme", "member").await;
    let password = "a very secret passphrase 42";
    let user = json!({ "username": "ana", "display_name": "Ana", "password": password, "role": "member" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
    let session = s
        .as_token(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({ "tenant": "acme", "username": "ana", "password": password })),
        )
        .await
        .expect(200);
    let signed_in = session.body["token"].as_str().unwrap().to_owned();
    s.as_token(Some(&signed_in), Method::GET, "/v1/tenants/acme/users", None).await.expect(403);
    s.as_token(Some(&admin), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "secret-free" })))
        .await
        .expect(201);
    s.as_token(Some(&member), Method::GET, "/v1/plugins/helpdesk/tickets", None).await.expect_problem(403, "forbidden");
    // A secret setting, set, read by its plugin, listed and audited.
    let api_key = "sk-live-do-not-log-me-7731";
    s.patch("/v1/tenants/default/plugins/hostile/settings", json!({ "values": { "api-key": api_key } }))
        .await
        .expect(200);
    let guess =
        s.http.get(format!("{}/v1/plugins/hostile/settings", s.base)).bearer_auth(&s.token).header("x-guess", api_key);
    let read = s.send(guess).await.expect(200);
    assert_eq!(read.body["api_key_matches"], true);
    // A wrong secret with a real prefix is logged as a failure, without the attempt.
    let forged = format!("{}x", &member[..member.len() - 1]);
    s.as_token(Some(&forged), Method::GET, "/v1/plugins/helpdesk/tickets", None).await.expect(401);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("plugin call"), "the test must actually capture the server's logs:\n{logs}");
    assert!(!logs.contains(password), "a password appears in the logs");
    assert!(files_contain(s.dir.path(), password).is_empty(), "a password is stored in clear");
    assert!(!logs.contains(api_key), "a secret setting appears in the logs");
    for token in [&s.token, &admin, &member, &forged, &signed_in] {
        // `keel_<prefix>_<secret>`; the secret is base64url and may itself contain '_'.
        let secret = token.splitn(3, '_').nth(2).unwrap();
        assert!(secret.len() >= 40, "test setup: not a whole secret");
        if let Some(at) = logs.find(secret) {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!("a token secret appears in the logs: {}", &logs[line_start..line_end].replace(secret, "<SECRET>"));
        }
        let hits = files_contain(s.dir.path(), secret);
        assert!(hits.is_empty(), "a token secret appears in {hits:?}");
    }
}
