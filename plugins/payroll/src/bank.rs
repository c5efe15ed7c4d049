//! Paying a run: employees' bank accounts, the business's own, and the bank file of a paid
//! run. EUR pay goes out as a SEPA credit transfer (ISO 20022 `pain.001.001.03`, category
//! purpose SALA), other currencies as CSV for the bank's upload. The file's number of
//! transactions and control sum are the register's: every net paid, to the cent.

use crate::money::Money;
use crate::runs::{self, Payslip};
use crate::valid_code;
use keel_sdk::{Collection, Error, Request, Response};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Whose account it is, as the bank knows them (the employee's name when left out).
    #[serde(default)]
    pub holder: Option<String>,
    pub iban: String,
    #[serde(default)]
    pub bic: Option<String>,
}

/// The business's account the pay leaves from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debtor {
    pub name: String,
    pub iban: String,
    #[serde(default)]
    pub bic: Option<String>,
}

const ACCOUNTS: Collection<Account> = Collection::new("bank_accounts");
const DEBTOR: Collection<Debtor> = Collection::new("settings");
const DEBTOR_KEY: &str = "bank";

/// An IBAN without spaces, upper case, with a valid checksum (ISO 13616: mod 97 = 1).
pub fn iban(text: &str) -> Option<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    let b = compact.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b.iter().all(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    let rearranged = b[4..].iter().chain(&b[..4]);
    let mut rest = 0u32;
    for c in rearranged {
        let value = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') + 10 };
        rest = if value >= 10 { (rest * 100 + value) % 97 } else { (rest * 10 + value) % 97 };
    }
    (rest == 1).then_some(compact)
}

/// A BIC: 8 or 11 of A-Z and 0-9, the first six letters.
fn bic(text: &str) -> Option<String> {
    let b = text.trim().to_ascii_uppercase();
    let ok = (b.len() == 8 || b.len() == 11)
        && b.bytes().all(|c| c.is_ascii_alphanumeric())
        && b.bytes().take(6).all(|c| c.is_ascii_uppercase());
    ok.then_some(b)
}

fn checked_name(text: &str, field: &str) -> Result<String, Error> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 140 {
        return Err(Error::invalid("invalid-name", "a name is 1-140 characters").at_field(field));
    }
    Ok(t.to_owned())
}

fn checked_account(a: Account) -> Result<Account, Error> {
    let iban = iban(&a.iban).ok_or_else(|| {
        Error::invalid("invalid-iban", "not an IBAN (country, check digits, account; checksum)").at_field("iban")
    })?;
    let bic = a
        .bic
        .map(|b| {
            bic(&b).ok_or_else(|| Error::invalid("invalid-bic", "a BIC is 8 or 11 letters and digits").at_field("bic"))
        })
        .transpose()?;
    let holder = a.holder.map(|h| checked_name(&h, "holder")).transpose()?;
    Ok(Account { holder, iban, bic })
}

fn employee(req: &Request) -> Result<String, Error> {
    let id = req.param("id")?;
    if !valid_code(id) {
        return Err(Error::not_found("employee-not-found", format!("no employee `{id}`")));
    }
    // HR's own id, so `007` and `7` are one account.
    Ok(keel_hr::directory::get_employee(id)?.id)
}

pub fn put_account(req: &Request) -> Result<Response, Error> {
    let who = employee(req)?;
    let account = checked_account(req.json()?)?;
    ACCOUNTS.upsert(&who, &account)?;
    Response::json(200, &account)
}

pub fn get_account(req: &Request) -> Result<Response, Error> {
    let who = employee(req)?;
    let found = ACCOUNTS
        .get(&who)?
        .ok_or_else(|| Error::not_found("no-bank-account", format!("employee `{who}` has no bank account recorded")))?;
    Response::json(200, &found.value)
}

