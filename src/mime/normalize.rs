//! Rewriting an ambiguous message so that every reader reads the tree mailmoat
//! read ([`super::structure`]): one Content-Type, one transfer encoding and one
//! disposition per part, each parameter once, fresh boundaries that no content
//! holds, every multipart closed, no preamble or epilogue, base64 re-encoded from
//! what a forgiving decoder gets, unknown encodings decoded and sent as base64,
//! transfer-encoded forwarded messages sent as they are.
//!
//! Every other header stays byte for byte. A message that is not ambiguous is
//! never rewritten, and the output of a rewrite is never ambiguous, so rewriting
//! twice changes nothing.

use super::lenient;
use super::structure::{Body, Encoding, Entity, Media, Reading, read};

/// The message rewritten, or None when it is not ambiguous (and so stays as it is).
pub fn normalize(message: &[u8]) -> Option<Vec<u8>> {
    let reading = read(message);
    reading.is_ambiguous().then(|| rewrite(&reading, message))
}

/// The message written again from a reading of it (`message` seeds the
/// boundaries).
pub fn rewrite(reading: &Reading<'_>, message: &[u8]) -> Vec<u8> {
    let mut writer = Writer {
        seed: crc32fast::hash(message),
        count: 0,
    };
    let mut out = Vec::with_capacity(message.len() + 256);
    writer.entity(&reading.root, &mut out, false);
    out
}

struct Writer {
    /// Makes boundaries differ between messages.
    seed: u32,
    /// Boundaries made so far in this message.
    count: u32,
}

/// The structural headers a part is written with.
struct Structure {
    media: Media,
    /// The transfer encoding to declare, if one is declared.
    encoding: Option<&'static str>,
    disposition: Option<Media>,
}

/// Whether `boundary` can delimit `children`, which use `inner` boundaries: no
/// line of theirs begins with it, and no boundary inside begins like it or it
/// like one of them.
fn usable(boundary: &str, children: &[Vec<u8>], inner: &[String]) -> bool {
    let delimiter = format!("--{boundary}");
    !children
        .iter()
        .any(|c| memchr::memmem::find(c, delimiter.as_bytes()).is_some())
        && !inner
            .iter()
            .any(|b| b.starts_with(boundary) || boundary.starts_with(b.as_str()))
}

/// A boundary every reader takes the same way (RFC 2046 characters, not too
/// long, no space at the end).
fn plain_boundary(boundary: &str) -> bool {
    !boundary.is_empty()
        && boundary.len() <= 70
        && !boundary.ends_with(' ')
        && boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b))
}

impl Writer {
    fn fresh_boundary(&mut self, children: &[Vec<u8>], inner: &[String]) -> String {
        loop {
            self.count += 1;
            // Fixed width, so no boundary of this message begins like another.
            let boundary = format!("=_mm{:08x}_{:05}_", self.seed, self.count);
            if usable(&boundary, children, inner) {
                return boundary;
            }
        }
    }

