//! `keel plugin new` → the project's own tests → `keel plugin build` → install over HTTP →
//! call its route, without editing a file.

use keel_host::{Config, Server};
use std::path::{Path, PathBuf};
use std::process::Command;

fn keel(args: &[&str], dir: &Path, target: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("keel runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "keel {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_plugin_passes_its_tests_builds_installs_and_serves_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    // Shared between runs so only the first one compiles the plugin's dependencies.
    let target: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");

    keel(&["plugin", "new", "demo"], tmp.path(), &target);
    let project = tmp.path().join("demo");
    for file in ["Cargo.toml", "plugin.toml", "src/lib.rs"] {
        assert!(project.join(file).is_file(), "scaffold lacks {file}");
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tests = Command::new(cargo)
        .args(["test", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tests.stdout);
    assert!(
        tests.status.success(),
        "the scaffold's own tests fail:\n{text}\n{}",
        String::from_utf8_lossy(&tests.stderr)
    );
    assert!(text.contains("1 passed"), "the scaffold's test did not run:\n{text}");

    let built = keel(&["plugin", "build"], &project, &target);
    let artifact = PathBuf::from(
        built.lines().find(|l| l.trim_end().ends_with(".wasm")).expect("keel plugin build prints the artifact").trim(),
    );
    assert!(artifact.ends_with("demo-0.1.0.wasm"), "{built}");
    // Linked with heap room, so its calls do not grow memory (`devkit::wasm_build_config`).
    let room = keel_host::devkit::initial_heap_room(&std::fs::read(&artifact).unwrap()).expect("one linear memory");
    assert!(room >= keel_host::devkit::INITIAL_HEAP_BYTES, "the built plugin has {room} bytes of initial heap");
    assert!(!built.contains("bytes of heap"), "{built}");

    // A route the manifest declares but the router lacks fails the build, named, before any
    // upload (the server refuses the same artifact alike: tests/platform/hostile.rs).
    let manifest_path = project.join("plugin.toml");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let drifted = "\n[[routes]]\nmethod = \"DELETE\"\npath = \"/notes/{key}\"\npermission = \"demo.note.write\"\n";
    std::fs::write(&manifest_path, format!("{original}{drifted}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["plugin", "build"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("keel runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a route in plugin.toml only must fail the build");
    assert!(
        stderr.contains("plugin.toml declares DELETE /notes/{key} that the router does not handle"),
        "the error must name the route:\n{stderr}"
    );
    std::fs::write(&manifest_path, original).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config {
        data_dir: dir.path().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    })
    .await
    .unwrap();
    let (base, token) = (format!("http://{}", server.addr), server.bootstrap_token.clone().unwrap());
    let http = reqwest::Client::new();
    let installed = http
        .post(format!("{base}/v1/admin/plugins"))
        .bearer_auth(&token)
        .body(std::fs::read(&artifact).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 201, "{}", installed.text().await.unwrap());

    let put = http
        .put(format!("{base}/v1/plugins/demo/notes/first"))
        .bearer_auth(&token)
        .body(r#"{"text":"  hello  "}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got: serde_json::Value = http
        .get(format!("{base}/v1/plugins/demo/notes/first"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, serde_json::json!({ "key": "first", "text": "hello", "version": 1 }));
    let bad = http
        .put(format!("{base}/v1/plugins/demo/notes/x"))
        .bearer_auth(&token)
        .body(r#"{"text":" "}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    server.shutdown().await;
}

#[test]
fn scaffolding_refuses_bad_names_and_existing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    assert!(keel_host::devkit::scaffold(tmp.path(), "Bad Name", &sdk).is_err());
    keel_host::devkit::scaffold(tmp.path(), "twice", &sdk).unwrap();
    assert!(matches!(
        keel_host::devkit::scaffold(tmp.path(), "twice", &sdk),
        Err(keel_host::devkit::ScaffoldError::Exists(_))
    ));
    assert!(matches!(
        keel_host::devkit::scaffold(tmp.path(), "ok", Path::new("/nonexistent")),
        Err(keel_host::devkit::ScaffoldError::NoSdk(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_fails_the_build_naming_the_export_and_the_server_refuses_it_alike() {
    let target: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/fixtures/off-world");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["plugin", "build"])
        .current_dir(&fixture)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("keel runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a mismatched export must fail the build");
    let reason =
        stderr.lines().find(|l| l.contains("wrong signature")).unwrap_or_else(|| panic!("no reason given:\n{stderr}"));
    assert!(reason.contains("keel:platform/handler.handle"), "the error must name the export: {reason}");

    // The server gives the same reason for the same component.
    let component = std::fs::read(target.join("wasm32-wasip2/release/keel_plugin_off_world.wasm")).unwrap();
    let manifest = std::fs::read_to_string(fixture.join("plugin.toml")).unwrap();
    let artifact = keel_host::artifact::embed_manifest(&component, &manifest).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Config {
        data_dir: dir.path().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    })
    .await
    .unwrap();
    let reply = reqwest::Client::new()
        .post(format!("http://{}/v1/admin/plugins", server.addr))
        .bearer_auth(server.bootstrap_token.clone().unwrap())
        .body(artifact)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let problem: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(problem["code"], "world-mismatch");
    let detail = problem["detail"].as_str().unwrap();
    let signature = reason.split("has the wrong signature").next().unwrap();
    let export = signature.rsplit("export ").next().unwrap();
    assert!(detail.contains(export.trim()), "server: {detail}\nbuild: {reason}");
    server.shutdown().await;
}
