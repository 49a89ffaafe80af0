//! What mailmoat judged is what the backend reads: a program hidden in a message
//! that readers can read in more than one way never reaches the backend readable
//! by any of them, and ordinary mail arrives byte for byte as it was sent.
//!
//! The messages are generated here, one or more for each class of ambiguity (and
//! each class again inside forwarded messages); what the backend got is read by
//! `tests/readers/find_payload.py`: Python's email in both policies, first- and
//! last-header-wins splitters, ripmime, munpack and a raw scan of every encoding.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A unique marker inside the program, so no reader can find it by chance.
const MARKER: &str = "MMEVILMARKER42";

/// A Windows program: a DOS header pointing at a PE header, and the marker.
fn program() -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"MZ\x90\x00");
    bytes[0x3c] = 0x40;
    bytes.extend_from_slice(b"PE\0\0");
    bytes.extend_from_slice(MARKER.as_bytes());
    bytes.extend_from_slice(&[0x4c, 0x01, 0x02, 0x00]);
    bytes.extend_from_slice(&[0u8; 48]);
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64(bytes)
}

/// Base64 with garbage between the characters, which forgiving decoders skip.
fn dirty_b64(bytes: &[u8]) -> String {
    let clean = b64(bytes).replace("\r\n", "");
    let mut out = String::new();
    for (i, c) in clean.chars().enumerate() {
        if i % 9 == 4 {
            out.push_str("!*");
        }
        out.push(c);
    }
    out
}

fn uuencode(name: &str, bytes: &[u8]) -> String {
    let enc = |v: u8| if v == 0 { '`' } else { (v + 32) as char };
    let mut out = format!("begin 644 {name}\r\n");
    for line in bytes.chunks(45) {
        out.push(enc(line.len() as u8));
        for group in line.chunks(3) {
            let b = [
                group[0],
                *group.get(1).unwrap_or(&0),
                *group.get(2).unwrap_or(&0),
            ];
            out.push(enc(b[0] >> 2));
            out.push(enc(((b[0] & 3) << 4) | (b[1] >> 4)));
            out.push(enc(((b[1] & 15) << 2) | (b[2] >> 6)));
            out.push(enc(b[2] & 63));
        }
        out.push_str("\r\n");
    }
    out.push_str("`\r\nend\r\n");
    out
}

const TOP: &str =
    "From: <s@remote.test>\r\nTo: <alice@example.test>\r\nSubject: files\r\nMIME-Version: 1.0\r\n";
const TEXT: &str = "Content-Type: text/plain; charset=us-ascii\r\n\r\nThe files you asked for.\r\n";

/// A part carrying the program, base64, with these headers.
fn program_part(headers: &str) -> String {
    format!(
        "{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(&program())
    )
}

/// One generated case: its name, the message, and whether its structure is
/// ambiguous (refused by default) or only its content hides the program.
struct Case {
    name: String,
    message: String,
    ambiguous: bool,
}

fn case(name: &str, ambiguous: bool, message: String) -> Case {
    Case {
        name: name.to_string(),
        message,
        ambiguous,
    }
}

