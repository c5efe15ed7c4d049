//! Signed artifacts: publishers sign, platform admins trust keys, and a platform that
//! requires signatures refuses what is unsigned, wrongly signed or signed by a stranger,
//! for uploads and bundled plugins alike.

use keel_host::artifact::digest;
use keel_host::signing::SecretKey;
use keel_tests::{TestServer, artifact, artifacts_dir};
use serde_json::json;

/// The key the build signed the bundled plugins with.
fn bundle_key() -> String {
    let path = artifacts_dir().join("bundle-signing.pub");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!("missing {} ({e}); build the plugins with `cargo xtask build-plugins`", path.display())
        })
        .trim()
        .to_owned()
}

async fn upload(s: &TestServer, bytes: Vec<u8>, signature: Option<String>) -> keel_tests::Reply {
    let mut request = s
        .http
        .post(format!("{}/v1/admin/plugins", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/wasm");
    if let Some(signature) = signature {
        request = request.header("keel-signature", signature);
    }
    s.send(request.body(bytes)).await
}

#[tokio::test]
async fn a_platform_that_requires_signatures_installs_only_what_trusted_keys_signed() {
    let s = TestServer::start_with(|c| {
        c.signatures.required = true;
        c.signatures.trusted_keys.insert("keel-bundle".into(), bundle_key());
        c.plugins_dir = Some(artifacts_dir().join("bundled"));
    })
    .await;
    // The bundled plugins were signed at build: they installed, recorded as the bundle's.
    let helpdesk = s.get("/v1/admin/plugins/helpdesk").await.expect(200).body;
    assert_eq!(helpdesk["signer"], "keel-bundle", "{helpdesk}");

    let hostile = artifact("fixtures/hostile");
    upload(&s, hostile.clone(), None).await.expect_problem(422, "signature-required");
    let publisher = SecretKey::generate().unwrap();
    let signed = publisher.sign(&digest(&hostile)).to_string();
    // Valid, but nobody trusts the key yet.
    let refused = upload(&s, hostile.clone(), Some(signed.clone())).await.expect_problem(422, "untrusted-signer");
    assert!(refused.body["detail"].as_str().unwrap().contains(&publisher.public().to_string()), "{}", refused.body);

    // Trusting keys: names and keys are checked, and each holds one of the other.
    let trust = async |name: &str, key: String| {
        s.put(&format!("/v1/admin/trusted-keys/{name}"), json!({ "public_key": key })).await
    };
    trust("Bad Name", publisher.public().to_string()).await.expect_problem(422, "invalid-key-name");
    trust("acme-tools", "ed25519:short".into()).await.expect_problem(422, "invalid-public-key");
    trust("keel-bundle", publisher.public().to_string()).await.expect_problem(409, "key-name-taken");
    trust("again", bundle_key()).await.expect_problem(409, "key-already-trusted");
    let added = trust("acme-tools", publisher.public().to_string()).await.expect(201).body;
    assert_eq!((added["source"].as_str(), added["added_by"].is_string()), (Some("admin"), true), "{added}");
    trust("acme-tools", publisher.public().to_string()).await.expect(200);

    // A signature of other bytes, a garbled one, and one presented as another key's fail.
    let other = publisher.sign(&digest(b"other bytes")).to_string();
    upload(&s, hostile.clone(), Some(other)).await.expect_problem(422, "invalid-signature");
    upload(&s, hostile.clone(), Some("keel-signature-v1 nonsense".into()))
        .await
        .expect_problem(422, "invalid-signature");
    let impostor = SecretKey::generate().unwrap();
    let claimed = signed.replace(&publisher.public().to_string(), &impostor.public().to_string());
    upload(&s, hostile.clone(), Some(claimed)).await.expect_problem(422, "invalid-signature");
    assert_eq!(s.get("/v1/admin/plugins/hostile").await.status, 404, "nothing refused was installed");

    let installed = upload(&s, hostile, Some(signed)).await.expect(201).body;
    assert_eq!(installed["plugin"]["signer"], "acme-tools", "{installed}");
    let audit = s.get("/v1/admin/audit?action=plugin.install&limit=1").await.expect(200).body;
    assert_eq!(audit["items"][0]["detail"]["signer"], "acme-tools", "{audit}");

    let keys = s.get("/v1/admin/trusted-keys").await.expect(200).body;
    assert_eq!(keys["signatures_required"], true);
    let listed: Vec<(&str, &str)> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["source"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("keel-bundle", "config"), ("acme-tools", "admin")]);

    // Distrusting: the config's key only in the config; versions signed stay installed, and
    // the next upload by that publisher is a stranger's again.
    s.delete("/v1/admin/trusted-keys/keel-bundle").await.expect_problem(409, "key-from-config");
    s.delete("/v1/admin/trusted-keys/acme-tools").await.expect(204);
    s.delete("/v1/admin/trusted-keys/acme-tools").await.expect_problem(404, "key-not-found");
    assert_eq!(s.get("/v1/admin/plugins/hostile").await.expect(200).body["signer"], "acme-tools");
    let twin = artifact("fixtures/hostile-twin");
    let twin_signed = publisher.sign(&digest(&twin)).to_string();
    upload(&s, twin, Some(twin_signed)).await.expect_problem(422, "untrusted-signer");
}

#[tokio::test]
async fn without_the_requirement_signatures_are_still_checked_when_sent() {
    let s = TestServer::start().await;
    let keys = s.get("/v1/admin/trusted-keys").await.expect(200).body;
    assert_eq!((keys["signatures_required"].as_bool(), keys["items"].as_array().map(Vec::len)), (Some(false), Some(0)));
    let hostile = artifact("fixtures/hostile");
    let publisher = SecretKey::generate().unwrap();
    // A wrong signature is refused even here; a stranger's valid one installs unsigned.
    let wrong = publisher.sign(&digest(b"something else")).to_string();
    upload(&s, hostile.clone(), Some(wrong)).await.expect_problem(422, "invalid-signature");
    let valid = publisher.sign(&digest(&hostile)).to_string();
    let installed = upload(&s, hostile, Some(valid)).await.expect(201).body;
    assert!(installed["plugin"].get("signer").is_none(), "{installed}");
}

/// A bundled plugin without a signature stops a platform that requires them from starting,
/// naming the file; nothing is installed from it.
#[tokio::test]
async fn an_unsigned_bundled_plugin_stops_a_platform_that_requires_signatures() {
    let bundle = tempfile::tempdir().unwrap();
    std::fs::copy(artifacts_dir().join("bundled/helpdesk.wasm"), bundle.path().join("helpdesk.wasm")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = keel_tests::config(data.path());
    config.signatures.required = true;
    config.signatures.trusted_keys.insert("keel-bundle".into(), bundle_key());
    config.plugins_dir = Some(bundle.path().to_path_buf());
    let error = keel_host::Server::start(config).await.err().expect("the start is refused").to_string();
    assert!(error.contains("helpdesk.wasm") && error.contains("requires signed plugins"), "{error}");

    // Signed by the bundle's key (copied with it), it starts.
    std::fs::copy(artifacts_dir().join("bundled/helpdesk.wasm.sig"), bundle.path().join("helpdesk.wasm.sig")).unwrap();
    let mut config = keel_tests::config(data.path());
    config.signatures.required = true;
    config.signatures.trusted_keys.insert("keel-bundle".into(), bundle_key());
    config.plugins_dir = Some(bundle.path().to_path_buf());
    let server = keel_host::Server::start(config).await.expect("a signed bundle starts");
    assert_eq!(server.state.registry.get("helpdesk").unwrap().record.signer.as_deref(), Some("keel-bundle"));
    server.shutdown().await;
}
