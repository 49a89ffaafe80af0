//! Byte-exact edits of a message: cutting attachments out (each replaced by a short
//! note) and editing the top-level header section. Everything else stays as it was,
//! byte for byte.

use std::ops::Range;

use super::Cut;

/// One thing to remove, and why.
#[derive(Debug, Clone)]
pub struct Removal {
    pub cut: Cut,
    /// The file name, for the note.
    pub name: String,
    /// The rule that asked for it.
    pub rule: String,
}

/// An edit of the top-level header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Adds a header at the top (mailmoat's own Received: line goes above it).
    Add(String, String),
    /// Removes every header of that name.
    Remove(String),
    /// Replaces every header of that name with one.
    Set(String, String),
    /// Puts text in front of the subject (once), or adds a Subject with it.
    SubjectPrefix(String),
}

/// Removes the given parts and blocks; each is replaced by a note naming the files
/// and the rule.
pub fn strip(raw: &[u8], removals: &[Removal]) -> Vec<u8> {
    // One note per distinct cut, naming every file it removes; a cut inside
    // another one goes with it.
    let mut cuts: Vec<(Cut, Vec<&Removal>)> = Vec::new();
    for removal in removals {
        match cuts.iter_mut().find(|(cut, _)| *cut == removal.cut) {
            Some((_, list)) => list.push(removal),
            None => cuts.push((removal.cut.clone(), vec![removal])),
        }
    }
    let outer: Vec<Range<usize>> = cuts.iter().map(|(cut, _)| cut.range()).collect();
    cuts.retain(|(cut, _)| {
        let r = cut.range();
        !outer
            .iter()
            .any(|o| *o != r && o.start <= r.start && r.end <= o.end)
    });
    cuts.sort_by_key(|(cut, _)| cut.range().start);

    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    for (cut, removals) in &cuts {
        let mut range = cut.range();
        // Cuts nest or stand apart; one that overlapped another would be cut from
        // where the other ended, so nothing it matched stays.
        if range.end <= at {
            continue;
        }
        range.start = range.start.max(at);
        let note = note(removals);
        match cut {
            Cut::Part(_) => {
                out.extend_from_slice(&raw[at..range.start]);
                out.extend_from_slice(&note_part(&note, raw[..range.end].ends_with(b"\n")));
            }
            Cut::Block(_) => {
                out.extend_from_slice(&raw[at..range.start]);
                out.extend_from_slice(note.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Cut::WholeBody { body } => {
                // The message itself is the attachment: new content headers, the
                // note as its body; its other headers stay.
                let headers = edit_headers(
                    &raw[at..body.start.max(at)],
                    &[
                        HeaderEdit::Remove("content-type".into()),
                        HeaderEdit::Remove("content-transfer-encoding".into()),
                        HeaderEdit::Remove("content-disposition".into()),
                        HeaderEdit::Add("Content-Type".into(), "text/plain; charset=utf-8".into()),
                        HeaderEdit::Add("Content-Transfer-Encoding".into(), "8bit".into()),
                    ],
                );
                out.extend_from_slice(&headers);
                out.extend_from_slice(note.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        at = range.end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

fn note(removals: &[&Removal]) -> String {
    let names: Vec<String> = removals
        .iter()
        .map(|r| format!("\"{}\"", printable(&r.name)))
        .collect();
    let rules: Vec<&str> = {
        let mut rules: Vec<&str> = removals.iter().map(|r| r.rule.as_str()).collect();
        rules.dedup();
        rules
    };
    format!(
        "[mailmoat removed the attachment {} (rule {}).]",
        names.join(", "),
        rules.join(", ")
    )
}

/// A file name as it may appear in a note: no line breaks or control characters,
/// and not at all when the name itself reads as a file (a name holding a base64
/// run of a program, found by fuzzing): the note must not carry what the rule
/// removed.
fn printable(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let probe = format!("Content-Type: text/plain\r\n\r\n{clean}\r\n");
    if super::Content::analyze(probe.as_bytes(), &super::Limits::default())
        .attachments
        .is_empty()
    {
        clean
    } else {
        "(its name withheld: it reads as a file itself)".into()
    }
}

fn note_part(note: &str, keep_final_newline: bool) -> Vec<u8> {
    let mut part = format!(
        "Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         Content-Disposition: inline\r\n\
         \r\n\
         {note}"
    );
    if keep_final_newline {
        part.push_str("\r\n");
    }
    part.into_bytes()
}

/// Where the top-level header section ends (after its blank line), or 0.
pub fn header_end(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") {
        return 2;
    }
    memchr::memmem::find(raw, b"\r\n\r\n").map_or(raw.len(), |at| at + 4)
}

/// Applies edits to the top-level header section of a message (or to a header
/// section alone); the body is not touched.
pub fn edit_headers(raw: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    let end = header_end(raw);
    let (section, body) = raw.split_at(end);
    let blank = if section.ends_with(b"\r\n\r\n") || section == b"\r\n" {
        2
    } else {
        0
    };
    let mut fields = split_fields(&section[..section.len() - blank]);
    for edit in edits {
        match edit {
            HeaderEdit::Add(name, value) => insert(&mut fields, name, value),
            HeaderEdit::Remove(name) => fields.retain(|f| !is_named(f, name)),
            HeaderEdit::Set(name, value) => {
                fields.retain(|f| !is_named(f, name));
                insert(&mut fields, name, value);
            }
            HeaderEdit::SubjectPrefix(prefix) => {
                match fields.iter_mut().find(|f| is_named(f, "subject")) {
                    Some(field) => {
                        let colon = field.iter().position(|&b| b == b':').unwrap_or(7) + 1;
                        let value = String::from_utf8_lossy(&field[colon..])
                            .trim_start()
                            .to_string();
                        if !value.starts_with(prefix.trim_end()) {
                            let mut edited = field[..colon].to_vec();
                            edited.push(b' ');
                            edited.extend_from_slice(clean_value(prefix).as_bytes());
                            if !prefix.ends_with(' ') {
                                edited.push(b' ');
                            }
                            edited.extend_from_slice(value.as_bytes());
                            *field = edited;
                        }
                    }
                    None => insert(&mut fields, "Subject", prefix.trim_end()),
                }
            }
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 128);
    for field in fields {
        out.extend_from_slice(&field);
    }
    out.extend_from_slice(&section[section.len() - blank..]);
    out.extend_from_slice(body);
    out
}

/// Header fields with their folded lines and CRLF.
fn split_fields(section: &[u8]) -> Vec<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in section.split_inclusive(|&b| b == b'\n') {
        match (line.first(), fields.last_mut()) {
            (Some(b' ') | Some(b'\t'), Some(last)) => last.extend_from_slice(line),
            _ => fields.push(line.to_vec()),
        }
    }
    fields
}

fn is_named(field: &[u8], name: &str) -> bool {
    field.len() > name.len()
        && field[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && field[name.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            == Some(&b':')
}

/// New headers go first. Edits apply to the message as the client sent it;
/// mailmoat's own Received: line goes above everything when it is queued.
fn insert(fields: &mut Vec<Vec<u8>>, name: &str, value: &str) {
    let field = format!("{}: {}\r\n", clean_value(name), clean_value(value));
    fields.insert(0, field.into_bytes());
}

/// No line breaks in a header value: they would start new headers.
fn clean_value(value: &str) -> String {
    value.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Received: from x\r\n\tby y; date\r\nSubject: Hello\r\n  world\r\nX-Old: 1\r\n\r\nbody\r\n";

    #[test]
    fn header_edits_keep_the_body_and_add_at_the_top() {
        let out = edit_headers(
            MESSAGE,
            &[
                HeaderEdit::Add("X-Tag".into(), "yes\r\nBcc: evil".into()),
                HeaderEdit::Remove("x-old".into()),
                HeaderEdit::SubjectPrefix("[EXT]".into()),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "X-Tag: yesBcc: evil\r\nReceived: from x\r\n\tby y; date\r\nSubject: [EXT] Hello\r\n  world\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn subject_prefix_is_added_once_and_a_missing_subject_is_created() {
        let once = edit_headers(MESSAGE, &[HeaderEdit::SubjectPrefix("[EXT] ".into())]);
        let twice = edit_headers(&once, &[HeaderEdit::SubjectPrefix("[EXT] ".into())]);
        assert_eq!(once, twice);
        let none = edit_headers(
            b"From: a\r\n\r\nx\r\n",
            &[HeaderEdit::SubjectPrefix("[EXT]".into())],
        );
        assert_eq!(none, b"Subject: [EXT]\r\nFrom: a\r\n\r\nx\r\n");
    }

    #[test]
    fn overlapping_cuts_remove_both_and_never_panic() {
        // Found by fuzz/strip: a block whose line end reached past its part.
        let raw = b"0123456789abcdefghij";
        let removal = |cut: Cut| Removal {
            cut,
            name: "x".into(),
            rule: "r".into(),
        };
        let out = strip(
            raw,
            &[removal(Cut::Block(2..12)), removal(Cut::Part(8..16))],
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("01[mailmoat removed"), "{text}");
        assert!(text.ends_with("ghij"), "{text}");
        assert!(!text.contains("89ab"), "{text}");
    }

    #[test]
    fn set_replaces_all_fields_of_that_name() {
        let out = edit_headers(
            b"X-A: 1\r\nX-A: 2\r\nFrom: a\r\n\r\n",
            &[HeaderEdit::Set("X-A".into(), "3".into())],
        );
        assert_eq!(out, b"X-A: 3\r\nFrom: a\r\n\r\n");
    }
}
