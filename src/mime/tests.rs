use super::*;
use crate::mime::edit::{Removal, strip};

pub const BENIGN: &str = "Hello,\r\nthe report is attached.\r\n";

/// multipart/mixed: a text part and an attachment named `name` with `payload`.
pub fn with_attachment(disposition: &str, ctype: &str, payload_b64: &str) -> Vec<u8> {
    format!(
        "From: a@remote.test\r\nTo: b@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
         preamble\r\n\
         --XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{BENIGN}\
         --XX\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n{disposition}\r\n\r\n{payload_b64}\r\n\
         --XX--\r\nepilogue\r\n"
    )
    .into_bytes()
}

const EXE_B64: &str = "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=";

fn parts_of(raw: &[u8]) -> Vec<Vec<u8>> {
    let message = MessageParser::default().parse(raw).unwrap();
    message
        .parts
        .iter()
        .map(|p| raw[p.offset_header as usize..p.offset_end as usize].to_vec())
        .collect()
}

#[test]
fn attachment_is_found_with_name_type_and_magic() {
    let raw = with_attachment(
        "Content-Disposition: attachment; filename=\"invoice.pdf.exe. \"",
        "application/pdf",
        EXE_B64,
    );
    let content = Content::analyze(&raw, &Limits::default());
    assert_eq!(content.attachments.len(), 1, "{:?}", content.attachments);
    let a = &content.attachments[0];
    assert_eq!(a.names, vec!["invoice.pdf.exe"]);
    assert_eq!(a.extensions().collect::<Vec<_>>(), vec!["exe"]);
    assert_eq!(a.declared_type, "application/pdf");
    assert_eq!(a.sniffed, Some("exe"));
    assert!(content.body_text.contains("the report is attached"));
    assert_eq!(content.subject, "report");
}

#[test]
fn stripping_replaces_only_the_attachment_and_keeps_valid_mime() {
    let raw = with_attachment(
        "Content-Disposition: attachment; filename=\"x.exe\"",
        "application/octet-stream",
        EXE_B64,
    );
    let content = Content::analyze(&raw, &Limits::default());
    let removal = Removal {
        cut: content.attachments[0].cut.clone(),
        name: "x.exe".into(),
        rule: "no-exe".into(),
    };
    let out = strip(&raw, &[removal]);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains(EXE_B64), "{text}");
    assert!(
        text.contains("[mailmoat removed the attachment \"x.exe\" (rule no-exe).]"),
        "{text}"
    );
    // Every other part is byte-identical, and the result parses.
    let before = parts_of(&raw);
    let after = parts_of(&out);
    assert_eq!(before.len(), after.len());
    assert_eq!(before[1], after[1], "the text part changed");
    assert!(text.starts_with("From: a@remote.test\r\n"));
    assert!(text.ends_with("--XX--\r\nepilogue\r\n"), "{text}");
    let again = Content::analyze(&out, &Limits::default());
    assert_eq!(again.attachments.len(), 0, "{:?}", again.attachments);
    assert!(again.body_text.contains("mailmoat removed"));
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Finds the attachments, strips every one whose extension or magic says
/// executable, and checks that the payload is gone and `keep` is still there.
fn strip_executables(raw: &[u8], keep: &[&str]) -> Vec<u8> {
    let content = Content::analyze(raw, &Limits::default());
    let bad: Vec<Removal> = content
        .attachments
        .iter()
        .filter(|a| a.extensions().any(|e| e == "exe") || a.sniffed == Some("exe"))
        .map(|a| Removal {
            cut: a.cut.clone(),
            name: a.names.first().cloned().unwrap_or_default(),
            rule: "no-exe".into(),
        })
        .collect();
    assert!(
        !bad.is_empty(),
        "no executable found in {:?}",
        content.attachments
    );
    let out = strip(raw, &bad);
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("TVqQ"), "payload still there:\n{text}");
    assert!(text.contains("mailmoat removed"), "{text}");
    for fragment in keep {
        assert!(text.contains(fragment), "lost {fragment:?}:\n{text}");
    }
    assert!(MessageParser::default().parse(&out).is_some());
    out
}

