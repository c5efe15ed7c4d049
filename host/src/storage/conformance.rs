//! The behaviour every [`DocumentStore`] backend must have. Each backend's tests call
//! [`run_all`] on a fresh, empty store; a PostgreSQL backend passes the same suite.

use super::search::{QueryLimits, SearchField, SearchFields, parse_query};
use super::{
    Comparison, Condition, DocumentStore, Drive, KeyRange, Position, Predicate, Read, Scope, ScopeContents,
    SearchRange, StoreError, Write, WriteAudit, WriteOp,
};

fn audit() -> WriteAudit {
    WriteAudit {
        actor: "tok_conformance".into(),
        actor_name: "conformance".into(),
        request_id: "req_conformance".into(),
    }
}

fn scope(tenant: &str, plugin: &str) -> Scope {
    Scope { tenant: tenant.into(), plugin: plugin.into() }
}

fn put(collection: &str, key: &str, body: &str, condition: Condition, version: u64, index: &[(&str, &str)]) -> Write {
    Write {
        collection: collection.into(),
        key: key.into(),
        condition,
        version,
        op: WriteOp::Put {
            body: body.into(),
            index: index.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect(),
            search: None,
        },
    }
}

/// Equalities, the first driving the scan (key order), as a plugin's equality query runs.
fn range(collection: &str, filters: &[(&str, &str)], after: Option<&str>, limit: u32, descending: bool) -> KeyRange {
    let eq = |(f, v): &(&str, &str)| Predicate { index: f.to_string(), op: Comparison::Eq, value: v.to_string() };
    let drive = filters.first().map(|(f, v)| Drive::whole(f.to_string()).narrowed(Comparison::Eq, v));
    KeyRange {
        collection: collection.into(),
        drive,
        residual: filters.iter().skip(1).map(eq).collect(),
        after: after.map(|key| Position {
            entry: filters.first().map_or(String::new(), |(_, v)| v.to_string()),
            key: key.into(),
        }),
        limit,
        descending,
        max_bytes: usize::MAX,
        deadline: None,
    }
}

/// Runs every check; panics with the name of the first one that fails.
pub async fn run_all(store: &dyn DocumentStore) {
    put_then_get_round_trips(store).await;
    conditions_are_enforced_at_commit(store).await;
    a_failing_write_aborts_the_whole_batch(store).await;
    scans_filter_order_and_page(store).await;
    index_ranges_drive_scans_in_entry_order(store).await;
    tenants_and_plugins_are_isolated(store).await;
    get_many_reads_a_set_of_keys_of_one_scope(store).await;
    versions_from_pages_keys_in_byte_order(store).await;
    deletes_remove_documents_and_index_rows(store).await;
    purge_removes_only_that_plugin(store).await;
    a_scope_purge_removes_only_that_tenants_data_of_that_plugin(store).await;
    scope_contents_lists_collections_and_sequences_of_one_scope(store).await;
    sequences_count_per_tenant_and_plugin_and_move_past_imports(store).await;
    reads_current_says_whether_what_was_read_still_holds(store).await;
    search_finds_ranks_and_pages_within_its_scope(store).await;
    search_follows_updates_deletes_and_purges(store).await;
}

fn fields() -> SearchFields {
    SearchFields(vec![
        SearchField { path: "subject".into(), weight: 4 },
        SearchField { path: "body".into(), weight: 1 },
    ])
}

/// A put into a searchable collection, with its text as the unit of work extracts it.
fn put_text(collection: &str, key: &str, body: serde_json::Value, index: &[(&str, &str)]) -> Write {
    let mut w = put(collection, key, &body.to_string(), Condition::Any, 1, index);
    if let WriteOp::Put { search, .. } = &mut w.op {
        *search = Some(fields().extract(&body));
    }
    w
}

fn search_for(collection: &str, query: &str, residual: Vec<Predicate>, limit: u32) -> SearchRange {
    SearchRange {
        collection: collection.into(),
        terms: parse_query(query, QueryLimits::default()).unwrap(),
        fields: fields(),
        residual,
        offset: 0,
        limit,
        max_bytes: usize::MAX,
        deadline: None,
    }
}

