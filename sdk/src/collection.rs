//! Typed collections over the host's document storage.

use crate::bindings::keel::platform::storage::{self, Comparison, FindSpec, Predicate, SearchSpec, WriteCondition};
use crate::error::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// A collection of JSON documents of type `T`, declared in the plugin's manifest.
///
/// All access is scoped by the host to the caller's tenant and this plugin; writes become
/// visible to the same request at once and are committed when the handler returns.
///
/// ```no_run
/// use keel_sdk::{Collection, Error};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Note { text: String, tag: String }
///
/// const NOTES: Collection<Note> = Collection::new("notes");
///
/// # fn main() -> Result<(), Error> {
/// let v1 = NOTES.insert("n1", &Note { text: "hello".into(), tag: "home".into() })?; // 1
/// let mut note = NOTES.get("n1")?.expect("just written");
/// note.value.text = "hello again".into();
/// NOTES.update("n1", &note.value, note.version)?; // 409 if someone wrote in between
/// let page = NOTES.query().filter("tag", "home").limit(20).fetch()?; // `tag` is indexed
/// for item in &page.items {
///     println!("{} v{}: {}", item.key, item.version, item.value.text);
/// }
/// NOTES.delete("n1", Some(v1 + 1))?;
/// # Ok(()) }
/// ```
pub struct Collection<T> {
    name: &'static str,
    _type: PhantomData<fn() -> T>,
}

/// A stored value with its key and version (for optimistic concurrency).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The document key.
    pub key: String,
    /// The stored version; pass it to [`Collection::update`] to detect lost updates.
    pub version: u64,
    /// The decoded document.
    pub value: T,
}

/// One page of a query.
///
/// A page may hold fewer items than the limit, even none, while `next` is set: when its
/// documents are large (the read budget ends it) or the call itself deleted or moved many of
/// them. Page until `next` is `None`, never until a page comes back short.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The documents, in the query's order.
    pub items: Vec<Versioned<T>>,
    /// Cursor for the next page, if there is one.
    pub next: Option<String>,
}

impl<T: Serialize + DeserializeOwned> Collection<T> {
    /// Names a collection. `name` must be declared in `plugin.toml`.
    pub const fn new(name: &'static str) -> Self {
        Collection { name, _type: PhantomData }
    }

    /// The collection's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads one document.
    pub fn get(&self, key: &str) -> Result<Option<Versioned<T>>, Error> {
        match storage::get(self.name, key)? {
            None => Ok(None),
            Some(doc) => Ok(Some(decode(doc)?)),
        }
    }

    /// Reads the documents of several keys in one round trip, in the order of `keys` (`None`
    /// where there is none). At most 1000 keys; a `400` (`invalid`) if the documents found
    /// together pass one read's byte budget (4 MiB by default). Needs a host serving
    /// `keel:platform@0.1.5`.
    ///
    /// ```no_run
    /// # use keel_sdk::{Collection, Error};
    /// # const RATES: Collection<u32> = Collection::new("rates");
    /// # fn main() -> Result<(), Error> {
    /// let keys = ["alice", "bob"];
    /// let [alice, bob] = <[_; 2]>::try_from(RATES.get_many(&keys)?).expect("one per key");
    /// # let _ = (alice, bob); Ok(()) }
    /// ```
    pub fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Versioned<T>>>, Error> {
        let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_owned()).collect();
        storage::get_many(self.name, &keys)?.into_iter().map(|d| d.map(decode).transpose()).collect()
    }

    /// Creates a document; a `409 version-conflict` if the key exists. Returns the version (1).
    pub fn insert(&self, key: &str, value: &T) -> Result<u64, Error> {
        self.write(key, value, WriteCondition::Absent)
    }

    /// Replaces a document only if it is still at `version`; a `409 version-conflict`
    /// otherwise. Returns the new version.
    pub fn update(&self, key: &str, value: &T, version: u64) -> Result<u64, Error> {
        self.write(key, value, WriteCondition::Version(version))
    }

    /// Writes a document whatever is stored. Returns the new version.
    pub fn upsert(&self, key: &str, value: &T) -> Result<u64, Error> {
        self.write(key, value, WriteCondition::Any)
    }

    /// Deletes a document, only at `version` if one is given. Returns whether it existed.
    pub fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, Error> {
        let condition = version.map_or(WriteCondition::Any, WriteCondition::Version);
        Ok(storage::delete(self.name, key, condition)?)
    }

    /// Starts a query over this collection, ordered by key unless [`Query::order_by`] says otherwise.
    pub fn query(&self) -> Query<'_, T> {
        Query { collection: self, conditions: Vec::new(), order_by: None, cursor: None, limit: 0, descending: false }
    }

    /// Starts a full-text search over the fields this collection declares under `search` in
    /// `plugin.toml`: best match first, committed data only. `text` is words (all must occur),
    /// `"quoted phrases"` and prefixes (`refu*`, three letters or more); nothing else is
    /// syntax, so a user's text can be passed as it is. Read-only: a call that has written
    /// gets a `400` (`invalid`), and one that searched may not write. Needs a host serving
    /// `keel:platform@0.1.6`.
    ///
    /// ```no_run
    /// # use keel_sdk::{Collection, Error};
    /// # const CASES: Collection<serde_json::Value> = Collection::new("cases");
    /// # fn main() -> Result<(), Error> {
    /// // Open cases about a jammed printer, 20 a page (`open` is an indexed field).
    /// let page = CASES.search("printer jam*").eq("open", true).limit(20).fetch()?;
    /// # let _ = page; Ok(()) }
    /// ```
    pub fn search(&self, text: &str) -> Search<'_, T> {
        Search { collection: self, text: text.to_owned(), conditions: Vec::new(), cursor: None, limit: 0 }
    }

    fn write(&self, key: &str, value: &T, condition: WriteCondition) -> Result<u64, Error> {
        let body = serde_json::to_string(value)?;
        Ok(storage::put(self.name, key, &body, condition)?)
    }
}