    /// Writes an entity (`forwarded`: what a message/rfc822 part holds); returns
    /// the boundaries used in it.
    fn entity(&mut self, entity: &Entity<'_>, out: &mut Vec<u8>, forwarded: bool) -> Vec<String> {
        let mut used = Vec::new();
        if forwarded && let Body::Message(inner) = &entity.body {
            return self.wrapped(entity, inner, out);
        }
        // A part whose own headers every reader takes alike keeps them byte for
        // byte; only what it holds is written again.
        let keep = !entity.header_ambiguous;
        let (mut structure, mut body) = match &entity.body {
            // No part at all: nothing any reader could find in it, and a
            // multipart with no part is one readers disagree on. An empty text.
            Body::Multipart(parts) if parts.is_empty() => {
                (Some(self.empty_text(entity)), Vec::new())
            }
            Body::Multipart(parts) => {
                let mut children = Vec::new();
                for part in parts {
                    let mut bytes = Vec::new();
                    used.extend(self.entity(part, &mut bytes, false));
                    children.push(bytes);
                }
                let original = entity.media.param("boundary").unwrap_or_default();
                let kept = keep && plain_boundary(original) && usable(original, &children, &used);
                let boundary = if kept {
                    original.to_string()
                } else {
                    self.fresh_boundary(&children, &used)
                };
                let mut body = Vec::new();
                for child in &children {
                    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                    body.extend_from_slice(child);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                used.push(boundary.clone());
                if kept {
                    (None, body)
                } else {
                    let mut structure = self.structure(entity, None);
                    structure
                        .media
                        .params
                        .insert(0, ("boundary".into(), boundary));
                    (Some(structure), body)
                }
            }
            Body::Message(inner) => {
                let mut body = Vec::new();
                used.extend(self.entity(inner, &mut body, true));
                if keep {
                    (None, body)
                } else {
                    let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
                    (Some(self.structure(entity, Some(encoding))), body)
                }
            }
            Body::Leaf(raw) => {
                let opaque = entity.media.is_multipart() || entity.media.is_message();
                match entity.encoding {
                    Encoding::Identity if keep && !opaque => (None, raw.to_vec()),
                    Encoding::QuotedPrintable if keep && !opaque => (None, raw.to_vec()),
                    // Clean headers, base64 that decoders read differently: the
                    // same declaration over base64 they all read alike.
                    Encoding::Base64 if keep && !opaque => {
                        let body = if lenient::base64_flaws(raw).is_some() {
                            lenient::encode_base64_lines(&lenient::base64(raw))
                        } else {
                            raw.to_vec()
                        };
                        (None, body)
                    }
                    Encoding::Identity => (Some(self.structure(entity, None)), raw.to_vec()),
                    Encoding::QuotedPrintable => (
                        Some(self.structure(entity, Some("quoted-printable"))),
                        raw.to_vec(),
                    ),
                    Encoding::Base64 | Encoding::Uuencode | Encoding::Unknown => (
                        Some(self.structure(entity, Some("base64"))),
                        lenient::encode_base64_lines(&entity.encoding.decode(raw)),
                    ),
                }
            }
        };
        // A forward that holds nothing (its encoding decoded to nothing, its
        // message was nothing but an empty line …), however it was read, is
        // one readers disagree on: an empty text.
        let media = structure.as_ref().map_or(&entity.media, |s| &s.media);
        if media.is_message() && body.iter().all(u8::is_ascii_whitespace) {
            (structure, body) = (Some(self.empty_text(entity)), Vec::new());
        }
        match structure {
            None => {
                for field in &entity.fields {
                    write_field(&field.raw, out);
                }
            }
            Some(structure) => {
                let mut written = false;
                for field in &entity.fields {
                    if field.is_structural() {
                        if !written {
                            write_structure(&structure, out);
                            written = true;
                        }
                        continue;
                    }
                    write_field(&field.raw, out);
                }
                if !written {
                    write_structure(&structure, out);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        used
    }

    /// A forwarded message that is itself only a forwarded message, written as
    /// a multipart holding it, which every reader reads alike.
    fn wrapped(
        &mut self,
        entity: &Entity<'_>,
        inner: &Entity<'_>,
        out: &mut Vec<u8>,
    ) -> Vec<String> {
        let mut forwarded = Vec::new();
        let mut used = self.entity(inner, &mut forwarded, true);
        // A forward of nothing is an empty text, as in `entity`.
        let part = if forwarded.iter().all(u8::is_ascii_whitespace) {
            b"Content-Type: text/plain\r\n\r\n".to_vec()
        } else {
            [
                b"Content-Type: message/rfc822\r\n\r\n".as_slice(),
                &forwarded,
            ]
            .concat()
        };
        let boundary = self.fresh_boundary(std::slice::from_ref(&part), &used);
        for field in entity.fields.iter().filter(|f| !f.is_structural()) {
            write_field(&field.raw, out);
        }
        let structure = Structure {
            media: Media {
                kind: "multipart".into(),
                subtype: "mixed".into(),
                params: vec![("boundary".into(), boundary.clone())],
            },
            encoding: None,
            disposition: None,
        };
        write_structure(&structure, out);
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&part);
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        used.push(boundary);
        used
    }

    /// The headers of an empty text in place of a part no reader could find
    /// anything in (a multipart without parts, a forward of nothing).
    fn empty_text(&self, entity: &Entity<'_>) -> Structure {
        let mut structure = self.structure(entity, None);
        structure.media = Media::text_plain();
        structure
    }

    /// The canonical structural headers of a part: the media type as read (a
    /// multipart or message that could not be read as one is text, where the
    /// content checks see all of it), one file name in both places, and
    /// `encoding` when the body's transfer encoding is declared (or changed).
    fn structure(&self, entity: &Entity<'_>, encoding: Option<&'static str>) -> Structure {
        let mut media = entity.media.clone();
        media.params.retain(|(name, _)| name != "boundary");
        let mut disposition = entity.disposition.clone();
        if matches!(entity.body, Body::Leaf(_)) && (media.is_multipart() || media.is_message()) {
            media = Media::text_plain();
        }
        if let Some(name) = entity.file_name().map(str::to_string) {
            media.params.retain(|(n, _)| n != "name");
            media.params.push(("name".into(), name.clone()));
            if let Some(disposition) = disposition.as_mut() {
                disposition.params.retain(|(n, _)| n != "filename");
                disposition.params.push(("filename".into(), name));
            }
        }
        let declared = entity
            .fields
            .iter()
            .find(|f| f.is("content-transfer-encoding"))
            .map(|f| f.value.trim().to_ascii_lowercase());
        let encoding = encoding.or(match declared.as_deref() {
            None => None,
            Some("8bit") => Some("8bit"),
            Some("binary") => Some("binary"),
            Some(_) => Some("7bit"),
        });
        Structure {
            media,
            encoding,
            disposition,
        }
    }
}

fn write_field(raw: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
}

fn write_structure(structure: &Structure, out: &mut Vec<u8>) {
    let media = &structure.media;
    out.extend_from_slice(format!("Content-Type: {}/{}", media.kind, media.subtype).as_bytes());
    write_params(&media.params, out);
    if let Some(encoding) = structure.encoding {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {encoding}\r\n").as_bytes());
    }
    if let Some(disposition) = &structure.disposition {
        let kind = if disposition.kind.is_empty() {
            "attachment"
        } else {
            &disposition.kind
        };
        out.extend_from_slice(format!("Content-Disposition: {kind}").as_bytes());
        write_params(&disposition.params, out);
    }
}

/// `;` and each parameter on a folded line of its own: quoted, or RFC 2231
/// (`name*=UTF-8''…`) when the value is not plain ASCII.
fn write_params(params: &[(String, String)], out: &mut Vec<u8>) {
    for (name, value) in params {
        out.extend_from_slice(b";\r\n\t");
        let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b));
        if plain {
            let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
            out.extend_from_slice(format!("{name}=\"{quoted}\"").as_bytes());
        } else {
            let mut encoded = String::new();
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                    encoded.push(b as char);
                } else {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
            out.extend_from_slice(format!("{name}*=UTF-8''{encoded}").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(message: &str) -> String {
        let out = normalize(message.as_bytes()).expect("ambiguous");
        let again = read(&out);
        assert!(
            again.ambiguities.is_empty(),
            "the rewrite is ambiguous: {:?}\n{}",
            again.ambiguities,
            String::from_utf8_lossy(&out)
        );
        assert!(normalize(&out).is_none(), "rewriting twice changes it");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plain_message_is_left_alone() {
        let message = b"From: a@b\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nHello\r\n";
        assert!(normalize(message).is_none());
    }

    #[test]
    fn duplicate_headers_become_one_and_the_other_headers_stay() {
        let out = rewrite(
            "From: a@b\r\nContent-Type: text/plain\r\nSubject: x\r\n\
             Content-Type: application/octet-stream; name=\"a.exe\"\r\n\r\nbody\r\n",
        );
        assert_eq!(out.matches("Content-Type:").count(), 1, "{out}");
        assert!(
            out.starts_with("From: a@b\r\nContent-Type: text/plain"),
            "{out}"
        );
        assert!(out.contains("Subject: x\r\n"), "{out}");
    }

    #[test]
    fn an_open_multipart_with_an_epilogue_part_is_closed_and_cleaned() {
        let out = rewrite(
            "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
             preamble\r\n--B\r\nContent-Type: text/plain\r\n\r\none\r\n--B--\r\n\
             --B\r\nContent-Type: text/plain\r\n\r\nafter the end\r\n",
        );
        assert!(!out.contains("preamble"), "{out}");
        assert!(!out.contains("after the end"), "{out}");
        assert!(out.contains("one\r\n"), "{out}");
        // Its own header was fine: it keeps its boundary, now closed.
        assert!(
            out.starts_with("Content-Type: multipart/mixed; boundary=\"B\"\r\n"),
            "{out}"
        );
        assert!(out.ends_with("one\r\n--B--\r\n"), "{out}");
    }

    #[test]
    fn dirty_base64_is_sent_as_what_a_forgiving_decoder_reads() {
        let out = rewrite(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             TVqQ!!AAMA*AAA\r\n",
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            lenient::base64(body.as_bytes()),
            lenient::base64(b"TVqQAAMAAAA")
        );
        assert!(lenient::base64_flaws(body.as_bytes()).is_none(), "{out}");
    }
}

#[cfg(test)]
mod found_by_fuzzing {
    //! Inputs the `normalize` and `strip` fuzz targets found; each once broke an
    //! invariant (the rewrite was ambiguous, or mail-parser could not read it).
    use super::*;

    const FOUND: &[&[u8]] = &[
        b"Content-Type:multipart;boundary=A",
        b"Content-Type:multipart;boundary=OUTER2\r\n\n--OUTER2Content-Type: message/rfc822\n\nContent-Type:message/rfc822\n\n\n--OUTER2--\n",
        b"Content-Type: multipart/;boundary=OUTER2\r\n\n--OUTER2\nContent-Type:message\n\r\nContent-Type: message\n\nS",
        b"Content-Type:e;*=",
        b"\r:\n\t\nContent-Type:multipart;boundary=B\n\n--B\n--B",
        b"Content-Disposition: ;filename=?\nContent-Type:multipart;boundary=\"B\";name=\n\n--B",
        b":Content-Type:m;name=.exe\n",
        include_bytes!("../../fuzz/regressions/normalize-forward-decoding-to-nothing"),
        // `name=x\\; boundary="b1"`: mail-parser took `\\;` for an escape and
        // never saw the boundary.
        include_bytes!("../../fuzz/regressions/normalize-backslash-in-a-token"),
        // A message/rfc822 part read as one opaque leaf of nothing but an
        // empty line was written again as an empty forward.
        include_bytes!("../../fuzz/regressions/normalize-empty-forward-read-as-a-leaf"),
    ];

    fn leaves(entity: &crate::mime::structure::Entity<'_>) -> usize {
        use crate::mime::structure::Body;
        match &entity.body {
            Body::Leaf(_) => 1,
            Body::Multipart(parts) => parts.iter().map(leaves).sum(),
            Body::Message(inner) => leaves(inner),
        }
    }

    fn parser_leaves(message: &mail_parser::Message<'_>) -> usize {
        message
            .parts
            .iter()
            .map(|part| match &part.body {
                mail_parser::PartType::Multipart(_) => 0,
                mail_parser::PartType::Message(inner) => parser_leaves(inner),
                _ => 1,
            })
            .sum()
    }

    #[test]
    fn every_rewrite_is_read_alike_and_stays_as_it_is() {
        for input in FOUND {
            let shown = String::from_utf8_lossy(input);
            let out = normalize(input).unwrap_or_else(|| panic!("not ambiguous: {shown:?}"));
            let again = read(&out);
            assert!(
                again.ambiguities.is_empty(),
                "{shown:?}: {:?}",
                again.ambiguities
            );
            assert!(normalize(&out).is_none(), "{shown:?}");
            let parsed = std::panic::catch_unwind(|| {
                mail_parser::MessageParser::default()
                    .parse(&out)
                    .map(|m| parser_leaves(&m))
            });
            let Ok(Some(parser_leaves)) = parsed else {
                panic!("mail-parser cannot read the rewrite of {shown:?}");
            };
            assert_eq!(
                leaves(&again.root),
                parser_leaves,
                "two readers disagree on the rewrite of {shown:?}"
            );
        }
    }
}
