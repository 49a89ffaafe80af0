//! Normalizing: the output has one reading, normalizing it again changes
//! nothing, and mail-parser finds the same parts in it as mailmoat does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::mime::normalize::normalize;
use mailmoat::mime::structure::{Body, Entity, read};

/// Leaves, counting a forwarded message as its own tree.
fn leaves(entity: &Entity<'_>) -> usize {
    match &entity.body {
        Body::Leaf(_) => 1,
        Body::Multipart(parts) => parts.iter().map(leaves).sum(),
        Body::Message(inner) => leaves(inner),
    }
}

fn parser_leaves(message: &mail_parser::Message<'_>) -> usize {
    let mut n = 0;
    for part in &message.parts {
        match &part.body {
            mail_parser::PartType::Multipart(_) => {}
            mail_parser::PartType::Message(inner) => n += parser_leaves(inner),
            _ => n += 1,
        }
    }
    n
}

fuzz_target!(
    init: {
        // mailmoat catches mail-parser's panics (a message it cannot read is
        // unscannable): the default hook, not libfuzzer's aborting one, so a
        // caught panic is no crash. An uncaught one still is.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let Some(out) = normalize(data) else {
        return;
    };
    let reading = read(&out);
    // A rewrite past the depth limit is refused by the pipeline (554 5.6.0),
    // never delivered; every other ambiguity left is a failure.
    if !reading.ambiguities.is_empty()
        && reading
            .ambiguities
            .iter()
            .all(|a| a.problem.starts_with("nested deeper than"))
    {
        return;
    }
    assert!(
        reading.ambiguities.is_empty(),
        "the output is ambiguous: {:?}\n{}",
        reading.ambiguities,
        String::from_utf8_lossy(&out)
    );
    assert!(normalize(&out).is_none(), "normalizing twice changed it");
    if let Some(parsed) = mail_parser::MessageParser::default().parse(&out) {
        assert_eq!(
            leaves(&reading.root),
            parser_leaves(&parsed),
            "two readers disagree:\n{}",
            String::from_utf8_lossy(&out)
        );
    }
});