#[test]
fn rfc2231_continued_and_rfc2047_names_are_decoded() {
    let raw = with_attachment(
        "Content-Disposition: attachment; filename*0*=utf-8''inv%6Fice.; filename*1=\"EXE\"",
        "application/octet-stream; name=\"=?utf-8?B?ZXZpbC5leGU=?=\"",
        "aGVsbG8=",
    );
    let content = Content::analyze(&raw, &Limits::default());
    let names = &content.attachments[0].names;
    assert!(names.contains(&"invoice.EXE".to_string()), "{names:?}");
    assert!(names.contains(&"evil.exe".to_string()), "{names:?}");
    strip_executables(&raw, &[BENIGN]);
}

#[test]
fn a_lying_declared_type_is_caught_by_magic_bytes() {
    let raw = with_attachment(
        "Content-Disposition: attachment; filename=\"photo.jpg\"",
        "image/jpeg",
        EXE_B64,
    );
    strip_executables(&raw, &[BENIGN]);
}

#[test]
fn attachment_in_an_unencoded_forwarded_message_is_cut_inside_it() {
    let inner = String::from_utf8(with_attachment(
        "Content-Disposition: attachment; filename=\"x.exe\"",
        "application/octet-stream",
        EXE_B64,
    ))
    .unwrap();
    let raw = format!(
        "From: c@remote.test\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n\
         --OUT\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
         --OUT\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--OUT--\r\n"
    );
    let out = strip_executables(raw.as_bytes(), &["See below.", BENIGN, "Subject: report"]);
    // The forwarded message's own headers survive: only its attachment went.
    assert!(String::from_utf8_lossy(&out).contains("From: a@remote.test"));
}

#[test]
fn attachment_in_an_encoded_forwarded_message_takes_the_whole_forward() {
    let inner = with_attachment(
        "Content-Disposition: attachment; filename=\"x.exe\"",
        "application/octet-stream",
        EXE_B64,
    );
    let raw = format!(
        "From: c@remote.test\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n\
         --OUT\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n\
         --OUT\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--OUT--\r\n",
        b64(&inner)
    );
    let content = Content::analyze(raw.as_bytes(), &Limits::default());
    assert!(
        content.attachments.iter().any(|a| a.sniffed == Some("exe")),
        "{:?}",
        content.attachments
    );
    let out = strip_executables(raw.as_bytes(), &["See below."]);
    assert!(!String::from_utf8_lossy(&out).contains(&b64(&inner)[..40]));
}

#[test]
fn alternative_inside_mixed_and_zip_entries() {
    let zip = crate::containers::zip::tests::make_zip(&[
        ("docs/readme.txt", b"hi"),
        ("setup.exe", b"MZ\x90\x00"),
    ]);
    let raw = format!(
        "From: a@remote.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"M\"\r\n\r\n\
         --M\r\nContent-Type: multipart/alternative; boundary=\"A\"\r\n\r\n\
         --A\r\nContent-Type: text/plain\r\n\r\nplain version\r\n\
         --A\r\nContent-Type: text/html\r\n\r\n<p>html version</p>\r\n--A--\r\n\r\n\
         --M\r\nContent-Type: application/zip; name=\"docs.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--M--\r\n",
        b64(&zip)
    );
    let content = Content::analyze(raw.as_bytes(), &Limits::default());
    let setup = content
        .attachments
        .iter()
        .find(|a| a.names == ["setup.exe"])
        .expect("zip entry found");
    assert_eq!(setup.inside.as_deref(), Some("docs.zip"));
    assert_eq!(setup.sniffed, Some("exe"));
    let removal = Removal {
        cut: setup.cut.clone(),
        name: "docs.zip/setup.exe".into(),
        rule: "no-exe".into(),
    };
    let out = String::from_utf8(strip(raw.as_bytes(), &[removal])).unwrap();
    assert!(
        out.contains("plain version\r\n") && out.contains("<p>html version</p>"),
        "{out}"
    );
    assert!(!out.contains(&b64(&zip)[..20]));
}

