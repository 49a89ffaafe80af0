use super::*;

fn problems(message: &str) -> Vec<String> {
    read(message.as_bytes())
        .ambiguities
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_clean(message: &str) {
    assert!(problems(message).is_empty(), "{:?}", problems(message));
}

fn assert_flags(message: &str, wanted: &str) {
    let found = problems(message);
    assert!(
        found.iter().any(|p| p.contains(wanted)),
        "wanted {wanted:?}, found {found:?}"
    );
}

const OUTLOOK: &str = "From: \"A\" <a@remote.test>\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed;\r\n\tboundary=\"----=_NextPart_000_0001_01DA1234.5678ABCD\"\r\n\r\n\
This is a multipart message in MIME format.\r\n\r\n\
------=_NextPart_000_0001_01DA1234.5678ABCD\r\nContent-Type: multipart/alternative;\r\n\t\
boundary=\"----=_NextPart_001_0002_01DA1234.5678ABCD\"\r\n\r\n\r\n\
------=_NextPart_001_0002_01DA1234.5678ABCD\r\nContent-Type: text/plain;\r\n\tcharset=\"us-ascii\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\r\nSee attached.\r\n\r\n\
------=_NextPart_001_0002_01DA1234.5678ABCD\r\nContent-Type: text/html;\r\n\tcharset=\"us-ascii\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>See attached.</p>=0D\r\n\r\n\
------=_NextPart_001_0002_01DA1234.5678ABCD--\r\n\r\n\
------=_NextPart_000_0001_01DA1234.5678ABCD\r\nContent-Type: application/pdf;\r\n\tname=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment;\r\n\tfilename=\"report.pdf\"\r\n\r\n\
JVBERi0xLjcKJeLjz9MK\r\n\r\n------=_NextPart_000_0001_01DA1234.5678ABCD--\r\n\r\n";

const THUNDERBIRD: &str = "Content-Type: multipart/mixed; boundary=\"------------a1b2c3\"\r\n\
Message-ID: <x@y>\r\nMIME-Version: 1.0\r\n\r\nThis is a multi-part message in MIME format.\r\n\
--------------a1b2c3\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n\r\n--------------a1b2c3\r\n\
Content-Type: application/pdf; name=\"=?UTF-8?B?UsOpc3Vtw6kucGRm?=\"\r\n\
Content-Disposition: attachment; filename*=UTF-8''R%C3%A9sum%C3%A9.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjcK\r\n\r\n--------------a1b2c3--\r\n";

const GMAIL: &str = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"000000000000abcdef\"\r\n\r\n\
--000000000000abcdef\r\nContent-Type: multipart/alternative; boundary=\"000000000000123456\"\r\n\r\n\
--000000000000123456\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\nhi\r\n\r\n\
--000000000000123456\r\nContent-Type: text/html; charset=\"UTF-8\"\r\n\r\n<div>hi</div>\r\n\r\n\
--000000000000123456--\r\n--000000000000abcdef\r\nContent-Type: image/png; name=\"a.png\"\r\n\
Content-Disposition: attachment; filename=\"a.png\"\r\nContent-Transfer-Encoding: base64\r\n\
X-Attachment-Id: f_1\r\nContent-ID: <f_1>\r\n\r\niVBORw0KGgo=\r\n--000000000000abcdef--\r\n";

const APPLE: &str = "Content-Type: multipart/mixed;\r\n\tboundary=\"Apple-Mail=_0D7E8F\"\r\n\
Mime-Version: 1.0 (Mac OS X Mail 16.0)\r\n\r\n\r\n--Apple-Mail=_0D7E8F\r\n\
Content-Disposition: attachment;\r\n\tfilename=notes.txt\r\nContent-Type: text/plain;\r\n\
\tx-unix-mode=0644;\r\n\tname=\"notes.txt\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\nnotes\r\n\
--Apple-Mail=_0D7E8F\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nSubject: fwd\r\n\r\n\
forwarded\r\n\r\n--Apple-Mail=_0D7E8F--\r\n";

#[test]
fn mail_as_common_programs_write_it_is_not_ambiguous() {
    for message in [OUTLOOK, THUNDERBIRD, GMAIL, APPLE] {
        assert_clean(message);
    }
    assert_clean("Subject: plain\r\n\r\nno MIME at all\r\n");
    assert_clean("Subject: empty body\r\n\r\n");
}

#[test]
fn the_reading_has_the_parts_with_their_names() {
    let reading = read(THUNDERBIRD.as_bytes());
    let Body::Multipart(parts) = &reading.root.body else {
        panic!("a multipart")
    };
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].file_name(), Some("Résumé.pdf"));
    assert_eq!(parts[1].media.param("name"), Some("Résumé.pdf"));
    assert_eq!(parts[1].encoding, Encoding::Base64);
}