pub fn put_debtor(req: &Request) -> Result<Response, Error> {
    let d: Debtor = req.json()?;
    let name = checked_name(&d.name, "name")?;
    let checked = checked_account(Account { holder: None, iban: d.iban, bic: d.bic })?;
    let debtor = Debtor { name, iban: checked.iban, bic: checked.bic };
    DEBTOR.upsert(DEBTOR_KEY, &debtor)?;
    Response::json(200, &debtor)
}

pub fn get_debtor(_req: &Request) -> Result<Response, Error> {
    let found = DEBTOR
        .get(DEBTOR_KEY)?
        .ok_or_else(|| Error::not_found("no-bank-account", "the business's bank account is not set; PUT /bank"))?;
    Response::json(200, &found.value)
}

/// SEPA's character set (the Latin subset banks must accept): letters and digits,
/// `/ - ? : ( ) . , ' +` and space. Accented Latin letters lose their accent; anything else
/// becomes `.`. XML's special characters cannot occur after this.
fn sepa_text(text: &str, max: usize) -> String {
    let plain = |c: char| -> char {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '/' | '-' | '?' | ':' | '(' | ')' | '.' | ',' | '\'' | '+' | ' ' => c,
            'à'..='å' => 'a',
            'À'..='Å' => 'A',
            'ç' => 'c',
            'Ç' => 'C',
            'è'..='ë' => 'e',
            'È'..='Ë' => 'E',
            'ì'..='ï' => 'i',
            'Ì'..='Ï' => 'I',
            'ñ' => 'n',
            'Ñ' => 'N',
            'ò'..='ö' | 'ø' => 'o',
            'Ò'..='Ö' | 'Ø' => 'O',
            'ù'..='ü' => 'u',
            'Ù'..='Ü' => 'U',
            'ý' | 'ÿ' => 'y',
            'Ý' => 'Y',
            'ß' => 's',
            // Latin Extended-A letters common in names.
            'ą' | 'ă' | 'ā' => 'a',
            'Ą' | 'Ă' | 'Ā' => 'A',
            'ć' | 'č' | 'ĉ' => 'c',
            'Ć' | 'Č' | 'Ĉ' => 'C',
            'ď' | 'đ' => 'd',
            'Ď' | 'Đ' => 'D',
            'ę' | 'ě' | 'ē' | 'ė' => 'e',
            'Ę' | 'Ě' | 'Ē' | 'Ė' => 'E',
            'ğ' | 'ģ' => 'g',
            'Ğ' | 'Ģ' => 'G',
            'ı' | 'ī' | 'į' => 'i',
            'İ' | 'Ī' | 'Į' => 'I',
            'ķ' => 'k',
            'Ķ' => 'K',
            'ł' | 'ľ' | 'ĺ' | 'ļ' => 'l',
            'Ł' | 'Ľ' | 'Ĺ' | 'Ļ' => 'L',
            'ń' | 'ň' | 'ņ' => 'n',
            'Ń' | 'Ň' | 'Ņ' => 'N',
            'ő' | 'ō' => 'o',
            'Ő' | 'Ō' => 'O',
            'ř' | 'ŕ' => 'r',
            'Ř' | 'Ŕ' => 'R',
            'ś' | 'š' | 'ş' | 'ș' => 's',
            'Ś' | 'Š' | 'Ş' | 'Ș' => 'S',
            'ť' | 'ţ' | 'ț' => 't',
            'Ť' | 'Ţ' | 'Ț' => 'T',
            'ů' | 'ű' | 'ū' | 'ų' => 'u',
            'Ů' | 'Ű' | 'Ū' | 'Ų' => 'U',
            'ź' | 'ż' | 'ž' => 'z',
            'Ź' | 'Ż' | 'Ž' => 'Z',
            _ => '.',
        }
    };
    text.chars().map(plain).take(max).collect()
}

