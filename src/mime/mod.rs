//! What a message holds, as the content rules see it: decoded headers, subject, body
//! text and every attachment — through every MIME level, inside forwarded and
//! attached messages, uuencoded in text and inside every container the engine
//! opens ([`crate::containers`]) — and the byte-exact edits the actions make (strip
//! attachments, add, set and remove headers).
//!
//! The parts are the ones [`structure`] reads — the one reading that the
//! ambiguity check has made sure every mail program shares — so what is judged is
//! what the recipient's program shows. Each leaf is judged by what its bytes are,
//! whatever its name, declared type or disposition say: a program is a program, a
//! container is opened, an attached message is read as a message.

pub mod edit;
pub mod lenient;
mod names;
pub mod normalize;
pub mod rfc2047;
pub mod structure;

use std::ops::Range;

use mail_parser::{HeaderValue, MessageParser};

pub use names::{clean_name, extension};

use crate::containers::{self, Budget};
use crate::filetype::{self, FileType};
use structure::{Body, Encoding, Entity};

/// How deep and how much the analysis may go, against bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Containers opened one inside another (1: only the attachment itself).
    pub container_depth: usize,
    /// Entries looked at per container.
    pub container_entries: usize,
    /// Bytes decompressed for one message in all.
    pub container_bytes: usize,
    /// Body text kept for matching.
    pub body_text: usize,
}

impl Limits {
    /// The limits `[rules]` sets.
    pub fn of(rules: &crate::config::RulesConfig) -> Limits {
        let (container_depth, container_bytes, container_entries) = rules.container_limits();
        Limits {
            container_depth,
            container_entries,
            container_bytes,
            body_text: 1024 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::of(&crate::config::RulesConfig::default())
    }
}

/// One attachment (or an entry of a container attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File names given for it (Content-Disposition filename and Content-Type name,
    /// decoded; every name a container gives an entry), with path, trailing dots
    /// and spaces removed. Usually one.
    pub names: Vec<String>,
    /// The declared MIME type, lower case (`application/octet-stream`).
    pub declared_type: String,
    /// What its bytes show (`exe`, `zip`, `pdf` …), whatever it claims.
    pub sniffed: Option<&'static str>,
    /// The container it was found in (`docs.zip`, `outer.zip/inner.7z`), if any.
    pub inside: Option<String>,
    /// What to cut to remove it.
    pub cut: Cut,
    /// Why the engine could not look into it all (encrypted, a format or method
    /// it does not read, damaged, past a limit); None when it could.
    pub unscannable: Option<String>,
    /// It holds Office macros (a VBA project).
    pub macros: bool,
    /// A `message/external-body` part: content fetched from elsewhere.
    pub external: bool,
}

impl Attachment {
    /// Lower-case extensions of its names (`invoice.pdf.exe` → `exe`), as every
    /// reader would take them: a name cut at a NUL or an NTFS stream's colon
    /// (`evil.exe:x`) runs as what comes before.
    pub fn extensions(&self) -> impl Iterator<Item = String> + '_ {
        self.names.iter().flat_map(|name| {
            let mut found: Vec<String> = Vec::new();
            for variant in [
                name.as_str(),
                name.split('\0').next().unwrap_or(name),
                name.split(':').next().unwrap_or(name),
            ] {
                if let Some(ext) = extension(clean_name(variant).as_str())
                    && !found.contains(&ext)
                {
                    found.push(ext);
                }
            }
            found
        })
    }

    /// Where it is: its name, inside the containers around it.
    pub fn path(&self) -> String {
        let name = self
            .names
            .first()
            .map_or("unnamed attachment", String::as_str);
        match &self.inside {
            Some(inside) => format!("{inside}/{name}"),
            None => name.to_string(),
        }
    }
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
    /// Where readers would read something attached differently: a zip's two
    /// readings, data after the end of a container, an attached message whose
    /// structure is ambiguous.
    pub ambiguities: Vec<String>,
}

impl Content {
    /// Analyses a raw message (CRLF line ends, as received).
    pub fn analyze(raw: &[u8], limits: &Limits) -> Content {
        Content::of(raw, &structure::read(raw), limits)
    }

