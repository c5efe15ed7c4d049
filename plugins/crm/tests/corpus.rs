//! The mail corpus: real-world-shaped messages (Gmail, Outlook, Apple Mail, Thunderbird,
//! iPhone layouts; quoted-printable and base64; Latin-1, Windows-1252, KOI8-R, Shift_JIS,
//! ISO-2022-JP, Big5, GB2312, EUC-KR; a bounce, an out-of-office, list mail, a forwarded
//! message, S/MIME, a calendar invite, malformed headers, an unknown charset) each parsed to
//! what `expected.json` says, and what is not mail refused with a reason.

use keel_plugin_crm::mail;
use std::path::Path;

#[test]
fn every_message_of_the_corpus_parses_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    assert_eq!(files.len(), expected.len(), "every file has an expectation and every expectation a file");
    let mut mails = 0;
    for name in files {
        let raw = std::fs::read(dir.join(&name)).unwrap();
        let want = &expected[&name];
        let parsed = mail::parse(&raw);
        if want["error"] == true {
            let reason = parsed.expect_err(&name);
            assert!(!reason.is_empty(), "{name}: a reason");
            continue;
        }
        mails += 1;
        let m = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.from, want["from"].as_str().unwrap(), "{name}");
        if let Some(subject) = want["subject"].as_str() {
            assert_eq!(m.subject, subject, "{name}");
        }
        let text = want["text"].as_str().unwrap();
        assert!(m.text.contains(text), "{name}: {text:?} not in {:?}", m.text);
        if let Some(n) = want["attachments"].as_u64() {
            assert_eq!(m.attachments.len() as u64, n, "{name}: {:?}", m.attachments);
        }
        assert_eq!(m.automatic, want["automatic"] == true, "{name}");
        if let Some(thread) = want["thread"].as_array() {
            let thread: Vec<&str> = thread.iter().map(|t| t.as_str().unwrap()).collect();
            assert_eq!(m.thread_ids(), thread, "{name}");
        }
        assert_eq!(m.message_id.is_none(), want["no_message_id"] == true, "{name}");
        assert!(m.subject.chars().all(|c| !c.is_control()), "{name}: a subject is one line");
    }
    assert!(mails >= 20, "at least 20 real-world-shaped messages ({mails})");
}