#[test]
fn uuencoded_block_is_cut_from_an_unencoded_text_part() {
    let raw = "From: a@remote.test\r\nSubject: uu\r\n\r\nHere it is:\r\nbegin 644 tool.exe\r\n-35J0``,````0`````__\\``+@`````````0```````````````````\r\n`\r\nend\r\nbye\r\n";
    let content = Content::analyze(raw.as_bytes(), &Limits::default());
    assert_eq!(content.attachments.len(), 1, "{:?}", content.attachments);
    assert_eq!(content.attachments[0].names, ["tool.exe"]);
    assert_eq!(content.attachments[0].sniffed, Some("exe"));
    let removal = Removal {
        cut: content.attachments[0].cut.clone(),
        name: "tool.exe".into(),
        rule: "no-exe".into(),
    };
    let out = String::from_utf8(strip(raw.as_bytes(), &[removal])).unwrap();
    assert_eq!(
        out,
        "From: a@remote.test\r\nSubject: uu\r\n\r\nHere it is:\r\n[mailmoat removed the attachment \"tool.exe\" (rule no-exe).]\r\nbye\r\n"
    );
}

#[test]
fn a_message_that_is_itself_the_attachment_keeps_its_headers() {
    let raw = format!(
        "From: a@remote.test\r\nSubject: file\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{EXE_B64}\r\n"
    );
    let out = String::from_utf8(strip_executables(
        raw.as_bytes(),
        &["From: a@remote.test\r\n", "Subject: file\r\n"],
    ))
    .unwrap();
    assert!(
        out.contains("Content-Type: text/plain; charset=utf-8\r\n"),
        "{out}"
    );
    assert!(!out.contains("application/octet-stream"), "{out}");
}

#[test]
fn a_message_mail_parser_cannot_read_is_still_read_by_the_structure() {
    // mail-parser 0.11.9 panics on this one (found by fuzz/mime_analysis); the
    // analysis reads parts with the structure reading, which flags it, so the
    // ambiguity step refuses it before any rule sees it.
    let raw = b"Content-Type:multipart;boundary=OUTER2\r\n\n--OUTER2Content-Type: message/rfc822\n\nContent-Type:message/rfc822\n\n\n--OUTER2--\n";
    assert!(crate::mime::structure::read(raw).is_ambiguous());
    let content = Content::analyze(raw, &Limits::default());
    assert!(content.attachments.iter().all(|a| a.sniffed.is_none()));
}

/// What the `strip` fuzz target does with an input: the normalized message, and
/// a removal (rule "fuzz") of every attachment that is a program by name or by
/// content; at least one.
fn as_the_strip_fuzzer_does(found: &[u8]) -> (Vec<u8>, Vec<Removal>) {
    let message = crate::mime::normalize::normalize(found).unwrap_or_else(|| found.to_vec());
    let content = Content::analyze(&message, &Limits::default());
    let removals: Vec<Removal> = content
        .attachments
        .iter()
        .filter(|a| a.sniffed == Some("exe") || a.extensions().any(|e| e == "exe"))
        .map(|a| Removal {
            cut: a.cut.clone(),
            name: a.names.first().cloned().unwrap_or_default(),
            rule: "fuzz".into(),
        })
        .collect();
    assert!(!removals.is_empty());
    (message, removals)
}

