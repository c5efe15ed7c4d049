//! The API contract: department routes in OpenAPI, per tenant, with the schemas their
//! manifests declare.

use keel_tests::TestServer;
use serde_json::Value;

/// Every `$ref` in `doc` points at something in it.
fn dangling_refs(doc: &Value) -> Vec<String> {
    fn walk(node: &Value, doc: &Value, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref")
                    && target.strip_prefix('#').and_then(|p| doc.pointer(p)).is_none()
                {
                    out.push(target.clone());
                }
                map.values().for_each(|v| walk(v, doc, out));
            }
            Value::Array(list) => list.iter().for_each(|v| walk(v, doc, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, doc, &mut out);
    out
}

#[tokio::test]
async fn the_openapi_document_shows_the_departments_the_callers_tenant_has_on() {
    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/hostile"]).await;
    let doc = s.get("/v1/openapi.json").await.expect(200).body;
    let tickets = &doc["paths"]["/v1/plugins/helpdesk/tickets"];
    let filing = &tickets["post"];
    assert_eq!(
        filing["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/helpdesk.NewTicket"
    );
    assert_eq!(
        filing["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/helpdesk.Ticket"
    );
    assert_eq!(filing["x-keel-permission"], "helpdesk.ticket.write");
    for status in ["400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503", "504"] {
        assert!(filing["responses"].get(status).is_some(), "POST /tickets does not declare {status}");
    }
    let new_ticket = &doc["components"]["schemas"]["helpdesk.NewTicket"];
    assert_eq!(new_ticket["required"], serde_json::json!(["title"]));
    assert_eq!(new_ticket["properties"]["title"]["$ref"], "#/components/schemas/helpdesk.Title");
    let listing = &tickets["get"]["parameters"];
    let limit = listing.as_array().unwrap().iter().find(|p| p["name"] == "limit").expect("limit is a parameter");
    assert_eq!(
        (limit["in"].as_str(), limit["schema"]["$ref"].as_str()),
        (Some("query"), Some("#/components/schemas/helpdesk.Limit"))
    );
    let number = &doc["paths"]["/v1/plugins/helpdesk/tickets/{number}"]["get"]["parameters"][0];
    assert_eq!((number["name"].as_str(), number["required"].as_bool()), (Some("number"), Some(true)));
    // A plugin without schemas is listed with generic bodies.
    let noop = &doc["paths"]["/v1/plugins/hostile/noop"]["get"];
    assert_eq!(noop["responses"]["200"]["content"]["application/json"]["schema"], serde_json::json!({}));
    assert_eq!(dangling_refs(&doc), Vec::<String>::new());
    let operation_ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str()))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let repeated: Vec<&str> = operation_ids.iter().copied().filter(|id| !seen.insert(*id)).collect();
    assert_eq!(repeated, Vec::<&str>::new(), "operation ids are unique");

    // Without a token: the platform only. A tenant without the helpdesk: not the helpdesk.
    let anonymous = s.anonymous("/v1/openapi.json", None).await.expect(200).body;
    assert!(anonymous["paths"].get("/v1/plugins/helpdesk/tickets").is_none());
    assert!(anonymous["paths"].get("/v1/admin/plugins").is_some());
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    let theirs = s.as_token(Some(&globex), reqwest::Method::GET, "/v1/openapi.json", None).await.expect(200).body;
    assert!(theirs["paths"].get("/v1/plugins/helpdesk/tickets").is_none());
    assert!(theirs["components"]["schemas"].get("helpdesk.NewTicket").is_none());
    s.anonymous("/v1/openapi.json", Some("Bearer nope")).await.expect_problem(401, "malformed-token");
}

#[tokio::test]
async fn each_department_serves_its_own_document_at_the_version_the_tenant_runs() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let doc = s.get("/v1/plugins/helpdesk/openapi.json").await.expect(200).body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], s.get("/v1/admin/plugins/helpdesk").await.expect(200).body["version"]);
    assert!(doc["paths"]["/v1/plugins/helpdesk/business-hours"].get("put").is_some());
    assert!(doc["paths"].get("/v1/admin/plugins").is_none(), "only the department's own routes");
    assert_eq!(dangling_refs(&doc), Vec::<String>::new());
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    let path = "/v1/plugins/helpdesk/openapi.json";
    s.as_token(Some(&globex), reqwest::Method::GET, path, None).await.expect_problem(404, "plugin-not-found");
    s.anonymous(path, None).await.expect_problem(401, "missing-token");
}
