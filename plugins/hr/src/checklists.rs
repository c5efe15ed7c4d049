//! Onboarding and offboarding checklists: templates per tenant (items with an owner and a
//! due day counted from the start date or the last day), one instance per hire or departure,
//! ticked off item by item by whoever owns each item; overdue items show.

use crate::employee::{Date, Employee};
use crate::{MANAGE, current, invalid, today};
use keel_sdk::services::has_permission;
use keel_sdk::{Collection, Error, Request, Response, Sequence};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TEMPLATES: Collection<Template> = Collection::new("checklist_templates");
const CHECKLISTS: Collection<Checklist> = Collection::new("checklists");
const CHECKLIST_NUMBERS: Sequence = Sequence::new("checklist");

const MAX_TEMPLATES: u32 = 50;
const MAX_ITEMS: usize = 100;
/// How far before or after the start an item may fall due.
const MAX_OFFSET_DAYS: i32 = 366;

/// When a template applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Occasion {
    /// From a hire or rehire; items fall due around the start date.
    Hire,
    /// From a termination; items fall due around the last day.
    Termination,
}

/// Who ticks an item off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// HR admins (`hr.manage`), e.g. contracts, accounts, equipment.
    Hr,
    /// The employee's manager (HR may too).
    Manager,
    /// The employee (HR may too).
    Employee,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateItem {
    pub title: String,
    pub owner: Owner,
    /// Days after the start date or last day (negative: before it).
    pub due_days: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub applies_on: Occasion,
    /// Only for people of this department (none: everyone).
    pub department: Option<String>,
    pub items: Vec<TemplateItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub title: String,
    pub owner: Owner,
    pub due: Date,
    pub done_by: Option<String>,
    pub done_at: Option<u64>,
}

/// One employee's copy of a template, for one hire or departure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checklist {
    pub employee: u64,
    pub template: String,
    pub name: String,
    pub occasion: Occasion,
    /// The start date (hire) or last day (termination) the items count from.
    pub from: Date,
    pub items: Vec<Item>,
    /// The earliest due date of an item not done (indexed: overdue lists are one range).
    pub next_due: Option<Date>,
}

impl Checklist {
    fn refresh(&mut self) {
        self.next_due = self.items.iter().filter(|i| i.done_at.is_none()).map(|i| i.due).min();
    }
}