/// The message bodies (everything after TOP) of every class.
fn bodies() -> Vec<(&'static str, bool, String)> {
    let exe = program();
    let octet = "Content-Type: application/octet-stream; name=\"tool.exe\"";
    vec![
        (
            "two Content-Types at the top, text first",
            true,
            format!(
                "Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
                 --B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "two Content-Types at the top, multipart first",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\nContent-Type: text/plain\r\n\r\n\
                 --B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "two Content-Types in a part",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: text/plain\r\n{}\r\n--B--\r\n",
                program_part("Content-Type: application/x-msdownload")
            ),
        ),
        (
            "two transfer encodings, 7bit first",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: text/plain; name=\"notes.txt\"\r\nContent-Transfer-Encoding: 7bit\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
                b64(&exe)
            ),
        ),
        (
            "two transfer encodings, base64 first",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: text/plain; name=\"notes.txt\"\r\nContent-Transfer-Encoding: base64\r\n\
                 Content-Transfer-Encoding: 7bit\r\n\r\n{}\r\n--B--\r\n",
                b64(&exe)
            ),
        ),
        (
            "two dispositions",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Disposition: inline\r\nContent-Disposition: attachment; filename=\"tool.exe\"\r\n{}\r\n--B--\r\n",
                program_part("Content-Type: text/plain")
            ),
        ),
        (
            "two boundaries",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"A\"; boundary=\"B\"\r\n\r\n\
                 --A\r\n{TEXT}--B\r\n{}\r\n--B--\r\n--A--\r\n",
                program_part(octet)
            ),
        ),
        (
            "boundary parameter names in other cases",
            true,
            format!(
                "Content-Type: multipart/mixed; Boundary=\"A\"; boundary=\"B\"\r\n\r\n\
                 --A\r\n{TEXT}--B\r\n{}\r\n--B--\r\n--A--\r\n",
                program_part(octet)
            ),
        ),
        (
            "name and filename differ",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(
                    "Content-Type: application/octet-stream; name=\"notes.txt\"\r\n\
                     Content-Disposition: attachment; filename=\"tool.exe\""
                )
            ),
        ),
        (
            "RFC 2231 against a plain filename",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(
                    "Content-Type: application/octet-stream\r\n\
                     Content-Disposition: attachment; filename=\"notes.txt\"; filename*=UTF-8''tool.exe"
                )
            ),
        ),
        (
            "folded boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\r\n C\"\r\n\r\n\
                 --B C\r\n{TEXT}--BC\r\n{}\r\n--BC--\r\n--B C--\r\n",
                program_part(octet)
            ),
        ),
        (
            "boundary with trailing white space",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B \"\r\n\r\n\
                 --B \r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "unbalanced quotes",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\r\n\r\n--B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "comment before the boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; (boundary=\"A\") boundary=\"B\"\r\n\r\n\
                 --A\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "empty boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n{TEXT}--\r\n{}\r\n----\r\n",
                program_part(octet)
            ),
        ),
        ("boundary over 70 characters", true, {
            let long = "L".repeat(80);
            format!(
                "Content-Type: multipart/mixed; boundary=\"{long}\"\r\n\r\n--{long}\r\n{TEXT}--{long}\r\n{}\r\n--{long}--\r\n",
                program_part(octet)
            )
        }),
        (
            "8-bit boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\u{e9}\"\r\n\r\n--B\u{e9}\r\n{TEXT}--B\u{e9}\r\n{}\r\n--B\u{e9}--\r\n",
                program_part(octet)
            ),
        ),
        (
            "a boundary that is a prefix of another",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\n{}\r\n--BB--\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "a nested part reusing the outer boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{}\r\n--B--\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "unclosed multipart",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n{}\r\n",
                program_part(octet)
            ),
        ),
        (
            "a part after the close delimiter",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B--\r\n--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "a part in the preamble",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--X\r\n{}\r\n--X--\r\n--B\r\n{TEXT}--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "the program in the epilogue",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B--\r\n{}\r\n",
                b64(&exe)
            ),
        ),
        (
            "a delimiter line with white space after it",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B \t\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "a line that begins like the boundary",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--Bx\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "a transfer encoding on the multipart",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                 --B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part(octet)
            ),
        ),
        (
            "base64 with garbage",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
                dirty_b64(&exe)
            ),
        ),
        (
            "base64 padding in the middle",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTQ==\r\n{}\r\n--B--\r\n",
                b64(&exe)
            ),
        ),
        (
            "x-uuencode",
            true,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n{}--B--\r\n",
                uuencode("data.bin", &exe)
            ),
        ),
        ("an encoded forwarded message", true, {
            let forward = format!(
                "Subject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"F\"\r\n\r\n--F\r\n{TEXT}--F\r\n{}\r\n--F--\r\n",
                program_part(octet)
            );
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                     Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
                b64(forward.as_bytes())
            )
        }),
        // Content only: one reading, but the program is in the text.
        (
            "begin-base64 in text",
            false,
            format!(
                "Content-Type: text/plain\r\n\r\nThe tool:\r\nbegin-base64 644 tool.exe\r\n{}\r\n====\r\nbye\r\n",
                b64(&exe)
            ),
        ),
        (
            "uuencode in text",
            false,
            format!(
                "Content-Type: text/plain\r\n\r\nThe tool:\r\n{}bye\r\n",
                uuencode("tool.exe", &exe)
            ),
        ),
        (
            "base64 in running text",
            false,
            format!(
                "Content-Type: text/plain\r\n\r\nHere: {} (paste it)\r\n",
                b64(&exe).replace("\r\n", "")
            ),
        ),
        (
            "a text part that is a program",
            false,
            format!(
                "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n{}\r\n--B--\r\n",
                program_part("Content-Type: text/plain; name=\"notes.txt\"")
            ),
        ),
    ]
}

