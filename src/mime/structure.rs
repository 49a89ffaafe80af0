//! The MIME structure of a message as mailmoat reads it — one reading — and every
//! place where another reader could read it differently.
//!
//! Readers disagree where a message leaves them a choice: two Content-Type headers
//! (mail-parser takes the last, Python the first), two `boundary` parameters, an
//! RFC 2231 name beside a plain one, a boundary folded or padded or written so that
//! one reader's delimiter is another's text, a multipart left open, parts after
//! its end, files in its preamble, base64 with garbage that decoders skip or stop
//! at, transfer encodings some clients know and others do not. Each of these is an
//! [`Ambiguity`], found by the structure itself, at any depth of nesting and inside
//! forwarded messages. A message with none is read the same by every reader; one
//! with any is refused, quarantined or rewritten ([`super::normalize`]) so that
//! there is only one way to read it.
//!
//! One file on purpose: it is one recursive reading (header fields, parameters,
//! boundaries, bodies), where every ambiguity is flagged at the point the choice
//! arises; the normalizer and the fuzzers depend on all of it agreeing with
//! itself. Its tests live in `structure/tests.rs`.

use std::borrow::Cow;
use std::fmt;

use super::lenient;
pub use super::rfc2047::decode_charset;

/// Deeper than this, the structure itself is a problem.
pub const MAX_DEPTH: usize = 32;

/// One place where readers can disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguity {
    /// `message`, or the part: `part 2.1` (1-based, as mail programs number them).
    pub at: String,
    pub problem: String,
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.problem)
    }
}

/// A header field as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name, as written (without the colon).
    pub name: Cow<'a, str>,
    /// The whole field: name, colon, value, folded lines, line end.
    pub raw: Cow<'a, [u8]>,
    /// The value, unfolded, trimmed.
    pub value: String,
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.trim_end().eq_ignore_ascii_case(name)
    }

    /// Content-Type, Content-Transfer-Encoding or Content-Disposition: the headers
    /// that decide how a part is read.
    pub fn is_structural(&self) -> bool {
        STRUCTURAL.iter().any(|name| self.is(name))
    }

    fn into_owned(self) -> Field<'static> {
        Field {
            name: Cow::Owned(self.name.into_owned()),
            raw: Cow::Owned(self.raw.into_owned()),
            value: self.value,
        }
    }
}

const STRUCTURAL: [&str; 3] = [
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
];

/// A media type with its parameters, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Lower case: `multipart`, `text` …
    pub kind: String,
    pub subtype: String,
    /// Lower-case names, each once (RFC 2231 sections joined and decoded).
    pub params: Vec<(String, String)>,
}

impl Media {
    pub fn text_plain() -> Media {
        Media {
            kind: "text".into(),
            subtype: "plain".into(),
            params: Vec::new(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.kind == "multipart"
    }

    pub fn is_message(&self) -> bool {
        self.kind == "message" && matches!(self.subtype.as_str(), "rfc822" | "global")
    }
}

/// A transfer encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 7bit, 8bit or binary: the body is as it is.
    Identity,
    QuotedPrintable,
    Base64,
    /// `x-uuencode` and its relatives: known to some readers only.
    Uuencode,
    /// Anything else: readers treat it as identity or refuse it.
    Unknown,
}

impl Encoding {
    fn parse(value: &str) -> Encoding {
        match value.trim().to_ascii_lowercase().as_str() {
            "7bit" | "8bit" | "binary" | "" => Encoding::Identity,
            "quoted-printable" => Encoding::QuotedPrintable,
            "base64" => Encoding::Base64,
            "x-uuencode" | "uuencode" | "x-uue" | "uue" => Encoding::Uuencode,
            _ => Encoding::Unknown,
        }
    }

    /// The body decoded, forgivingly.
    pub fn decode<'b>(self, body: &'b [u8]) -> Cow<'b, [u8]> {
        match self {
            Encoding::Identity | Encoding::Unknown => Cow::Borrowed(body),
            Encoding::QuotedPrintable => Cow::Owned(lenient::quoted_printable(body)),
            Encoding::Base64 => Cow::Owned(lenient::base64(body)),
            Encoding::Uuencode => Cow::Owned(lenient::uudecode_body(body)),
        }
    }
}

