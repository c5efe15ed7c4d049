//! The web console in a real headless Chromium, driven over WebDriver: a tenant admin
//! switches the helpdesk on and grants a role, an agent files and resolves a ticket through
//! the helpdesk's declared views (meeting a validation error beside its field on the way),
//! a member without the permission does not see the views, a platform admin retries a dead
//! job, and a forged cross-site form and a script in a ticket title both fail.
//!
//! It also takes the screenshots in docs/console.md (into `KEEL_SCREENSHOTS`, or a
//! temporary directory) and measures how long a list of 100 tickets takes to render, the
//! row printed with `-- --nocapture`.

use keel_tests::TestServer;
use keel_tests::webdriver::Browser;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("KEEL_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("keel-console-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{name}: not a real screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("screenshot written");
}

async fn sign_in(browser: &Browser, base: &str, tenant: &str, username: &str) {
    browser.open(&format!("{base}/console/sign-in")).await;
    browser.find("#tenant").await.type_text(tenant).await;
    browser.find("#username").await.type_text(username).await;
    browser.find("#password").await.type_text(PASSWORD).await;
    browser.find("button[type=submit]").await.click().await;
    shows(browser, "Signed in as").await;
}

async fn sign_out(browser: &Browser) {
    browser.find(".who button[type=submit]").await.click().await;
    shows(browser, "You have signed out.").await;
}

async fn ticket_status(s: &TestServer, token: &str, number: u64) -> Value {
    s.as_token(Some(token), Method::GET, &format!("/v1/plugins/helpdesk/tickets/{number}"), None).await.expect(200).body
        ["status"]
        .clone()
}