async fn found(store: &dyn DocumentStore, s: &Scope, range: &SearchRange) -> Vec<String> {
    store.search(s, range).await.unwrap().rows.into_iter().flatten().map(|d| d.key).collect()
}

async fn search_finds_ranks_and_pages_within_its_scope(store: &dyn DocumentStore) {
    use serde_json::json;
    let s = scope("search-a", "crm");
    let mut writes = vec![
        put_text(
            "cases",
            "body-only",
            json!({ "subject": "Order", "body": "the printer is jammed" }),
            &[("open", "true")],
        ),
        put_text(
            "cases",
            "in-subject",
            json!({ "subject": "Printer jammed", "body": "see above" }),
            &[("open", "false")],
        ),
        put_text("cases", "unrelated", json!({ "subject": "Invoice", "body": "wrong amount" }), &[("open", "true")]),
        put_text("cases", "accents", json!({ "subject": "Crème brûlée", "body": "jane.doe@acme.com wrote" }), &[]),
    ];
    for i in 0..7 {
        writes.push(put_text("cases", &format!("bulk-{i}"), json!({ "subject": "toner", "body": "toner low" }), &[]));
    }
    store.commit(&s, &writes, 1, &audit()).await.unwrap();
    // The same words in another tenant, plugin and collection: never found from here.
    let same = |c: &str, k: &str| put_text(c, k, json!({ "subject": "Printer jammed", "body": "printer" }), &[]);
    store.commit(&scope("search-b", "crm"), &[same("cases", "theirs")], 1, &audit()).await.unwrap();
    store.commit(&scope("search-a", "other"), &[same("cases", "other-plugin")], 1, &audit()).await.unwrap();
    store.commit(&s, &[same("notes", "other-collection")], 1, &audit()).await.unwrap();

    let printer = search_for("cases", "printer jammed", vec![], 10);
    assert_eq!(found(store, &s, &printer).await, ["in-subject", "body-only"], "search: weighted field first");
    assert_eq!(found(store, &scope("search-b", "crm"), &printer).await, ["theirs"], "search: tenant isolation");
    assert_eq!(found(store, &scope("search-a", "other"), &printer).await, ["other-plugin"], "search: plugin isolation");
    assert_eq!(found(store, &s, &search_for("notes", "printer", vec![], 10)).await, ["other-collection"]);
    assert!(found(store, &scope("search-c", "crm"), &printer).await.is_empty(), "search: a tenant with nothing");
    // Diacritics, prefixes, phrases and addresses.
    assert_eq!(found(store, &s, &search_for("cases", "creme brulee", vec![], 10)).await, ["accents"]);
    assert_eq!(found(store, &s, &search_for("cases", "jam*", vec![], 10)).await.len(), 2, "search: prefix");
    assert_eq!(found(store, &s, &search_for("cases", "jane.doe@acme.com", vec![], 10)).await, ["accents"]);
    assert!(found(store, &s, &search_for("cases", "\"jammed printer\"", vec![], 10)).await.is_empty(), "phrase order");
    // Conditions narrow, as in `find`.
    let open = Predicate { index: "open".into(), op: Comparison::Eq, value: "true".into() };
    assert_eq!(found(store, &s, &search_for("cases", "printer", vec![open.clone()], 10)).await, ["body-only"]);
    let not_open = Predicate { op: Comparison::Ne, ..open };
    assert_eq!(found(store, &s, &search_for("cases", "printer", vec![not_open], 10)).await, ["in-subject"]);
    // Pages chained by position give the one big page, in order, each key once.
    let all = found(store, &s, &search_for("cases", "toner", vec![], 100)).await;
    assert_eq!(all.len(), 7);
    let mut chained = Vec::new();
    let mut range = search_for("cases", "toner", vec![], 3);
    loop {
        let page = store.search(&s, &range).await.unwrap();
        let taken = page.rows.len() as u32;
        chained.extend(page.rows.into_iter().flatten().map(|d| d.key));
        if taken < 3 {
            break;
        }
        range.offset += taken;
    }
    assert_eq!(chained, all, "search: pages chain");
    // A byte budget ends a page early, after the document that reaches it.
    let mut small = search_for("cases", "toner", vec![], 100);
    small.max_bytes = 1;
    let page = store.search(&s, &small).await.unwrap();
    assert_eq!((page.rows.len(), page.truncated), (1, true));

    // The order of a tenant's matches depends on its own documents only: equal statistics
    // in tenant r (both words in both documents) give a tie, broken the same way however
    // common one of the words becomes in another tenant.
    let r = scope("search-r", "crm");
    store
        .commit(
            &r,
            &[
                put_text("cases", "more-apples", json!({ "subject": "", "body": "apple apple banana" }), &[]),
                put_text("cases", "more-bananas", json!({ "subject": "", "body": "apple banana banana" }), &[]),
            ],
            1,
            &audit(),
        )
        .await
        .unwrap();
    let fruit = search_for("cases", "apple banana", vec![], 10);
    let before = found(store, &r, &fruit).await;
    // (Were statistics shared, apples everywhere would make `banana` the rarer word and put
    // the document with more bananas first.)
    let apples: Vec<Write> = (0..50)
        .map(|i| put_text("cases", &format!("a{i}"), json!({ "subject": "apple", "body": "apple pie" }), &[]))
        .collect();
    store.commit(&scope("search-other", "crm"), &apples, 1, &audit()).await.unwrap();
    store.commit(&scope("search-r", "other-plugin"), &apples, 1, &audit()).await.unwrap();
    assert_eq!(before, ["more-apples", "more-bananas"], "a tie is broken by the older document");
    assert_eq!(found(store, &r, &fruit).await, before, "search: another scope's words moved the ranking");
}