/// Every case, and the structural ones again inside a forwarded message, one and
/// two levels down.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (name, ambiguous, body) in bodies() {
        out.push(case(name, ambiguous, format!("{TOP}{body}")));
        if ambiguous {
            let forwarded = format!("Subject: fwd\r\nMIME-Version: 1.0\r\n{body}");
            let once = format!(
                "{TOP}Content-Type: multipart/mixed; boundary=\"OUTER1\"\r\n\r\n--OUTER1\r\n{TEXT}--OUTER1\r\n\
                 Content-Type: message/rfc822\r\n\r\n{forwarded}\r\n--OUTER1--\r\n"
            );
            let twice = format!(
                "{TOP}Content-Type: multipart/mixed; boundary=\"OUTER2\"\r\n\r\n--OUTER2\r\n{TEXT}--OUTER2\r\n\
                 Content-Type: message/rfc822\r\n\r\nSubject: fwd2\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"MID\"\r\n\r\n--MID\r\n\
                 Content-Type: message/rfc822\r\n\r\n{forwarded}\r\n--MID--\r\n\r\n--OUTER2--\r\n"
            );
            out.push(case(&format!("{name}, forwarded"), true, once));
            out.push(case(&format!("{name}, forwarded twice"), true, twice));
        }
    }
    out
}

