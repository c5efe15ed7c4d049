//! The web console over HTTP: sign-in and sessions, CSRF and cross-origin refusals, escaping,
//! permissions, and the admin pages changing the platform through the API.

use keel_tests::TestServer;
use keel_tests::console::Visitor;
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// A server with the helpdesk installed (off for `acme`), a tenant admin `ada` and a member
/// `bob` in `acme`.
async fn acme() -> (TestServer, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    for (username, role) in [("ada", "tenant-admin"), ("bob", "member")] {
        let user = json!({ "username": username, "display_name": format!("{username} of Acme"), "password": PASSWORD, "role": role });
        s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
    }
    (s, admin)
}

/// Form fields as `Visitor::post` takes them.
fn as_pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn helpdesk_enabled(s: &TestServer, admin: &str) -> bool {
    let plugins = s.as_token(Some(admin), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    let helpdesk = plugins["items"].as_array().unwrap().iter().find(|p| p["id"] == "helpdesk").unwrap().clone();
    helpdesk["enabled"].as_bool().unwrap()
}

#[tokio::test]
async fn signing_in_sets_a_locked_down_session_and_every_page_forbids_script_and_framing() {
    let (s, _) = acme().await;
    let mut ada = Visitor::new(&s.base);
    let form = ada.get("/console/sign-in").await;
    form.expect(200);
    let csp = form.headers["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"), "no script is allowed at all: {csp}");
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert_eq!(form.headers["x-content-type-options"], "nosniff");
    assert_eq!(form.headers["cache-control"], "no-store");
    assert!(!form.contains("<script"), "the console has no script");
    assert!(form.contains(r#"<label for="password">"#), "every control is labelled");

    // A wrong password: the form again, with the message, the username kept.
    let csrf = form.csrf();
    let wrong = ada
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("tenant", "acme"), ("username", "ada"), ("password", "not it at all")],
        )
        .await;
    wrong.expect(401);
    assert!(wrong.contains("The organisation, username or password is wrong."), "{}", wrong.body);
    assert!(wrong.contains(r#"value="ada""#));
    assert!(!wrong.contains("not it at all"), "a password is never sent back");

    let signed_in = ada.sign_in("acme", "ada", PASSWORD).await;
    let cookie = signed_in.set_cookie("keel_session").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP without a TLS proxy: a Secure cookie would never come back");
    let token = ada.cookies["keel_session"].clone();

    let home = ada.get("/console/").await;
    home.expect(200);
    assert!(home.contains("ada of Acme") && home.contains("tenant-admin"), "{}", home.body);
    assert!(!home.contains(&token), "the session token is never on a page");
    // The session is the user's own sign-in token: the API accepts it as that user.
    let me = s.as_token(Some(&token), Method::GET, "/v1/tenants/acme/users", None).await;
    me.expect(200);
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_session_cookie_is_secure() {
    let s = TestServer::start_with(|config| config.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    let user = json!({ "username": "ada", "display_name": "Ada", "password": PASSWORD, "role": "tenant-admin" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form =
        http.get(format!("{}/console/sign-in", s.base)).header("x-forwarded-proto", "https").send().await.unwrap();
    let cookie = form.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn forms_without_the_sessions_token_or_from_another_site_change_nothing() {
    let (s, admin) = acme().await;
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let page = ada.get("/console/tenants/acme/departments").await;
    page.expect(200);
    let csrf = page.csrf();
    let enable = "/console/tenants/acme/departments/helpdesk/enable";

    ada.post(enable, &[]).await.expect(403);
    ada.post(enable, &[("csrf", "forged-token")]).await.expect(403);
    // The sign-in form's token is not a session's.
    let mut other = Visitor::new(&s.base);
    other.sign_in("acme", "bob", PASSWORD).await;
    let bobs = other.get("/console/").await.csrf();
    ada.post(enable, &[("csrf", &bobs)]).await.expect(403);
    // The right token, sent from another site's page.
    ada.origin = "http://evil.example".into();
    let refused = ada.post(enable, &[("csrf", &csrf)]).await;
    refused.expect(403);
    assert!(refused.contains("did not come from this console"), "{}", refused.body);
    assert!(!helpdesk_enabled(&s, &admin).await, "no refused form changed anything");

    ada.origin = s.base.clone();
    ada.post(enable, &[("csrf", &csrf)]).await.expect_redirect("/console/tenants/acme/departments?done=enabled");
    assert!(helpdesk_enabled(&s, &admin).await);
    let page = ada.get("/console/tenants/acme/departments?done=enabled").await;
    assert!(page.contains("The department is switched on."));
    // The change is in the tenant's audit log, as ada's.
    let audit = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/audit", None).await.expect(200).body;
    let entry = audit["items"].as_array().unwrap().iter().find(|e| e["action"] == "tenant.plugin.enable").cloned();
    assert!(entry.is_some_and(|e| e["actor_name"] == "ada of Acme"), "{audit}");

    // The sign-in form's own double-submit check.
    let mut stranger = Visitor::new(&s.base);
    stranger.get("/console/sign-in").await;
    let login = [("csrf", "guessed"), ("tenant", "acme"), ("username", "ada"), ("password", PASSWORD)];
    stranger.post("/console/sign-in", &login).await.expect(403);
    assert!(!stranger.cookies.contains_key("keel_session"));
}

#[tokio::test]
async fn names_people_type_are_shown_as_text_never_as_markup() {
    let (s, admin) = acme().await;
    let hostile = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;
    let user = json!({ "username": "eve", "display_name": hostile, "password": PASSWORD, "role": "member" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let users = ada.get("/console/tenants/acme/users").await;
    users.expect(200);
    assert!(
        users.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        users.body
    );
    assert!(!users.contains("<script") && !users.contains("<img"), "{}", users.body);
}

#[tokio::test]
async fn a_refused_form_shows_each_message_beside_its_field_and_keeps_what_was_typed() {
    let (s, admin) = acme().await;
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let csrf = ada.get("/console/tenants/acme/users").await.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", "carol"),
        ("display_name", "Carol"),
        ("password", "short"),
        ("role", "member"),
    ];
    let page = ada.post("/console/tenants/acme/users", &fields).await;
    page.expect(422);
    assert!(
        page.contains(r#"<p class="field-error" id="password-error">passwords are 12-256 characters</p>"#),
        "{}",
        page.body
    );
    assert!(page.contains(r#"aria-describedby="password-error""#));
    assert!(page.contains(r#"value="carol""#), "the username is kept");
    assert!(!page.contains("short"), "the password is not");

    let clash = [
        ("csrf", csrf.as_str()),
        ("username", "bob"),
        ("display_name", "Bob"),
        ("password", PASSWORD),
        ("role", "member"),
    ];
    let page = ada.post("/console/tenants/acme/users", &clash).await;
    page.expect(409);
    assert!(page.contains(r#"id="username-error""#), "{}", page.body);

    let good = [
        ("csrf", csrf.as_str()),
        ("username", "carol"),
        ("display_name", "Carol"),
        ("password", PASSWORD),
        ("role", "member"),
    ];
    ada.post("/console/tenants/acme/users", &good)
        .await
        .expect_redirect("/console/tenants/acme/users?done=user-created");
    let users = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users", None).await.expect(200).body;
    assert!(users["items"].as_array().unwrap().iter().any(|u| u["username"] == "carol"));
    // Carol signs in with the password the form set.
    Visitor::new(&s.base).sign_in("acme", "carol", PASSWORD).await;
}

#[tokio::test]
async fn members_see_no_admin_pages_and_nobody_sees_another_tenants() {
    let (s, _) = acme().await;
    s.tenant_with_token("globex", "tenant-admin").await;
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", PASSWORD).await;
    let home = bob.get("/console/").await;
    home.expect(200);
    assert!(!home.contains("/console/tenants/acme/users"), "no admin links for a member");
    bob.get("/console/tenants/acme/users").await.expect(403);
    bob.get("/console/tenants/acme/departments").await.expect(403);
    bob.get("/console/tenants").await.expect(403);
    bob.get("/console/plugins").await.expect(403);

    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let other = ada.get("/console/tenants/globex/users").await;
    other.expect(404);
    let csrf = ada.get("/console/").await.csrf();
    ada.post("/console/tenants/globex/departments/helpdesk/enable", &[("csrf", &csrf)]).await.expect(404);
    ada.get("/console/tenants").await.expect(403);
    ada.get("/console/no-such-page").await.expect(404);
    // Without a session every page sends you to sign in.
    let mut stranger = Visitor::new(&s.base);
    let page = stranger.get("/console/tenants/acme/users").await;
    assert_eq!(page.status.as_u16(), 303);
    assert_eq!(page.location(), "/console/sign-in");
}

#[tokio::test]
async fn repeated_failures_show_the_lockout_and_signing_out_ends_the_session_everywhere() {
    let (s, _) = acme().await;
    let mut mallory = Visitor::new(&s.base);
    for _ in 0..5 {
        let csrf = mallory.get("/console/sign-in").await.csrf();
        let guess =
            [("csrf", csrf.as_str()), ("tenant", "acme"), ("username", "bob"), ("password", "a guess of many letters")];
        mallory.post("/console/sign-in", &guess).await.expect(401);
    }
    let csrf = mallory.get("/console/sign-in").await.csrf();
    let right = [("csrf", csrf.as_str()), ("tenant", "acme"), ("username", "bob"), ("password", PASSWORD)];
    let locked = mallory.post("/console/sign-in", &right).await;
    locked.expect(429);
    assert!(locked.contains("try again in 15 minutes"), "{}", locked.body);

    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let token = ada.cookies["keel_session"].clone();
    let csrf = ada.get("/console/").await.csrf();
    ada.post("/console/sign-out", &[("csrf", "wrong")]).await.expect(403);
    let out = ada.post("/console/sign-out", &[("csrf", &csrf)]).await;
    out.expect_redirect("/console/sign-in?reason=signed-out");
    assert!(out.set_cookie("keel_session").unwrap().contains("Max-Age=0"));
    assert!(ada.get("/console/sign-in?reason=signed-out").await.contains("You have signed out."));
    // The token behind the cookie is revoked, not just forgotten by this browser.
    s.as_token(Some(&token), Method::GET, "/v1/tenants/acme/users", None).await.expect(401);
    let mut replay = Visitor::new(&s.base);
    replay.cookies.insert("keel_session".into(), token);
    let page = replay.get("/console/").await;
    assert_eq!(page.location(), "/console/sign-in?reason=expired");
}

#[tokio::test]
async fn a_platform_admin_runs_tenants_from_the_console() {
    let (s, admin) = acme().await;
    // Platform admins sign in as password users of the default tenant, which only a platform
    // admin can create.
    let root =
        json!({ "username": "root", "display_name": "Platform Admin", "password": PASSWORD, "role": "platform-admin" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(root.clone()))
        .await
        .expect_problem(403, "forbidden");
    s.post("/v1/tenants/default/users", root).await.expect(201);

    let mut root = Visitor::new(&s.base);
    root.sign_in("default", "root", PASSWORD).await;
    let plugins = root.get("/console/plugins").await;
    plugins.expect(200);
    assert!(plugins.contains("helpdesk.ticket.read"), "declared permissions are listed: {}", plugins.body);

    let csrf = root.get("/console/tenants").await.csrf();
    let bad = root.post("/console/tenants", &[("csrf", &csrf), ("id", "Not Valid"), ("name", "Initech")]).await;
    bad.expect(422);
    assert!(bad.contains(r#"id="id-error""#), "{}", bad.body);
    root.post("/console/tenants", &[("csrf", &csrf), ("id", "initech"), ("name", "Initech")])
        .await
        .expect_redirect("/console/tenants?done=tenant-created");
    let confirm = root.get("/console/tenants/initech/suspend").await;
    confirm.expect(200);
    assert!(confirm.contains("Suspend <strong>Initech</strong>"), "{}", confirm.body);
    root.post("/console/tenants/initech/suspend", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants?done=tenant-suspended");
    assert_eq!(s.get("/v1/admin/tenants/initech").await.expect(200).body["status"], "suspended");
    root.post("/console/tenants/initech/resume", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants?done=tenant-resumed");
    assert_eq!(s.get("/v1/admin/tenants/initech").await.expect(200).body["status"], "active");

    // Suspending acme ends its people's console sessions.
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", PASSWORD).await;
    root.post("/console/tenants/acme/suspend", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants?done=tenant-suspended");
    assert_eq!(bob.get("/console/").await.location(), "/console/sign-in?reason=suspended");
}

/// acme with the helpdesk on, agents granted reading and writing tickets, and `ana`, an
/// agent.
async fn helpdesk_desk() -> (TestServer, String) {
    let (s, admin) = acme().await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    let grants = json!({ "permissions": ["helpdesk.ticket.read", "helpdesk.ticket.write"] });
    s.as_token(Some(&admin), Method::PUT, "/v1/tenants/acme/roles/agent/permissions", Some(grants)).await.expect(200);
    let ana = json!({ "username": "ana", "display_name": "Ana Agent", "password": PASSWORD, "role": "agent" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(ana)).await.expect(201);
    (s, admin)
}

async fn ticket(s: &TestServer, admin: &str, number: u64) -> serde_json::Value {
    s.as_token(Some(admin), Method::GET, &format!("/v1/plugins/helpdesk/tickets/{number}"), None).await.expect(200).body
}

#[tokio::test]
async fn an_agent_files_works_and_resolves_a_ticket_through_the_helpdesks_declared_views() {
    let (s, admin) = helpdesk_desk().await;
    let mut ana = Visitor::new(&s.base);
    ana.sign_in("acme", "ana", PASSWORD).await;
    let home = ana.get("/console/").await;
    assert!(home.contains(r#"href="/console/apps/helpdesk""#), "{}", home.body);
    let menu = ana.get("/console/apps/helpdesk").await;
    menu.expect(200);
    assert!(
        menu.contains("Tickets") && menu.contains("File a ticket") && menu.contains("SLA policies"),
        "{}",
        menu.body
    );
    assert!(!menu.contains("Set SLA targets"), "setting targets needs helpdesk.admin: {}", menu.body);

    // The form is drawn from the route's input schema: the priority is a choice of its enum.
    let form = ana.get("/console/apps/helpdesk/new-ticket").await;
    form.expect(200);
    assert!(form.contains(r#"<label for="title">Title</label>"#), "{}", form.body);
    assert!(form.contains(r#"<option value="P1">P1</option>"#), "{}", form.body);
    assert!(form.contains(r#"<textarea id="description""#), "{}", form.body);
    let csrf = form.csrf();

    // A blank title: the route's schema refuses it, and the message sits beside the field.
    let refused =
        ana.post("/console/apps/helpdesk/new-ticket", &[("csrf", &csrf), ("title", " "), ("priority", "P2")]).await;
    refused.expect(422);
    assert!(refused.contains(r#"<p class="field-error" id="title-error">"#), "{}", refused.body);
    assert!(refused.contains(r#"aria-describedby="title-error""#));
    assert!(refused.contains(r#"<option value="P2" selected>P2</option>"#), "what was chosen is kept");
    let nothing = s.as_token(Some(&admin), Method::GET, "/v1/plugins/helpdesk/tickets", None).await.expect(200).body;
    assert_eq!(nothing["items"].as_array().unwrap().len(), 0);

    let title = "<script>alert(1)</script> printer jams";
    let filed = ana
        .post(
            "/console/apps/helpdesk/new-ticket",
            &[
                ("csrf", &csrf),
                ("title", title),
                ("description", "Since 9am.\nEvery job."),
                ("priority", "P2"),
                ("category", ""),
            ],
        )
        .await;
    filed.expect_redirect("/console/apps/helpdesk/ticket?number=1&done=saved");
    let filed = ticket(&s, &admin, 1).await;
    assert_eq!(filed["title"], title);
    assert_eq!(filed["priority"], "P2");
    assert_eq!(filed["category"], "general", "an empty optional field is left to the plugin's default");
    let users = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users", None).await.expect(200).body;
    let ana_id = users["items"].as_array().unwrap().iter().find(|u| u["username"] == "ana").unwrap()["id"].clone();
    assert_eq!(filed["requester"], ana_id, "filed as the signed-in agent");

    let page = ana.get("/console/apps/helpdesk/ticket?number=1&done=saved").await;
    page.expect(200);
    assert!(page.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt; printer jams</h1>"), "{}", page.body);
    assert!(!page.contains("<script>"));
    assert!(page.contains("Saved."));
    // Only the moves the workflow allows from `new` are offered.
    assert!(page.contains(">Start work</button>") && !page.contains("Resolve"), "{}", page.body);

    ana.post("/console/apps/helpdesk/ticket/actions/1?number=1", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/apps/helpdesk/ticket?number=1&done=done");
    assert_eq!(ticket(&s, &admin, 1).await["status"], "open");

    // Resolving asks first.
    let page = ana.get("/console/apps/helpdesk/ticket?number=1").await;
    assert!(page.contains(r#"href="/console/apps/helpdesk/ticket/actions/4?number=1""#), "{}", page.body);
    let confirm = ana.get("/console/apps/helpdesk/ticket/actions/4?number=1").await;
    confirm.expect(200);
    assert!(confirm.contains("Mark this ticket resolved?"), "{}", confirm.body);
    assert_eq!(ticket(&s, &admin, 1).await["status"], "open", "showing the question changes nothing");
    ana.post("/console/apps/helpdesk/ticket/actions/4?number=1", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/apps/helpdesk/ticket?number=1&done=done");
    assert_eq!(ticket(&s, &admin, 1).await["status"], "resolved");

    // A move the workflow refuses (resolved → pending) shows the plugin's reason on the record.
    let refused = ana.post("/console/apps/helpdesk/ticket/actions/2?number=1", &[("csrf", &csrf)]).await;
    refused.expect(409);
    assert!(refused.contains(r#"class="error" role="alert""#), "{}", refused.body);
    assert_eq!(ticket(&s, &admin, 1).await["status"], "resolved");

    // Comments: a form with the ticket's number from the address, then the ticket again with
    // its comments section.
    ana.post("/console/apps/helpdesk/comment?number=1", &[("csrf", &csrf), ("body", "Replaced the <b>fuser</b>.")])
        .await
        .expect_redirect("/console/apps/helpdesk/ticket?number=1&done=saved");
    let page = ana.get("/console/apps/helpdesk/ticket?number=1").await;
    assert!(
        page.contains("<h2>Comments</h2>") && page.contains("Replaced the &lt;b&gt;fuser&lt;/b&gt;."),
        "{}",
        page.body
    );

    // The list, with its filters from the route's query parameters.
    let resolved = ana.get("/console/apps/helpdesk/tickets?status=resolved").await;
    resolved.expect(200);
    assert!(resolved.contains(r#"<a href="/console/apps/helpdesk/ticket?number=1">"#), "{}", resolved.body);
    let open = ana.get("/console/apps/helpdesk/tickets?status=open").await;
    assert!(open.contains("Nothing here yet.") && !open.contains("ticket?number=1"), "{}", open.body);
    // A filter value the route's schema refuses is the route's 422, not a crash.
    ana.get("/console/apps/helpdesk/tickets?status=bogus").await.expect(422);
}

#[tokio::test]
async fn a_person_without_a_views_permission_neither_sees_nor_uses_it() {
    let (s, admin) = helpdesk_desk().await;
    s.tenant_with_token("globex", "tenant-admin").await;
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", PASSWORD).await;
    let home = bob.get("/console/").await;
    assert!(!home.contains("/console/apps/helpdesk"), "{}", home.body);
    let menu = bob.get("/console/apps/helpdesk").await;
    assert!(menu.contains("nothing here you have the permission to see"), "{}", menu.body);
    bob.get("/console/apps/helpdesk/tickets").await.expect(403);
    bob.get("/console/apps/helpdesk/new-ticket").await.expect(403);
    let csrf = home.csrf();
    bob.post("/console/apps/helpdesk/new-ticket", &[("csrf", &csrf), ("title", "sneaky")]).await.expect(403);
    bob.post("/console/apps/helpdesk/ticket/actions/1?number=1", &[("csrf", &csrf)]).await.expect(403);
    let tickets = s.as_token(Some(&admin), Method::GET, "/v1/plugins/helpdesk/tickets", None).await.expect(200).body;
    assert_eq!(tickets["items"].as_array().unwrap().len(), 0);
    bob.get("/console/apps/helpdesk/no-such-view").await.expect(404);

    // A department the tenant does not run is not there at all.
    let globex_admin =
        json!({ "username": "gia", "display_name": "Gia", "password": PASSWORD, "role": "tenant-admin" });
    s.post("/v1/tenants/globex/users", globex_admin).await.expect(201);
    let mut gia = Visitor::new(&s.base);
    gia.sign_in("globex", "gia", PASSWORD).await;
    gia.get("/console/apps/helpdesk").await.expect(404);
    gia.get("/console/apps/helpdesk/tickets").await.expect(404);

    // The tenant admin holds every permission: the SLA form asks for the priority (a path
    // parameter) as a choice.
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let form = ada.get("/console/apps/helpdesk/sla-policy").await;
    form.expect(200);
    assert!(form.contains(r#"<select id="priority" name="priority" required>"#), "{}", form.body);
    let csrf = form.csrf();
    let fields =
        [("csrf", csrf.as_str()), ("priority", "P1"), ("first_response_minutes", "30"), ("resolution_minutes", "20")];
    let refused = ada.post("/console/apps/helpdesk/sla-policy", &fields).await;
    refused.expect(422);
    let fields = [
        ("csrf", csrf.as_str()),
        ("priority", "P1"),
        ("first_response_minutes", "thirty"),
        ("resolution_minutes", "240"),
    ];
    let typed = ada.post("/console/apps/helpdesk/sla-policy", &fields).await;
    typed.expect(422);
    assert!(typed.contains(r#"id="first_response_minutes-error""#), "{}", typed.body);
    let fields =
        [("csrf", csrf.as_str()), ("priority", "P1"), ("first_response_minutes", "30"), ("resolution_minutes", "240")];
    ada.post("/console/apps/helpdesk/sla-policy", &fields)
        .await
        .expect_redirect("/console/apps/helpdesk/sla-policies?done=saved");
    let policies =
        s.as_token(Some(&admin), Method::GET, "/v1/plugins/helpdesk/sla-policies", None).await.expect(200).body;
    let p1 = policies["items"].as_array().unwrap().iter().find(|p| p["priority"] == "P1").unwrap().clone();
    assert_eq!((p1["first_response_minutes"].as_i64(), p1["resolution_minutes"].as_i64()), (Some(30), Some(240)));
}

#[tokio::test]
async fn a_tenant_admin_grants_a_role_the_permissions_departments_declare() {
    let (s, admin) = acme().await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let page = ada.get("/console/tenants/acme/roles").await;
    page.expect(200);
    // Each permission with the description its plugin declares, labelled for its checkbox.
    assert!(
        page.contains(r#"<label for="new--helpdesk.ticket.read"><code>helpdesk.ticket.read</code></label>"#),
        "{}",
        page.body
    );
    assert!(page.contains("See one&#39;s own tickets") || page.contains("See one's own tickets"), "{}", page.body);
    let csrf = page.csrf();
    let fields = [
        ("csrf", csrf.as_str()),
        ("role", "agent"),
        ("permission", "helpdesk.ticket.read"),
        ("permission", "helpdesk.ticket.write"),
    ];
    ada.post("/console/tenants/acme/roles", &fields)
        .await
        .expect_redirect("/console/tenants/acme/roles?done=role-saved");
    let grants =
        s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/roles/agent/permissions", None).await.expect(200).body;
    assert_eq!(grants["permissions"], json!(["helpdesk.ticket.read", "helpdesk.ticket.write"]));
    let page = ada.get("/console/tenants/acme/roles").await;
    assert!(
        page.contains(r#"id="agent--helpdesk.ticket.write" name="permission" value="helpdesk.ticket.write" checked"#),
        "{}",
        page.body
    );

    // A permission no department declares, and a reserved or malformed name, are refused.
    let bogus = [("csrf", csrf.as_str()), ("role", "agent"), ("permission", "payroll.run")];
    let page = ada.post("/console/tenants/acme/roles", &bogus).await;
    page.expect(422);
    // A message about no control on the form is shown above it, not lost.
    assert!(page.contains("no installed plugin declares `payroll.run`"), "{}", page.body);
    let reserved = [("csrf", csrf.as_str()), ("role", "tenant-admin"), ("permission", "helpdesk.ticket.read")];
    let page = ada.post("/console/tenants/acme/roles", &reserved).await;
    page.expect(422);
    assert!(page.contains(r#"id="role-error""#), "{}", page.body);
    let grants =
        s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/roles/agent/permissions", None).await.expect(200).body;
    assert_eq!(
        grants["permissions"],
        json!(["helpdesk.ticket.read", "helpdesk.ticket.write"]),
        "refusals changed nothing"
    );

    // Clearing every box takes every grant away.
    ada.post("/console/tenants/acme/roles", &[("csrf", csrf.as_str()), ("role", "agent")])
        .await
        .expect_redirect("/console/tenants/acme/roles?done=role-saved");
    let grants =
        s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/roles/agent/permissions", None).await.expect(200).body;
    assert_eq!(grants["permissions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_finds_a_dead_job_and_retries_it_from_the_console() {
    let s = TestServer::with_plugins(&["fixtures/relay", "fixtures/listener"]).await;
    let id = s.post("/v1/plugins/relay/jobs", json!({ "name": "fail" })).await.expect(202).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/tenants/default/jobs/{id}");
    loop {
        let body = s.eventually(&path, "a failed attempt", |b| b["job"]["status"] != "running").await;
        if body["job"]["status"] == "dead" {
            break;
        }
        s.advance_clock(5_000).await;
    }
    let root = json!({ "username": "root", "display_name": "Root", "password": PASSWORD, "role": "platform-admin" });
    s.post("/v1/tenants/default/users", root).await.expect(201);
    let mut root = Visitor::new(&s.base);
    root.sign_in("default", "root", PASSWORD).await;
    let dead = root.get("/console/tenants/default/jobs?status=dead").await;
    dead.expect(200);
    assert!(dead.contains(&id) && dead.contains("attempt 3 fails on purpose"), "{}", dead.body);
    assert!(dead.contains(r#"<option value="dead" selected>dead</option>"#));
    let done = root.get("/console/tenants/default/jobs?status=done").await;
    assert!(!done.contains(&id), "the filter is applied");
    let csrf = dead.csrf();
    // Cancelling a dead job is the API's 409, shown on the page; nothing changes.
    let page = root.post(&format!("/console/tenants/default/jobs/{id}/cancel"), &[("csrf", &csrf)]).await;
    page.expect(409);
    assert!(page.contains(r#"<p class="error" role="alert">"#), "{}", page.body);
    assert_eq!(s.get(&path).await.expect(200).body["job"]["status"], "dead");
    root.post(&format!("/console/tenants/default/jobs/{id}/retry"), &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants/default/jobs?done=job-retried");
    // It runs again: a fourth attempt after the three that killed it.
    s.eventually(&path, "the retried job to run again", |b| b["runs"].as_array().is_some_and(|r| r.len() == 4)).await;
}

#[tokio::test]
async fn an_api_token_is_shown_once_and_revoked_after_a_confirmation() {
    let (s, _) = acme().await;
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let page = ada.get("/console/tenants/acme/tokens").await;
    page.expect(200);
    assert!(page.contains("this session"), "the session's own token cannot be revoked from here: {}", page.body);
    let csrf = page.csrf();
    let bad =
        ada.post("/console/tenants/acme/tokens", &[("csrf", &csrf), ("name", "export"), ("role", "Not A Role")]).await;
    bad.expect(422);
    assert!(bad.contains(r#"id="role-error""#), "{}", bad.body);

    let created = ada
        .post(
            "/console/tenants/acme/tokens",
            &[("csrf", &csrf), ("name", "export"), ("role", "member"), ("ttl_days", "30")],
        )
        .await;
    created.expect(201);
    let marker = r#"<input id="new-token" readonly value=""#;
    let at = created.body.find(marker).unwrap_or_else(|| panic!("{}", created.body)) + marker.len();
    let token = created.body[at..].split('"').next().unwrap().to_owned();
    assert!(token.starts_with("keel_"), "{token}");
    // The token works (a member: authenticated, refused the admin route)...
    s.as_token(Some(&token), Method::GET, "/v1/tenants/acme/users", None).await.expect_problem(403, "forbidden");
    // ...and is never shown again.
    let listed = ada.get("/console/tenants/acme/tokens").await;
    assert!(listed.contains("export") && !listed.contains(&token), "{}", listed.body);

    let tokens = s.get("/v1/tenants/acme/tokens").await.expect(200).body;
    let id = tokens["items"].as_array().unwrap().iter().find(|t| t["name"] == "export").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = ada.get(&format!("/console/tenants/acme/tokens/{id}/revoke")).await;
    confirm.expect(200);
    assert!(confirm.contains("This cannot be undone."));
    s.as_token(Some(&token), Method::GET, "/v1/tenants/acme/users", None).await.expect(403);
    ada.post(&format!("/console/tenants/acme/tokens/{id}/revoke"), &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants/acme/tokens?done=token-revoked");
    s.as_token(Some(&token), Method::GET, "/v1/tenants/acme/users", None).await.expect(401);
}

#[tokio::test]
async fn the_audit_log_shows_what_admins_did_to_them_and_the_platform_log_to_platform_admins() {
    let (s, _) = acme().await;
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let csrf = ada.get("/console/").await.csrf();
    ada.post("/console/tenants/acme/departments/helpdesk/enable", &[("csrf", &csrf)]).await.expect(303);
    let log = ada.get("/console/tenants/acme/audit").await;
    log.expect(200);
    assert!(log.contains("<code>tenant.plugin.enable</code>") && log.contains("ada of Acme"), "{}", log.body);
    assert!(log.contains("<code>user.create</code>"));
    let (enabled, created) = (log.body.find("tenant.plugin.enable").unwrap(), log.body.find("user.create").unwrap());
    assert!(enabled < created, "newest first: the switch made last comes first");
    let filtered = ada.get("/console/tenants/acme/audit?action=user.create").await;
    assert!(
        filtered.contains("<code>user.create</code>") && !filtered.contains("<code>tenant.plugin.enable</code>"),
        "{}",
        filtered.body
    );
    ada.get("/console/audit").await.expect(403);
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", PASSWORD).await;
    bob.get("/console/tenants/acme/audit").await.expect(403);

    let root = json!({ "username": "root", "display_name": "Root", "password": PASSWORD, "role": "platform-admin" });
    s.post("/v1/tenants/default/users", root).await.expect(201);
    let mut root = Visitor::new(&s.base);
    root.sign_in("default", "root", PASSWORD).await;
    let platform = root.get("/console/audit?tenant=acme&action=tenant.plugin.enable").await;
    platform.expect(200);
    assert!(platform.contains("<code>tenant.plugin.enable</code>") && platform.contains(">acme<"), "{}", platform.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_now_and_long_work_shows_its_progress() {
    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/batch"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    for plugin in ["helpdesk", "batch"] {
        s.as_token(Some(&admin), Method::POST, &format!("/v1/tenants/acme/plugins/{plugin}/enable"), None)
            .await
            .expect(200);
    }
    let ada = json!({ "username": "ada", "display_name": "Ada", "password": PASSWORD, "role": "tenant-admin" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(ada)).await.expect(201);
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;

    let schedules = ada.get("/console/tenants/acme/schedules").await;
    schedules.expect(200);
    assert!(schedules.contains("helpdesk · sla-check"), "{}", schedules.body);
    let csrf = schedules.csrf();
    ada.post("/console/tenants/acme/schedules/helpdesk/sla-check/run", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/tenants/acme/schedules?done=schedule-run");
    let jobs =
        s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/jobs?kind=schedule", None).await.expect(200).body;
    assert!(jobs["items"].as_array().unwrap().iter().any(|j| j["name"] == "sla-check"), "{jobs}");
    ada.post("/console/tenants/acme/schedules/helpdesk/no-such/run", &[("csrf", &csrf)]).await.expect(404);

    let seed = s
        .as_token(Some(&admin), Method::POST, "/v1/plugins/batch/seed", Some(json!({ "count": 2_500, "chunk": 1000 })))
        .await;
    let task = seed.expect(202).body["task"].as_str().unwrap().to_owned();
    let path = format!("/v1/tenants/acme/tasks/{task}");
    for _ in 0..600 {
        let t = s.as_token(Some(&admin), Method::GET, &path, None).await.expect(200).body;
        if t["status"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tasks = ada.get("/console/tenants/acme/tasks").await;
    tasks.expect(200);
    assert!(
        tasks.contains(r#"<progress value="2500" max="2500""#) && tasks.contains("Seed 2500 items"),
        "{}",
        tasks.body
    );
    assert!(!tasks.contains(r#"http-equiv="refresh""#), "nothing runs: no refresh");
}

#[tokio::test]
async fn a_platform_admin_installs_switches_and_uninstalls_a_plugin_from_the_console() {
    let s = TestServer::start().await;
    let root = json!({ "username": "root", "display_name": "Root", "password": PASSWORD, "role": "platform-admin" });
    s.post("/v1/tenants/default/users", root).await.expect(201);
    let mut root = Visitor::new(&s.base);
    root.sign_in("default", "root", PASSWORD).await;
    let page = root.get("/console/plugins").await;
    page.expect(200);
    assert!(
        page.contains(r#"enctype="multipart/form-data""#) && page.contains(r#"<label for="artifact">"#),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let helpdesk = keel_tests::artifact("bundled/helpdesk");

    // Without the session's token, or not a plugin: nothing is installed.
    root.post_file("/console/plugins", &[("csrf", "forged")], ("artifact", "helpdesk.wasm", helpdesk.clone()))
        .await
        .expect(403);
    let garbage = root
        .post_file("/console/plugins", &[("csrf", &csrf)], ("artifact", "notes.wasm", b"not a component".to_vec()))
        .await;
    assert!(garbage.status.is_client_error(), "{}", garbage.status);
    assert!(garbage.contains(r#"class="error" role="alert""#), "{}", garbage.body);
    assert_eq!(s.get("/v1/admin/plugins").await.expect(200).body["items"], json!([]));

    root.post_file("/console/plugins", &[("csrf", &csrf)], ("artifact", "helpdesk.wasm", helpdesk))
        .await
        .expect_redirect("/console/plugins/helpdesk?done=installed");
    let detail = root.get("/console/plugins/helpdesk?done=installed").await;
    detail.expect(200);
    let version = keel_tests::manifest_version("helpdesk");
    assert!(detail.contains(&format!("{version} <span class=\"on\">active</span>")), "{}", detail.body);
    assert!(
        detail.contains("<code>helpdesk.ticket.read</code>") && detail.contains("<code>GET /tickets</code>"),
        "{}",
        detail.body
    );

    root.post("/console/plugins/helpdesk/disable", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/plugins/helpdesk?done=plugin-disabled");
    assert_eq!(s.get("/v1/admin/plugins/helpdesk").await.expect(200).body["enabled"], false);
    root.post("/console/plugins/helpdesk/enable", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/plugins/helpdesk?done=plugin-enabled");
    assert_eq!(s.get("/v1/admin/plugins/helpdesk").await.expect(200).body["enabled"], true);

    let confirm = root.get("/console/plugins/helpdesk/uninstall").await;
    confirm.expect(200);
    assert!(confirm.contains(r#"<label for="purge">"#));
    s.get("/v1/admin/plugins/helpdesk").await.expect(200);
    root.post("/console/plugins/helpdesk/uninstall", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/plugins?done=uninstalled");
    s.get("/v1/admin/plugins/helpdesk").await.expect_problem(404, "plugin-not-found");

    // Nobody else reaches these pages.
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    let ada = json!({ "username": "ada", "display_name": "Ada", "password": PASSWORD, "role": "tenant-admin" });
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(ada)).await.expect(201);
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    ada.get("/console/plugins").await.expect(403);
    let csrf = ada.get("/console/").await.csrf();
    ada.post_file(
        "/console/plugins",
        &[("csrf", &csrf)],
        ("artifact", "h.wasm", keel_tests::artifact("bundled/helpdesk")),
    )
    .await
    .expect(403);
    assert_eq!(s.get("/v1/admin/plugins").await.expect(200).body["items"], json!([]));
}

#[tokio::test]
async fn a_tenant_admin_resets_a_password_and_disables_and_enables_a_person() {
    let (s, admin) = acme().await;
    let users = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/users", None).await.expect(200).body;
    let id_of = |name: &str| {
        users["items"].as_array().unwrap().iter().find(|u| u["username"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ada_id, bob_id) = (id_of("ada"), id_of("bob"));
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", PASSWORD).await;
    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;

    let list = ada.get("/console/tenants/acme/users").await;
    list.expect(200);
    let bob_page = format!("/console/tenants/acme/users/{bob_id}");
    assert!(list.contains(&format!(r#"href="{bob_page}""#)), "{}", list.body);
    let page = ada.get(&bob_page).await;
    page.expect(200);
    assert!(page.contains(r#"<label for="password">New password</label>"#), "{}", page.body);
    let csrf = page.csrf();

    // A short password: the message beside the field, nothing changed.
    let short = ada.post(&format!("{bob_page}/password"), &[("csrf", &csrf), ("password", "short")]).await;
    short.expect(422);
    assert!(short.contains(r#"id="password-error""#), "{}", short.body);
    assert!(!short.contains(r#"value="short""#), "a password is never sent back");
    bob.get("/console/").await.expect(200);

    const NEW: &str = "a brand new passphrase";
    ada.post(&format!("{bob_page}/password"), &[("csrf", &csrf), ("password", NEW)])
        .await
        .expect_redirect(&format!("{bob_page}?done=password-reset"));
    assert_eq!(
        bob.get("/console/").await.location(),
        "/console/sign-in?reason=expired",
        "the reset ends bob's session"
    );
    let mut bob = Visitor::new(&s.base);
    bob.sign_in("acme", "bob", NEW).await;

    // Disabling asks first, then signs bob out; the list says so; enabling lets him back.
    let confirm = ada.get(&format!("{bob_page}/disable")).await;
    confirm.expect(200);
    assert!(confirm.contains("Disable <strong>bob of Acme</strong>"), "{}", confirm.body);
    ada.post(&format!("{bob_page}/disable"), &[("csrf", "forged")]).await.expect(403);
    bob.get("/console/").await.expect(200);
    ada.post(&format!("{bob_page}/disable"), &[("csrf", &csrf)])
        .await
        .expect_redirect(&format!("{bob_page}?done=user-disabled"));
    assert_eq!(bob.get("/console/").await.location(), "/console/sign-in?reason=expired");
    assert!(ada.get("/console/tenants/acme/users").await.contains("Disabled since"));
    let mut again = Visitor::new(&s.base);
    let form = again.get("/console/sign-in").await.csrf();
    let refused = again
        .post("/console/sign-in", &[("csrf", &form), ("tenant", "acme"), ("username", "bob"), ("password", NEW)])
        .await;
    refused.expect(401);
    let enable = ada.get(&bob_page).await;
    assert!(enable.contains(">Enable</button>"), "{}", enable.body);
    ada.post(&format!("{bob_page}/enable"), &[("csrf", &csrf)])
        .await
        .expect_redirect(&format!("{bob_page}?done=user-enabled"));
    again.sign_in("acme", "bob", NEW).await;

    // Ada cannot disable herself; bob, a member, cannot open the pages at all.
    let own = ada.get(&format!("/console/tenants/acme/users/{ada_id}")).await;
    assert!(own.contains("You cannot disable the account you are signed in with."), "{}", own.body);
    ada.post(&format!("/console/tenants/acme/users/{ada_id}/disable"), &[("csrf", &csrf)]).await.expect(409);
    let refused = again.get(&bob_page).await;
    refused.expect(403);
    assert!(refused.contains(r#"action="/console/sign-out""#), "a refusal keeps the navigation: {}", refused.body);
}

/// A platform admin `root`, signed in to the console.
pub(crate) async fn signed_in_root(s: &TestServer) -> Visitor {
    let root = json!({ "username": "root", "display_name": "Root", "password": PASSWORD, "role": "platform-admin" });
    s.post("/v1/tenants/default/users", root).await.expect(201);
    let mut visitor = Visitor::new(&s.base);
    visitor.sign_in("default", "root", PASSWORD).await;
    visitor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_shows_what_was_published_and_replays_a_range_to_a_subscriber() {
    let s = TestServer::with_plugins(&["fixtures/relay", "fixtures/listener"]).await;
    let mut root = signed_in_root(&s).await;
    let published = s.post("/v1/plugins/relay/publish", json!({ "payload": { "note": "<b>bold</b>" } })).await;
    published.expect(202);
    s.eventually("/v1/tenants/default/jobs?plugin=listener&kind=event&status=done", "the first delivery", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;

    let page = root.get("/console/tenants/default/events").await;
    page.expect(200);
    assert!(page.contains("<code>relay.pinged</code>"), "{}", page.body);
    assert!(
        page.contains("&lt;b&gt;bold&lt;/b&gt;") && !page.contains("<b>bold</b>"),
        "payloads are text: {}",
        page.body
    );
    assert!(page.contains(r#"<option value="listener""#), "subscribers are offered: {}", page.body);
    let filtered = root.get("/console/tenants/default/events?topic=nothing.here").await;
    assert!(filtered.contains("No events match."), "{}", filtered.body);

    // A backwards range: the API's message on the form, nothing queued.
    let csrf = page.csrf();
    let backwards = root
        .post(
            "/console/tenants/default/events/replay",
            &[("csrf", &csrf), ("subscriber", "listener"), ("from_seq", "5"), ("to_seq", "1")],
        )
        .await;
    backwards.expect(422);
    assert!(backwards.contains("need 1 &lt;= from_seq &lt;= to_seq"), "{}", backwards.body);
    assert!(backwards.contains(r#"value="5""#), "what was typed is kept");
    root.post(
        "/console/tenants/default/events/replay",
        &[("csrf", &csrf), ("subscriber", "listener"), ("from_seq", "1"), ("to_seq", "1")],
    )
    .await
    .expect_redirect("/console/tenants/default/events?done=events-replayed");
    s.eventually("/v1/tenants/default/jobs?plugin=listener&kind=event&status=done", "the replayed delivery", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    root.post(
        "/console/tenants/default/events/replay",
        &[("csrf", "forged"), ("subscriber", "listener"), ("from_seq", "1"), ("to_seq", "1")],
    )
    .await
    .expect(403);
}

#[tokio::test]
async fn the_health_page_shows_readiness_and_this_hosts_key_figures_to_platform_admins_only() {
    let (s, admin) = acme().await;
    s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    for title in ["one", "two"] {
        s.as_token(Some(&admin), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": title })))
            .await
            .expect(201);
    }
    // Refused by the plugin (no such ticket): the caller's error, not a fault.
    s.as_token(Some(&admin), Method::GET, "/v1/plugins/helpdesk/tickets/999", None).await.expect(404);
    let mut root = signed_in_root(&s).await;
    let page = root.get("/console/health").await;
    page.expect(200);
    assert!(page.contains(r#"href="/console/health""#), "the navigation links it");
    assert!(page.contains("<span class=\"on\">Ready</span>"), "{}", page.body);
    assert!(page.contains("1 plugins installed, 1 on for the platform; 2 tenants, 0 suspended."), "{}", page.body);
    // The helpdesk's row: three calls, one refused as the caller's error, no fault.
    let row = page.body.split(r#"<th scope="row" data-label="Plugin">helpdesk</th>"#).nth(1).expect("a helpdesk row");
    let cells: Vec<&str> = row.split("</tr>").next().unwrap().split("<td").skip(1).collect();
    assert!(cells[0].contains(">3<") && cells[1].contains(">1<") && cells[2].contains(">0<"), "{row}");
    assert!(cells[3].contains("≤ "), "a median latency: {row}");
    assert!(page.contains(r#"<th scope="row" data-label="Tenant">acme</th>"#), "storage by tenant: {}", page.body);

    let mut ada = Visitor::new(&s.base);
    ada.sign_in("acme", "ada", PASSWORD).await;
    let refused = ada.get("/console/health").await;
    refused.expect(403);
    assert!(!refused.contains("acme</th>"));
    assert!(!ada.get("/console/").await.contains(r#"href="/console/health""#));
}

#[tokio::test]
async fn a_platform_admin_pins_a_version_and_rolls_it_out_to_chosen_tenants() {
    use keel_host::artifact::embed_manifest;
    use keel_tests::{manifest_source, raw_component, with_version};
    let version = |v: &str| {
        embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&manifest_source("helpdesk"), v)).unwrap()
    };
    let s = TestServer::start().await;
    s.upload(version("1.0.0")).await.expect(201);
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    s.upload(version("2.0.0")).await.expect(201);
    let running = |tenant: &'static str| {
        let s = &s;
        async move {
            let versions = s.get("/v1/admin/plugins/helpdesk/versions").await.expect(200).body;
            versions["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["tenants"].as_array().unwrap().iter().any(|t| t == tenant))
                .map(|v| v["version"].as_str().unwrap().to_owned())
        }
    };
    assert_eq!(running("acme").await.as_deref(), Some("1.0.0"));

    let mut root = signed_in_root(&s).await;
    let page = root.get("/console/plugins/helpdesk").await;
    page.expect(200);
    let csrf = page.csrf();
    assert!(page.contains(r#"href="/console/plugins/helpdesk/versions/2%2E0%2E0/rollout""#), "{}", page.body);

    // Pin 1.0.0: it becomes the version tenants switching on get; unpin gives the newest back.
    root.post("/console/plugins/helpdesk/versions/1%2E0%2E0/pin", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/plugins/helpdesk?done=version-pinned");
    let versions = s.get("/v1/admin/plugins/helpdesk/versions").await.expect(200).body;
    assert_eq!((versions["active_version"].as_str(), versions["pinned"].as_bool()), (Some("1.0.0"), Some(true)));
    assert!(root.get("/console/plugins/helpdesk").await.contains("active, pinned"));
    root.post("/console/plugins/helpdesk/versions/1%2E0%2E0/unpin", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/plugins/helpdesk?done=version-unpinned");
    let versions = s.get("/v1/admin/plugins/helpdesk/versions").await.expect(200).body;
    assert_eq!((versions["active_version"].as_str(), versions["pinned"].as_bool()), (Some("2.0.0"), Some(false)));
    root.post("/console/plugins/helpdesk/versions/9%2E9%2E9/pin", &[("csrf", &csrf)]).await.expect(404);

    // The rollout asks first, naming each tenant it would move and its version now.
    let confirm = root.get("/console/plugins/helpdesk/versions/2%2E0%2E0/rollout").await;
    confirm.expect(200);
    assert!(confirm.contains("acme (now 1.0.0)"), "{}", confirm.body);
    root.post("/console/plugins/helpdesk/versions/2%2E0%2E0/rollout", &[("csrf", "forged"), ("tenant", "acme")])
        .await
        .expect(403);
    root.post("/console/plugins/helpdesk/versions/2%2E0%2E0/rollout", &[("csrf", &csrf)]).await.expect(422);
    assert_eq!(running("acme").await.as_deref(), Some("1.0.0"), "refused forms move nobody");
    let report =
        root.post("/console/plugins/helpdesk/versions/2%2E0%2E0/rollout", &[("csrf", &csrf), ("tenant", "acme")]).await;
    report.expect(200);
    assert!(report.contains("Moved from 1.0.0"), "{}", report.body);
    assert_eq!(running("acme").await.as_deref(), Some("2.0.0"));
}

#[tokio::test]
async fn an_edit_form_starts_from_the_record_and_does_not_overwrite_a_change_made_meanwhile() {
    let (s, admin) = helpdesk_desk().await;
    // Agents here work every ticket and assign them.
    let grants = json!({ "permissions": ["helpdesk.ticket.read", "helpdesk.ticket.write", "helpdesk.agent", "helpdesk.ticket.assign"] });
    s.as_token(Some(&admin), Method::PUT, "/v1/tenants/acme/roles/agent/permissions", Some(grants)).await.expect(200);
    let filed = json!({ "title": "Printer jams", "description": "Tray 2", "priority": "P3", "assignee": "ana" });
    s.as_token(Some(&admin), Method::POST, "/v1/plugins/helpdesk/tickets", Some(filed)).await.expect(201);
    let mut ana = Visitor::new(&s.base);
    ana.sign_in("acme", "ana", PASSWORD).await;
    let record = ana.get("/console/apps/helpdesk/ticket?number=1").await;
    assert!(record.contains(r#"href="/console/apps/helpdesk/edit-ticket?number=1""#), "{}", record.body);

    // The form holds the ticket as it is, and the version it was read at.
    let form = ana.get("/console/apps/helpdesk/edit-ticket?number=1").await;
    form.expect(200);
    assert!(form.contains(r#"value="Printer jams""#), "{}", form.body);
    assert!(form.contains(r#"<option value="P3" selected>P3</option>"#), "{}", form.body);
    assert!(form.contains(">Tray 2</textarea>") && form.contains(r#"value="ana""#), "{}", form.body);
    let version = ticket(&s, &admin, 1).await["version"].as_u64().unwrap();
    assert!(form.contains(&format!(r#"<input type="hidden" name="version" value="{version}">"#)), "{}", form.body);
    let csrf = form.csrf();
    let edit = |title: &'static str, version: String| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("version".to_owned(), version),
            ("title".to_owned(), title.to_owned()),
            ("description".to_owned(), "Tray 2".to_owned()),
            ("priority".to_owned(), "P1".to_owned()),
            ("category".to_owned(), String::new()),
            // Emptied: the ticket is unassigned (the route takes `null` for it).
            ("assignee".to_owned(), String::new()),
        ]
    };

    // Someone else retitles it first: sending the old version is refused, nothing is lost,
    // and the form comes back with what was typed and the current version.
    let theirs = json!({ "title": "Printer jams on tray 2" });
    s.as_token(Some(&admin), Method::PATCH, "/v1/plugins/helpdesk/tickets/1", Some(theirs)).await.expect(200);
    let stale =
        ana.post("/console/apps/helpdesk/edit-ticket?number=1", &as_pairs(&edit("Mine", version.to_string()))).await;
    stale.expect(409);
    assert!(stale.contains("reload and retry"), "{}", stale.body);
    assert!(stale.contains(r#"value="Mine""#), "what was typed is kept: {}", stale.body);
    let now = ticket(&s, &admin, 1).await;
    assert_eq!((now["title"].as_str(), now["priority"].as_str()), (Some("Printer jams on tray 2"), Some("P3")));
    let current = now["version"].as_u64().unwrap();
    assert!(stale.contains(&format!(r#"name="version" value="{current}""#)), "{}", stale.body);

    // Sent again knowingly, over the current version: saved.
    ana.post("/console/apps/helpdesk/edit-ticket?number=1", &as_pairs(&edit("Mine", current.to_string())))
        .await
        .expect_redirect("/console/apps/helpdesk/ticket?number=1&done=saved");
    let saved = ticket(&s, &admin, 1).await;
    assert_eq!(
        (saved["title"].as_str(), saved["priority"].as_str(), &saved["assignee"]),
        (Some("Mine"), Some("P1"), &serde_json::Value::Null),
        "{saved}"
    );
}
