//! Stripping: the output still parses, holds no part the rule matched, and every
//! byte outside the parts it removed is as it was.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::mime::edit::{Removal, strip};
use mailmoat::mime::{Content, Limits, normalize, structure};

/// The rule under test: programs, by what they are or what they are called.
fn matched(a: &mailmoat::mime::Attachment) -> bool {
    a.sniffed == Some("exe") || a.extensions().any(|e| e == "exe")
}

fuzz_target!(
    init: {
        // mailmoat catches mail-parser's panics (a message it cannot read is
        // unscannable): the default hook, not libfuzzer's aborting one, so a
        // caught panic is no crash. An uncaught one still is.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    // The pipeline strips only messages with one reading.
    let normalized = normalize::normalize(data);
    let message = normalized.as_deref().unwrap_or(data);
    let content = Content::analyze(message, &Limits::default());
    let removals: Vec<Removal> = content
        .attachments
        .iter()
        .filter(|a| matched(a))
        .map(|a| Removal {
            cut: a.cut.clone(),
            name: a.names.first().cloned().unwrap_or_default(),
            rule: "fuzz".into(),
        })
        .collect();
    if removals.is_empty() {
        return;
    }
    let out = strip(message, &removals);
    // mail-parser 0.11.9 panics on some structures: the output must parse
    // unless mail-parser cannot read the message it came from either.
    let parses = |bytes: &[u8]| {
        std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(bytes).is_some())
    };
    match parses(&out) {
        Ok(parsed) => assert!(parsed, "the output does not parse"),
        Err(_) => assert!(
            parses(message).is_err(),
            "mail-parser panics on the output only:\n{}",
            String::from_utf8_lossy(&out)
        ),
    }
    let again = Content::analyze(&out, &Limits::default());
    assert!(
        !again.attachments.iter().any(matched),
        "a matched part is still there:\n{}",
        String::from_utf8_lossy(&out)
    );
    // Outside the cuts, the bytes are the message's own, in order. (A message
    // that is itself the attachment keeps its headers but for the content ones:
    // from the start, its headers count as cut.)
    let mut cuts: Vec<std::ops::Range<usize>> = removals
        .iter()
        .map(|r| match &r.cut {
            mailmoat::mime::Cut::WholeBody { body } => 0..body.end,
            cut => cut.range(),
        })
        .collect();
    cuts.sort_by_key(|r| r.start);
    let mut at = 0;
    let mut found = 0;
    for cut in &cuts {
        if cut.start >= at {
            let kept = &message[at..cut.start];
            let pos = memchr::memmem::find(&out[found..], kept).expect("kept bytes are in the output");
            found += pos + kept.len();
        }
        at = at.max(cut.end);
    }
    let _ = structure::read(&out);
});