#[test]
fn duplicate_structural_headers_that_differ() {
    assert_flags(
        "Content-Type: text/plain\r\nContent-Type: application/x-msdownload\r\n\r\nx\r\n",
        "two Content-Type headers that differ",
    );
    assert_flags(
        "Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n",
        "two Content-Transfer-Encoding headers",
    );
    assert_flags(
        "Content-Disposition: inline\r\nContent-Disposition: attachment; filename=a.exe\r\n\r\nx\r\n",
        "two Content-Disposition headers",
    );
    // The same header twice, the same both times, is read alike by everyone.
    assert_clean("Content-Type: text/plain\r\nContent-Type: text/plain\r\n\r\nx\r\n");
}

#[test]
fn header_names_readers_read_differently() {
    // mail-parser takes ":Content-Type:" for Content-Type; others for nothing.
    assert_flags(
        ":Content-Type: application/x-msdownload\r\n\r\nx\r\n",
        "malformed name",
    );
    assert_flags("Content\x01Type: text/plain\r\n\r\nx\r\n", "malformed name");
    assert_flags(
        "Content-Type : text/plain\r\n\r\nx\r\n",
        "white space before the colon",
    );
    assert_clean("X-Custom-Header: value\r\n\r\nx\r\n");
}

#[test]
fn conflicting_parameters() {
    assert_flags(
        "Content-Type: multipart/mixed; boundary=A; boundary=B\r\n\r\n--A\r\n\r\nx\r\n--A--\r\n",
        "parameter boundary given more than once",
    );
    assert_flags(
        "Content-Type: application/octet-stream; Name=a.txt; name=a.exe\r\n\r\nx\r\n",
        "parameter name given more than once",
    );
    assert_flags(
        "Content-Disposition: attachment; filename=\"a.txt\"; filename*=UTF-8''a.exe\r\n\r\nx\r\n",
        "parameter filename given more than once",
    );
    assert_flags(
        "Content-Type: application/octet-stream; name=\"a.txt\"\r\nContent-Disposition: attachment; filename=\"a.exe\"\r\n\r\nx\r\n",
        "the name 'a.txt' and the filename 'a.exe' differ",
    );
    // A backslash outside quotes: an escape to some readers, so `\;` joins
    // the boundary to the value before it.
    assert_flags(
        "Content-Type: multipart/mixed; x=a\\; boundary=\"b1\"\r\n\r\n--b1\r\n\r\nx\r\n--b1--\r\n",
        "a backslash in a parameter value that is not quoted",
    );
    // Both forms saying the same thing, as some programs send them.
    assert_clean(
        "Content-Disposition: attachment; filename=\"a.pdf\"; filename*=UTF-8''a.pdf\r\n\r\nx\r\n",
    );
    let continued = read(
        b"Content-Disposition: attachment; filename*0=\"long\"; filename*1=\"name.pdf\"\r\n\r\nx\r\n",
    );
    assert!(continued.ambiguities.is_empty());
    assert_eq!(continued.root.file_name(), Some("longname.pdf"));
}

