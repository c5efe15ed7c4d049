//! Users, sign-in with lockout, and tenant-defined roles.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::json;

const T: &str = "/v1/plugins/helpdesk/tickets";
const PASSWORD: &str = "correct horse battery staple";

async fn acme() -> (TestServer, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
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
    let clash = s
        .as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("ana", "member")))
        .await
        .expect_problem(409, "user-exists");
    // The problem names the field at fault, for forms to show the message beside it.
    assert_eq!(clash.body["field"], "username");
    assert_eq!(clash.body["errors"][0]["field"], "username");
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

/// Sign-in rules read the platform clock; a frozen one makes every bound exact.
#[tokio::test]
async fn the_lockout_lifts_after_15_minutes_a_success_resets_the_count_and_sessions_last_12_hours() {
    const T0: i64 = 1_800_000_000_000;
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(T0)).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    let user = json!({ "username": "ana", "display_name": "Ana", "password": PASSWORD, "role": "tenant-admin" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);

    // Four failures, then a success: the count starts again, so four more do not lock...
    for _ in 0..4 {
        login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    }
    login(&s, "ana", PASSWORD).await.expect(200);
    for _ in 0..4 {
        login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    }
    login(&s, "ana", PASSWORD).await.expect(200);
    // ...but five in a row do, for exactly 15 minutes from the fifth.
    for _ in 0..5 {
        login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    }
    let locked = login(&s, "ana", PASSWORD).await.expect_problem(429, "too-many-attempts");
    assert_eq!(locked.headers["retry-after"], "900");
    s.advance_clock(15 * 60 * 1000 - 1).await;
    let still = login(&s, "ana", PASSWORD).await.expect_problem(429, "too-many-attempts");
    assert_eq!(still.headers["retry-after"], "1", "one millisecond left rounds up to a second");
    let lifted = s.advance_clock(1).await;
    assert_eq!(lifted, T0 + 15 * 60 * 1000);
    // Lifted: failures count from one again (four do not relock), and the password works.
    for _ in 0..4 {
        login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    }
    let now = s.advance_clock(60_000).await;
    let session = login(&s, "ana", PASSWORD).await.expect(200).body;

    // The session is valid for exactly 12 hours from sign-in.
    const TWELVE_HOURS: i64 = 12 * 3600 * 1000;
    assert_eq!(session["expires_at"].as_i64().unwrap(), now + TWELVE_HOURS);
    let token = session["token"].as_str().unwrap().to_owned();
    let me = "/v1/tenants/acme/users";
    s.as_token(Some(&token), Method::GET, me, None).await.expect(200);
    s.advance_clock((TWELVE_HOURS - 1) as u64).await;
    s.as_token(Some(&token), Method::GET, me, None).await.expect(200);
    s.advance_clock(1).await;
    s.as_token(Some(&token), Method::GET, me, None).await.expect_problem(401, "invalid-token");
}

