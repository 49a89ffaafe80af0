//! Every container opened or refused: a program or a blocked script sent in any
//! container the engine reads — alone, nested in each other, read two ways, under
//! a disguised name, in Outlook's winmail.dat or an attached message — never
//! reaches the backend where any extractor could get it out; benign containers
//! arrive byte for byte; what cannot be opened is removed with a log line.
//!
//! Sent through mailmoat with the shipped rules; what the backend got is unpacked
//! by `tests/readers/extract_all.py` with 7-Zip, bsdtar, Python's zipfile,
//! cabextract, tnef, isoinfo and mtools, recursively.

use std::path::Path;
use std::process::Command;

use crate::carriers::{self, FORMATS, Format};
use crate::support::*;

/// A Windows program: a DOS header pointing at a PE header.
fn program() -> Vec<u8> {
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"MZ\x90\x00");
    bytes[0x3c] = 0x40;
    bytes.extend_from_slice(b"PE\0\0\x4c\x01\x02\x00");
    bytes.extend_from_slice(b"CONTAINERS-TEST-PROGRAM");
    bytes.extend_from_slice(&[0u8; 40]);
    bytes
}

const SCRIPT: &[u8] = b"Set shell = CreateObject(\"WScript.Shell\")\r\nshell.Run \"calc\"\r\n";

/// Ordinary files: notes and a picture that does not compress.
fn benign_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut state = 0x9e37_79b9u32;
    let mut photo = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00".to_vec();
    photo.extend((0..3000).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    vec![
        (
            "notes.txt",
            b"Minutes of the meeting: nothing to report.\n".to_vec(),
        ),
        ("photo.jpg", photo),
    ]
}

const TOP: &str =
    "From: <s@remote.test>\r\nTo: <alice@example.test>\r\nSubject: files\r\nMIME-Version: 1.0\r\n";

/// A message with one attachment.
fn message(file_name: &str, declared: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "{TOP}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\nThe files you asked for.\r\n--B\r\n\
         Content-Type: {declared}; name=\"{file_name}\"\r\n\
         Content-Disposition: attachment; filename=\"{file_name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
        base64(data)
    )
    .into_bytes()
}

/// What must become of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Delivered (its dangerous parts removed).
    Delivered,
    /// Refused during the dialogue with this reply.
    Refused(&'static str),
}

struct Case {
    name: String,
    message: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, message: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        message,
        expect,
    }
}

