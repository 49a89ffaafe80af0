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
    reading
        .is_ambiguous()
        .then(|| rewrite(&reading, message))
}

/// The message written again from a reading of it (`message` seeds the
/// boundaries).
pub fn rewrite(reading: &Reading<'_>, message: &[u8]) -> Vec<u8> {
    let mut writer = Writer {
        seed: crc32fast::hash(message),
        count: 0,
    };
    let mut out = Vec::with_capacity(message.len() + 256);
    writer.entity(&reading.root, &mut out);
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

impl Writer {
    fn boundary(&mut self, children: &[Vec<u8>]) -> String {
        loop {
            self.count += 1;
            // Fixed width, so no boundary of this message begins like another.
            let boundary = format!("=_mm{:08x}_{:05}_", self.seed, self.count);
            let delimiter = format!("--{boundary}");
            if !children
                .iter()
                .any(|c| memchr::memmem::find(c, delimiter.as_bytes()).is_some())
            {
                return boundary;
            }
        }
    }

    fn entity(&mut self, entity: &Entity<'_>, out: &mut Vec<u8>) {
        let declared = entity
            .fields
            .iter()
            .find(|f| f.is("content-transfer-encoding"))
            .map(|f| f.value.trim().to_ascii_lowercase());
        let identity = match declared.as_deref() {
            Some("8bit") => Some("8bit"),
            Some("binary") => Some("binary"),
            Some(_) => Some("7bit"),
            None => None,
        };
        let mut media = entity.media.clone();
        media.params.retain(|(name, _)| name != "boundary");
        let mut disposition = entity.disposition.clone();
        // One name for the file, in both places a reader may look.
        if matches!(entity.body, Body::Leaf(_))
            && let Some(name) = entity.file_name().map(str::to_string)
        {
            media.params.retain(|(n, _)| n != "name");
            media.params.push(("name".into(), name.clone()));
            if let Some(disposition) = disposition.as_mut() {
                disposition.params.retain(|(n, _)| n != "filename");
                disposition.params.push(("filename".into(), name));
            }
        }
        let (structure, body) = match &entity.body {
            Body::Multipart(parts) => {
                let children: Vec<Vec<u8>> = parts
                    .iter()
                    .map(|part| {
                        let mut bytes = Vec::new();
                        self.entity(part, &mut bytes);
                        bytes
                    })
                    .collect();
                let boundary = self.boundary(&children);
                let mut body = Vec::new();
                for child in &children {
                    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                    body.extend_from_slice(child);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                media.params.insert(0, ("boundary".into(), boundary));
                (
                    Structure {
                        media,
                        encoding: identity.map(|_| "7bit"),
                        disposition,
                    },
                    body,
                )
            }
            Body::Message(inner) => {
                let mut body = Vec::new();
                self.entity(inner, &mut body);
                let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
                (
                    Structure {
                        media,
                        encoding: (declared.is_some() || !body.is_ascii()).then_some(encoding),
                        disposition,
                    },
                    body,
                )
            }
            Body::Leaf(raw) => {
                // A multipart or forwarded message that could not be read as one is
                // sent as the text it is, where the content checks see all of it.
                if media.is_multipart() || media.is_message() {
                    media = Media::text_plain();
                }
                match entity.encoding {
                    Encoding::Identity => (
                        Structure {
                            media,
                            encoding: identity,
                            disposition,
                        },
                        raw.to_vec(),
                    ),
                    Encoding::QuotedPrintable => (
                        Structure {
                            media,
                            encoding: Some("quoted-printable"),
                            disposition,
                        },
                        raw.to_vec(),
                    ),
                    Encoding::Base64 | Encoding::Uuencode | Encoding::Unknown => (
                        Structure {
                            media,
                            encoding: Some("base64"),
                            disposition,
                        },
                        lenient::encode_base64_lines(&entity.encoding.decode(raw)),
                    ),
                }
            }
        };
        let had_structure = entity.fields.iter().any(|f| f.is_structural());
        let needs_structure = had_structure
            || matches!(entity.body, Body::Multipart(_))
            || structure.encoding.is_some_and(|e| e == "base64");
        let mut written = false;
        for field in &entity.fields {
            if field.is_structural() {
                if !written {
                    write_structure(&structure, out);
                    written = true;
                }
                continue;
            }
            out.extend_from_slice(&field.raw);
            if !field.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        if needs_structure && !written {
            write_structure(&structure, out);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
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
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b));
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
        assert!(out.starts_with("From: a@b\r\nContent-Type: text/plain"), "{out}");
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
        assert!(out.trim_end().ends_with("_--"), "{out}");
    }

    #[test]
    fn dirty_base64_is_sent_as_what_a_forgiving_decoder_reads() {
        let out = rewrite(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             TVqQ!!AAMA*AAA\r\n",
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(lenient::base64(body.as_bytes()), lenient::base64(b"TVqQAAMAAAA"));
        assert!(lenient::base64_flaws(body.as_bytes()).is_none(), "{out}");
    }
}