/// What a part holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// A leaf: the body as written (still transfer-encoded).
    Leaf(Cow<'a, [u8]>),
    /// The parts of a multipart, in order (preamble and epilogue left out).
    Multipart(Vec<Entity<'a>>),
    /// A forwarded message (message/rfc822), read as a message of its own.
    Message(Box<Entity<'a>>),
}

/// A message or a part: its header fields and what the reading made of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity<'a> {
    pub fields: Vec<Field<'a>>,
    pub media: Media,
    pub encoding: Encoding,
    /// The disposition (`attachment`, `inline`) with its parameters.
    pub disposition: Option<Media>,
    pub body: Body<'a>,
    /// Its own headers (or its boundary) are read differently by different
    /// readers; false when only what it holds is.
    pub header_ambiguous: bool,
    /// All of it, header and body, as read: a slice of the message (so that
    /// where it is can be told), or a copy for a decoded forwarded message.
    pub raw: Cow<'a, [u8]>,
    /// Where its body begins in `raw`.
    pub body_offset: usize,
}

impl Entity<'_> {
    /// Where the first part that `test` picks is (`message`, `part 2.1` …), at
    /// any depth.
    pub fn find(&self, test: &dyn Fn(&Entity<'_>) -> bool) -> Option<String> {
        fn walk(e: &Entity<'_>, at: &str, test: &dyn Fn(&Entity<'_>) -> bool) -> Option<String> {
            if test(e) {
                return Some(at.to_string());
            }
            match &e.body {
                Body::Leaf(_) => None,
                Body::Message(inner) => walk(inner, &format!("{at}, forwarded message"), test),
                Body::Multipart(parts) => parts.iter().enumerate().find_map(|(i, part)| {
                    let child = if at == "message" {
                        format!("part {}", i + 1)
                    } else {
                        format!("{at}.{}", i + 1)
                    };
                    walk(part, &child, test)
                }),
            }
        }
        walk(self, "message", test)
    }

    /// The file name, if the part gives one (the disposition's first).
    pub fn file_name(&self) -> Option<&str> {
        self.disposition
            .as_ref()
            .and_then(|d| d.param("filename"))
            .or_else(|| self.media.param("name"))
    }

    fn into_owned(self) -> Entity<'static> {
        Entity {
            fields: self.fields.into_iter().map(Field::into_owned).collect(),
            media: self.media,
            encoding: self.encoding,
            disposition: self.disposition,
            header_ambiguous: self.header_ambiguous,
            raw: Cow::Owned(self.raw.into_owned()),
            body_offset: self.body_offset,
            body: match self.body {
                Body::Leaf(bytes) => Body::Leaf(Cow::Owned(bytes.into_owned())),
                Body::Multipart(parts) => {
                    Body::Multipart(parts.into_iter().map(Entity::into_owned).collect())
                }
                Body::Message(inner) => Body::Message(Box::new(inner.into_owned())),
            },
        }
    }
}

/// A message read once, with the ambiguities met on the way.
#[derive(Debug, Clone)]
pub struct Reading<'a> {
    pub root: Entity<'a>,
    pub ambiguities: Vec<Ambiguity>,
}

impl Reading<'_> {
    pub fn is_ambiguous(&self) -> bool {
        !self.ambiguities.is_empty()
    }
}

/// Reads a message (CRLF line ends).
pub fn read(message: &[u8]) -> Reading<'_> {
    let mut reader = Reader {
        ambiguities: Vec::new(),
        boundaries: Vec::new(),
    };
    let root = reader.entity(message, "message", 0, false, false);
    Reading {
        root,
        ambiguities: reader.ambiguities,
    }
}

struct Reader {
    ambiguities: Vec<Ambiguity>,
    /// The boundaries of the multiparts around the part being read.
    boundaries: Vec<Vec<u8>>,
}

impl Reader {
    fn flag(&mut self, at: &str, problem: impl Into<String>) {
        let problem = problem.into();
        // One report per problem and place is enough.
        if !self
            .ambiguities
            .iter()
            .any(|a| a.at == at && a.problem == problem)
        {
            self.ambiguities.push(Ambiguity {
                at: at.to_string(),
                problem,
            });
        }
    }