    /// Analyses a message already read.
    pub fn of(raw: &[u8], reading: &structure::Reading<'_>, limits: &Limits) -> Content {
        let mut content = Content::default();
        // mail-parser panics on some inputs; the headers are then left out, and the
        // body is still judged by the structure.
        if let Ok(Some(message)) =
            std::panic::catch_unwind(|| MessageParser::default().parse_headers(raw))
        {
            for header in message.headers() {
                let value = header_text(raw, header);
                content
                    .headers
                    .push((header.name.as_str().to_lowercase(), value));
            }
            content.subject = message.subject().unwrap_or_default().to_string();
        }
        let mut walk = Walk {
            raw,
            limits,
            content: &mut content,
            budget: Budget::new(limits.container_bytes),
            inside: None,
        };
        walk.entity(&reading.root, true, None, 0);
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

struct Walk<'a, 'c> {
    raw: &'a [u8],
    limits: &'a Limits,
    content: &'c mut Content,
    /// What may still be decompressed.
    budget: Budget,
    /// The container (or attached message) being walked, for names.
    inside: Option<String>,
}

impl Walk<'_, '_> {
    /// Where a slice is in the message, if it is a slice of it.
    fn offset(&self, slice: &[u8]) -> Option<usize> {
        let start = self.raw.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        (at >= start && at + slice.len() <= start + self.raw.len()).then(|| at - start)
    }

    /// Walks an entity. Its own cut, when its bytes are in the message; else the
    /// `enclosing` one (a decoded forward, an attached message): removing any of
    /// it removes all of that.
    fn entity(&mut self, e: &Entity<'_>, top: bool, enclosing: Option<&Cut>, depth: usize) {
        let own = self.offset(&e.raw).map(|start| {
            let end = start + e.raw.len();
            if top && !matches!(e.body, Body::Multipart(_)) {
                Cut::WholeBody {
                    body: start + e.body_offset..end,
                }
            } else {
                Cut::Part(start..end)
            }
        });
        let Some(cut) = own.or_else(|| enclosing.cloned()) else {
            return;
        };
        match &e.body {
            Body::Multipart(parts) => {
                for part in parts {
                    self.entity(part, false, Some(&cut), depth);
                }
            }
            Body::Message(inner) => {
                let names = names_of(e);
                if !names.is_empty() {
                    self.push(names, part_type(e), None, &cut);
                }
                self.entity(inner, false, Some(&cut), depth);
            }
            Body::Leaf(bytes) => {
                let decoded = e.encoding.decode(bytes);
                let names = names_of(e);
                let declared = part_type(e);
                if declared == "message/external-body" {
                    let index = self.push(names, declared, None, &cut);
                    self.content.attachments[index].external = true;
                    return;
                }
                if e.media.kind == "text" {
                    let kind = filetype::identify(&decoded);
                    let hidden = match kind {
                        Some(FileType::Script | FileType::Message) => false,
                        Some(_) => true,
                        None => lenient::contains_program(&decoded),
                    };
                    if !names.is_empty() || is_attachment_disposition(e) || hidden {
                        self.leaf(&decoded, names, declared, &cut, depth);
                    } else {
                        let charset = e.media.param("charset").unwrap_or("us-ascii");
                        self.body_text(&rfc2047::decode_charset(charset, &decoded));
                    }
                    self.embedded(&decoded, e, bytes, &cut, depth);
                } else {
                    self.leaf(&decoded, names, declared, &cut, depth);
                }
            }
        }
    }

    /// Adds an attachment; returns its index.
    fn push(
        &mut self,
        names: Vec<String>,
        declared_type: String,
        sniffed: Option<&'static str>,
        cut: &Cut,
    ) -> usize {
        self.content.attachments.push(Attachment {
            names,
            declared_type,
            sniffed,
            inside: self.inside.clone(),
            cut: cut.clone(),
            unscannable: None,
            macros: false,
            external: false,
        });
        self.content.attachments.len() - 1
    }

    /// A file: judged by what its bytes are, and opened when it is a container
    /// or a message.
    fn leaf(
        &mut self,
        bytes: &[u8],
        names: Vec<String>,
        declared: String,
        cut: &Cut,
        depth: usize,
    ) {
        let index = self.push(names, declared, None, cut);
        self.inspect(index, bytes, depth);
    }

    /// What an attachment's bytes are; what it holds, when it holds something.
    fn inspect(&mut self, index: usize, bytes: &[u8], depth: usize) {
        let kind = filetype::identify(bytes);
        let sniffed = kind
            .map(FileType::name)
            .or_else(|| lenient::contains_program(bytes).then_some("exe"));
        self.content.attachments[index].sniffed = sniffed;
        let opened = kind.is_some_and(|k| k.is_readable_container() || k == FileType::Message);
        if !opened
            && !kind.is_some_and(FileType::is_program)
            && let Some(archive) = filetype::hidden_archive(bytes)
        {
            let label = self.content.attachments[index].path();
            let what = kind.map_or("file", FileType::name);
            self.content.ambiguities.push(format!(
                "{label}: a {what} with a {} archive inside, which extractors open",
                archive.name()
            ));
        }
        let Some(kind) = kind else { return };
        let unreadable = if kind.is_unread_container() {
            Some(format!(
                "a {} file, which the engine does not read",
                kind.name()
            ))
        } else if (kind.is_readable_container() || kind == FileType::Message)
            && depth >= self.limits.container_depth
        {
            Some(format!(
                "nested deeper than container_depth = {}",
                self.limits.container_depth
            ))
        } else {
            None
        };
        if let Some(why) = unreadable {
            self.unscannable(index, why);
            return;
        }
        if kind == FileType::Message {
            self.attached_message(index, bytes, depth);
        } else if kind.is_readable_container() {
            self.container(index, kind, bytes, depth);
        }
    }

    fn unscannable(&mut self, index: usize, why: String) {
        let attachment = &mut self.content.attachments[index];
        attachment.unscannable = Some(match attachment.unscannable.take() {
            Some(before) => format!("{before}; {why}"),
            None => why,
        });
    }

    /// An attached message (`.eml`, an entry that is a message): read as the
    /// mail program that opens it reads it.
    fn attached_message(&mut self, index: usize, bytes: &[u8], depth: usize) {
        let label = self.content.attachments[index].path();
        let cut = self.content.attachments[index].cut.clone();
        let message = structure::crlf(bytes);
        let reading = structure::read(&message);
        for ambiguity in &reading.ambiguities {
            self.content
                .ambiguities
                .push(format!("{label}: {ambiguity}"));
        }
        let outer = self.inside.replace(label);
        self.entity(&reading.root, false, Some(&cut), depth + 1);
        self.inside = outer;
    }

    /// A container: every entry judged like an attachment, and opened in turn.
    fn container(&mut self, index: usize, kind: FileType, bytes: &[u8], depth: usize) {
        let label = self.content.attachments[index].path();
        let cut = self.content.attachments[index].cut.clone();
        let name = self.content.attachments[index].names.first().cloned();
        let budget = &mut self.budget;
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            containers::open(kind, bytes, name.as_deref(), budget)
        }));
        let mut container = match opened {
            Ok(Ok(container)) => container,
            Ok(Err(why)) => return self.unscannable(index, why),
            Err(_) => return self.unscannable(index, "damaged (its reader failed)".into()),
        };
        let entries = container.entries().to_vec();
        if entries.len() > self.limits.container_entries {
            self.unscannable(
                index,
                format!(
                    "{} entries, more than container_entries = {}",
                    entries.len(),
                    self.limits.container_entries
                ),
            );
        }
        let outer = self.inside.replace(label.clone());
        for (i, entry) in entries
            .iter()
            .enumerate()
            .take(self.limits.container_entries)
        {
            let mut names: Vec<String> = Vec::new();
            for name in &entry.names {
                let clean = clean_name(name);
                if !clean.is_empty() && !names.contains(&clean) {
                    names.push(clean);
                }
            }
            let child = self.push(names, String::new(), None, &cut);
            let budget = &mut self.budget;
            let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                container.open(i, budget)
            }));
            match data {
                Ok(Ok(bytes)) => self.inspect(child, &bytes, depth + 1),
                Ok(Err(why)) => self.unscannable(child, why),
                Err(_) => self.unscannable(child, "damaged (its reader failed)".into()),
            }
        }
        self.inside = outer;
        for why in container.unseen() {
            self.unscannable(index, why);
        }
        for ambiguity in container.ambiguities() {
            self.content
                .ambiguities
                .push(format!("{label}: {ambiguity}"));
        }
        if container.holds_macros() {
            self.content.attachments[index].macros = true;
        }
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
    /// base64) are attachments too, opened like any file. In a part that is not
    /// transfer-encoded, each can be cut out on its own; otherwise the whole part
    /// goes.
    fn embedded(&mut self, decoded: &[u8], e: &Entity<'_>, body: &[u8], cut: &Cut, depth: usize) {
        for block in lenient::embedded(decoded) {
            let body_at = self.offset(body);
            let declared = e.fields.iter().any(|f| {
                f.is("content-transfer-encoding")
                    && !matches!(
                        f.value.trim().to_ascii_lowercase().as_str(),
                        "" | "7bit" | "8bit" | "binary"
                    )
            });
            let block_cut = match body_at {
                Some(body_at)
                    if e.encoding == Encoding::Identity && block.whole_lines && !declared =>
                {
                    let start = body_at + block.range.start;
                    let mut end = body_at + block.range.end;
                    // The line end goes with the block, if it is the part's own.
                    if end + 2 <= body_at + body.len() && self.raw[end..].starts_with(b"\r\n") {
                        end += 2;
                    }
                    Cut::Block(start..end)
                }
                _ => cut.clone(),
            };
            let index = self.push(
                vec![clean_name(&block.name)],
                "text/x-uuencode".into(),
                block.sniffed,
                &block_cut,
            );
            if block.sniffed.is_some_and(|kind| kind != "exe") {
                let file = block.decode(decoded);
                self.inspect(index, &file, depth);
                if self.content.attachments[index].sniffed.is_none() {
                    self.content.attachments[index].sniffed = block.sniffed;
                }
            }
        }
    }
}

/// Text in a charset, decoded as mail programs decode it.
fn part_type(e: &Entity<'_>) -> String {
    format!("{}/{}", e.media.kind, e.media.subtype)
}

fn is_attachment_disposition(e: &Entity<'_>) -> bool {
    e.disposition
        .as_ref()
        .is_some_and(|d| d.kind.eq_ignore_ascii_case("attachment"))
}

/// Every name a part gives itself: both places, since they may disagree.
fn names_of(e: &Entity<'_>) -> Vec<String> {
    let mut names = Vec::new();
    let candidates = [
        e.disposition.as_ref().and_then(|d| d.param("filename")),
        e.media.param("name"),
    ];
    for name in candidates.into_iter().flatten() {
        let name = clean_name(name);
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
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