/// A creditor's name as SEPA can carry it; a name in another script (which would be dots)
/// or none is `Employee <id>`, which the bank shows the payroll team to check.
fn sepa_name(name: &str, employee: &str) -> String {
    let plain = sepa_text(name, 70);
    let letters = plain.chars().filter(char::is_ascii_alphanumeric).count();
    if letters == 0 || letters * 2 < name.chars().filter(|c| c.is_alphanumeric()).count() {
        return sepa_text(&format!("Employee {employee}"), 70);
    }
    plain
}

/// A transfer's end-to-end id: `PAYRUN-<run>-<employee>`, or with the employee hashed when
/// that would pass SEPA's 35 characters (ids cut short could collide).
fn end_to_end(run: u64, employee: &str) -> String {
    let plain = format!("PAYRUN-{run}-{employee}");
    if plain.len() <= 35 && sepa_text(&plain, 35) == plain {
        return plain;
    }
    let hash =
        employee.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("PAYRUN-{run}-{hash:016x}")
}

fn csv_field(text: &str) -> String {
    // Quoted; a cell a spreadsheet would run as a formula is prefixed with '.
    let safe = match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    };
    format!("\"{}\"", safe.replace('"', "\"\""))
}

/// One transfer of the file.
struct Transfer {
    employee: String,
    name: String,
    account: Account,
    currency: String,
    minor: i64,
    exponent: u32,
}

/// `GET /runs/{id}/bank-file?format=sepa|csv&date=YYYY-MM-DD`: the transfers of a paid
/// run's net pay. `sepa` (the default when everyone is paid in EUR) covers EUR; `csv` every
/// currency.
pub fn bank_file(req: &Request) -> Result<Response, Error> {
    let (id, run) = runs::paid_run(req)?;
    let all_eur = run.totals.keys().all(|c| c == "EUR");
    let format = match req.query("format") {
        None if all_eur => "sepa",
        None => "csv",
        Some(f @ ("sepa" | "csv")) => f,
        Some(_) => return Err(Error::invalid("invalid-format", "`format` is sepa or csv").at_field("format")),
    };
    if format == "sepa" && !run.totals.contains_key("EUR") {
        return Err(Error::invalid(
            "sepa-needs-eur",
            "a SEPA credit transfer pays EUR; this run pays none: use format=csv",
        )
        .at_field("format"));
    }
    let date = match req.query("date") {
        Some(d) if crate::valid_date(d) => d.to_owned(),
        Some(_) => return Err(Error::invalid("invalid-date", "`date` is YYYY-MM-DD").at_field("date")),
        None => crate::today(),
    };
    let slips: Vec<Payslip> =
        runs::payslips_of(id, &run)?.into_iter().filter(|p| format == "csv" || p.worked.currency == "EUR").collect();
    let negative: Vec<&str> =
        slips.iter().filter(|p| p.worked.slip.totals.net < 0).map(|p| p.employee.as_str()).collect();
    if !negative.is_empty() {
        return Err(Error::conflict(
            "negative-net",
            format!(
                "{} employee(s) owe money back (negative net), which a transfer cannot take: {}",
                negative.len(),
                list(&negative)
            ),
        ));
    }
    let paid: Vec<&Payslip> = slips.iter().filter(|p| p.worked.slip.totals.net > 0).collect();
    if paid.is_empty() {
        return Err(Error::conflict("nothing-to-pay", format!("no net pay to transfer in run {id} ({format})")));
    }
    let keys: Vec<String> = paid.iter().map(|p| p.employee.clone()).collect();
    let mut accounts = Vec::with_capacity(keys.len());
    for batch in keys.chunks(100) {
        accounts.extend(ACCOUNTS.get_many(batch)?);
    }
    let missing: Vec<&str> =
        paid.iter().zip(&accounts).filter(|(_, a)| a.is_none()).map(|(p, _)| p.employee.as_str()).collect();
    if !missing.is_empty() {
        return Err(Error::conflict(
            "missing-bank-details",
            format!(
                "{} employee(s) have no bank account recorded (PUT /employees/{{id}}/bank): {}",
                missing.len(),
                list(&missing)
            ),
        ));
    }
    let transfers: Vec<Transfer> = paid
        .iter()
        .zip(accounts)
        .map(|(p, a)| Transfer {
            employee: p.employee.clone(),
            name: p.worked.name.clone(),
            account: a.expect("checked above").value,
            currency: p.worked.currency.clone(),
            minor: p.worked.slip.totals.net,
            exponent: p.worked.exponent,
        })
        .collect();
    let reference = match &run.off_cycle {
        Some(off) => format!("{} {}", off.name, run.period),
        None => format!("Salary {}", run.period),
    };
    if format == "csv" {
        let mut out = String::from("employee,name,iban,bic,currency,amount,reference\n");
        for t in &transfers {
            let holder = t.account.holder.as_deref().unwrap_or(&t.name);
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                csv_field(&t.employee),
                csv_field(holder),
                csv_field(&t.account.iban),
                csv_field(t.account.bic.as_deref().unwrap_or("")),
                t.currency,
                Money { minor: t.minor, exponent: t.exponent },
                csv_field(&reference)
            ));
        }
        let file = format!("pay-run-{id}-{}.csv", run.period);
        return Ok(Response::raw(200, "text/csv; charset=utf-8", out.into_bytes())
            .with_header("content-disposition", &format!("attachment; filename=\"{file}\"")));
    }
    let debtor = DEBTOR
        .get(DEBTOR_KEY)?
        .ok_or_else(|| Error::conflict("no-bank-account", "the business's bank account is not set; PUT /bank"))?
        .value;
    let xml = sepa(id, &run.period, &date, &debtor, &transfers, &reference)?;
    let file = format!("pay-run-{id}-{}.xml", run.period);
    Ok(Response::raw(200, "application/xml", xml.into_bytes())
        .with_header("content-disposition", &format!("attachment; filename=\"{file}\"")))
}