    /// Reads one entity: a header section, a blank line, a body. `digest`: a part
    /// of a multipart/digest, whose default type is message/rfc822.
    /// `forwarded`: the entity is what a message/rfc822 part holds.
    fn entity<'a>(
        &mut self,
        bytes: &'a [u8],
        at: &str,
        depth: usize,
        digest: bool,
        forwarded: bool,
    ) -> Entity<'a> {
        let flagged_before = self.ambiguities.len();
        let (fields, body_start) = self.header(bytes, at);
        let body = &bytes[body_start.min(bytes.len())..];
        let mut media = if digest {
            Media {
                kind: "message".into(),
                subtype: "rfc822".into(),
                params: Vec::new(),
            }
        } else {
            Media::text_plain()
        };
        let mut encoding = Encoding::Identity;
        let mut disposition = None;

        let types: Vec<&Field<'_>> = fields.iter().filter(|f| f.is("content-type")).collect();
        if !types.is_empty() {
            let parsed: Vec<Media> = types
                .iter()
                .map(|f| self.media(f, at, "Content-Type"))
                .collect();
            if distinct(&parsed) > 1 {
                self.flag(at, "two Content-Type headers that differ");
            }
            // The reading that shows the most structure: a multipart whose boundary
            // is really used, else the first.
            let uses_boundary = |m: &Media| {
                m.is_multipart()
                    && m.param("boundary").is_some_and(|b| {
                        memchr::memmem::find(body, &[b"--", b.as_bytes()].concat()).is_some()
                    })
            };
            media = parsed
                .iter()
                .find(|m| uses_boundary(m))
                .or(parsed.first())
                .cloned()
                .unwrap_or_else(Media::text_plain);
            if media.kind.is_empty() {
                media = Media::text_plain();
            }
        }
        let encodings: Vec<&Field<'_>> = fields
            .iter()
            .filter(|f| f.is("content-transfer-encoding"))
            .collect();
        if !encodings.is_empty() {
            let values: Vec<String> = encodings
                .iter()
                .map(|f| f.value.trim().to_ascii_lowercase())
                .collect();
            if values.iter().any(|v| *v != values[0]) {
                self.flag(at, "two Content-Transfer-Encoding headers that differ");
            }
            let parsed: Vec<Encoding> = values.iter().map(|v| Encoding::parse(v)).collect();
            // The reading that decodes: what a forgiving reader gets out of it.
            encoding = parsed
                .iter()
                .copied()
                .find(|e| matches!(e, Encoding::Base64 | Encoding::Uuencode))
                .unwrap_or(parsed[0]);
            for (value, parsed) in values.iter().zip(&parsed) {
                if matches!(parsed, Encoding::Uuencode | Encoding::Unknown) {
                    self.flag(
                        at,
                        format!("transfer encoding '{value}' that not every reader knows"),
                    );
                }
            }
        }
        let dispositions: Vec<&Field<'_>> = fields
            .iter()
            .filter(|f| f.is("content-disposition"))
            .collect();
        if !dispositions.is_empty() {
            let parsed: Vec<Media> = dispositions
                .iter()
                .map(|f| self.media(f, at, "Content-Disposition"))
                .collect();
            if distinct(&parsed) > 1 {
                self.flag(at, "two Content-Disposition headers that differ");
            }
            disposition = parsed.into_iter().next();
        }
        if let (Some(name), Some(filename)) = (
            media.param("name"),
            disposition.as_ref().and_then(|d| d.param("filename")),
        ) && clean(name) != clean(filename)
        {
            self.flag(
                at,
                format!("the name '{name}' and the filename '{filename}' differ"),
            );
        }

        if forwarded && media.is_message() {
            // mail-parser 0.11.9 panics on it; others read it as a message.
            self.flag(
                at,
                "a forwarded message that is itself only a forwarded message",
            );
        }
        let mut header_ambiguous = self.ambiguities.len() > flagged_before;
        let body = if depth >= MAX_DEPTH {
            header_ambiguous = true;
            self.flag(at, format!("nested deeper than {MAX_DEPTH} levels"));
            Body::Leaf(Cow::Borrowed(body))
        } else if media.is_multipart() {
            if encoding != Encoding::Identity
                || encodings.iter().any(|f| {
                    !matches!(
                        f.value.trim().to_ascii_lowercase().as_str(),
                        "7bit" | "8bit" | "binary"
                    )
                })
            {
                header_ambiguous = true;
                self.flag(at, "a transfer encoding on a multipart");
            }
            let (body, boundary_clean) = self.multipart(body, &media, at, depth);
            header_ambiguous |= !boundary_clean;
            body
        } else if media.is_message() && body.iter().all(u8::is_ascii_whitespace) {
            // Readers disagree on a forwarded message with nothing in it
            // (mail-parser 0.11.9 panics).
            header_ambiguous = true;
            self.flag(at, "an empty forwarded message");
            Body::Leaf(Cow::Borrowed(body))
        } else if media.is_message() {
            if encoding != Encoding::Identity {
                header_ambiguous = true;
                self.flag(
                    at,
                    "a forwarded message (message/rfc822) that is transfer-encoded",
                );
                let decoded = crlf(&encoding.decode(body));
                let inner = self.entity(
                    &decoded,
                    &format!("{at}, forwarded message"),
                    depth + 1,
                    false,
                    true,
                );
                Body::Message(Box::new(inner.into_owned()))
            } else {
                let inner = self.entity(
                    body,
                    &format!("{at}, forwarded message"),
                    depth + 1,
                    false,
                    true,
                );
                Body::Message(Box::new(inner))
            }
        } else {
            if encoding == Encoding::Base64
                && let Some(flaw) = lenient::base64_flaws(body)
            {
                self.flag(at, flaw);
            }
            Body::Leaf(Cow::Borrowed(body))
        };
        Entity {
            fields,
            media,
            encoding,
            disposition,
            body,
            header_ambiguous,
            raw: Cow::Borrowed(bytes),
            body_offset: body_start.min(bytes.len()),
        }
    }

    /// The header section: fields until the blank line; returns where the body
    /// starts.
    fn header<'a>(&mut self, bytes: &'a [u8], at: &str) -> (Vec<Field<'a>>, usize) {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut pos = 0;
        let mut current: Option<(usize, usize)> = None; // (start, name end)
        let finish = |fields: &mut Vec<Field<'a>>, start: usize, colon: usize, end: usize| {
            let name = String::from_utf8_lossy(&bytes[start..colon]);
            let value = unfold(&bytes[colon + 1..end]);
            fields.push(Field {
                name,
                raw: Cow::Borrowed(&bytes[start..end]),
                value,
            });
        };
        while pos < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i + 1);
            let line = &bytes[pos..end];
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.is_empty() {
                if let Some((start, colon)) = current.take() {
                    finish(&mut fields, start, colon, pos);
                }
                return (fields, end);
            }
            if matches!(content[0], b' ' | b'\t') {
                if current.is_none() {
                    self.flag(at, "a folded header line with no header before it");
                }
            } else {
                if let Some((start, colon)) = current.take() {
                    finish(&mut fields, start, colon, pos);
                }
                match memchr::memchr(b':', content) {
                    // A name readers would not all take for the same header (none,
                    // or with characters RFC 5322 does not allow): left out of the
                    // reading, and it makes the message ambiguous.
                    Some(colon)
                        if content[..colon].trim_ascii_end().is_empty()
                            || !content[..colon]
                                .trim_ascii_end()
                                .iter()
                                .all(|&b| (33..=126).contains(&b)) =>
                    {
                        self.flag(at, "a header line with a malformed name");
                    }
                    Some(colon) => {
                        let name = &content[..colon];
                        if name.ends_with(b" ") || name.ends_with(b"\t") {
                            let trimmed = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
                            if STRUCTURAL.contains(&trimmed.as_str()) {
                                self.flag(at, format!("white space before the colon of {trimmed}"));
                            }
                        }
                        current = Some((pos, pos + colon));
                    }
                    None => self.flag(at, "a header line without a colon"),
                }
            }
            pos = end;
        }
        if let Some((start, colon)) = current.take() {
            finish(&mut fields, start, colon, bytes.len());
        }
        (fields, bytes.len())
    }

    /// A Content-Type or Content-Disposition value.
    fn media(&mut self, field: &Field<'_>, at: &str, header: &str) -> Media {
        let raw_value = {
            let raw = &field.raw;
            let colon = memchr::memchr(b':', raw).map_or(0, |c| c + 1);
            &raw[colon..]
        };
        let parsed = parse_media(raw_value, header == "Content-Type");
        for problem in &parsed.problems {
            self.flag(at, format!("{problem} in the {header} header"));
        }
        for name in &parsed.conflicts {
            self.flag(
                at,
                format!(
                    "the parameter {name} given more than once with different values ({header})"
                ),
            );
        }
        parsed.media
    }

    /// A multipart's parts; and whether its boundary itself is one every reader
    /// delimits alike.
    fn multipart<'a>(
        &mut self,
        body: &'a [u8],
        media: &Media,
        at: &str,
        depth: usize,
    ) -> (Body<'a>, bool) {
        let Some(boundary) = media.param("boundary").map(|b| b.as_bytes().to_vec()) else {
            self.flag(at, "a multipart without a boundary");
            return (Body::Leaf(Cow::Borrowed(body)), false);
        };
        if boundary.is_empty() {
            self.flag(at, "an empty boundary");
            return (Body::Leaf(Cow::Borrowed(body)), false);
        }
        let flagged_before = self.ambiguities.len();
        if boundary.len() > 70 {
            self.flag(at, "a boundary longer than 70 characters");
        }
        if boundary.ends_with(b" ") {
            self.flag(at, "a boundary that ends with a space");
        }
        if !boundary.iter().all(|&b| is_bchar(b)) {
            self.flag(at, "a boundary with characters RFC 2046 does not allow");
        }
        if self
            .boundaries
            .iter()
            .any(|outer| outer.starts_with(&boundary) || boundary.starts_with(outer))
        {
            self.flag(
                at,
                "a boundary that begins like the boundary of an enclosing multipart",
            );
        }
        let boundary_clean = self.ambiguities.len() == flagged_before;
        let split = split(body, &boundary);
        for problem in &split.problems {
            self.flag(at, *problem);
        }
        if split.parts.is_empty() {
            self.flag(at, "no part begins with the boundary");
        }
        if !split.closed && !split.parts.is_empty() {
            self.flag(at, "a multipart that is never closed");
        }
        for (what, range) in [("preamble", &split.preamble), ("epilogue", &split.epilogue)] {
            if let Some(problem) = outside_problem(&body[range.clone()]) {
                self.flag(at, format!("the {what} holds {problem}"));
            }
        }
        let digest = media.subtype == "digest";
        self.boundaries.push(boundary);
        let parts = split
            .parts
            .iter()
            .enumerate()
            .map(|(i, range)| {
                let child_at = if at == "message" {
                    format!("part {}", i + 1)
                } else {
                    format!("{at}.{}", i + 1)
                };
                self.entity(&body[range.clone()], &child_at, depth + 1, digest, false)
            })
            .collect();
        self.boundaries.pop();
        (Body::Multipart(parts), boundary_clean)
    }
}