/// Found by the `strip` fuzz target: an attachment whose name holds the base64
/// of a program. The note naming it must not carry the program back in.
#[test]
fn a_name_that_reads_as_a_program_is_not_repeated_in_the_note() {
    let found: &[u8] = include_bytes!("../../fuzz/regressions/strip-name-reads-as-a-program");
    let (message, removals) = as_the_strip_fuzzer_does(found);
    let message = &message[..];
    let out = strip(message, &removals);
    let again = Content::analyze(&out, &Limits::default());
    assert!(again.attachments.is_empty(), "{:?}", again.attachments);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("[mailmoat removed the attachment \"(its name withheld: it reads as a file itself)\" (rule fuzz).]"),
        "{text}"
    );
}

/// Found by the `strip` fuzz target: a quoted-printable text part that
/// mail-parser could not decode (so it read it raw) held a begin-base64 block.
/// Cutting the block alone made the rest decodable, and the decoded text held a
/// program. A block is cut on its own only where no transfer encoding is declared.
#[test]
fn a_block_in_text_that_declares_an_encoding_takes_its_whole_part() {
    let found: &[u8] = include_bytes!("../../fuzz/regressions/strip-qp-text-with-a-block");
    let (message, removals) = as_the_strip_fuzzer_does(found);
    let message = &message[..];
    assert!(
        removals
            .iter()
            .all(|r| !matches!(r.cut, crate::mime::Cut::Block(_))),
        "{:?}",
        removals.iter().map(|r| &r.cut).collect::<Vec<_>>()
    );
    let out = strip(message, &removals);
    let again = Content::analyze(&out, &Limits::default());
    assert!(
        !again
            .attachments
            .iter()
            .any(|a| a.sniffed == Some("exe") || a.extensions().any(|e| e == "exe")),
        "{:?}",
        again.attachments
    );
}

/// A header folded anywhere inside a structural header's parameters (found
/// from outside: `boundary=` CRLF SP `"b"`) is read as every reader unfolds it:
/// the message is either flagged as ambiguous or its program is found.
#[test]
fn a_fold_anywhere_in_a_structural_header_hides_nothing() {
    let headers = [
        (
            "Content-Type: multipart/mixed; boundary=\"XX\"; charset=us-ascii",
            0,
        ),
        (
            "Content-Type: application/octet-stream; name=\"tool.exe\"",
            1,
        ),
        (
            "Content-Disposition: attachment; filename=\"tool.exe\"; size=10",
            1,
        ),
        ("Content-Transfer-Encoding: base64", 1),
    ];
    let mut judged = 0;
    let mut positions = 0;
    for (header, part) in headers {
        let colon = header.find(':').unwrap() + 1;
        for at in colon..=header.len() {
            positions += 1;
            let folded = format!("{}\r\n {}", &header[..at], &header[at..]);
            let (outer, inner) = if part == 0 {
                (folded.clone(), String::new())
            } else {
                (
                    "Content-Type: multipart/mixed; boundary=\"XX\"".to_string(),
                    folded.clone(),
                )
            };
            let inner_headers = if part == 0 {
                "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                    .to_string()
            } else if header.starts_with("Content-Transfer-Encoding") {
                format!("Content-Type: application/octet-stream\r\n{inner}\r\n")
            } else {
                format!("{inner}\r\nContent-Transfer-Encoding: base64\r\n")
            };
            let raw = format!(
                "From: a@remote.test\r\nSubject: fold\r\nMIME-Version: 1.0\r\n{outer}\r\n\r\n\
                 --XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
                 --XX\r\n{inner_headers}\r\n{EXE_B64}\r\n--XX--\r\n"
            );
            let raw = raw.as_bytes();
            if crate::mime::structure::read(raw).is_ambiguous() {
                continue;
            }
            judged += 1;
            let content = Content::analyze(raw, &Limits::default());
            assert!(
                content.attachments.iter().any(|a| a.sniffed == Some("exe")),
                "folded at {at}: {folded:?}: the program is not seen: {:?}",
                content.attachments
            );
        }
    }
    // Folds between words and around `=` and `;` are ordinary: judged, not
    // flagged (folds inside a word or a quoted value are flagged).
    assert!(judged * 3 > positions, "{judged} of {positions} judged");
}
