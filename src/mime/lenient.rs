//! Decoding the way a forgiving mail client decodes, so that content is judged by
//! what some reader could get out of it, not by what its labels say: base64 with
//! garbage and stray padding skipped, uuencode (also as a transfer encoding), and
//! encoded files hidden in text — `begin` and `begin-base64` blocks and runs of
//! base64.

use std::ops::Range;

use crate::filetype::sniff;

/// The value of each byte as a base64 character; 0xff for the rest, 0xfe for `=`.
const SEXTETS: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table[b'=' as usize] = 0xfe;
    table
};

/// The value of a base64 character, or None.
fn sextet(b: u8) -> Option<u8> {
    let value = SEXTETS[b as usize];
    (value < 64).then_some(value)
}

pub fn is_base64_char(b: u8) -> bool {
    sextet(b).is_some()
}

/// Base64 as the most forgiving decoder reads it: every character outside the
/// alphabet (line ends, garbage) is skipped, and padding ends a group without
/// ending the text — so whatever follows padding in the middle is decoded too,
/// as some readers do (others stop there: they read a part of this).
pub fn base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut i = 0;
    while i < text.len() {
        // Fast path: four clean characters at a group boundary.
        if bits == 0
            && let Some(group) = text.get(i..i + 4)
        {
            let v = [
                SEXTETS[group[0] as usize],
                SEXTETS[group[1] as usize],
                SEXTETS[group[2] as usize],
                SEXTETS[group[3] as usize],
            ];
            if v.iter().all(|&x| x < 64) {
                let n = (u32::from(v[0]) << 18)
                    | (u32::from(v[1]) << 12)
                    | (u32::from(v[2]) << 6)
                    | u32::from(v[3]);
                out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
                i += 4;
                continue;
            }
        }
        match SEXTETS[text[i] as usize] {
            0xfe => {
                acc = 0;
                bits = 0;
            }
            value if value < 64 => {
                acc = (acc << 6) | u32::from(value);
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Base64 as a decoder that ignores `=` wherever it stands reads it (the other
/// reading of padding in the middle).
pub fn base64_skipping_padding(text: &[u8]) -> Vec<u8> {
    let chars: Vec<u8> = text
        .iter()
        .copied()
        .filter(|&b| SEXTETS[b as usize] < 64)
        .collect();
    base64(&chars)
}

/// Where a base64 decoder stands: characters since the last group boundary and
/// the last three values.
#[derive(Default)]
struct Groups {
    position: usize,
    last: [u8; 3],
}

impl Groups {
    /// Feeds one value; true when the text so far ends with "MZ" encoded at one
    /// of the three byte alignments.
    fn feed(&mut self, value: u8) -> bool {
        let [l0, l1, l2] = self.last;
        let hit = self.position >= 2
            && match self.position % 4 {
                // "MZ" at bytes 0 and 1 of a group: T V [o-r].
                2 => l1 == 19 && l2 == 21 && (40..=43).contains(&value),
                // At bytes 1 and 2: ? [EUk0] 1 a.
                3 => value == 26 && l2 == 53 && l1 & 15 == 4,
                // At byte 2 and the next group's byte 0: ? ? [x1] N | W [g-v].
                1 => (32..=47).contains(&value) && l2 == 22 && l1 == 13 && l0 & 3 == 1,
                _ => false,
            };
        self.last = [l1, l2, value];
        self.position += 1;
        hit
    }
}

/// Whether some reading of a base64 text (padding ending a group, or padding
/// skipped) could hold a Windows program: the encoded "MZ" appears. Looks at
/// each character once, decodes nothing.
pub fn may_hold_program(text: &[u8]) -> bool {
    // Every encoded "MZ" has "TV", "1a" or "NW" in it (line ends and padding
    // between them aside): text without one of these pairs is passed over at
    // memchr speed.
    let pair = memchr::memchr3_iter(b'T', b'1', b'N', text).any(|at| {
        let next = text[at + 1..]
            .iter()
            .find(|&&b| !matches!(b, b'\r' | b'\n' | b'='));
        matches!(
            (text[at], next),
            (b'T', Some(b'V')) | (b'1', Some(b'a')) | (b'N', Some(b'W'))
        )
    });
    if !pair {
        return false;
    }
    let mut grouped = Groups::default();
    let mut skipping = Groups::default();
    for &b in text {
        match SEXTETS[b as usize] {
            0xfe => grouped = Groups::default(),
            // Both readings are fed; either may be the one that finds it.
            value if value < 64 && (grouped.feed(value) | skipping.feed(value)) => return true,
            _ => {}
        }
    }
    false
}

/// A Windows program anywhere in the bytes (not only at their start: a byte or
/// two before it, and one reader's file is another's program).
pub fn contains_program(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, b"MZ").any(|at| {
        let rest = &bytes[at..];
        if at == 0 {
            return is_program(rest);
        }
        let pe = rest
            .get(0x3c..0x40)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        matches!(pe, Some(pe) if pe >= 0x40 && pe + 4 <= rest.len() && &rest[pe..pe + 4] == b"PE\0\0")
    })
}

/// Standard base64 in lines of 76 characters with CRLF, as mail programs write it.
pub fn encode_base64_lines(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(text.len() + text.len() / 76 * 2 + 2);
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a base64 body holds that decoders read differently: characters outside
/// the alphabet, or padding before the end.
pub fn base64_flaws(text: &[u8]) -> Option<&'static str> {
    let mut padded = false;
    for &b in text {
        match b {
            b'\r' | b'\n' | b' ' | b'\t' => {}
            b'=' => padded = true,
            b if sextet(b).is_some() => {
                if padded {
                    return Some("base64 padding in the middle");
                }
            }
            _ => return Some("characters outside the base64 alphabet"),
        }
    }
    None
}

/// Quoted-printable, forgivingly: `=XX` decoded, soft line breaks removed,
/// anything else kept as it is.
pub fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            if text[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if text[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(&h), Some(&l)) = (text.get(i + 1), text.get(i + 2))
                && let (Some(h), Some(l)) = (hex(h), hex(l))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// One uuencoded line.
fn uudecode_line(line: &[u8], out: &mut Vec<u8>) {
    let Some(&len) = line.first() else {
        return;
    };
    let want = (len.wrapping_sub(b' ') & 0x3f) as usize;
    let six = |b: u8| b.wrapping_sub(b' ') & 0x3f;
    let start = out.len();
    for chunk in line[1..].chunks(4) {
        if chunk.len() < 2 {
            break;
        }
        let c = |i: usize| six(*chunk.get(i).unwrap_or(&b'`'));
        let (a, b, c2, d) = (c(0), c(1), c(2), c(3));
        out.extend_from_slice(&[(a << 2) | (b >> 4), (b << 4) | (c2 >> 2), (c2 << 6) | d]);
    }
    out.truncate(start + want.min(out.len() - start));
}

/// The lines of a text, with their ranges (line ends excluded).
fn lines(text: &[u8]) -> impl Iterator<Item = (Range<usize>, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= text.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
        let mut content_end = end;
        if content_end > at && text[content_end - 1] == b'\r' {
            content_end -= 1;
        }
        let range = at..content_end;
        at = end + 1;
        Some((range.clone(), &text[range]))
    })
}

/// A uuencoded body (the `x-uuencode` transfer encoding): the lines between
/// `begin` and `end`, or every line when there is no `begin`.
pub fn uudecode_body(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let has_begin = lines(text).any(|(_, l)| l.starts_with(b"begin "));
    let mut inside = !has_begin;
    for (_, line) in lines(text) {
        if line.starts_with(b"begin ") {
            inside = true;
            continue;
        }
        if line == b"end" {
            inside = false;
            continue;
        }
        if inside {
            uudecode_line(line, &mut out);
        }
    }
    out
}

/// A file found encoded inside text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// The name its `begin` line gives, or a description.
    pub name: String,
    /// Where it is in the text (whole lines).
    pub range: Range<usize>,
    /// What its first bytes show.
    pub sniffed: Option<&'static str>,
    /// Whether the block takes whole lines (then it can be cut out on its own).
    pub whole_lines: bool,
    /// The encoded file itself, and how it is encoded.
    pub content: Range<usize>,
    pub uuencoded: bool,
}

impl Embedded {
    /// The file, decoded from the text it was found in.
    pub fn decode(&self, text: &[u8]) -> Vec<u8> {
        let encoded = text.get(self.content.clone()).unwrap_or_default();
        if self.uuencoded {
            uudecode_body(encoded)
        } else {
            base64(encoded)
        }
    }
}

/// The least a base64 run must hold to be looked at: shorter runs are words.
const MIN_RUN: usize = 24;

/// Files encoded inside text: `begin MODE NAME` … `end` (uuencode),
/// `begin-base64 MODE NAME` … `====`, and runs of base64 — whole lines of it, or
/// long enough stretches inside a line. A run is reported only when what it
/// decodes to has a signature of its own (a program, an archive, a document).
pub fn embedded(text: &[u8]) -> Vec<Embedded> {
    let mut found = Vec::new();
    let all: Vec<(Range<usize>, &[u8])> = lines(text).collect();
    let mut i = 0;
    while i < all.len() {
        let (range, line) = &all[i];
        let begin = |keyword: &[u8]| -> Option<String> {
            let rest = line.strip_prefix(keyword)?;
            let mut fields = rest.splitn(2, |&b| b == b' ');
            let mode = fields.next()?;
            if !(3..=4).contains(&mode.len()) || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return None;
            }
            Some(
                String::from_utf8_lossy(fields.next().unwrap_or(b""))
                    .trim()
                    .to_string(),
            )
        };
        if let Some(name) = begin(b"begin ") {
            let mut decoded = Vec::new();
            let mut j = i + 1;
            while j < all.len() && all[j].1 != b"end" {
                if decoded.len() < 64 {
                    uudecode_line(all[j].1, &mut decoded);
                }
                j += 1;
            }
            let end = all.get(j).map_or(text.len(), |(r, _)| r.end);
            found.push(Embedded {
                name,
                range: range.start..end,
                sniffed: sniff(&decoded),
                whole_lines: true,
                content: range.start..end,
                uuencoded: true,
            });
            i = j + 1;
            continue;
        }
        if let Some(name) = begin(b"begin-base64 ") {
            let mut j = i + 1;
            while j < all.len() && all[j].1 != b"====" {
                j += 1;
            }
            let body_end = all.get(j).map_or(text.len(), |(r, _)| r.start);
            let decoded = base64(&text[range.end..body_end]);
            let end = all.get(j).map_or(text.len(), |(r, _)| r.end);
            found.push(Embedded {
                name,
                range: range.start..end,
                sniffed: sniff(&decoded),
                whole_lines: true,
                content: range.end..body_end,
                uuencoded: false,
            });
            i = j + 1;
            continue;
        }
        // Whole lines of base64, one after another.
        // No early exit: the compiler makes this a vector loop.
        let whole = |l: &[u8]| {
            l.len() >= 16
                && l.iter().fold(true, |all, &b| {
                    all & (b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
                })
        };
        if whole(line) {
            let mut j = i + 1;
            while j < all.len() && whole(all[j].1) {
                j += 1;
            }
            let run = all[i].0.start..all[j - 1].0.end;
            let chars = all[i..j].iter().map(|(_, l)| l.len()).sum::<usize>();
            if chars >= MIN_RUN {
                let encoded = &text[run.clone()];
                // What it begins with tells most files; a program may begin
                // anywhere, and only a run that holds an encoded "MZ" is decoded
                // whole to look for one.
                let head = base64(&encoded[..encoded.len().min(2048)]);
                let kind = sniff_payload(&head).or_else(|| {
                    (may_hold_program(encoded)
                        && (contains_program(&base64(encoded))
                            || contains_program(&base64_skipping_padding(encoded))))
                    .then_some("exe")
                });
                if let Some(kind) = kind {
                    found.push(Embedded {
                        name: "(base64 in the text)".into(),
                        range: run.clone(),
                        sniffed: Some(kind),
                        whole_lines: true,
                        content: run,
                        uuencoded: false,
                    });
                }
            }
            i = j;
            continue;
        }
        // A long stretch of base64 inside a line: judged at every alignment, and
        // only by signatures long enough not to turn up by chance.
        let mut k = 0;
        while k < line.len() {
            if !is_base64_char(line[k]) {
                k += 1;
                continue;
            }
            let start = k;
            while k < line.len() && (is_base64_char(line[k]) || line[k] == b'=') {
                k += 1;
            }
            if k - start >= MIN_RUN
                && let Some((skip, kind)) = (0..4).find_map(|skip| {
                    line.get(start + skip..k)
                        .and_then(|run| strict_sniff(&base64(run)))
                        .map(|kind| (skip, kind))
                })
            {
                found.push(Embedded {
                    name: "(base64 in the text)".into(),
                    range: range.clone(),
                    sniffed: Some(kind),
                    whole_lines: false,
                    content: range.start + start + skip..range.start + k,
                    uuencoded: false,
                });
            }
        }
        i += 1;
    }
    found
}

/// A signature found in decoded text: anything `sniff` knows but the shortest
/// ones (`MZ` only with a PE header behind it, no `#!`).
fn sniff_payload(bytes: &[u8]) -> Option<&'static str> {
    match sniff(bytes)? {
        "script" => None,
        "exe" => is_program(bytes).then_some("exe"),
        kind => Some(kind),
    }
}