/// The extensions the shipped rules remove by name.
fn blocked_extensions() -> Vec<String> {
    let text = std::fs::read_to_string(shipped("rules/10-attachments.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["rule"].as_array().unwrap()[0]["when"]["attachment_extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Every program a recipient's tools could get out of a delivered message.
fn findings(message: &[u8], blocked: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/extract_all.py");
    let output = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&file)
        .arg(blocked)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "extract_all.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A proxy with the shipped attachment rules and default `[mime]` settings.
async fn shipped_rules_proxy(backend: &Backend) -> Proxy {
    let rules = std::fs::read_to_string(shipped("rules/10-attachments.toml")).unwrap();
    Proxy::start_with_rules(
        backend.addr,
        "trusted_networks = [\"127.0.0.9/32\"]",
        &rules,
    )
    .await
}

/// Sends every case; returns what the backend got for each delivered one.
async fn send_all(cases: &[Case]) -> (Vec<(String, Vec<u8>)>, Proxy, Backend) {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = shipped_rules_proxy(&backend).await;
    let mut client = proxy.client().await;
    let mut delivered = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        let sender = format!("sender{n}@remote.test");
        let reply = client
            .send_mail(&sender, &["alice@example.test"], &c.message)
            .await;
        match c.expect {
            Expect::Delivered => {
                assert_eq!(reply.codes(), "250 2.0.0", "{}: {reply:?}", c.name);
                delivered.push((c.name.clone(), sender));
            }
            Expect::Refused(code) => assert_eq!(reply.codes(), code, "{}: {reply:?}", c.name),
        }
    }
    let received = backend.wait_for(delivered.len()).await;
    proxy.wait_idle().await;
    assert_eq!(
        backend.messages().len(),
        delivered.len(),
        "nothing more arrives"
    );
    let mut out = Vec::new();
    for (name, sender) in delivered {
        let got = received
            .iter()
            .find(|m| m.mail_from.contains(&format!("<{sender}>")))
            .unwrap_or_else(|| panic!("{name}: not delivered"));
        out.push((name, got.data.clone()));
    }
    (out, proxy, backend)
}

/// Runs the extractors over every delivered message, four at a time.
fn leaks(delivered: &[(String, Vec<u8>)]) -> Vec<String> {
    let blocked = blocked_extensions().join(",");
    let chunks: Vec<&[(String, Vec<u8>)]> = delivered
        .chunks(delivered.len().div_ceil(4).max(1))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let blocked = &blocked;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .flat_map(|(name, data)| {
                            findings(data, blocked)
                                .into_iter()
                                .map(move |f| format!("{name}: {f}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Each format holding a program and a script; each format inside a zip, a 7z
/// and a tar.gz; a zip, a 7z and a tar.gz inside each format; a zip inside an ISO
/// and an ISO inside a zip.
fn container_cases() -> Vec<Case> {
    let exe = program();
    let payload: Vec<(&str, &[u8])> = vec![("payload.exe", &exe), ("readme.vbs", SCRIPT)];
    let mut cases = Vec::new();
    for &format in FORMATS {
        let files: Vec<(&str, &[u8])> = if matches!(
            format,
            Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd | Format::Lzip
        ) {
            vec![payload[0]]
        } else {
            payload.clone()
        };
        let bytes = format.make(&files);
        cases.push(case(
            format!("{format:?} with a program"),
            message(format.file_name(), "application/octet-stream", &bytes),
            Expect::Delivered,
        ));
        // The script alone, named plainly inside.
        if !matches!(
            format,
            Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd | Format::Lzip
        ) {
            let bytes = format.make(&[("invoice.pdf.vbs", SCRIPT)]);
            cases.push(case(
                format!("{format:?} with a script"),
                message(format.file_name(), "application/pdf", &bytes),
                Expect::Delivered,
            ));
        }
    }
    let holders = [Format::Zip, Format::SevenZip, Format::TarGz];
    for &inner in FORMATS {
        let inner_files: Vec<(&str, &[u8])> = vec![payload[0]];
        let inner_bytes = inner.make(&inner_files);
        for &outer in &holders {
            let bytes = outer.make(&[(inner.file_name(), &inner_bytes)]);
            cases.push(case(
                format!("{inner:?} inside {outer:?}"),
                message(outer.file_name(), "application/octet-stream", &bytes),
                Expect::Delivered,
            ));
        }
    }
    for &outer in FORMATS {
        if matches!(
            outer,
            Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd | Format::Lzip
        ) {
            continue;
        }
        for &inner in &holders {
            let inner_bytes = inner.make(&[payload[0]]);
            let bytes = outer.make(&[(inner.file_name(), &inner_bytes)]);
            cases.push(case(
                format!("{inner:?} inside {outer:?}"),
                message(outer.file_name(), "application/octet-stream", &bytes),
                Expect::Delivered,
            ));
        }
    }
    // Two deep the other way round too, for the disk images.
    let iso_in_zip = Format::Zip.make(&[("image.iso", &Format::Iso.make(&[payload[0]]))]);
    cases.push(case(
        "an ISO inside a zip",
        message("files.zip", "application/zip", &iso_in_zip),
        Expect::Delivered,
    ));
    let zip_in_iso = Format::Iso.make(&[("files.zip", &Format::Zip.make(&[payload[0]]))]);
    cases.push(case(
        "a zip inside an ISO",
        message("image.bin", "application/octet-stream", &zip_in_iso),
        Expect::Delivered,
    ));
    cases
}

/// Zips that extractors read two ways: refused as ambiguous.
fn two_way_zips() -> Vec<Case> {
    let exe = program();
    let ambiguous = Expect::Refused("554 5.6.0");
    let mut cases = Vec::new();
    // The local header names a program; the central directory a text.
    let mut renamed = zip_of(&[("payload.txt", &exe)]);
    let at = renamed
        .windows(11)
        .position(|w| w == b"payload.txt")
        .unwrap();
    renamed[at + 8..at + 11].copy_from_slice(b"exe");
    cases.push(case(
        "local and central names differ",
        message("files.zip", "application/zip", &renamed),
        ambiguous,
    ));
    // Two zips glued together: one reader takes the first, another the second.
    let mut glued = zip_of(&[("notes.txt", b"harmless")]);
    glued.extend(zip_of(&[("payload.exe", &exe)]));
    cases.push(case(
        "two zips glued together",
        message("files.zip", "application/zip", &glued),
        ambiguous,
    ));
    let mut reversed = zip_of(&[("payload.exe", &exe)]);
    reversed.extend(zip_of(&[("notes.txt", b"harmless")]));
    cases.push(case(
        "two zips glued the other way",
        message("files.zip", "application/zip", &reversed),
        ambiguous,
    ));
    // Something before the first entry.
    let mut prefixed = b"%PDF-1.4\n% a document, to a viewer\n".to_vec();
    prefixed.extend(zip_of(&[("payload.exe", &exe)]));
    cases.push(case(
        "a PDF with a zip behind it",
        message("document.pdf", "application/pdf", &prefixed),
        ambiguous,
    ));
    // A gzip with a zip after its end.
    let mut trailing = Format::Gzip.make(&[("notes.txt", b"harmless")]);
    trailing.extend(zip_of(&[("payload.exe", &exe)]));
    cases.push(case(
        "a zip after a gzip's end",
        message("notes.txt.gz", "application/gzip", &trailing),
        ambiguous,
    ));
    cases
}

/// Each blocked type, named plainly and disguised.
fn disguised_names() -> Vec<Case> {
    let mut cases = Vec::new();
    for ext in blocked_extensions() {
        let content: &[u8] = b"not a program by its bytes: only the name tells";
        for (how, name, declared) in [
            ("plainly", format!("file.{ext}"), "application/octet-stream"),
            ("with a trailing dot", format!("file.{ext}."), "text/plain"),
            (
                "after a harmless extension",
                format!("invoice.pdf.{ext}"),
                "application/pdf",
            ),
        ] {
            cases.push(case(
                format!(".{ext} named {how}"),
                message(&name, declared, content),
                Expect::Delivered,
            ));
        }
        // RFC 2231, percent-encoded, the extension's letters too.
        let encoded: String = format!(".{ext}")
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        let text = format!(
            "{TOP}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
             Content-Type: text/plain\r\n\r\nHello.\r\n--B\r\n\
             Content-Type: text/plain\r\n\
             Content-Disposition: attachment; filename*=utf-8''report{encoded}\r\n\r\n\
             harmless words\r\n--B--\r\n"
        );
        cases.push(case(
            format!(".{ext} named in RFC 2231"),
            text.into_bytes(),
            Expect::Delivered,
        ));
    }
    cases.push(case(
        "a program named report.txt, declared text",
        message("report.txt", "text/plain", &program()),
        Expect::Delivered,
    ));
    cases
}

/// Macro documents, what clients unpack, and fragments.
fn carrier_cases() -> Vec<Case> {
    let exe = program();
    let mut cases = vec![
        case(
            "a Word document with macros named .docx",
            message(
                "report.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                &carriers::ooxml_with_macros(),
            ),
            Expect::Delivered,
        ),
        case(
            "a Word 97 document with macros",
            message(
                "report.doc",
                "application/msword",
                &carriers::ole_with_macros(),
            ),
            Expect::Delivered,
        ),
        case(
            "winmail.dat carrying a script and a program",
            message(
                "winmail.dat",
                "application/ms-tnef",
                &carriers::tnef(&[("run.vbs", SCRIPT), ("tool.exe", &exe)]),
            ),
            Expect::Delivered,
        ),
        case(
            "an .eml declared octet-stream holding a zip with a program",
            message(
                "forwarded.eml",
                "application/octet-stream",
                &carriers::eml(&[("files.zip", &zip_of(&[("payload.exe", &exe)]))]),
            ),
            Expect::Delivered,
        ),
        case(
            "an .eml declared text/plain holding a program",
            message(
                "note.txt",
                "text/plain",
                &carriers::eml(&[("setup.exe", &exe)]),
            ),
            Expect::Delivered,
        ),
    ];
    // message/partial: three fragments of a message that carries a program.
    let whole = String::from_utf8(carriers::eml(&[("payload.exe", &exe)])).unwrap();
    let lines: Vec<&str> = whole.split_inclusive("\r\n").collect();
    let third = lines.len() / 3;
    let pieces = [
        lines[..third].concat(),
        lines[third..2 * third].concat(),
        lines[2 * third..].concat(),
    ];
    for (n, piece) in pieces.iter().enumerate() {
        let text = format!(
            "{TOP}Content-Type: message/partial; id=\"abc@remote.test\"; number={}; total=3\r\n\r\n{piece}",
            n + 1
        );
        cases.push(case(
            format!("message/partial {}", n + 1),
            text.into_bytes(),
            Expect::Refused("554 5.6.0"),
        ));
    }
    let external = format!(
        "{TOP}Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n\
         --B\r\nContent-Type: message/external-body; access-type=URL; URL=\"http://files.remote.test/setup.exe\"\r\n\r\n\
         Content-Type: application/octet-stream; name=\"setup.exe\"\r\n\r\n--B--\r\n"
    );
    cases.push(case(
        "message/external-body",
        external.into_bytes(),
        Expect::Delivered,
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_extractor_finds_a_program_in_what_is_delivered() {
    carriers::ensure_tools();
    let mut cases = container_cases();
    cases.extend(two_way_zips());
    cases.extend(disguised_names());
    cases.extend(carrier_cases());
    println!(
        "{} messages carrying a program or a blocked type",
        cases.len()
    );
    let (delivered, _proxy, _backend) = send_all(&cases).await;
    let found = leaks(&delivered);
    assert!(
        found.is_empty(),
        "{} leaked:\n{}",
        found.len(),
        found.join("\n")
    );
    // The checks could fail: the same extractors find every program in what was
    // sent.
    let sent: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|c| c.expect == Expect::Delivered && !c.name.starts_with("message/external"))
        .map(|c| (c.name.clone(), c.message.clone()))
        .collect();
    let found_in_sent = leaks(&sent);
    for (name, _) in &sent {
        assert!(
            found_in_sent
                .iter()
                .any(|f| f.starts_with(&format!("{name}: "))),
            "{name}: the extractors find nothing in it even as sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benign_containers_arrive_byte_for_byte() {
    carriers::ensure_tools();
    let files = benign_files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let mut sent = Vec::new();
    let mut cases = Vec::new();
    for &format in FORMATS {
        let bytes = format.make(&files);
        let text = message(format.file_name(), "application/octet-stream", &bytes);
        cases.push(case(format!("{format:?}"), text, Expect::Delivered));
        sent.push(bytes);
    }
    let zip_in_iso = Format::Iso.make(&[("files.zip", &Format::Zip.make(&files))]);
    cases.push(case(
        "a zip in an ISO",
        message("image.bin", "application/octet-stream", &zip_in_iso),
        Expect::Delivered,
    ));
    sent.push(zip_in_iso);
    let (delivered, _proxy, _backend) = send_all(&cases).await;
    for ((name, got), bytes) in delivered.iter().zip(&sent) {
        let text = String::from_utf8_lossy(got);
        assert!(
            text.contains(&base64(bytes)) && !text.contains("[mailmoat removed"),
            "{name}: not delivered as it was sent"
        );
    }
}

/// Containers the engine cannot open all the way, with the reason it logs.
fn unscannable_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let files = benign_files();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in &files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let encrypted_7z = dir.path().join("locked.7z");
    let status = Command::new("7z")
        .args(["a", "-bd", "-pSecret1", "-mhe=on"])
        .arg(&encrypted_7z)
        .args(["notes.txt", "photo.jpg"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    let udf = dir.path().join("udf.iso");
    let status = Command::new("genisoimage")
        .args(["-quiet", "-udf", "-o"])
        .arg(&udf)
        .args(["notes.txt", "photo.jpg"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, Format::Fat.make(&files)).unwrap();
    let vhdx = dir.path().join("disk.vhdx");
    let status = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vhdx"])
        .arg(&raw)
        .arg(&vhdx)
        .output()
        .unwrap();
    assert!(status.status.success());
    vec![
        (
            "an encrypted 7z",
            std::fs::read(&encrypted_7z).unwrap(),
            "encrypted",
        ),
        (
            "a compressed RAR",
            carriers::rar4(&files, false),
            "compressed with RAR's own method",
        ),
        ("a UDF image", std::fs::read(&udf).unwrap(), "UDF"),
        // Its headers: a whole one is larger than the message size limit.
        (
            "a VHDX disk",
            std::fs::read(&vhdx).unwrap()[..512 * 1024].to_vec(),
            "VHDX",
        ),
        (
            "an lzh archive",
            [
                &b"\x1a\x00-lh5-\x10\x00\x00\x00\x20\x00\x00\x00"[..],
                &[0x55; 100],
            ]
            .concat(),
            "lzh",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_opened_is_removed_with_its_reason_logged() {
    carriers::ensure_tools();
    capture_logs();
    let unscannable = unscannable_cases();
    let cases: Vec<Case> = unscannable
        .iter()
        .map(|(name, bytes, _)| {
            case(
                *name,
                message("files.dat", "application/octet-stream", bytes),
                Expect::Delivered,
            )
        })
        .collect();
    let (delivered, _proxy, _backend) = send_all(&cases).await;
    for ((name, got), (_, bytes, reason)) in delivered.iter().zip(&unscannable) {
        let text = String::from_utf8_lossy(got);
        assert!(
            !text.contains(&base64(bytes)[..40]),
            "{name}: delivered as it was"
        );
        assert!(
            text.contains("[mailmoat removed the attachment \"files.dat")
                && text.contains("(rule mime.unscannable)"),
            "{name}:\n{text}"
        );
        let line = wait_for_logged(name, |v| {
            v["message"] == "attachment could not be scanned"
                && v["reason"].as_str().is_some_and(|r| r.contains(reason))
        })
        .await;
        assert_eq!(line["action"], "Strip", "{name}: {line}");
    }
}