#[test]
fn boundaries_readers_delimit_differently() {
    let with = |header: &str| {
        format!("Content-Type: multipart/mixed; {header}\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n")
    };
    assert_flags(&with("boundary=\"B\r\n \""), "folded");
    assert_flags(&with("boundary=\"B \""), "ends with a space");
    assert_flags(&with("boundary=\"B"), "unbalanced quotes");
    assert_flags(&with("(note) boundary=\"B\""), "a comment");
    assert_flags(&with("boundary=\"\""), "an empty boundary");
    assert_flags(
        &with(&format!("boundary=\"{}\"", "B".repeat(71))),
        "longer than 70",
    );
    assert_flags(&with("boundary=\"B\u{e9}\""), "RFC 2046 does not allow");
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
         Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\n\r\nx\r\n--BB--\r\n--B--\r\n",
        "begins like the boundary of an enclosing multipart",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n--B--\r\n",
        "begins like the boundary of an enclosing multipart",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B \r\n\r\nx\r\n--B--\r\n",
        "white space after it",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\r\nx\r\n--Bx\r\n\r\ny\r\n--B--\r\n",
        "begins like the boundary but is not a delimiter",
    );
}

#[test]
fn structure_readers_close_differently() {
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\r\nx\r\n",
        "never closed",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n--B\r\n\r\ny\r\n",
        "a delimiter after the close delimiter",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\nno part at all\r\n",
        "no part begins with the boundary",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--C\r\nContent-Type: text/plain\r\n\r\nx\r\n--B\r\n\r\ny\r\n--B--\r\n",
        "the preamble holds",
    );
    let program = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00")
    };
    assert_flags(
        &format!(
            "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\r\ny\r\n--B--\r\n{program}\r\n"
        ),
        "the epilogue holds an encoded file",
    );
}

#[test]
fn payloads_decoders_disagree_on() {
    assert_flags(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQ*AAM\r\n",
        "outside the base64 alphabet",
    );
    assert_flags(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTQ==TVqQ\r\n",
        "padding in the middle",
    );
    assert_flags(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\nend\r\n",
        "x-uuencode",
    );
    assert_flags(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\nContent-Transfer-Encoding: base64\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n",
        "a transfer encoding on a multipart",
    );
}

#[test]
fn everything_counts_inside_forwarded_messages_too() {
    let inner = "Content-Type: text/plain\r\nContent-Type: application/x-msdownload\r\n\r\nx\r\n";
    let once = format!(
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--B--\r\n"
    );
    let found = problems(&once);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("part 1, forwarded message: two Content-Type")),
        "{found:?}"
    );
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(inner)
    };
    let hidden = format!(
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
    );
    let found = problems(&hidden);
    assert!(
        found.iter().any(|p| p.contains("transfer-encoded")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("forwarded message: two Content-Type")),
        "{found:?}"
    );
}

#[test]
fn nesting_is_bounded() {
    let mut message = String::from("x\r\n");
    for level in 0..40 {
        message = format!(
            "Content-Type: multipart/mixed; boundary=\"L{level:03}\"\r\n\r\n--L{level:03}\r\n{message}\r\n--L{level:03}--\r\n"
        );
    }
    assert_flags(&message, "nested deeper than");
}

/// Inputs the fuzzer (`fuzz/run.sh`, target mime_analysis) found; each once
/// panicked.
#[test]
fn found_by_fuzzing() {
    for message in [
        // A comment, then a quoted value, ending in a lone backslash: the cursor
        // stepped past the end of the header.
        &b"Content-Type: multipart/mixed; boundary=B\r\nContent-Disposition: (comment\\"[..],
        &b"Content-Type: text/plain; name=\"x\\"[..],
        &b"Content-Disposition: attachment (a\\\r\n\r\nbody\r\n"[..],
        include_bytes!("../../../fuzz/regressions/mime_analysis-trailing-backslash"),
    ] {
        let reading = read(message);
        let _ = reading.ambiguities.len();
    }
}