/// How many different values a list holds.
fn distinct<T: PartialEq>(items: &[T]) -> usize {
    let mut seen: Vec<&T> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen.len()
}

/// A file name as a program would use it: path and trailing dots or spaces gone.
fn clean(name: &str) -> String {
    super::names::clean_name(name).to_lowercase()
}

/// RFC 2046 `bchars`.
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// A header value unfolded: line ends removed, white space kept.
fn unfold(raw: &[u8]) -> String {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    String::from_utf8_lossy(&text).trim().to_string()
}

/// Line ends made CRLF (a decoded forwarded message may use bare LF).
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A multipart body cut at its delimiters.
struct Split {
    preamble: std::ops::Range<usize>,
    parts: Vec<std::ops::Range<usize>>,
    epilogue: std::ops::Range<usize>,
    closed: bool,
    problems: Vec<&'static str>,
}

/// What a line is, against a boundary.
enum Delimiter {
    No,
    Part {
        padded: bool,
    },
    Close {
        padded: bool,
    },
    /// Begins with `--boundary` and goes on: a delimiter to some readers only.
    Almost,
}

fn delimiter(line: &[u8], boundary: &[u8]) -> Delimiter {
    let Some(rest) = line
        .strip_prefix(b"--")
        .and_then(|l| l.strip_prefix(boundary))
    else {
        return Delimiter::No;
    };
    let blank = |b: &[u8]| b.iter().all(|&c| c == b' ' || c == b'\t');
    if blank(rest) {
        return Delimiter::Part {
            padded: !rest.is_empty(),
        };
    }
    if let Some(after) = rest.strip_prefix(b"--")
        && blank(after)
    {
        return Delimiter::Close {
            padded: !after.is_empty(),
        };
    }
    Delimiter::Almost
}