/// Ordinary mail with ordinary attachments, as mail programs write it.
fn controls() -> Vec<(&'static str, String)> {
    let pdf = b64(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n");
    vec![
        (
            "Outlook",
            format!(
                "{TOP}Content-Type: multipart/mixed;\r\n\tboundary=\"----=_NextPart_000_0001_01DA1234.5678ABCD\"\r\n\r\n\
                 This is a multipart message in MIME format.\r\n\r\n\
                 ------=_NextPart_000_0001_01DA1234.5678ABCD\r\nContent-Type: text/plain;\r\n\tcharset=\"us-ascii\"\r\n\
                 Content-Transfer-Encoding: 7bit\r\n\r\nSee attached.\r\n\r\n\
                 ------=_NextPart_000_0001_01DA1234.5678ABCD\r\nContent-Type: application/pdf;\r\n\tname=\"report.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n\tfilename=\"report.pdf\"\r\n\r\n\
                 {pdf}\r\n\r\n------=_NextPart_000_0001_01DA1234.5678ABCD--\r\n\r\n"
            ),
        ),
        (
            "Thunderbird",
            format!(
                "{TOP}Content-Type: multipart/mixed; boundary=\"------------a1b2c3\"\r\n\r\n\
                 This is a multi-part message in MIME format.\r\n--------------a1b2c3\r\n\
                 Content-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                 Gr\u{fc}\u{df}e\r\n\r\n--------------a1b2c3\r\n\
                 Content-Type: application/pdf; name=\"=?UTF-8?B?UsOpc3Vtw6kucGRm?=\"\r\n\
                 Content-Disposition: attachment; filename*=UTF-8''R%C3%A9sum%C3%A9.pdf\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{pdf}\r\n\r\n--------------a1b2c3--\r\n"
            ),
        ),
        (
            "a forwarded message",
            format!(
                "{TOP}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
                 Content-Type: message/rfc822\r\n\r\nFrom: x@remote.test\r\nSubject: old\r\n\r\nThe old text.\r\n\r\n--B--\r\n"
            ),
        ),
        (
            "plain text",
            format!(
                "{TOP}Content-Type: text/plain; charset=us-ascii\r\n\r\nJust text.\r\n-- \r\nSender\r\n"
            ),
        ),
    ]
}

const STRIP: &str = r#"
[[rule]]
name = "strip-programs"
when.attachment_magic = ["exe", "elf"]
action = "strip_attachments"

[[rule]]
name = "strip-program-names"
when.attachment_extension = ["exe", "scr", "com", "bat", "cmd", "js", "vbs"]
action = "strip_attachments"
"#;

/// The readers that find the program in a delivered message.
fn readers_finding_the_program(message: &[u8]) -> Vec<String> {
    ensure_package("command -v ripmime", "ripmime");
    ensure_package("command -v munpack", "mpack");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delivered.eml");
    std::fs::write(&path, message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/find_payload.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&path)
        .arg(MARKER)
        .output()
        .expect("python3 runs the readers");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn no_case_makes_the_judging_panic() {
    let rules = mailmoat::rules::RuleSet::from_text("strip.toml", STRIP).unwrap();
    for case in cases() {
        let bytes = case.message.as_bytes();
        let normalized = mailmoat::mime::normalize::normalize(bytes);
        let message = normalized.as_deref().unwrap_or(bytes);
        let name = case.name.clone();
        let outcome = std::panic::catch_unwind(|| {
            let peer = mailmoat::verdict::Peer {
                ip: "192.0.2.1".parse().unwrap(),
                local_ip: "127.0.0.1".parse().unwrap(),
                name: None,
                helo: None,
                login: None,
                login_addresses: Vec::new(),
                trusted: false,
                allowed: false,
                may_relay: false,
                tls: false,
            };
            let recipients = vec!["alice@example.test".to_string()];
            let facts = mailmoat::rules::Facts::of(&peer, "s@remote.test", &recipients);
            let verdict = rules.judge_message(facts, message, &Default::default(), None);
            verdict.apply(message)
        });
        assert!(outcome.is_ok(), "{name} panics");
    }
}

#[test]
fn every_generated_case_carries_a_program_its_readers_find() {
    // The generator is honest: sent as they are, the readers do find the program.
    let cases = cases();
    let mut unseen = Vec::new();
    for case in &cases {
        if readers_finding_the_program(case.message.as_bytes()).is_empty() {
            unseen.push(case.name.clone());
        }
    }
    assert!(
        unseen.is_empty(),
        "no reader finds the program in: {unseen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_ambiguous_mail_reaches_no_reader_with_its_program() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = stripping_proxy(&backend, "[mime]\nambiguous = \"normalize\"\n").await;
    let cases = cases();
    let mut client = proxy.client().await;
    for case in &cases {
        let reply = client
            .send_mail(
                "s@remote.test",
                &["alice@example.test"],
                case.message.as_bytes(),
            )
            .await;
        assert_eq!(reply.codes(), "250 2.0.0", "{}: {reply:?}", case.name);
    }
    let received = backend.wait_for(cases.len()).await;
    proxy.wait_idle().await;
    let mut leaked = Vec::new();
    for (case, message) in cases.iter().zip(&received) {
        let found = readers_finding_the_program(&message.data);
        if !found.is_empty() {
            leaked.push(format!("{}: {found:?}", case.name));
        }
    }
    assert!(
        leaked.is_empty(),
        "{} of {} cases leaked:\n{}",
        leaked.len(),
        cases.len(),
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_ambiguous_mail_is_refused_naming_the_problem() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = stripping_proxy(&backend, "").await;
    let mut client = proxy.client().await;
    let mut delivered = 0;
    for case in cases() {
        let reply = client
            .send_mail(
                "s@remote.test",
                &["alice@example.test"],
                case.message.as_bytes(),
            )
            .await;
        if case.ambiguous {
            assert_eq!(reply.codes(), "554 5.6.0", "{}: {reply:?}", case.name);
            assert!(
                reply.text.contains("can be read in more than one way ("),
                "{reply:?}"
            );
        } else {
            assert_eq!(reply.codes(), "250 2.0.0", "{}: {reply:?}", case.name);
            delivered += 1;
        }
    }
    let received = backend.wait_for(delivered).await;
    proxy.wait_idle().await;
    assert_eq!(backend.messages().len(), delivered);
    for message in &received {
        assert!(readers_finding_the_program(&message.data).is_empty());
    }
    let (ok, list) = quarantine_list(&proxy);
    assert!(ok, "{list}");
    assert!(
        list.contains("mime.ambiguous"),
        "refusals are archived: {list}"
    );
}

/// A proxy that strips programs (the rule under test), for clients outside
/// its trusted network, with `extra` configuration.
async fn stripping_proxy(backend: &Backend, extra: &str) -> Proxy {
    Proxy::start_with_rules_and(
        backend.addr,
        "trusted_networks = [\"127.0.0.9/32\"]",
        STRIP,
        extra,
    )
    .await
}

fn quarantine_list(proxy: &Proxy) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mailmoat"))
        .arg("--config")
        .arg(proxy.config_path())
        .args(["quarantine", "list", "--rule", "mime.ambiguous"])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mail_arrives_byte_for_byte_in_every_mode() {
    for mode in ["reject", "normalize", "quarantine"] {
        let backend = Backend::start(DataEnd::Strict).await;
        let proxy = stripping_proxy(&backend, &format!("[mime]\nambiguous = \"{mode}\"\n")).await;
        let controls = controls();
        let mut client = proxy.client().await;
        for (name, message) in &controls {
            let reply = client
                .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
                .await;
            assert_eq!(reply.codes(), "250 2.0.0", "{mode} {name}: {reply:?}");
        }
        let received = backend.wait_for(controls.len()).await;
        for ((name, sent), got) in controls.iter().zip(&received) {
            let (_, body) = strip_received(&got.data);
            assert_eq!(
                String::from_utf8_lossy(body),
                *sent,
                "{mode}: {name} was changed"
            );
        }
    }
}

/// A zip with the encrypted flag on every entry (the data itself is plain: what
/// matters is that no reader may look inside without a password).
pub fn encrypted_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip_of(files);
    let mut at = 0;
    while let Some(found) = memchr_find(&zip[at..], b"PK\x03\x04") {
        let header = at + found;
        zip[header + 6] |= 1;
        at = header + 4;
    }
    at = 0;
    while let Some(found) = memchr_find(&zip[at..], b"PK\x01\x02") {
        let header = at + found;
        zip[header + 8] |= 1;
        at = header + 4;
    }
    zip
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Three archives nobody can fully look into: seven deep (container_depth = 6),
/// one whose nested archive is bigger than container_bytes allows, one encrypted.
fn unscannable_archives() -> Vec<(&'static str, Vec<u8>)> {
    let exe = program();
    let mut deep = zip_of(&[("payload.exe", &exe)]);
    for level in (2..=7).rev() {
        deep = zip_of(&[(format!("level{level}.zip").as_str(), &deep)]);
    }
    // Bytes that do not compress, so the nested archive itself is big.
    let mut state = 0x2545_f491_u32;
    let filler: Vec<u8> = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let big_inner = zip_of(&[("filler.bin", &filler), ("payload.exe", &exe)]);
    let bomb = zip_of(&[("inner.zip", &big_inner)]);
    // Its entry's name says nothing; what it holds cannot be read.
    let encrypted = encrypted_zip(&[("invoice.pdf", &exe)]);
    vec![
        ("deeper than container_depth", deep),
        ("past container_bytes", bomb),
        ("encrypted", encrypted),
    ]
}

fn with_zip(zip: &[u8]) -> String {
    format!(
        "{TOP}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n{TEXT}--B\r\n\
         Content-Type: application/zip; name=\"files.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
        b64(zip)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscannable_archives_are_stripped_by_default_and_logged() {
    capture_logs();
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = stripping_proxy(&backend, "[rules]\ncontainer_bytes = 100000\n").await;
    let archives = unscannable_archives();
    let mut client = proxy.client().await;
    for (n, (name, zip)) in archives.iter().enumerate() {
        let sender = format!("unscannable{n}@remote.test");
        let reply = client
            .send_mail(&sender, &["alice@example.test"], with_zip(zip).as_bytes())
            .await;
        assert_eq!(reply.codes(), "250 2.0.0", "{name}: {reply:?}");
    }
    let received = backend.wait_for(archives.len()).await;
    for ((name, zip), message) in archives.iter().zip(&received) {
        let text = String::from_utf8_lossy(&message.data);
        // The note names the file that could not be scanned, inside the archive
        // that was removed.
        assert!(
            text.contains("[mailmoat removed the attachment \"files.zip")
                && text.contains("(rule mime.unscannable).]"),
            "{name}:\n{text}"
        );
        assert!(
            !text.contains(&b64(zip)[..60]),
            "{name}: the archive arrived"
        );
        assert!(text.contains("The files you asked for."), "{name}");
    }
    for (name, expected) in [
        (
            "deeper than container_depth",
            "nested deeper than container_depth = 6",
        ),
        ("past container_bytes", "past container_bytes = 100000"),
        ("encrypted", "encrypted"),
    ] {
        let line = wait_for_logged(name, |v| {
            v["message"] == "attachment could not be scanned"
                && v["reason"].as_str().is_some_and(|r| r.contains(expected))
        })
        .await;
        assert_eq!(line["action"], "Strip", "{name}: {line}");
        assert!(
            line["queue_id"].as_str().is_some_and(|id| id.len() > 8),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscannable_archives_can_be_refused_or_quarantined() {
    for (action, expected) in [("reject", "554 5.7.1"), ("quarantine", "250 2.0.0")] {
        let backend = Backend::start(DataEnd::Strict).await;
        let proxy = stripping_proxy(
            &backend,
            &format!("[rules]\ncontainer_bytes = 100000\n[mime]\nunscannable = \"{action}\"\n"),
        )
        .await;
        let mut client = proxy.client().await;
        for (name, zip) in unscannable_archives() {
            let reply = client
                .send_mail(
                    "s@remote.test",
                    &["alice@example.test"],
                    with_zip(&zip).as_bytes(),
                )
                .await;
            assert_eq!(reply.codes(), expected, "{action} {name}: {reply:?}");
        }
        proxy.wait_idle().await;
        assert!(backend.messages().is_empty(), "{action}: delivered");
        let output = Command::new(env!("CARGO_BIN_EXE_mailmoat"))
            .arg("--config")
            .arg(proxy.config_path())
            .args(["quarantine", "list", "--rule", "mime.unscannable"])
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&output.stdout);
        assert!(list.contains("-- 3 item(s)"), "{action}: {list}");
        let outcome = if action == "reject" {
            "rejected"
        } else {
            "quarantined"
        };
        assert_eq!(list.matches(outcome).count(), 3, "{action}: {list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_can_judge_unscannable_attachments_itself() {
    let backend = Backend::start(DataEnd::Strict).await;
    let rules = "[[rule]]\nname = \"no-locked-archives\"\nwhen.attachment_unscannable = true\n\
                 action = \"reject\"\nreply = \"550 5.7.1 Send archives we can open\"\n";
    let proxy = Proxy::start_with_rules_and(
        backend.addr,
        "trusted_networks = [\"127.0.0.9/32\"]",
        rules,
        "",
    )
    .await;
    let mut client = proxy.client().await;
    let (_, encrypted) = unscannable_archives().pop().unwrap();
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            with_zip(&encrypted).as_bytes(),
        )
        .await;
    assert_eq!(reply.text, "550 5.7.1 Send archives we can open\r\n");
    // An archive that can be opened is not caught by the rule.
    let open = zip_of(&[("notes.txt", b"notes")]);
    let reply = client
        .send_mail(
            "s@remote.test",
            &["alice@example.test"],
            with_zip(&open).as_bytes(),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
}

/// Found by fuzzing: forwards that are each only a forward are each wrapped in a
/// multipart by the rewrite (mail-parser panics on them otherwise), which
/// doubles the depth; past the limit the rewrite is ambiguous again. Such mail
/// is refused, not delivered half-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_that_cannot_be_rewritten_to_one_reading_is_refused() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = stripping_proxy(&backend, "[mime]\nambiguous = \"normalize\"\n").await;
    let mut message = String::from("From: a@remote.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n");
    for _ in 0..17 {
        message.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    message.push_str("Subject: inner\r\n\r\nhello\r\n");
    let mut client = proxy.client().await;
    let reply = client
        .send_mail("s@remote.test", &["alice@example.test"], message.as_bytes())
        .await;
    assert_eq!(reply.codes(), "554 5.6.0", "{reply:?}");
    assert!(
        reply.text.contains("cannot be rewritten to one reading"),
        "{reply:?}"
    );
    // A shorter chain is rewritten and delivered.
    let mut short = String::from("From: a@remote.test\r\nSubject: short\r\nMIME-Version: 1.0\r\n");
    for _ in 0..3 {
        short.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    short.push_str("Subject: inner\r\n\r\nhello\r\n");
    let reply = client
        .send_mail("s@remote.test", &["alice@example.test"], short.as_bytes())
        .await;
    assert_eq!(reply.codes(), "250 2.0.0", "{reply:?}");
    assert_eq!(backend.wait_for(1).await.len(), 1);
}
