//! Users, sign-in with lockout, and tenant-defined roles.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::json;

const T: &str = "/v1/plugins/helpdesk/tickets";
const PASSWORD: &str = "correct horse battery staple";

async fn acme() -> (TestServer, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(204);
    (s, admin)
}

async fn login(s: &TestServer, username: &str, password: &str) -> keel_tests::Reply {
    s.as_token(
        None,
        Method::POST,
        "/v1/auth/login",
        Some(json!({ "tenant": "acme", "username": username, "password": password })),
    )
    .await
}

#[tokio::test]
async fn users_sign_in_and_act_as_themselves_with_their_roles_grants() {
    let (s, admin) = acme().await;
    let new_user = |username: &str, role: &str| json!({ "username": username, "display_name": format!("{username} (Acme)"), "password": PASSWORD, "role": role });
    let ana = s
        .as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("ana", "agent")))
        .await
        .expect(201)
        .body;
    assert!(ana.get("password").is_none() && ana.get("password_hash").is_none());
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("bob", "member"))).await.expect(201);
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("ana", "member")))
        .await
        .expect_problem(409, "user-exists");
    let weak = json!({ "username": "eve", "display_name": "Eve", "password": "short", "role": "member" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(weak))
        .await
        .expect_problem(422, "invalid-field");
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("root", "platform-admin")))
        .await
        .expect_problem(403, "forbidden");

    // A tenant-defined role: agents may read and write tickets.
    s.as_token(
        Some(&admin),
        Method::PUT,
        "/v1/tenants/acme/roles/agent/permissions",
        Some(json!({ "permissions": ["helpdesk.ticket.read", "helpdesk.ticket.write"] })),
    )
    .await
    .expect(200);
    s.as_token(
        Some(&admin),
        Method::PUT,
        "/v1/tenants/acme/roles/tenant-admin/permissions",
        Some(json!({ "permissions": [] })),
    )
    .await
    .expect_problem(422, "reserved-role");
    let roles = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/roles", None).await.expect(200).body;
    assert_eq!(roles["items"][0]["role"], "agent");

    let session = login(&s, "ana", PASSWORD).await.expect(200).body;
    let ana_token = session["token"].as_str().unwrap().to_owned();
    assert!(session["expires_at"].as_i64().unwrap() > 0);
    let ticket =
        s.as_token(Some(&ana_token), Method::POST, T, Some(json!({ "title": "from ana" }))).await.expect(201).body;
    assert_eq!(ticket["requester"], ana["id"], "the plugin sees the signed-in user");

    let bob = login(&s, "bob", PASSWORD).await.expect(200).body["token"].as_str().unwrap().to_owned();
    s.as_token(Some(&bob), Method::GET, T, None).await.expect_problem(403, "forbidden");
    // Bob cannot give himself the agent role's grants, or any role.
    s.as_token(
        Some(&bob),
        Method::PUT,
        "/v1/tenants/acme/roles/member/permissions",
        Some(json!({ "permissions": ["helpdesk.ticket.read"] })),
    )
    .await
    .expect_problem(403, "forbidden");
    s.as_token(Some(&bob), Method::POST, "/v1/tenants/acme/users", Some(new_user("bob2", "agent")))
        .await
        .expect_problem(403, "forbidden");

    let users = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users", None).await.expect(200).body;
    assert_eq!(users["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_look_the_same_and_repeated_failures_lock() {
    let (s, admin) = acme().await;
    let user = json!({ "username": "ana", "display_name": "Ana", "password": PASSWORD, "role": "member" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);

    let unknown = login(&s, "nobody", PASSWORD).await.expect_problem(401, "invalid-credentials");
    let wrong = login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    assert_eq!(unknown.body["detail"], wrong.body["detail"]);
    for _ in 0..4 {
        login(&s, "ana", "still not the password").await.expect_problem(401, "invalid-credentials");
    }
    // Five failures: now even the right password is refused for a while.
    let locked = login(&s, "ana", PASSWORD).await.expect_problem(429, "too-many-attempts");
    let retry: u64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((800..=900).contains(&retry), "locked for about 15 minutes, got {retry}s");
    // Unknown usernames lock the same way (one failure above, four here), so the lockout does
    // not reveal which users exist.
    for _ in 0..4 {
        login(&s, "nobody", "guess").await.expect(401);
    }
    login(&s, "nobody", "guess").await.expect_problem(429, "too-many-attempts");

    let audit = s
        .as_token(Some(&admin), Method::GET, "/v1/tenants/acme/audit?action=auth.login.failed", None)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"].as_array().unwrap().len(), 10, "five failures each for ana and nobody");
}