fn split(body: &[u8], boundary: &[u8]) -> Split {
    let mut out = Split {
        preamble: 0..0,
        parts: Vec::new(),
        epilogue: body.len()..body.len(),
        closed: false,
        problems: Vec::new(),
    };
    // Where the current part's content began; None before the first delimiter.
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        // The line end before a delimiter belongs to the delimiter.
        let before = if pos >= 2 && &body[pos - 2..pos] == b"\r\n" {
            pos - 2
        } else if pos >= 1 && body[pos - 1] == b'\n' {
            pos - 1
        } else {
            pos
        };
        if out.closed {
            if !matches!(delimiter(content, boundary), Delimiter::No) {
                out.problems.push("a delimiter after the close delimiter");
            }
            pos = end;
            continue;
        }
        match delimiter(content, boundary) {
            Delimiter::No => {}
            Delimiter::Almost => out
                .problems
                .push("a line that begins like the boundary but is not a delimiter"),
            Delimiter::Part { padded } | Delimiter::Close { padded } if padded => {
                out.problems
                    .push("a delimiter line with white space after it");
                finish_part(&mut out, &mut open, before, end, content, boundary);
            }
            _ => finish_part(&mut out, &mut open, before, end, content, boundary),
        }
        pos = end;
    }
    if let Some(start) = open {
        out.parts.push(start..body.len());
    }
    out
}

