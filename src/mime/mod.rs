//! What a message holds, as the content rules see it: decoded headers, subject, body
//! text and every attachment — through every MIME level, inside forwarded messages,
//! uuencoded in text and inside zip archives — and the byte-exact edits the actions
//! make (strip attachments, add, set and remove headers).

pub mod edit;
pub mod sniff;
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
    fn range(&self) -> Range<usize> {
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
        let mut content = Content::default();
        let Some(message) = MessageParser::default().parse(raw) else {
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

impl Walk<'_> {
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
                        self.add(
                            vec![clean_name(name)],
                            part_type(part),
                            None,
                            None,
                            cut.clone(),
                        );
                    }
                    self.message(nested, nested_base, cut.as_ref(), false);
                }
                PartType::Text(text) | PartType::Html(text) => {
                    let names = names_of(part);
                    if !names.is_empty() || is_attachment_disposition(part) {
                        let sniffed = sniff::sniff(text.as_bytes());
                        self.add(names, part_type(part), sniffed, None, cut.clone());
                    } else {
                        self.text(text, part, base, cut.as_ref());
                    }
                }
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                    let names = names_of(part);
                    let sniffed = sniff::sniff(bytes);
                    let is_zip = sniffed == Some("zip")
                        || names.iter().any(|n| extension(n).as_deref() == Some("zip"));
                    let label = names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "attachment".into());
                    self.add(names, part_type(part), sniffed, None, cut.clone());
                    if is_zip && let Some(cut) = &cut {
                        for entry in zip::entries(bytes, self.limits, &label) {
                            self.content.attachments.push(Attachment {
                                names: vec![clean_name(&entry.name)],
                                declared_type: String::new(),
                                sniffed: entry.sniffed,
                                inside: Some(entry.archive),
                                cut: cut.clone(),
                            });
                        }
                    }
                }
            }
        }
    }

    fn add(
        &mut self,
        names: Vec<String>,
        declared_type: String,
        sniffed: Option<&'static str>,
        inside: Option<String>,
        cut: Option<Cut>,
    ) {
        let Some(cut) = cut else { return };
        self.content.attachments.push(Attachment {
            names,
            declared_type,
            sniffed,
            inside,
            cut,
        });
    }

    /// A text part: its text counts as body text; uuencoded files in it count as
    /// attachments.
    fn text(
        &mut self,
        text: &str,
        part: &mail_parser::MessagePart<'_>,
        base: Option<usize>,
        enclosing: Option<&Cut>,
    ) {
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
        for block in uuencoded_blocks(text) {
            // A block in a part that is not transfer-encoded can be cut out of the
            // original bytes; otherwise the whole part goes.
            let cut = match (base, part.encoding) {
                (Some(base), Encoding::None) => {
                    let body = base + part.offset_body as usize..base + part.offset_end as usize;
                    find_block(self.raw, body, &block.begin_line)
                        .map(Cut::Block)
                        .or_else(|| {
                            Some(Cut::Part(
                                base + part.offset_header as usize..base + part.offset_end as usize,
                            ))
                        })
                }
                (Some(base), _) => Some(Cut::Part(
                    base + part.offset_header as usize..base + part.offset_end as usize,
                )),
                (None, _) => enclosing.cloned(),
            };
            self.add(
                vec![clean_name(&block.name)],
                "text/x-uuencode".into(),
                block.sniffed,
                None,
                cut,
            );
        }
    }
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

/// A uuencoded file found in text.
struct UuBlock {
    name: String,
    begin_line: String,
    sniffed: Option<&'static str>,
}

fn uuencoded_blocks(text: &str) -> Vec<UuBlock> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut fields = line.splitn(3, ' ');
        let is_begin = fields.next() == Some("begin")
            && fields.next().is_some_and(|mode| {
                (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b))
            });
        let Some(name) = fields.next().filter(|_| is_begin) else {
            continue;
        };
        let first = lines.next().unwrap_or("");
        blocks.push(UuBlock {
            name: name.trim().to_string(),
            begin_line: line.to_string(),
            sniffed: sniff::sniff(&uudecode_line(first)),
        });
    }
    blocks
}

/// Decodes one uuencoded line (enough to sniff the file's first bytes).
fn uudecode_line(line: &str) -> Vec<u8> {
    let bytes = line.as_bytes();
    let Some(&len) = bytes.first() else {
        return Vec::new();
    };
    let want = (len.wrapping_sub(b' ') & 0x3f) as usize;
    let sextet = |b: u8| b.wrapping_sub(b' ') & 0x3f;
    let mut out = Vec::with_capacity(want);
    for chunk in bytes[1..].chunks(4) {
        if chunk.len() < 4 {
            break;
        }
        let (a, b, c, d) = (
            sextet(chunk[0]),
            sextet(chunk[1]),
            sextet(chunk[2]),
            sextet(chunk[3]),
        );
        out.extend_from_slice(&[(a << 2) | (b >> 4), (b << 4) | (c >> 2), (c << 6) | d]);
    }
    out.truncate(want);
    out
}

/// The bytes of a uuencoded block (its `begin` line to its `end` line, included) in
/// the raw body of a part.
fn find_block(raw: &[u8], body: Range<usize>, begin_line: &str) -> Option<Range<usize>> {
    let region = raw.get(body.clone())?;
    let start = memchr::memmem::find(region, begin_line.as_bytes())?;
    let after = &region[start..];
    let end_rel = [&b"\r\nend\r\n"[..], b"\r\nend\r", b"\r\nend"]
        .iter()
        .find_map(|marker| memchr::memmem::find(after, marker).map(|at| at + marker.len()))?;
    Some(body.start + start..body.start + start + end_rel)
}

#[cfg(test)]
mod tests;