/// Waits (up to 10 s) for a ticket to reach `status`: a click's form post may still be on
/// its way when the driver answers.
async fn reaches(s: &TestServer, token: &str, number: u64, status: &str) {
    for _ in 0..100 {
        if ticket_status(s, token, number).await == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ticket {number} did not reach {status}: it is {}", ticket_status(s, token, number).await);
}

/// Waits (up to 10 s) for the page's main part to say `text`. A click's navigation may
/// replace the page between finding `main` and reading it: then it looks again.
async fn shows(browser: &Browser, text: &str) {
    for _ in 0..100 {
        if let Some(main) = browser.try_find("main").await
            && main.try_text().await.is_some_and(|t| t.contains(text))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never said {text:?}: {}", browser.source().await);
}

/// A page of another site on 127.0.0.1 (the same site for cookies, another origin) that
/// submits a form to the console as soon as it loads.
async fn forger(target: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let page = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"><input name=csrf value=guessed></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_run_a_helpdesk_from_the_console_in_a_real_browser() {
    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/relay", "fixtures/listener"]).await;
    let admin = s.tenant_with_token("acme", "tenant-admin").await;
    for (username, role) in [("ada", "tenant-admin"), ("ana", "agent"), ("bob", "member")] {
        let user = json!({ "username": username, "display_name": format!("{username} of Acme"), "password": PASSWORD, "role": role });
        s.as_token(Some(&admin), Method::POST, "/v1/tenants/acme/users", Some(user)).await.expect(201);
    }
    let root =
        json!({ "username": "root", "display_name": "Platform Admin", "password": PASSWORD, "role": "platform-admin" });
    s.post("/v1/tenants/default/users", root).await.expect(201);
    let base = s.base.clone();
    let browser = Browser::start(1280, 900).await;

    // The tenant admin switches the helpdesk on and makes agents able to work tickets.
    browser.open(&format!("{base}/console/sign-in")).await;
    screenshot(&browser, "sign-in").await;
    sign_in(&browser, &base, "acme", "ada").await;
    browser.open(&format!("{base}/console/tenants/acme/departments")).await;
    browser.find("button[aria-label='Switch on helpdesk']").await.click().await;
    shows(&browser, "The department is switched on.").await;
    screenshot(&browser, "departments").await;
    let on = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    assert!(on["items"].as_array().unwrap().iter().any(|p| p["id"] == "helpdesk" && p["enabled"] == true));
    browser.open(&format!("{base}/console/tenants/acme/roles")).await;
    browser.find("#role").await.type_text("agent").await;
    browser.find("[id='new--helpdesk.ticket.read']").await.click().await;
    browser.find("[id='new--helpdesk.ticket.write']").await.click().await;
    browser.find("[id='new--helpdesk.agent']").await.click().await;
    browser.find("form[aria-labelledby=new-role] button[type=submit]").await.click().await;
    shows(&browser, "The role's permissions are saved.").await;
    screenshot(&browser, "roles").await;
    let grants =
        s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/roles/agent/permissions", None).await.expect(200).body;
    assert_eq!(grants["permissions"], json!(["helpdesk.agent", "helpdesk.ticket.read", "helpdesk.ticket.write"]));

    // A forged form from another origin, sent by the browser with ada's cookie: refused,
    // and the helpdesk stays on.
    let forged = forger(format!("{base}/console/tenants/acme/departments/helpdesk/disable")).await;
    browser.open(&forged).await;
    shows(&browser, "did not come from this console").await;
    let still = s.as_token(Some(&admin), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    assert!(still["items"].as_array().unwrap().iter().any(|p| p["id"] == "helpdesk" && p["enabled"] == true));
    browser.open(&format!("{base}/console/")).await;
    sign_out(&browser).await;

    // The agent files a ticket through the helpdesk's declared form.
    sign_in(&browser, &base, "acme", "ana").await;
    browser.find("a[href='/console/apps/helpdesk']").await.click().await;
    browser.find("a[href='/console/apps/helpdesk/new-ticket']").await.click().await;
    // Blank (spaces pass the browser's `required`): the route's schema refuses it, beside
    // the field.
    browser.find("#title").await.type_text("   ").await;
    browser.find("main button[type=submit]").await.click().await;
    shows(&browser, "Some fields need attention").await;
    let error = browser.find("#title-error").await.text().await;
    assert_eq!(error, "must not be blank", "the title's message is beside it");
    let described = browser.run("return document.getElementById('title').getAttribute('aria-describedby')").await;
    assert_eq!(described, "title-error");
    screenshot(&browser, "form-error").await;
    let hostile = "<img src=x onerror=\"document.title='owned'\">Printer jams";
    browser.find("#title").await.clear().await;
    browser.find("#title").await.type_text(hostile).await;
    browser.find("#description").await.type_text("Every job since 9am.").await;
    browser.find("main button[type=submit]").await.click().await;
    shows(&browser, "Saved.").await;
    assert!(browser.url().await.contains("/console/apps/helpdesk/ticket?number=1"), "{}", browser.url().await);
    // The title is text: no image element, no script ran.
    assert_eq!(browser.find("h1").await.text().await, hostile);
    assert_eq!(browser.run("return document.querySelectorAll('main img').length").await, 0);
    assert_ne!(browser.run("return document.title").await, "owned");
    screenshot(&browser, "ticket").await;

    // Works it and resolves it, confirming the resolution.
    browser.find("form[action='/console/apps/helpdesk/ticket/actions/1?number=1'] button").await.click().await;
    reaches(&s, &admin, 1, "open").await;
    shows(&browser, "Done.").await;
    browser.find("a[href='/console/apps/helpdesk/ticket/actions/4?number=1']").await.click().await;
    shows(&browser, "Mark this ticket resolved?").await;
    assert_eq!(ticket_status(&s, &admin, 1).await, "open");
    browser.find("main button[type=submit]").await.click().await;
    reaches(&s, &admin, 1, "resolved").await;
    shows(&browser, "Done.").await;

    // A list of 100 tickets: how long until the browser has drawn it.
    for n in 2..=100 {
        let priority = ["P1", "P2", "P3", "P4"][n % 4];
        let ticket = json!({ "title": format!("Ticket {n}"), "priority": priority });
        s.as_token(Some(&admin), Method::POST, "/v1/plugins/helpdesk/tickets", Some(ticket)).await.expect(201);
    }
    let mut samples = Vec::new();
    for _ in 0..7 {
        browser.open(&format!("{base}/console/apps/helpdesk/tickets?limit=100")).await;
        let timing = browser
            .run(
                "const nav = performance.getEntriesByType('navigation')[0];
                 const paint = performance.getEntriesByName('first-contentful-paint')[0];
                 return { rows: document.querySelectorAll('tbody tr').length,
                          server: nav.responseStart - nav.requestStart,
                          paint: paint ? paint.startTime : nav.domContentLoadedEventEnd };",
            )
            .await;
        assert_eq!(timing["rows"], 100, "{timing}");
        samples.push((timing["paint"].as_f64().unwrap(), timing["server"].as_f64().unwrap()));
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (paint, server) = samples[samples.len() / 2];
    println!(
        "| console: list of 100 tickets, first contentful paint (median of 7) | {paint:.0} ms | server {server:.0} ms |"
    );
    assert!(paint > 0.0);
    screenshot(&browser, "tickets").await;
    browser.resize(390, 844).await;
    browser.open(&format!("{base}/console/apps/helpdesk/tickets")).await;
    screenshot(&browser, "tickets-phone").await;
    let overflow = browser.run("return document.documentElement.scrollWidth > window.innerWidth + 1").await;
    assert_eq!(overflow, false, "nothing is wider than a phone");
    browser.resize(1280, 900).await;
    browser.open(&format!("{base}/console/")).await;
    sign_out(&browser).await;

    // A member without the permission sees no helpdesk screens, even by address.
    sign_in(&browser, &base, "acme", "bob").await;
    assert!(browser.try_find("a[href='/console/apps/helpdesk']").await.is_none());
    browser.open(&format!("{base}/console/apps/helpdesk/tickets")).await;
    shows(&browser, "You do not have the permission this screen needs.").await;
    assert!(!browser.source().await.contains("Printer jams"));
    browser.open(&format!("{base}/console/")).await;
    sign_out(&browser).await;

    // The platform admin finds a dead job and retries it.
    let job = s.post("/v1/plugins/relay/jobs", json!({ "name": "fail" })).await.expect(202).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/tenants/default/jobs/{job}");
    loop {
        let body = s.eventually(&path, "a failed attempt", |b| b["job"]["status"] != "running").await;
        if body["job"]["status"] == "dead" {
            break;
        }
        s.advance_clock(5_000).await;
    }
    sign_in(&browser, &base, "default", "root").await;
    browser.open(&format!("{base}/console/tenants/default/jobs")).await;
    browser.find("#status option[value=dead]").await.click().await;
    browser.find("form.filters button[type=submit]").await.click().await;
    shows(&browser, &job).await;
    screenshot(&browser, "jobs").await;
    browser.find(&format!("button[aria-label='Retry {job}']")).await.click().await;
    shows(&browser, "The job is queued again").await;
    s.eventually(&path, "the retried job to run again", |b| b["runs"].as_array().is_some_and(|r| r.len() == 4)).await;
    browser.open(&format!("{base}/console/tenants")).await;
    screenshot(&browser, "tenants").await;
    // The health page: readiness and this host's figures, the helpdesk's calls among them.
    browser.open(&format!("{base}/console/health")).await;
    shows(&browser, "The database answers").await;
    assert!(browser.find("main").await.text().await.contains("helpdesk"));
    screenshot(&browser, "health").await;
    browser.quit().await;
}