fn finish_part(
    out: &mut Split,
    open: &mut Option<usize>,
    before: usize,
    end: usize,
    line: &[u8],
    boundary: &[u8],
) {
    match open.take() {
        Some(start) => out.parts.push(start..before.max(start)),
        None => out.preamble = 0..before,
    }
    if matches!(delimiter(line, boundary), Delimiter::Close { .. }) {
        out.closed = true;
        out.epilogue = end..out.epilogue.end;
    } else {
        *open = Some(end);
    }
}

/// What a preamble or epilogue must not hold: a file, MIME headers, or lines a
/// reader could take for delimiters. Ordinary text ("This is a multi-part message
/// in MIME format.") is fine.
fn outside_problem(text: &[u8]) -> Option<&'static str> {
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"--") && line.len() > 2 && !line[2..].starts_with(b" ") {
            return Some("a line that looks like a delimiter");
        }
        let lower = line.to_ascii_lowercase();
        if STRUCTURAL.iter().any(|h| {
            lower.starts_with(h.as_bytes()) && lower[h.len()..].trim_ascii_start().starts_with(b":")
        }) {
            return Some("MIME headers");
        }
    }
    if lenient::embedded(text).iter().any(|e| e.sniffed.is_some()) {
        return Some("an encoded file");
    }
    None
}

/// A parsed media value with the problems of its syntax.
struct ParsedMedia {
    media: Media,
    problems: Vec<&'static str>,
    /// Parameters given more than once with different values.
    conflicts: Vec<String>,
}