fn list(ids: &[&str]) -> String {
    let shown: Vec<&str> = ids.iter().take(20).copied().collect();
    let more = if ids.len() > 20 { format!(" and {} more", ids.len() - 20) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

fn sepa(
    id: u64,
    period: &str,
    date: &str,
    debtor: &Debtor,
    transfers: &[Transfer],
    reference: &str,
) -> Result<String, Error> {
    let sum: i64 = transfers
        .iter()
        .try_fold(0i64, |s, t| s.checked_add(t.minor))
        .ok_or_else(|| Error::internal("totals-overflow", "the file's sum is too large"))?;
    let control = Money { minor: sum, exponent: 2 };
    let created = format!("{}T00:00:00", crate::today());
    // The same for every download of the run: a bank refuses a file it has taken already.
    let message = format!("KEEL-PAYRUN-{id}");
    let agent = |bic: Option<&str>| match bic {
        Some(b) => format!("<FinInstnId><BIC>{b}</BIC></FinInstnId>"),
        None => "<FinInstnId><Othr><Id>NOTPROVIDED</Id></Othr></FinInstnId>".to_owned(),
    };
    let mut x = String::with_capacity(800 + transfers.len() * 700);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n<CstmrCdtTrfInitn>\n");
    x.push_str(&format!(
        "<GrpHdr><MsgId>{message}</MsgId><CreDtTm>{created}</CreDtTm><NbOfTxs>{}</NbOfTxs><CtrlSum>{control}</CtrlSum><InitgPty><Nm>{}</Nm></InitgPty></GrpHdr>\n",
        transfers.len(),
        sepa_text(&debtor.name, 70)
    ));
    x.push_str(&format!(
        "<PmtInf><PmtInfId>PAYRUN-{id}-{period}</PmtInfId><PmtMtd>TRF</PmtMtd><BtchBookg>true</BtchBookg><NbOfTxs>{}</NbOfTxs><CtrlSum>{control}</CtrlSum>\
<PmtTpInf><SvcLvl><Cd>SEPA</Cd></SvcLvl><CtgyPurp><Cd>SALA</Cd></CtgyPurp></PmtTpInf><ReqdExctnDt>{date}</ReqdExctnDt>\
<Dbtr><Nm>{}</Nm></Dbtr><DbtrAcct><Id><IBAN>{}</IBAN></Id></DbtrAcct><DbtrAgt>{}</DbtrAgt><ChrgBr>SLEV</ChrgBr>\n",
        transfers.len(),
        sepa_text(&debtor.name, 70),
        debtor.iban,
        agent(debtor.bic.as_deref())
    ));
    for t in transfers {
        let holder = sepa_name(t.account.holder.as_deref().unwrap_or(&t.name), &t.employee);
        x.push_str(&format!(
            "<CdtTrfTxInf><PmtId><EndToEndId>{}</EndToEndId></PmtId><Amt><InstdAmt Ccy=\"EUR\">{}</InstdAmt></Amt>{}<Cdtr><Nm>{}</Nm></Cdtr><CdtrAcct><Id><IBAN>{}</IBAN></Id></CdtrAcct><RmtInf><Ustrd>{}</Ustrd></RmtInf></CdtTrfTxInf>\n",
            end_to_end(id, &t.employee),
            Money { minor: t.minor, exponent: t.exponent },
            t.account.bic.as_deref().map(|b| format!("<CdtrAgt>{}</CdtrAgt>", agent(Some(b)))).unwrap_or_default(),
            holder,
            t.account.iban,
            sepa_text(reference, 140)
        ));
    }
    x.push_str("</PmtInf>\n</CstmrCdtTrfInitn>\n</Document>\n");
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_are_checked_by_their_digits() {
        assert_eq!(iban("DE89 3704 0044 0532 0130 00").as_deref(), Some("DE89370400440532013000"));
        assert_eq!(iban("gb82west12345698765432").as_deref(), Some("GB82WEST12345698765432"));
        assert_eq!(iban("FR1420041010050500013M02606").as_deref(), Some("FR1420041010050500013M02606"));
        assert_eq!(iban("DE89370400440532013001"), None, "one digit off");
        assert_eq!(iban("DE8937040044"), None, "too short");
        assert_eq!(iban("1289370400440532013000"), None, "no country");
        assert_eq!(iban("DE89-3704-0044-0532-0130-00"), None, "punctuation");
        assert_eq!(bic("deutdeff").as_deref(), Some("DEUTDEFF"));
        assert_eq!(bic("DEUTDEFF500").as_deref(), Some("DEUTDEFF500"));
        assert_eq!(bic("DEUT1EFF"), None);
    }

    #[test]
    fn names_keep_to_sepas_characters_and_csv_cells_never_run_as_formulas() {
        assert_eq!(sepa_text("Zoë Ñúñez & <Co> €", 70), "Zoe Nunez . .Co. .");
        assert_eq!(sepa_text("abcdef", 3), "abc");
        assert_eq!(sepa_text("Łucja Świątek, Ağa Çelik", 70), "Lucja Swiatek, Aga Celik");
        assert_eq!(sepa_name("Иван Петров", "7"), "Employee 7");
        assert_eq!(sepa_name("", "7"), "Employee 7");
        assert_eq!(sepa_name("Zoë Ñúñez", "7"), "Zoe Nunez");
        assert_eq!(end_to_end(12, "7"), "PAYRUN-12-7");
        let long = end_to_end(12, "a-very-long-employee-id-from-elsewhere-1");
        assert!(long.len() <= 35 && long != end_to_end(12, "a-very-long-employee-id-from-elsewhere-2"), "{long}");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("Ann \"Bee\""), "\"Ann \"\"Bee\"\"\"");
    }
}