fn decode<T: DeserializeOwned>(doc: storage::Document) -> Result<Versioned<T>, Error> {
    let value = serde_json::from_str(&doc.body).map_err(|e| {
        Error::internal("corrupt-document", format!("stored document `{}` does not decode: {e}", doc.key))
    })?;
    Ok(Versioned { key: doc.key, version: doc.version, value })
}

/// A query being built; run it with [`Query::fetch`].
///
/// Conditions name fields the manifest declares under `indexes`, and take values in the
/// text form of the field's type (`"2026-07-01"` for a `date`, `"12.50"` for a `decimal`).
/// A query can be ordered by one indexed field (then key); a range on that field bounds the
/// scan, and equality on the leading fields of a compound index ending with it selects that
/// index. See the plugin guide's "Queries" section for what runs fast.
///
/// ```no_run
/// # use keel_sdk::{Collection, Error};
/// # const TICKETS: Collection<serde_json::Value> = Collection::new("tickets");
/// # const EMPLOYEES: Collection<serde_json::Value> = Collection::new("employees");
/// # fn main() -> Result<(), Error> {
/// // Newest first, 25 a page, open P1 tickets only (both fields declared indexed).
/// let mut cursor: Option<String> = None;
/// loop {
///     let page = TICKETS.query().filter("status", "open").filter("priority", "P1")
///         .descending().limit(25).cursor(cursor.as_deref()).fetch()?;
///     // ... use page.items ...
///     match page.next { Some(next) => cursor = Some(next), None => break }
/// }
/// // Engineers hired before July, longest-serving first (`hired` is a `date` index, and
/// // `["department", "hired"]` a compound one).
/// let page = EMPLOYEES.query().eq("department", "engineering").lt("hired", "2026-07-01")
///     .ne("status", "left").order_by("hired").fetch()?;
/// # Ok(()) }
/// ```
pub struct Query<'a, T> {
    collection: &'a Collection<T>,
    conditions: Vec<Predicate>,
    order_by: Option<String>,
    cursor: Option<String>,
    limit: u32,
    descending: bool,
}

/// The conditions on indexed fields that queries and searches share.
macro_rules! conditions {
    () => {
        fn condition(mut self, field: &str, op: Comparison, value: impl ToString) -> Self {
            self.conditions.push(Predicate { field: field.into(), op, value: value.to_string() });
            self
        }
        /// `field` equals `value`.
        pub fn eq(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Eq, value)
        }
        /// `field` differs from `value`, or the document lacks it.
        pub fn ne(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Ne, value)
        }
        /// `field` is less than `value`.
        pub fn lt(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Lt, value)
        }
        /// `field` is at most `value`.
        pub fn le(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Le, value)
        }
        /// `field` is greater than `value`.
        pub fn gt(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Gt, value)
        }
        /// `field` is at least `value`.
        pub fn ge(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Ge, value)
        }
        /// `field` (of type `text` or `string`) begins with `value`.
        pub fn prefix(self, field: &str, value: impl ToString) -> Self {
            self.condition(field, Comparison::Prefix, value)
        }
    };
}

impl<T: Serialize + DeserializeOwned> Query<'_, T> {
    conditions!();
    /// Keeps documents whose indexed `field` equals `value` (the same as [`Query::eq`]).
    pub fn filter(self, field: &str, value: impl ToString) -> Self {
        self.eq(field, value)
    }
    /// Orders by the indexed `field`, then key; documents without the field are left out.
    pub fn order_by(mut self, field: &str) -> Self {
        self.order_by = Some(field.into());
        self
    }
    /// Continues after a previous page of the same query.
    pub fn cursor(mut self, cursor: Option<&str>) -> Self {
        self.cursor = cursor.map(str::to_owned);
        self
    }
    /// At most `limit` documents (the host caps it at 1000).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
    /// Largest first.
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }
    /// Runs the query.
    pub fn fetch(self) -> Result<Page<T>, Error> {
        let page = storage::find(&FindSpec {
            collection: self.collection.name.into(),
            conditions: self.conditions,
            order_by: self.order_by,
            cursor: self.cursor,
            limit: self.limit,
            descending: self.descending,
        })?;
        let items = page.documents.into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok(Page { items, next: page.next })
    }
}

/// A full-text search being built (see [`Collection::search`]); run it with [`Search::fetch`].
/// Conditions narrow it as they do a [`Query`]; the order is always best match first.
pub struct Search<'a, T> {
    collection: &'a Collection<T>,
    text: String,
    conditions: Vec<Predicate>,
    cursor: Option<String>,
    limit: u32,
}

impl<T: Serialize + DeserializeOwned> Search<'_, T> {
    conditions!();
    /// Continues after a previous page of the same search (the ranking is as it is now, so
    /// a document may move between pages while others are written).
    pub fn cursor(mut self, cursor: Option<&str>) -> Self {
        self.cursor = cursor.map(str::to_owned);
        self
    }
    /// At most `limit` documents (the host caps it at 100; 0 means 20).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
    /// Runs the search.
    pub fn fetch(self) -> Result<Page<T>, Error> {
        let page = storage::search(&SearchSpec {
            collection: self.collection.name.into(),
            query: self.text,
            conditions: self.conditions,
            cursor: self.cursor,
            limit: self.limit,
        })?;
        let items = page.documents.into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok(Page { items, next: page.next })
    }
}