/// Parses `type/subtype; name=value; …` (or `disposition; …` when `typed` is
/// false) from the raw value (folding included).
fn parse_media(raw: &[u8], typed: bool) -> ParsedMedia {
    let mut problems = Vec::new();
    let mut tokens = Tokens {
        raw,
        pos: 0,
        problems: &mut problems,
    };
    tokens.space();
    let kind = tokens.token().to_ascii_lowercase();
    let mut subtype = String::new();
    if typed {
        tokens.space();
        if tokens.eat(b'/') {
            tokens.space();
            subtype = tokens.token().to_ascii_lowercase();
        }
        if subtype.is_empty() && !kind.is_empty() {
            tokens.problems.push("a media type without a subtype");
            // What readers fall back to differs; this reading takes the
            // RFC 2046 default of each kind.
            subtype = match kind.as_str() {
                "multipart" => "mixed",
                "text" => "plain",
                "message" => "rfc822",
                _ => "octet-stream",
            }
            .into();
        }
    }
    let mut raw_params: Vec<RawParam> = Vec::new();
    loop {
        tokens.space();
        if tokens.pos >= raw.len() {
            break;
        }
        if !tokens.eat(b';') {
            tokens.problems.push("text that is not a parameter");
            // Skip to the next separator.
            while tokens.pos < raw.len() && raw[tokens.pos] != b';' {
                tokens.pos += 1;
            }
            continue;
        }
        tokens.space();
        if tokens.pos >= raw.len() {
            break;
        }
        let attribute = tokens.token();
        tokens.space();
        if attribute.is_empty() || !tokens.eat(b'=') {
            if !attribute.is_empty() || (tokens.pos < raw.len() && raw[tokens.pos] != b';') {
                tokens.problems.push("a parameter without a value");
            }
            continue;
        }
        tokens.space();
        let (value, folded) = tokens.value();
        let attribute = attribute.to_ascii_lowercase();
        let (name, section, extended) = rfc2231_name(&attribute);
        if name.is_empty() {
            tokens.problems.push("a parameter without a name");
            continue;
        }
        raw_params.push(RawParam {
            name,
            section,
            extended,
            value,
            folded,
        });
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let mut conflicts = Vec::new();
    let mut names: Vec<String> = raw_params.iter().map(|p| p.name.clone()).collect();
    names.dedup();
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let of_name: Vec<&RawParam> = raw_params.iter().filter(|p| p.name == name).collect();
        if name == "boundary" && of_name.iter().any(|p| p.folded) {
            problems.push("a boundary folded across lines");
        }
        let mut values: Vec<String> = Vec::new();
        // Plain values, each on its own.
        for p in of_name
            .iter()
            .filter(|p| p.section.is_none() && !p.extended)
        {
            values.push(String::from_utf8_lossy(&p.value).into_owned());
        }
        // RFC 2231: `name*` or sections `name*0`, `name*1*` … joined in order.
        let mut sections: Vec<&&RawParam> = of_name
            .iter()
            .filter(|p| p.section.is_some() || p.extended)
            .collect();
        if !sections.is_empty() {
            sections.sort_by_key(|p| p.section.unwrap_or(0));
            let mut charset = String::new();
            let mut joined = Vec::new();
            for (i, p) in sections.iter().enumerate() {
                let mut value: &[u8] = &p.value;
                if p.extended && i == 0 {
                    // charset'language'value
                    let mut parts = value.splitn(3, |&b| b == b'\'');
                    let (c, _l, v) = (parts.next(), parts.next(), parts.next());
                    if let (Some(c), Some(v)) = (c, v) {
                        charset = String::from_utf8_lossy(c).to_ascii_lowercase();
                        value = v;
                    }
                }
                if p.extended {
                    joined.extend(percent_decode(value));
                } else {
                    joined.extend_from_slice(value);
                }
            }
            values.push(decode_charset(&charset, &joined));
        }
        let decoded: Vec<String> = values.iter().map(|v| super::rfc2047::decode(v)).collect();
        if distinct(&decoded) > 1 {
            conflicts.push(name.clone());
        }
        if let Some(first) = values.into_iter().next() {
            // Names are decoded (RFC 2047 inside quotes is what mail programs send);
            // a boundary is taken byte for byte.
            let value = if name == "boundary" {
                first
            } else {
                super::rfc2047::decode(&first)
            };
            params.push((name, value));
        }
    }
    ParsedMedia {
        media: Media {
            kind,
            subtype,
            params,
        },
        problems,
        conflicts,
    }
}