#[tokio::test]
async fn the_helpdesk_shows_requesters_only_their_own_tickets_and_agents_all_of_them() {
    let (s, admin) = acme().await;
    let grant = async |role: &str, permissions: &[&str]| {
        s.as_token(
            Some(&admin),
            Method::PUT,
            &format!("/v1/tenants/acme/roles/{role}/permissions"),
            Some(json!({ "permissions": permissions })),
        )
        .await
        .expect(200);
    };
    grant("staff", &["helpdesk.ticket.read", "helpdesk.ticket.write"]).await;
    grant("agent", &["helpdesk.ticket.read", "helpdesk.ticket.write", "helpdesk.agent", "helpdesk.ticket.assign"])
        .await;
    let mut tokens = Vec::new();
    for (name, role) in [("sam", "staff"), ("sue", "staff"), ("ana", "agent")] {
        let user = json!({ "username": name, "display_name": name, "password": PASSWORD, "role": role });
        s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
        tokens.push(login(&s, name, PASSWORD).await.expect(200).body["token"].as_str().unwrap().to_owned());
    }
    let [sam, sue, ana] = [&tokens[0], &tokens[1], &tokens[2]];

    s.as_token(Some(sam), Method::POST, T, Some(json!({ "title": "sam's mouse" }))).await.expect(201);
    s.as_token(Some(sue), Method::POST, T, Some(json!({ "title": "sue's screen" }))).await.expect(201);
    let count = async |token: &str| {
        s.as_token(Some(token), Method::GET, T, None).await.expect(200).body["items"].as_array().unwrap().len()
    };
    assert_eq!((count(sam).await, count(sue).await, count(ana).await), (1, 1, 2));

    // Sue's ticket does not exist for Sam; the agent works on both.
    s.as_token(Some(sam), Method::GET, &format!("{T}/2"), None).await.expect_problem(404, "ticket-not-found");
    s.as_token(Some(sam), Method::POST, &format!("{T}/2/comments"), Some(json!({ "body": "hi" })))
        .await
        .expect_problem(404, "ticket-not-found");
    s.as_token(Some(ana), Method::POST, &format!("{T}/2/transition"), Some(json!({ "to": "open" }))).await.expect(200);
    // Assigning needs the assign permission; filing for someone else needs the agent one.
    s.as_token(Some(sam), Method::PATCH, &format!("{T}/1"), Some(json!({ "assignee": "sam" })))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(ana), Method::PATCH, &format!("{T}/1"), Some(json!({ "assignee": "ana" }))).await.expect(200);
    s.as_token(Some(sam), Method::POST, T, Some(json!({ "title": "for sue", "requester": "sue" })))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(ana), Method::POST, T, Some(json!({ "title": "for sam", "requester": "someone" })))
        .await
        .expect(201);
}

#[tokio::test]
async fn a_disabled_user_is_signed_out_everywhere_and_cannot_sign_in_until_enabled() {
    let (s, admin) = acme().await;
    let new_user = |username: &str, role: &str| json!({ "username": username, "display_name": username, "password": PASSWORD, "role": role });
    let bob = s
        .as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("bob", "member")))
        .await
        .expect(201);
    let bob_id = bob.body["id"].as_str().unwrap().to_owned();
    assert_eq!(bob.body["disabled_at"], serde_json::Value::Null);
    let session = login(&s, "bob", PASSWORD).await.expect(200).body["token"].as_str().unwrap().to_owned();
    let me = format!("/v1/tenants/acme/users/{bob_id}");
    // A member is no admin: it cannot disable anyone, itself included.
    s.as_token(Some(&session), Method::POST, &format!("{me}/disable"), None).await.expect_problem(403, "forbidden");
    // Warm the token cache, so the disable has to reach past it.
    s.as_token(Some(&session), Method::GET, T, None).await.expect_problem(403, "forbidden");

    let disabled = s.as_token(Some(&admin), Method::POST, &format!("{me}/disable"), None).await.expect(200).body;
    assert!(disabled["disabled_at"].as_i64().is_some());
    s.as_token(Some(&session), Method::GET, T, None).await.expect_problem(401, "invalid-token");
    // Refused exactly like a wrong password: the answer does not say the account exists.
    login(&s, "bob", PASSWORD).await.expect_problem(401, "invalid-credentials");
    let again = s.as_token(Some(&admin), Method::POST, &format!("{me}/disable"), None).await.expect(200).body;
    assert_eq!(again["disabled_at"], disabled["disabled_at"], "disabling twice keeps the first time");
    let listed = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users", None).await.expect(200).body;
    let row = listed["items"].as_array().unwrap().iter().find(|u| u["id"] == bob_id.as_str()).unwrap().clone();
    assert_eq!(row["disabled_at"], disabled["disabled_at"]);

    let enabled = s.as_token(Some(&admin), Method::POST, &format!("{me}/enable"), None).await.expect(200).body;
    assert_eq!(enabled["disabled_at"], serde_json::Value::Null);
    s.as_token(Some(&session), Method::GET, T, None).await.expect_problem(401, "invalid-token");
    let fresh = login(&s, "bob", PASSWORD).await.expect(200).body["token"].as_str().unwrap().to_owned();
    s.as_token(Some(&fresh), Method::GET, T, None).await.expect_problem(403, "forbidden");

    // A signed-in admin cannot lock itself out; another tenant's admin cannot reach the user.
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(new_user("carol", "tenant-admin")))
        .await
        .expect(201);
    let carol = login(&s, "carol", PASSWORD).await.expect(200).body;
    let carol_token = carol["token"].as_str().unwrap();
    let carol_id = carol["user"]["id"].as_str().unwrap();
    s.as_token(Some(carol_token), Method::POST, &format!("/v1/tenants/acme/users/{carol_id}/disable"), None)
        .await
        .expect_problem(409, "cannot-disable-self");
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    s.as_token(Some(&globex), Method::POST, &format!("{me}/disable"), None)
        .await
        .expect_problem(404, "tenant-not-found");
    s.as_token(Some(&globex), Method::POST, &format!("/v1/tenants/globex/users/{bob_id}/disable"), None)
        .await
        .expect_problem(404, "user-not-found");
    s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users/usr_0000000000000000", None)
        .await
        .expect_problem(404, "user-not-found");

    let audit = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/audit", None).await.expect(200).body;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"user.disable") && actions.contains(&"user.enable"), "{actions:?}");
}