fn checklist_key(id: u64) -> String {
    format!("{id:010}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateInput {
    name: String,
    applies_on: Occasion,
    department: Option<String>,
    items: Vec<TemplateItem>,
}

pub fn put_template(req: &Request) -> Result<Response, Error> {
    let id = req.param("id")?.to_owned();
    let valid = (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(Error::invalid("invalid-id", "checklist ids are 1-64 of a-z, 0-9, '-' and '_'").at_field("id"));
    }
    let input: TemplateInput = req.json()?;
    let name = crate::employee::text("name", &input.name, crate::employee::NAME_MAX).map_err(invalid)?;
    if input.items.is_empty() || input.items.len() > MAX_ITEMS {
        return Err(
            Error::invalid("invalid-items", format!("a checklist has 1 to {MAX_ITEMS} items")).at_field("items")
        );
    }
    let mut items = Vec::with_capacity(input.items.len());
    for (i, item) in input.items.into_iter().enumerate() {
        let title = crate::employee::text("title", &item.title, crate::employee::NAME_MAX)
            .map_err(|e| Error::invalid(e.code, e.reason).at_field(format!("items[{i}].title")))?;
        if !(-MAX_OFFSET_DAYS..=MAX_OFFSET_DAYS).contains(&item.due_days) {
            return Err(Error::invalid("invalid-due-days", format!("items fall due within {MAX_OFFSET_DAYS} days"))
                .at_field(format!("items[{i}].due_days")));
        }
        items.push(TemplateItem { title, ..item });
    }
    if let Some(d) = &input.department
        && !crate::department_exists(d)?
    {
        return Err(Error::invalid("unknown-department", format!("no department `{d}`")).at_field("department"));
    }
    let template = Template { name, applies_on: input.applies_on, department: input.department, items };
    match TEMPLATES.get(&id)? {
        Some(old) => TEMPLATES.update(&id, &template, old.version)?,
        None => {
            if TEMPLATES.query().limit(MAX_TEMPLATES).fetch()?.items.len() as u32 >= MAX_TEMPLATES {
                return Err(Error::conflict(
                    "too-many-checklists",
                    format!("a tenant has at most {MAX_TEMPLATES} checklist templates"),
                ));
            }
            TEMPLATES.insert(&id, &template)?
        }
    };
    // People already hired keep the copy they got; the new version applies from now on.
    Response::json(200, &json!({ "id": id, "template": template }))
}

pub fn list_templates(_req: &Request) -> Result<Response, Error> {
    let page = TEMPLATES.query().limit(MAX_TEMPLATES).fetch()?;
    let items: Vec<Value> = page.items.into_iter().map(|t| json!({ "id": t.key, "template": t.value })).collect();
    Response::json(200, &json!({ "items": items }))
}

/// Gives `employee` a copy of every template for `occasion` that applies to them, with
/// items due around `from`. Runs in the hire, rehire or termination call, so the copies
/// exist exactly when it commits. Returns how many.
pub(crate) fn start(employee: &Employee, occasion: Occasion, from: Date) -> Result<usize, Error> {
    let page = TEMPLATES.query().limit(MAX_TEMPLATES).fetch()?;
    let mut started = 0;
    for t in page.items {
        let template = t.value;
        if template.applies_on != occasion
            || template.department.as_ref().is_some_and(|d| employee.department.as_ref() != Some(d))
        {
            continue;
        }
        let items = template
            .items
            .iter()
            .map(|i| Item {
                title: i.title.clone(),
                owner: i.owner,
                // Not before 1900, the earliest date the platform stores.
                due: Date::from_epoch_days(from.days_from_epoch() + i64::from(i.due_days)).max(Date {
                    year: 1900,
                    month: 1,
                    day: 1,
                }),
                done_by: None,
                done_at: None,
            })
            .collect();
        let mut checklist = Checklist {
            employee: employee.number,
            template: t.key,
            name: template.name,
            occasion,
            from,
            items,
            next_due: None,
        };
        checklist.refresh();
        CHECKLISTS.insert(&checklist_key(CHECKLIST_NUMBERS.next()?), &checklist)?;
        started += 1;
    }
    Ok(started)
}

fn view(id: &str, c: &Checklist, on: Date) -> Value {
    let items: Vec<Value> = c
        .items
        .iter()
        .enumerate()
        .map(|(index, i)| {
            json!({ "index": index, "title": i.title, "owner": i.owner, "due": i.due, "done": i.done_at.is_some(),
                    "done_by": i.done_by, "done_at": i.done_at, "overdue": i.done_at.is_none() && i.due < on })
        })
        .collect();
    json!({
        "id": id.parse::<u64>().unwrap_or(0), "employee": c.employee, "template": c.template, "name": c.name,
        "occasion": c.occasion, "from": c.from, "complete": c.next_due.is_none(),
        "overdue": c.next_due.is_some_and(|d| d < on), "items": items,
    })
}

/// An employee's checklists (the employee, their manager, HR).
pub fn for_employee(req: &Request) -> Result<Response, Error> {
    let number = crate::number_param(req)?;
    let employee = current(number)?.value;
    crate::leave_routes::may_see(req, &employee)?;
    let page = CHECKLISTS.query().eq("employee", number).limit(200).fetch()?;
    let on = today();
    let items: Vec<Value> = page.items.iter().map(|c| view(&c.key, &c.value, on)).collect();
    Response::json(200, &json!({ "employee": number, "items": items }))
}

/// Checklists with items overdue today, most overdue first (HR).
pub fn overdue(req: &Request) -> Result<Response, Error> {
    let paging = req.paging(50, 200)?;
    let on = today();
    let page = CHECKLISTS
        .query()
        .lt("next_due", on)
        .order_by("next_due")
        .cursor(paging.cursor.as_deref())
        .limit(paging.limit)
        .fetch()?;
    let items: Vec<Value> = page.items.iter().map(|c| view(&c.key, &c.value, on)).collect();
    Response::page(&items, page.next.as_deref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tick {
    done: bool,
}

/// Ticks an item off (or back on): its owner does, or HR.
pub fn tick(req: &Request) -> Result<Response, Error> {
    let text = req.param("id")?;
    let not_found = || Error::not_found("checklist-not-found", format!("no checklist `{text}`"));
    let id: u64 = text.parse().map_err(|_| not_found())?;
    let key = checklist_key(id);
    let stored = CHECKLISTS.get(&key)?.ok_or_else(not_found)?;
    let mut checklist = stored.value;
    let index: usize = req.param("index")?.parse().ok().filter(|i| *i < checklist.items.len()).ok_or_else(|| {
        Error::not_found("item-not-found", format!("checklist {id} has items 0 to {}", checklist.items.len() - 1))
    })?;
    let employee = current(checklist.employee)?.value;
    let owner = checklist.items[index].owner;
    if !has_permission(MANAGE) {
        let me = crate::leave_routes::me(req)?;
        let allowed = match (owner, &me) {
            (Owner::Employee, Some(m)) => m.number == employee.number,
            (Owner::Manager, Some(m)) => employee.manager == Some(m.number),
            _ => false,
        };
        if !allowed {
            let who = match owner {
                Owner::Hr => "HR".to_owned(),
                Owner::Manager => format!("employee {}'s manager or HR", employee.number),
                Owner::Employee => format!("employee {} or HR", employee.number),
            };
            return Err(Error::forbidden("not-item-owner", format!("this item is ticked off by {who}")));
        }
    }
    let input: Tick = req.json()?;
    let item = &mut checklist.items[index];
    match (input.done, item.done_at.is_some()) {
        (true, false) => {
            item.done_by = Some(req.caller.user_id.clone());
            item.done_at = Some(keel_sdk::services::now_ms());
        }
        (false, true) => {
            item.done_by = None;
            item.done_at = None;
        }
        // Already as asked: nothing to write.
        _ => return Response::json(200, &view(&key, &checklist, today())),
    }
    checklist.refresh();
    CHECKLISTS.update(&key, &checklist, stored.version)?;
    Response::json(200, &view(&key, &checklist, today()))
}