/// One parameter as written: `name*1*=value` is (name, Some(1), extended).
struct RawParam {
    name: String,
    /// The RFC 2231 section number, if any.
    section: Option<u32>,
    /// RFC 2231 `*`: charset'language'percent-encoded.
    extended: bool,
    value: Vec<u8>,
    /// A quoted value that went across a line break.
    folded: bool,
}

/// `name*2*` → (name, Some(2), true); `name*` → (name, None, true).
fn rfc2231_name(attribute: &str) -> (String, Option<u32>, bool) {
    let Some(star) = attribute.find('*') else {
        return (attribute.to_string(), None, false);
    };
    let name = attribute[..star].to_string();
    let rest = &attribute[star + 1..];
    let extended = rest.ends_with('*') || rest.is_empty();
    let number = rest.trim_end_matches('*');
    (name, number.parse().ok(), extended)
}

fn percent_decode(value: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let (Some(h), Some(l)) = (
                value.get(i + 1).and_then(|&b| hex(b)),
                value.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

/// A cursor over a raw header value.
struct Tokens<'a, 'p> {
    raw: &'a [u8],
    pos: usize,
    problems: &'p mut Vec<&'static str>,
}

impl Tokens<'_, '_> {
    /// White space, folding and comments.
    fn space(&mut self) {
        while self.pos < self.raw.len() {
            match self.raw[self.pos] {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    self.problems.push("a comment");
                    let mut depth = 0;
                    while self.pos < self.raw.len() {
                        match self.raw[self.pos] {
                            // An escape: the next byte, if there is one, is text.
                            b'\\' => {
                                self.pos = (self.pos + 2).min(self.raw.len());
                                continue;
                            }
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.pos += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        self.pos += 1;
                    }
                    if depth > 0 {
                        self.problems.push("an unclosed comment");
                    }
                }
                _ => break,
            }
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.raw.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// An RFC 2045 token (for the value of a parameter: anything up to `;`).
    fn token(&mut self) -> String {
        let start = self.pos;
        while self.pos < self.raw.len() {
            let b = self.raw[self.pos];
            if b <= b' ' || b"()<>@,;:\\\"/[]?=".contains(&b) || b == 0x7f {
                break;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.raw[start..self.pos]).into_owned()
    }

    /// A parameter value: a quoted string or a token. Returns the value and
    /// whether it was folded across lines.
    fn value(&mut self) -> (Vec<u8>, bool) {
        if self.eat(b'"') {
            let mut out = Vec::new();
            let mut folded = false;
            loop {
                match self.raw.get(self.pos) {
                    None => {
                        self.problems.push("unbalanced quotes");
                        return (out, folded);
                    }
                    Some(b'"') => {
                        self.pos += 1;
                        return (out, folded);
                    }
                    Some(b'\\') => {
                        if let Some(&next) = self.raw.get(self.pos + 1) {
                            out.push(next);
                        }
                        self.pos = (self.pos + 2).min(self.raw.len());
                    }
                    Some(b'\r') | Some(b'\n') => {
                        folded = true;
                        self.pos += 1;
                    }
                    Some(&b) => {
                        out.push(b);
                        self.pos += 1;
                    }
                }
            }
        }
        let start = self.pos;
        while self.pos < self.raw.len() {
            let b = self.raw[self.pos];
            if b == b';' || b == b'\r' || b == b'\n' {
                break;
            }
            if b == b'"' {
                self.problems.push("unbalanced quotes");
            }
            self.pos += 1;
        }
        let value = self.raw[start..self.pos].trim_ascii_end().to_vec();
        if value.iter().any(|&b| b == b' ' || b == b'\t' || b == b'(') {
            self.problems
                .push("a parameter value with spaces that is not quoted");
        }
        // Some readers take it as an escape (and `\;` as part of the value,
        // swallowing the next parameter), others as a character.
        if value.contains(&b'\\') {
            self.problems
                .push("a backslash in a parameter value that is not quoted");
        }
        (value, false)
    }
}

#[cfg(test)]
mod tests;