async fn search_follows_updates_deletes_and_purges(store: &dyn DocumentStore) {
    use serde_json::json;
    let s = scope("search-u", "crm");
    let doc = |subject: &str| put_text("cases", "c1", json!({ "subject": subject, "body": "" }), &[]);
    store.commit(&s, &[doc("kettle broken")], 1, &audit()).await.unwrap();
    let kettle = search_for("cases", "kettle", vec![], 10);
    assert_eq!(found(store, &s, &kettle).await, ["c1"]);
    // A rewrite with the same text (a status change) is still found; a new text replaces the old.
    store.commit(&s, &[doc("kettle broken")], 2, &audit()).await.unwrap();
    assert_eq!(found(store, &s, &kettle).await, ["c1"], "search: unchanged rewrite");
    store.commit(&s, &[doc("toaster broken")], 3, &audit()).await.unwrap();
    assert!(found(store, &s, &kettle).await.is_empty(), "search: old text gone");
    assert_eq!(found(store, &s, &search_for("cases", "toaster", vec![], 10)).await, ["c1"]);
    // A document whose fields are all empty is not found, and a delete takes it out.
    store.commit(&s, &[doc("")], 4, &audit()).await.unwrap();
    assert!(found(store, &s, &search_for("cases", "toaster", vec![], 10)).await.is_empty());
    store.commit(&s, &[doc("toaster again")], 5, &audit()).await.unwrap();
    let w = Write { op: WriteOp::Delete, ..doc("") };
    store.commit(&s, &[w], 6, &audit()).await.unwrap();
    assert!(found(store, &s, &search_for("cases", "toaster", vec![], 10)).await.is_empty(), "search: deleted");
    // A purge takes the plugin's rows out of every tenant; a new document is found again.
    store.commit(&s, &[doc("blender")], 7, &audit()).await.unwrap();
    store.purge_plugin("crm").await.unwrap();
    assert!(found(store, &s, &search_for("cases", "blender", vec![], 10)).await.is_empty(), "search: purged");
    assert!(found(store, &scope("search-a", "crm"), &search_for("cases", "printer", vec![], 10)).await.is_empty());
    assert_eq!(found(store, &scope("search-a", "other"), &search_for("cases", "printer", vec![], 10)).await.len(), 1);
}

