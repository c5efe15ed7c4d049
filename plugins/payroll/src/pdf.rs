//! Payslips as PDF, written in the plugin with `pdf-writer`: A4 pages, the standard
//! Helvetica for words and Courier for amounts (so they right-align without font metrics),
//! WinAnsi text (a character it lacks prints as `?`). Nothing is embedded: a payslip is a
//! few kilobytes.

use crate::calc::LineKind;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// What a payslip page shows, already as text.
pub struct Sheet<'a> {
    pub title: String,
    /// Lines under the title: employee, period, run.
    pub heading: Vec<String>,
    /// (kind, name, basis, amount) in payslip order.
    pub lines: Vec<(LineKind, &'a str, &'a str, String)>,
    /// (label, amount) below the lines: gross, deductions, tax, net, employer cost.
    pub totals: Vec<(&'static str, String)>,
    /// A closing line (year to date).
    pub footer: Vec<String>,
}

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const LEFT: f32 = 50.0;
const TOP: f32 = 790.0;
const BOTTOM: f32 = 60.0;
const LEADING: f32 = 15.0;
/// Courier is 0.6 em wide per character.
const AMOUNT_RIGHT: f32 = WIDTH - 50.0;

/// Text as WinAnsi bytes (the standard fonts' encoding).
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '€' => 0x80,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '−' => b'-',
            _ => b'?',
        })
        .collect()
}

/// Cut to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max { text.to_owned() } else { text.chars().take(max - 1).chain(['…']).collect() }
}

struct Writer {
    pages: Vec<Content>,
    y: f32,
}

impl Writer {
    fn page(&mut self) {
        self.pages.push(Content::new());
        self.y = TOP;
    }

    fn room(&mut self, lines: f32) {
        if self.y - lines * LEADING < BOTTOM {
            self.page();
        }
    }

    fn text(&mut self, font: &[u8], size: f32, x: f32, text: &str) {
        let bytes = win_ansi(text);
        let content = self.pages.last_mut().expect("a page");
        content.begin_text();
        content.set_font(Name(font), size);
        content.next_line(x, self.y);
        content.show(Str(&bytes));
        content.end_text();
    }

    fn amount(&mut self, size: f32, text: &str) {
        let x = AMOUNT_RIGHT - text.chars().count() as f32 * size * 0.6;
        self.text(b"F2", size, x, text);
    }

    fn rule(&mut self) {
        let content = self.pages.last_mut().expect("a page");
        content.set_line_width(0.5);
        content.move_to(LEFT, self.y + 10.0);
        content.line_to(WIDTH - 50.0, self.y + 10.0);
        content.stroke();
    }
}

fn section(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Earning => "Earnings",
        LineKind::Deduction => "Deductions",
        LineKind::Tax => "Tax",
        LineKind::Employer => "Paid by the employer (not part of net pay)",
    }
}

/// The payslip as a PDF document.
pub fn payslip(sheet: &Sheet) -> Vec<u8> {
    let mut w = Writer { pages: Vec::new(), y: TOP };
    w.page();
    w.text(b"F1B", 18.0, LEFT, &cut(&sheet.title, 50));
    w.y -= 26.0;
    for line in &sheet.heading {
        w.text(b"F1", 10.0, LEFT, &cut(line, 95));
        w.y -= LEADING;
    }
    let mut current = None;
    for (kind, name, basis, amount) in &sheet.lines {
        if current != Some(*kind) {
            w.room(3.0);
            w.y -= 8.0;
            w.text(b"F1B", 11.0, LEFT, section(*kind));
            w.y -= 4.0;
            w.rule();
            w.y -= LEADING;
            current = Some(*kind);
        }
        w.room(2.0);
        w.text(b"F1", 10.0, LEFT, &cut(name, 45));
        w.text(b"F1", 7.5, LEFT + 230.0, &cut(basis, 60));
        w.amount(10.0, amount);
        w.y -= LEADING;
    }
    w.room(sheet.totals.len() as f32 + 2.0);
    w.y -= 8.0;
    w.rule();
    w.y -= 6.0;
    for (label, amount) in &sheet.totals {
        w.text(b"F1B", 11.0, LEFT, label);
        w.amount(11.0, amount);
        w.y -= LEADING + 2.0;
    }
    w.room(sheet.footer.len() as f32 + 1.0);
    w.y -= 10.0;
    for line in &sheet.footer {
        w.text(b"F1", 8.5, LEFT, &cut(line, 110));
        w.y -= LEADING - 3.0;
    }

    let mut pdf = Pdf::new();
    let (catalog, tree, info) = (Ref::new(1), Ref::new(2), Ref::new(3));
    let fonts = [
        (Ref::new(4), b"F1".as_slice(), b"Helvetica".as_slice()),
        (Ref::new(5), b"F1B", b"Helvetica-Bold"),
        (Ref::new(6), b"F2", b"Courier"),
    ];
    let page_ids: Vec<Ref> = (0..w.pages.len()).map(|i| Ref::new(10 + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(page_ids.len() as i32);
    pdf.document_info(info).title(TextStr(&sheet.title)).producer(TextStr("Keel payroll"));
    for (id, _, base) in fonts {
        pdf.type1_font(id).base_font(Name(base)).encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (i, content) in w.pages.into_iter().enumerate() {
        let (page_id, content_id) = (page_ids[i], Ref::new(11 + 2 * i as i32));
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        let mut dict = resources.fonts();
        for (id, name, _) in fonts {
            dict.pair(Name(name), id);
        }
        dict.finish();
        resources.finish();
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}
