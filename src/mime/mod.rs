//! What a message holds, as the content rules see it: decoded headers, subject, body
//! text and every attachment — through every MIME level, inside forwarded messages,
//! uuencoded in text and inside zip archives — and the byte-exact edits the actions
//! make (strip attachments, add, set and remove headers).

pub mod edit;
pub mod lenient;
pub mod normalize;
pub mod rfc2047;
pub mod sniff;
pub mod structure;
pub mod zip;

use std::ops::Range;

use mail_parser::{Encoding, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

/// How deep and how much the analysis may go, against bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nested zip archives opened (1: only the attachment itself).
    pub zip_depth: usize,
    /// Entries listed per archive.
    pub zip_entries: usize,
    /// Bytes decompressed per archive in all, to open nested archives.
    pub zip_bytes: usize,
    /// Body text kept for matching.
    pub body_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            zip_depth: 3,
            zip_entries: 1000,
            zip_bytes: 16 * 1024 * 1024,
            body_text: 1024 * 1024,
        }
    }
}

/// One attachment (or an entry of an archive attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File names given for it (Content-Disposition filename and Content-Type name,
    /// decoded), with trailing dots and spaces removed. Usually one.
    pub names: Vec<String>,
    /// The declared MIME type, lower case (`application/octet-stream`).
    pub declared_type: String,
    /// The type its first bytes show (`exe`, `zip`, `pdf` …), whatever it claims.
    pub sniffed: Option<&'static str>,
    /// The archive it was found in (`docs.zip`, `outer.zip/inner.zip`), if any.
    pub inside: Option<String>,
    /// What to cut to remove it.
    pub cut: Cut,
    /// Why the engine could not look into it all (an encrypted or too deep
    /// archive …); None when it could.
    pub unscannable: Option<String>,
}

impl Attachment {
    /// Lower-case extensions of its names (`invoice.pdf.exe` → `exe`).
    pub fn extensions(&self) -> impl Iterator<Item = String> + '_ {
        self.names.iter().filter_map(|name| extension(name))
    }
}

/// The last extension of a file name, lower case.
pub fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty()).then(|| ext.to_lowercase())
}

/// Bytes of the original message to replace to remove something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// A whole MIME part: headers and body (`[start, end)` of the raw message).
    Part(Range<usize>),
    /// The body of a message that is itself the attachment (no multipart): its
    /// content headers and body are replaced, its other headers kept.
    WholeBody { body: Range<usize> },
    /// A block (uuencoded file) inside a text part that is not transfer-encoded.
    Block(Range<usize>),
}

impl Cut {
    pub fn range(&self) -> Range<usize> {
        match self {
            Cut::Part(r) | Cut::Block(r) => r.clone(),
            Cut::WholeBody { body } => body.clone(),
        }
    }
}

/// A message as the content rules see it.
#[derive(Debug, Default)]
pub struct Content {
    /// Top-level headers: lower-case name, value decoded (RFC 2047), unfolded.
    pub headers: Vec<(String, String)>,
    pub subject: String,
    /// The decoded text of the text parts, up to [`Limits::body_text`].
    pub body_text: String,
    pub attachments: Vec<Attachment>,
}

impl Content {
    /// Analyses a raw message (CRLF line ends, as received).
    pub fn analyze(raw: &[u8], limits: &Limits) -> Content {
        // mail-parser panics on some structures (0.11.9: "Invalid part ID"); a
        // message it cannot read is not clean, it is unscannable — its body goes
        // as [mime] unscannable says.
        let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw));
        let Ok(parsed) = parsed else {
            let body = edit::header_end(raw)..raw.len();
            return Content {
                attachments: vec![Attachment {
                    names: Vec::new(),
                    declared_type: "message".into(),
                    sniffed: None,
                    inside: None,
                    cut: Cut::WholeBody { body },
                    unscannable: Some("the MIME structure could not be read".into()),
                }],
                ..Content::default()
            };
        };
        let mut content = Content::default();
        let Some(message) = parsed else {
            return content;
        };
        if let Some(root) = message.parts.first() {
            for header in &root.headers {
                let value = header_text(raw, header);
                content
                    .headers
                    .push((header.name.as_str().to_lowercase(), value));
            }
        }
        content.subject = message.subject().unwrap_or_default().to_string();
        let mut walk = Walk {
            raw,
            limits,
            content: &mut content,
        };
        walk.message(&message, Some(0), None, true);
        content
    }

    /// Values of a header (lower-case name).
    pub fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Walk<'a> {
    raw: &'a [u8],
    limits: &'a Limits,
    content: &'a mut Content,
}