/// As [`sniff_payload`], for base64 cut out of running text at a guessed
/// alignment: only signatures of four bytes or more.
fn strict_sniff(bytes: &[u8]) -> Option<&'static str> {
    match sniff_payload(bytes)? {
        "gzip" | "jpeg" => None,
        kind => Some(kind),
    }
}

/// `MZ` that is really a Windows program: its DOS header points at a PE header,
/// or is the DOS stub every linker writes. Two bytes alone turn up in random data.
pub fn is_program(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"MZ") {
        return false;
    }
    let pe = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match pe {
        Some(at) if at + 4 <= bytes.len() => &bytes[at..at + 4] == b"PE\0\0",
        // Too short to hold the PE header: the usual DOS header start will do.
        _ => bytes.get(2..4) == Some(&[0x90, 0x00]) || bytes.get(2..4) == Some(&[0x50, 0x00]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    const PROGRAM: &[u8] =
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00\x00\x00";

    #[test]
    fn garbage_and_stray_padding_are_skipped() {
        let clean = b64(PROGRAM);
        let dirty = format!("{}!!*{}=={}\r\n", &clean[..8], &clean[8..16], &clean[16..]);
        assert_eq!(base64(dirty.as_bytes()), PROGRAM);
        assert_eq!(
            base64_flaws(dirty.as_bytes()),
            Some("characters outside the base64 alphabet")
        );
        let padded = format!("{}==\r\n{}", b64(b"ab"), clean);
        // Padding ends a group: what follows is read on its own.
        let mut both = b"ab".to_vec();
        both.extend_from_slice(PROGRAM);
        assert_eq!(base64(padded.as_bytes()), both);
        assert!(!contains_program(
            b"MZ is not a program by itself, nor is this."
        ));
        assert_eq!(
            base64_flaws(padded.as_bytes()),
            Some("base64 padding in the middle")
        );
        assert_eq!(base64_flaws(format!("{clean}\r\n").as_bytes()), None);
    }

    #[test]
    fn programs_hidden_in_text_are_found_in_every_form() {
        let encoded = b64(PROGRAM);
        let uu = "begin 644 tool.exe\r\n435J0``,````$````__\\``+@`````\r\n`\r\nend\r\n";
        let text = format!(
            "Hello,\r\nbegin-base64 644 run.exe\r\n{encoded}\r\n====\r\n\r\n{encoded}\r\n\r\n\
             see: x{encoded}y\r\n{uu}bye\r\n"
        );
        let found = embedded(text.as_bytes());
        let kinds: Vec<(&str, Option<&str>)> =
            found.iter().map(|e| (e.name.as_str(), e.sniffed)).collect();
        assert_eq!(
            kinds,
            vec![
                ("run.exe", Some("exe")),
                ("(base64 in the text)", Some("exe")),
                ("(base64 in the text)", Some("exe")),
                ("tool.exe", Some("exe")),
            ],
            "{found:?}"
        );
    }

    #[test]
    fn ordinary_text_and_random_tokens_are_not_files() {
        let text = "Dear all,\r\nThe link https://example.com/track/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 \r\n\
                    aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=\r\nRegards\r\n";
        assert!(embedded(text.as_bytes()).is_empty());
    }

    #[test]
    fn an_encoded_mz_is_seen_at_every_alignment_and_either_reading_of_padding() {
        let mut program = vec![0u8; 64];
        program[..2].copy_from_slice(b"MZ");
        program[0x3c] = 0x40;
        program.extend_from_slice(b"PE\0\0rest of the program");
        for prefix in [&b""[..], b"a", b"ab"] {
            let bytes = [prefix, &program].concat();
            assert!(may_hold_program(b64(&bytes).as_bytes()), "{prefix:?}");
        }
        // Padding inside a group: a reader skipping it reads the program.
        let encoded = b64(&program);
        let split = format!("{}={}", &encoded[..3], &encoded[3..]);
        assert!(may_hold_program(split.as_bytes()));
        assert!(contains_program(&base64_skipping_padding(split.as_bytes())));
        assert!(!may_hold_program(
            b"1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX2XXXXXXXXXXXX"
        ));
    }

    #[test]
    fn uuencode_as_a_transfer_encoding() {
        let body = b"begin 644 a.bin\r\n#86)C\r\n`\r\nend\r\n";
        assert_eq!(uudecode_body(body), b"abc");
    }
}
