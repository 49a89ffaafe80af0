//! RFC 2047 encoded words (`=?UTF-8?B?…?=`) in header text, decoded the way mail
//! programs show them — enough to compare and judge the file names parts give.

use super::lenient;

/// Decodes every encoded word in `text`; white space between two encoded words
/// goes, as RFC 2047 6.2 says. Text that is not an encoded word stays as it is.
pub fn decode(text: &str) -> String {
    if !text.contains("=?") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match word(candidate) {
            Some((decoded, used)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `text`: its text and how many bytes it took.
fn word(text: &str) -> Option<(String, usize)> {
    let inner = text.strip_prefix("=?")?;
    let (written_charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let data = &inner[..end];
    if data.contains(' ') {
        return None;
    }
    // `UTF-8*en`: RFC 2231's language after the charset.
    let charset = written_charset
        .split('*')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let bytes = match encoding {
        "B" | "b" => lenient::base64(data.as_bytes()),
        "Q" | "q" => lenient::quoted_printable(data.replace('_', " ").as_bytes()),
        _ => return None,
    };
    let used = 2 + written_charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((decode_charset(&charset, &bytes), used))
}

/// Bytes in a charset to text, as mail readers decode them (mail-parser's
/// tables); bytes that are all ASCII in a charset that keeps ASCII as it is —
/// nearly all mail — and UTF-8 are taken as they are, without a table lookup
/// per byte; an unknown charset as UTF-8 where it is.
pub fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let charset = charset.trim().to_ascii_lowercase();
    let wide = ["utf-16", "utf-32", "utf-7", "ucs", "unicode"]
        .iter()
        .any(|w| charset.starts_with(w));
    if charset == "utf-8" || charset == "utf8" || (!wide && bytes.is_ascii()) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    match mail_parser::decoders::charsets::map::charset_decoder(charset.as_bytes()) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_decoded_and_joined() {
        assert_eq!(decode("=?UTF-8?B?aW52b2ljZS5leGU=?="), "invoice.exe");
        assert_eq!(decode("=?ISO-8859-1?Q?R=E9sum=E9?= .pdf"), "Résumé .pdf");
        assert_eq!(decode("=?UTF-8?Q?a?= =?UTF-8?Q?b?=.txt"), "ab.txt");
        assert_eq!(decode("plain.txt"), "plain.txt");
        assert_eq!(decode("=?broken"), "=?broken");
    }

    /// Found by fuzzing: the language was counted out of the word's length,
    /// so what followed was read from the wrong place (and a multi-byte
    /// character there ended the session's thread).
    #[test]
    fn a_language_after_the_charset_is_part_of_the_word() {
        assert_eq!(decode("=?UTF-8*en?Q?report?=.exe"), "report.exe");
        assert_eq!(
            decode("=?UTF-8*en-GB?B?aW52b2ljZQ==?=é.pdf"),
            "invoiceé.pdf"
        );
        assert_eq!(decode("=?x*\u{e9}\u{e9}\u{e9}?B?QQ==?=\u{e9}"), "A\u{e9}");
    }
}