async fn reads_current_says_whether_what_was_read_still_holds(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    store.commit(&s, &[put("current", "k", "{}", Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
    let seen =
        |version: Option<u64>, key: &str| Read::Document { collection: "current".into(), key: key.into(), version };
    async fn check(store: &dyn DocumentStore, s: &Scope, reads: &[Read]) -> bool {
        store.reads_current(s, reads).await.unwrap()
    }
    assert!(check(store, &s, &[]).await, "nothing read: current");
    assert!(check(store, &s, &[seen(Some(1), "k"), seen(None, "absent")]).await, "as read");
    assert!(!check(store, &s, &[seen(Some(1), "k"), seen(Some(3), "k")]).await, "a version never seen");
    // A write moves the version: what was read before no longer holds.
    store.commit(&s, &[put("current", "k", "{}", Condition::Version(1), 2, &[])], 1, &audit()).await.unwrap();
    assert!(!check(store, &s, &[seen(Some(1), "k")]).await, "the document moved on");
    store.commit(&s, &[put("current", "absent", "{}", Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
    assert!(!check(store, &s, &[seen(None, "absent")]).await, "a document read as absent appeared");
    // The scope is the reader's: another tenant's document of the same key is not it.
    assert!(store.reads_current(&scope("t2", "p1"), &[seen(None, "k")]).await.unwrap());
}

async fn put_then_get_round_trips(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    let v = store.commit(&s, &[put("c", "k", r#"{"a":1}"#, Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
    assert_eq!(v, vec![1], "put_then_get_round_trips: first version is 1");
    let doc = store.get(&s, "c", "k").await.unwrap().expect("put_then_get_round_trips: document is stored");
    assert_eq!((doc.version, doc.body.as_str()), (1, r#"{"a":1}"#));
    let v = store.commit(&s, &[put("c", "k", r#"{"a":2}"#, Condition::Version(1), 2, &[])], 2, &audit()).await.unwrap();
    assert_eq!(v, vec![2], "put_then_get_round_trips: versions grow by one");
    assert!(store.get(&s, "c", "missing").await.unwrap().is_none());
}

async fn conditions_are_enforced_at_commit(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    store.commit(&s, &[put("cond", "k", "{}", Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
    let stale = store.commit(&s, &[put("cond", "k", "{}", Condition::Version(7), 8, &[])], 1, &audit()).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "stale version must conflict: {stale:?}");
    let exists = store.commit(&s, &[put("cond", "k", "{}", Condition::Absent, 1, &[])], 1, &audit()).await;
    assert!(matches!(exists, Err(StoreError::Conflict { .. })), "create over an existing key must conflict");
    // An unconditional write never moves the version backwards.
    let v = store.commit(&s, &[put("cond", "k", "{}", Condition::Any, 1, &[])], 1, &audit()).await.unwrap();
    assert_eq!(v, vec![2]);
}

async fn a_failing_write_aborts_the_whole_batch(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    let batch =
        [put("atomic", "a", "{}", Condition::Absent, 1, &[]), put("atomic", "b", "{}", Condition::Version(3), 4, &[])];
    assert!(store.commit(&s, &batch, 1, &audit()).await.is_err());
    assert!(store.get(&s, "atomic", "a").await.unwrap().is_none(), "no partial batch may remain");
}

async fn scans_filter_order_and_page(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    let writes: Vec<_> = (1..=5)
        .map(|i| {
            let colour = if i % 2 == 0 { "red" } else { "blue" };
            put(
                "scan",
                &format!("k{i}"),
                &format!(r#"{{"i":{i}}}"#),
                Condition::Absent,
                1,
                &[("colour", colour), ("size", "L")],
            )
        })
        .collect();
    store.commit(&s, &writes, 1, &audit()).await.unwrap();
    let keys = |docs: Vec<(Position, super::StoredDocument)>| docs.into_iter().map(|(_, d)| d.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.scan(&s, &range("scan", &[], None, 10, false)).await.unwrap()),
        ["k1", "k2", "k3", "k4", "k5"]
    );
    assert_eq!(keys(store.scan(&s, &range("scan", &[], None, 2, true)).await.unwrap()), ["k5", "k4"]);
    assert_eq!(keys(store.scan(&s, &range("scan", &[], Some("k2"), 2, false)).await.unwrap()), ["k3", "k4"]);
    assert_eq!(keys(store.scan(&s, &range("scan", &[], Some("k4"), 10, true)).await.unwrap()), ["k3", "k2", "k1"]);
    assert_eq!(
        keys(store.scan(&s, &range("scan", &[("colour", "red")], None, 10, false)).await.unwrap()),
        ["k2", "k4"]
    );
    assert_eq!(
        keys(
            store.scan(&s, &range("scan", &[("colour", "blue"), ("size", "L")], Some("k1"), 10, false)).await.unwrap()
        ),
        ["k3", "k5"]
    );
    assert!(store.scan(&s, &range("scan", &[("colour", "green")], None, 10, false)).await.unwrap().is_empty());
}

async fn index_ranges_drive_scans_in_entry_order(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    // Entries as the host writes them (already in index text); `n` sorts as text here.
    let rows = [
        ("a", "n3", Some("x")),
        ("b", "n1", Some("y")),
        ("c", "n2", None),
        ("d", "n2", Some("x")),
        ("e", "m9", Some("x")),
    ];
    let writes: Vec<_> = rows
        .iter()
        .map(|(key, n, tag)| {
            let mut index = vec![("n", *n)];
            index.extend(tag.map(|t| ("tag", t)));
            put("ranges", key, "{}", Condition::Absent, 1, &index)
        })
        .collect();
    store.commit(&s, &writes, 1, &audit()).await.unwrap();
    let s = &s;
    let scan = |drive: Drive, residual: Vec<Predicate>, after: Option<Position>, descending: bool| {
        let range = KeyRange {
            collection: "ranges".into(),
            drive: Some(drive),
            residual,
            after,
            limit: 10,
            descending,
            max_bytes: usize::MAX,
            deadline: None,
        };
        async move { store.scan(s, &range).await.unwrap().into_iter().map(|(p, d)| (p.entry, d.key)).collect::<Vec<_>>() }
    };
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(e, k)| (e.to_string(), k.to_string())).collect::<Vec<_>>();
    let n = || Drive::whole("n".into());
    // In entry order, then key order; bounds inclusive or not as asked.
    assert_eq!(
        scan(n().narrowed(Comparison::Ge, "n1").narrowed(Comparison::Lt, "n3"), vec![], None, false).await,
        pairs(&[("n1", "b"), ("n2", "c"), ("n2", "d")]),
        "index_ranges: ge/lt"
    );
    assert_eq!(
        scan(n().narrowed(Comparison::Gt, "n1"), vec![], None, true).await,
        pairs(&[("n3", "a"), ("n2", "d"), ("n2", "c")]),
        "index_ranges: descending"
    );
    assert_eq!(scan(n().narrowed(Comparison::Prefix, "n"), vec![], None, false).await.len(), 4, "index_ranges: prefix");
    // Resuming after a position inside a run of equal entries.
    let after = Position { entry: "n2".into(), key: "c".into() };
    assert_eq!(
        scan(n(), vec![], Some(after), false).await,
        pairs(&[("n2", "d"), ("n3", "a")]),
        "index_ranges: after a position"
    );
    // Residual conditions: equality, and not-equal keeping documents without the field.
    let tag = |op, v: &str| Predicate { index: "tag".into(), op, value: v.into() };
    assert_eq!(
        scan(n(), vec![tag(Comparison::Eq, "x")], None, false).await,
        pairs(&[("m9", "e"), ("n2", "d"), ("n3", "a")]),
        "index_ranges: residual eq"
    );
    assert_eq!(
        scan(n(), vec![tag(Comparison::Ne, "x")], None, false).await,
        pairs(&[("n1", "b"), ("n2", "c")]),
        "index_ranges: residual ne"
    );
    assert_eq!(
        scan(n(), vec![tag(Comparison::Gt, "x")], None, false).await,
        pairs(&[("n1", "b")]),
        "index_ranges: residual range"
    );
}

async fn tenants_and_plugins_are_isolated(store: &dyn DocumentStore) {
    let a = scope("iso-a", "p1");
    store
        .commit(&a, &[put("c", "shared-key", r#"{"owner":"a"}"#, Condition::Absent, 1, &[("f", "x")])], 1, &audit())
        .await
        .unwrap();
    for other in [scope("iso-b", "p1"), scope("iso-a", "p2")] {
        assert!(store.get(&other, "c", "shared-key").await.unwrap().is_none(), "{other:?} must not see iso-a/p1 data");
        assert!(store.scan(&other, &range("c", &[], None, 10, false)).await.unwrap().is_empty());
        assert!(store.scan(&other, &range("c", &[("f", "x")], None, 10, false)).await.unwrap().is_empty());
        // The same key in another scope is a different document.
        assert_eq!(
            store
                .commit(&other, &[put("c", "shared-key", "{}", Condition::Absent, 1, &[])], 1, &audit())
                .await
                .unwrap(),
            vec![1]
        );
    }
    assert_eq!(store.get(&a, "c", "shared-key").await.unwrap().unwrap().body, r#"{"owner":"a"}"#);
}

async fn get_many_reads_a_set_of_keys_of_one_scope(store: &dyn DocumentStore) {
    let s = scope("many", "p1");
    let writes: Vec<Write> = (0..600)
        .map(|i| put("m", &format!("k{i:03}"), &format!(r#"{{"i":{i}}}"#), Condition::Absent, 1, &[]))
        .collect();
    store.commit(&s, &writes, 1, &audit()).await.unwrap();
    store
        .commit(&scope("many", "p2"), &[put("m", "other", "{}", Condition::Absent, 1, &[])], 1, &audit())
        .await
        .unwrap();
    // More keys than one statement binds, some absent, one of another plugin.
    let mut keys: Vec<String> = (0..600).step_by(2).map(|i| format!("k{i:03}")).collect();
    keys.extend(["nope".to_string(), "other".to_string()]);
    keys.extend((600..900).map(|i| format!("k{i:03}")));
    let mut found = store.get_many(&s, "m", &keys, usize::MAX, None).await.unwrap();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(found.len(), 300);
    assert_eq!(found[1].key, "k002");
    assert_eq!(found[1].body, r#"{"i":2}"#);
    assert_eq!(found[1].version, 1);
    assert!(store.get_many(&s, "m", &[], usize::MAX, None).await.unwrap().is_empty());
    // It stops after the document that reaches the byte budget (each is 4 + 7 or 8 bytes).
    let stopped = store.get_many(&s, "m", &keys, 30, None).await.unwrap();
    assert_eq!(stopped.len(), 3, "{stopped:?}");
    let past = std::time::Instant::now() - std::time::Duration::from_millis(1);
    assert!(matches!(store.get_many(&s, "m", &keys, usize::MAX, Some(past)).await, Err(StoreError::Interrupted)));
}

async fn versions_from_pages_keys_in_byte_order(store: &dyn DocumentStore) {
    let s = scope("ahead", "p1");
    // Byte order: upper case before lower, and "b" before "b-2" before "bb".
    let writes: Vec<Write> =
        ["a", "b", "b-2", "bb", "B", "c"].iter().map(|k| put("v", k, "{}", Condition::Absent, 1, &[])).collect();
    store.commit(&s, &writes, 1, &audit()).await.unwrap();
    store.commit(&s, &[put("v", "b", "{}", Condition::Version(1), 2, &[])], 1, &audit()).await.unwrap();
    store
        .commit(&scope("ahead", "p2"), &[put("v", "b-1", "{}", Condition::Absent, 1, &[])], 1, &audit())
        .await
        .unwrap();
    let Some(page) = store.versions_from(&s, "v", "b", 3).await.unwrap() else {
        return; // This backend reads one key at a time.
    };
    assert_eq!(page, [("b".to_owned(), 2), ("b-2".to_owned(), 1), ("bb".to_owned(), 1)]);
    let rest = store.versions_from(&s, "v", "b-0", 10).await.unwrap().unwrap();
    assert_eq!(rest.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b-2", "bb", "c"]);
    assert!(store.versions_from(&s, "v", "d", 10).await.unwrap().unwrap().is_empty());
    assert!(store.versions_from(&s, "other", "", 10).await.unwrap().unwrap().is_empty());
}

async fn deletes_remove_documents_and_index_rows(store: &dyn DocumentStore) {
    let s = scope("t1", "p1");
    store.commit(&s, &[put("del", "k", "{}", Condition::Absent, 1, &[("f", "v")])], 1, &audit()).await.unwrap();
    let delete = Write {
        collection: "del".into(),
        key: "k".into(),
        condition: Condition::Version(1),
        version: 0,
        op: WriteOp::Delete,
    };
    store.commit(&s, &[delete], 2, &audit()).await.unwrap();
    assert!(store.get(&s, "del", "k").await.unwrap().is_none());
    assert!(store.scan(&s, &range("del", &[("f", "v")], None, 10, false)).await.unwrap().is_empty());
}

async fn purge_removes_only_that_plugin(store: &dyn DocumentStore) {
    let keep = scope("t1", "keeper");
    let gone = scope("t1", "goner");
    store.commit(&keep, &[put("c", "k", "{}", Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
    store.commit(&gone, &[put("c", "k", "{}", Condition::Absent, 1, &[("f", "v")])], 1, &audit()).await.unwrap();
    assert_eq!(store.purge_plugin("goner").await.unwrap(), 1);
    assert!(store.get(&gone, "c", "k").await.unwrap().is_none());
    assert!(store.get(&keep, "c", "k").await.unwrap().is_some());
}

async fn scope_contents_lists_collections_and_sequences_of_one_scope(store: &dyn DocumentStore) {
    let mine = scope("contents-a", "crm");
    assert_eq!(store.scope_contents(&mine).await.unwrap(), ScopeContents::default(), "an empty scope");
    // Collections in byte order whatever order they were written in, each once however
    // many documents it holds; another tenant's and plugin's are not listed.
    let writes = [
        put("zeta", "k1", "{}", Condition::Absent, 1, &[]),
        put("Alpha", "k1", "{}", Condition::Absent, 1, &[]),
        put("alpha", "k1", "{}", Condition::Absent, 1, &[]),
        put("alpha", "k2", "{}", Condition::Absent, 1, &[]),
    ];
    store.commit(&mine, &writes, 1, &audit()).await.unwrap();
    for other in [scope("contents-b", "crm"), scope("contents-a", "hr")] {
        store.commit(&other, &[put("other", "k", "{}", Condition::Absent, 1, &[])], 1, &audit()).await.unwrap();
        store.next_in_sequence(&other, "other", None).await.unwrap();
    }
    store.next_in_sequence(&mine, "ticket", Some(41)).await.unwrap();
    store.next_in_sequence(&mine, "invoice", None).await.unwrap();
    let contents = store.scope_contents(&mine).await.unwrap();
    assert_eq!(contents.collections, ["Alpha", "alpha", "zeta"], "scope_contents: collections");
    assert_eq!(
        contents.sequences,
        [("invoice".to_owned(), 1), ("ticket".to_owned(), 42)],
        "scope_contents: sequences with their last values"
    );
    // A collection whose last document is deleted is no longer listed.
    let delete = Write {
        collection: "zeta".into(),
        key: "k1".into(),
        condition: Condition::Any,
        version: 0,
        op: WriteOp::Delete,
    };
    store.commit(&mine, &[delete], 2, &audit()).await.unwrap();
    assert_eq!(store.scope_contents(&mine).await.unwrap().collections, ["Alpha", "alpha"]);
}

async fn a_scope_purge_removes_only_that_tenants_data_of_that_plugin(store: &dyn DocumentStore) {
    use serde_json::json;
    let gone = scope("purge-a", "crm");
    let other_tenant = scope("purge-b", "crm");
    let other_plugin = scope("purge-a", "hr");
    for s in [&gone, &other_tenant, &other_plugin] {
        let writes = [
            put("c", "k1", "{}", Condition::Absent, 1, &[("f", "v")]),
            put("c", "k2", "{}", Condition::Absent, 1, &[("f", "v")]),
            put_text("cases", "c1", json!({ "subject": "kettle", "body": "" }), &[]),
        ];
        store.commit(s, &writes, 1, &audit()).await.unwrap();
        assert_eq!(store.next_in_sequence(s, "ticket", None).await.unwrap(), 1);
    }
    let before: Vec<_> = store.usage("purge-a").await.unwrap();
    assert_eq!(store.purge_scope(&gone).await.unwrap(), 3, "purge_scope: counts the documents");
    assert!(store.get(&gone, "c", "k1").await.unwrap().is_none(), "purge_scope: documents gone");
    assert!(store.scan(&gone, &range("c", &[("f", "v")], None, 10, false)).await.unwrap().is_empty(), "index gone");
    let kettle = search_for("cases", "kettle", vec![], 10);
    assert!(found(store, &gone, &kettle).await.is_empty(), "purge_scope: full-text rows gone");
    assert_eq!(store.next_in_sequence(&gone, "ticket", None).await.unwrap(), 1, "purge_scope: sequences restart");
    // Nothing of another tenant or plugin moved.
    for s in [&other_tenant, &other_plugin] {
        assert_eq!(store.scan(s, &range("c", &[("f", "v")], None, 10, false)).await.unwrap().len(), 2, "{s:?}");
        assert_eq!(found(store, s, &kettle).await, ["c1"], "{s:?}");
        assert_eq!(store.next_in_sequence(s, "ticket", None).await.unwrap(), 2, "{s:?}");
    }
    let after = store.usage("purge-a").await.unwrap();
    assert!(after.iter().all(|(plugin, _)| plugin != "crm"), "purge_scope: its usage goes: {after:?}");
    assert_eq!(
        after.iter().find(|(plugin, _)| plugin == "hr").map(|(_, u)| u.documents),
        before.iter().find(|(plugin, _)| plugin == "hr").map(|(_, u)| u.documents),
        "purge_scope: the other plugin's usage is kept"
    );
    // And the store works on for the purged scope.
    store.commit(&gone, &[put("c", "k1", "{}", Condition::Absent, 1, &[])], 2, &audit()).await.unwrap();
    assert!(store.get(&gone, "c", "k1").await.unwrap().is_some());
}

async fn sequences_count_per_tenant_and_plugin_and_move_past_imports(store: &dyn DocumentStore) {
    let (a, b, other) = (scope("t1", "seq"), scope("t2", "seq"), scope("t1", "seq-other"));
    assert_eq!(store.next_in_sequence(&a, "ticket", None).await.unwrap(), 1);
    assert_eq!(store.next_in_sequence(&a, "ticket", None).await.unwrap(), 2);
    assert_eq!(store.next_in_sequence(&a, "invoice", None).await.unwrap(), 1, "per name");
    assert_eq!(store.next_in_sequence(&b, "ticket", None).await.unwrap(), 1, "per tenant");
    assert_eq!(store.next_in_sequence(&other, "ticket", None).await.unwrap(), 1, "per plugin");
    // Moving past imported numbers: never backwards, never a repeat.
    assert_eq!(store.next_in_sequence(&a, "ticket", Some(500)).await.unwrap(), 501);
    assert_eq!(store.next_in_sequence(&a, "ticket", Some(10)).await.unwrap(), 502);
    assert_eq!(store.next_in_sequence(&a, "fresh", Some(41)).await.unwrap(), 42);
    // The end of the range is refused, never wrapped or repeated.
    let top = i64::MAX as u64;
    assert_eq!(store.next_in_sequence(&a, "edge", Some(top - 1)).await.unwrap(), top);
    assert!(matches!(store.next_in_sequence(&a, "edge", None).await, Err(StoreError::SequenceExhausted { .. })));
    assert!(matches!(
        store.next_in_sequence(&a, "far", Some(u64::MAX)).await,
        Err(StoreError::SequenceExhausted { .. })
    ));
    // A purged plugin's sequences start again.
    store.purge_plugin("seq-other").await.unwrap();
    assert_eq!(store.next_in_sequence(&other, "ticket", None).await.unwrap(), 1);
}