impl<'a> Walk<'a> {
    /// Walks a (possibly nested) message. `base`: where its offsets point in the
    /// original bytes (`Some(0)` at the top and in forwarded messages that are not
    /// transfer-encoded); `None` when they point into a decoded copy, in which case
    /// `enclosing` is the cut that removes the whole forwarded message instead.
    fn message(
        &mut self,
        message: &Message<'_>,
        base: Option<usize>,
        enclosing: Option<&Cut>,
        top: bool,
    ) {
        for (index, part) in message.parts.iter().enumerate() {
            let own_cut = base.map(|base| {
                if index == 0 && top && !matches!(part.body, PartType::Multipart(_)) {
                    Cut::WholeBody {
                        body: base + part.offset_body as usize..base + part.offset_end as usize,
                    }
                } else {
                    Cut::Part(base + part.offset_header as usize..base + part.offset_end as usize)
                }
            });
            let cut = own_cut.clone().or_else(|| enclosing.cloned());
            match &part.body {
                PartType::Multipart(_) => {}
                PartType::Message(nested) => {
                    // mail-parser parses a transfer-encoded forwarded message from a
                    // decoded copy: its offsets do not point into these bytes.
                    let nested_base = match (base, part.encoding) {
                        (Some(_), Encoding::None) => Some(0),
                        _ => None,
                    };
                    if let Some(name) = part.attachment_name() {
                        self.add(vec![clean_name(name)], part_type(part), None, cut.clone());
                    }
                    self.message(nested, nested_base, cut.as_ref(), false);
                }
                PartType::Text(text) | PartType::Html(text) => {
                    // Judged by what a forgiving reader decodes from the bytes, not
                    // by the text mail-parser made of them in some charset.
                    let decoded = self.decoded(part, base);
                    let bytes = decoded.as_deref().unwrap_or(text.as_bytes());
                    let names = names_of(part);
                    let sniffed = sniff::sniff(bytes)
                        .or_else(|| lenient::contains_program(bytes).then_some("exe"));
                    let hidden = sniffed.is_some_and(|kind| kind != "script");
                    if !names.is_empty() || is_attachment_disposition(part) || hidden {
                        self.add(names, part_type(part), sniffed, cut.clone());
                    } else {
                        self.body_text(text);
                    }
                    self.embedded(bytes, part, base, cut.as_ref());
                }
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                    let decoded = self.decoded(part, base);
                    let names = names_of(part);
                    // What some reader decodes: mail-parser's bytes, or a forgiving
                    // decoder's where they differ.
                    let bytes: &[u8] = match &decoded {
                        Some(lenient) if sniff::sniff(bytes).is_none() => lenient,
                        _ => bytes,
                    };
                    let sniffed = sniff::sniff(bytes)
                        .or_else(|| lenient::contains_program(bytes).then_some("exe"));
                    let is_zip = sniffed == Some("zip")
                        || names.iter().any(|n| extension(n).as_deref() == Some("zip"));
                    let label = names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "attachment".into());
                    let listing = is_zip.then(|| zip::entries(bytes, self.limits, &label));
                    if let Some(cut) = &cut {
                        self.content.attachments.push(Attachment {
                            names,
                            declared_type: part_type(part),
                            sniffed,
                            inside: None,
                            cut: cut.clone(),
                            unscannable: listing.as_ref().and_then(zip::Listing::unscannable),
                        });
                        for entry in listing.into_iter().flat_map(|l| l.entries) {
                            self.content.attachments.push(Attachment {
                                names: vec![clean_name(&entry.name)],
                                declared_type: String::new(),
                                sniffed: entry.sniffed,
                                inside: Some(entry.archive),
                                cut: cut.clone(),
                                unscannable: None,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The body of a part as a forgiving reader decodes it, when its bytes are in
    /// the original message.
    fn decoded(
        &self,
        part: &mail_parser::MessagePart<'_>,
        base: Option<usize>,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        let base = base?;
        let raw: &'a [u8] = self.raw;
        let body = raw.get(base + part.offset_body as usize..base + part.offset_end as usize)?;
        Some(match part.encoding {
            Encoding::Base64 => lenient::base64(body).into(),
            Encoding::QuotedPrintable => lenient::quoted_printable(body).into(),
            Encoding::None => body.into(),
        })
    }

    fn add(
        &mut self,
        names: Vec<String>,
        declared_type: String,
        sniffed: Option<&'static str>,
        cut: Option<Cut>,
    ) {
        let Some(cut) = cut else { return };
        self.content.attachments.push(Attachment {
            names,
            declared_type,
            sniffed,
            inside: None,
            cut,
            unscannable: None,
        });
    }

    /// Text counts as body text, up to the limit.
    fn body_text(&mut self, text: &str) {
        let room = self
            .limits
            .body_text
            .saturating_sub(self.content.body_text.len());
        if room > 0 {
            let mut end = text.len().min(room);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            self.content.body_text.push_str(&text[..end]);
            self.content.body_text.push('\n');
        }
    }

    /// Files encoded inside the text of a part (uuencode, begin-base64, runs of
    /// base64) are attachments too. In a part that is not transfer-encoded, each
    /// can be cut out on its own; otherwise the whole part goes.
    fn embedded(
        &mut self,
        decoded: &[u8],
        part: &mail_parser::MessagePart<'_>,
        base: Option<usize>,
        enclosing: Option<&Cut>,
    ) {
        for block in lenient::embedded(decoded) {
            let whole_part = base.map(|base| {
                Cut::Part(base + part.offset_header as usize..base + part.offset_end as usize)
            });
            let declared = base.is_some_and(|base| {
                declares_transfer_encoding(
                    &self.raw[base + part.offset_header as usize..base + part.offset_body as usize],
                )
            });
            let cut = match (base, part.encoding) {
                (Some(base), Encoding::None) if block.whole_lines && !declared => {
                    let start = base + part.offset_body as usize + block.range.start;
                    let mut end = base + part.offset_body as usize + block.range.end;
                    // The line end goes with the block, if it is the part's own.
                    let part_end = base + part.offset_end as usize;
                    if end + 2 <= part_end && self.raw[end..].starts_with(b"\r\n") {
                        end += 2;
                    }
                    Some(Cut::Block(start..end))
                }
                (Some(_), _) => whole_part,
                (None, _) => enclosing.cloned(),
            };
            self.add(
                vec![clean_name(&block.name)],
                "text/x-uuencode".into(),
                block.sniffed,
                cut,
            );
        }
    }
}

/// Whether a part's header declares a transfer encoding that changes its bytes
/// (quoted-printable, base64, anything but 7bit, 8bit, binary). mail-parser
/// reads a body it cannot decode as it is; other readers decode it their way,
/// so only a part that declares none has text that is its raw bytes.
fn declares_transfer_encoding(header: &[u8]) -> bool {
    String::from_utf8_lossy(header)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| {
            name.trim()
                .eq_ignore_ascii_case("content-transfer-encoding")
        })
        .any(|(_, value)| {
            let value = value.trim().to_ascii_lowercase();
            !matches!(value.as_str(), "" | "7bit" | "8bit" | "binary")
        })
}

fn part_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match &ct.c_subtype {
            Some(sub) => format!("{}/{}", ct.c_type, sub).to_lowercase(),
            None => ct.c_type.to_lowercase(),
        },
        None => "text/plain".into(),
    }
}

fn is_attachment_disposition(part: &mail_parser::MessagePart<'_>) -> bool {
    part.content_disposition()
        .is_some_and(|cd| cd.c_type.eq_ignore_ascii_case("attachment"))
}

/// Every name a part gives itself: both places, since they may disagree.
fn names_of(part: &mail_parser::MessagePart<'_>) -> Vec<String> {
    let mut names = Vec::new();
    let candidates = [
        part.content_disposition()
            .and_then(|cd| cd.attribute("filename")),
        part.content_type().and_then(|ct| ct.attribute("name")),
    ];
    for name in candidates.into_iter().flatten() {
        let name = clean_name(name);
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Windows ignores trailing dots and spaces (`evil.exe. ` runs as `evil.exe`), and
/// a path is not part of the name.
pub fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.trim_end_matches(['.', ' ', '\t'])
        .trim_start()
        .to_string()
}

/// A header's value as text: decoded, unfolded.
fn header_text(raw: &[u8], header: &mail_parser::Header<'_>) -> String {
    match &header.value {
        HeaderValue::Text(text) => text.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        HeaderValue::Address(address) => {
            let render = |a: &mail_parser::Addr<'_>| match (&a.name, &a.address) {
                (Some(name), Some(addr)) => format!("{name} <{addr}>"),
                (None, Some(addr)) => addr.to_string(),
                (Some(name), None) => name.to_string(),
                (None, None) => String::new(),
            };
            match address {
                mail_parser::Address::List(list) => {
                    list.iter().map(render).collect::<Vec<_>>().join(", ")
                }
                mail_parser::Address::Group(groups) => groups
                    .iter()
                    .flat_map(|g| g.addresses.iter().map(render))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        }
        _ => {
            let bytes = raw
                .get(header.offset_start as usize..header.offset_end as usize)
                .unwrap_or_default();
            String::from_utf8_lossy(bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        }
    }
}

#[cfg(test)]
mod tests;