#[tokio::test]
async fn a_password_reset_ends_sessions_lifts_the_lockout_and_only_a_platform_admin_resets_one() {
    let (s, admin) = acme().await;
    let ana = json!({ "username": "ana", "display_name": "Ana", "password": PASSWORD, "role": "member" });
    let ana_id =
        s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(ana)).await.expect(201).body["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let session = login(&s, "ana", PASSWORD).await.expect(200).body["token"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        login(&s, "ana", "not the password at all").await.expect_problem(401, "invalid-credentials");
    }
    login(&s, "ana", PASSWORD).await.expect_problem(429, "too-many-attempts");

    let reset = format!("/v1/tenants/acme/users/{ana_id}/password");
    let weak = s.as_token(Some(&admin), Method::PUT, &reset, Some(json!({ "password": "short" }))).await;
    let weak = weak.expect_problem(422, "invalid-field");
    assert_eq!(weak.body["field"], "password");
    s.as_token(Some(&admin), Method::PUT, &reset, Some(json!({ "password": PASSWORD, "extra": 1 })))
        .await
        .expect_problem(422, "invalid-request");
    // Nothing changed by the refused attempts: still locked, session still valid.
    s.as_token(Some(&session), Method::GET, T, None).await.expect_problem(403, "forbidden");

    const NEW: &str = "a brand new passphrase";
    let done = s.as_token(Some(&admin), Method::PUT, &reset, Some(json!({ "password": NEW }))).await.expect(200).body;
    assert_eq!(done["id"], ana_id.as_str());
    assert!(done.get("password").is_none() && done.get("password_hash").is_none());
    s.as_token(Some(&session), Method::GET, T, None).await.expect_problem(401, "invalid-token");
    login(&s, "ana", PASSWORD).await.expect_problem(401, "invalid-credentials");
    login(&s, "ana", NEW).await.expect(200);

    // In the default tenant, its tenant admins cannot take over a platform admin's account.
    let root = json!({ "username": "root", "display_name": "Root", "password": PASSWORD, "role": "platform-admin" });
    let root_id = s.post("/v1/tenants/default/users", root).await.expect(201).body["id"].as_str().unwrap().to_owned();
    let default_admin = s.token_for("default", "tenant-admin").await;
    let root_reset = format!("/v1/tenants/default/users/{root_id}/password");
    s.as_token(Some(&default_admin), Method::PUT, &root_reset, Some(json!({ "password": NEW })))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(&default_admin), Method::POST, &format!("/v1/tenants/default/users/{root_id}/disable"), None)
        .await
        .expect_problem(403, "forbidden");
    s.put(&root_reset, json!({ "password": NEW })).await.expect(200);
    let signed_in = s
        .as_token(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({ "tenant": "default", "username": "root", "password": NEW })),
        )
        .await;
    signed_in.expect(200);
}
