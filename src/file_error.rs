//! The one error type for files an administrator writes — the configuration, rule
//! files, list files: this file, this line, what is wrong, and what to write
//! instead. Lines come from the TOML parser's spans, never from searching the text.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; None when the problem is the file as a whole.
    pub line: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl FileError {
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> FileError {
        FileError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A TOML syntax or type error, at the line the parser points to: which key,
    /// the value written, what is wrong, and what a valid value looks like.
    pub fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> FileError {
        let message = error.message().trim();
        let Some(span) = error.span() else {
            return FileError::new(file, None, message);
        };
        let line = line_of(text, span.start);
        let mut explained = match key_at(text, span.start) {
            Some(key) => {
                let value = text
                    .get(span.clone())
                    .map(|v| v.trim().lines().next().unwrap_or("").to_string())
                    .filter(|v| !v.is_empty() && !v.contains('=') && v.len() < 80);
                match value {
                    // The value, and serde's words that may quote it, are left out.
                    _ if is_secret_key(&key) => {
                        let expected = message
                            .find("expected")
                            .map_or("not a valid value", |at| &message[at..]);
                        format!("{key} = {}: {expected}", HIDDEN)
                    }
                    Some(value) if !message.contains(&value) => {
                        format!("{key} = {value}: {message}")
                    }
                    _ => format!("{key}: {message}"),
                }
            }
            None => message.to_string(),
        };
        if let Some(hint) = hint(message) {
            explained.push_str("; ");
            explained.push_str(hint);
        }
        FileError::new(file, Some(line), explained)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// What a valid value looks like, for the errors serde gives about a value.
fn hint(message: &str) -> Option<&'static str> {
    let expected = |what: &str| message.contains(&format!("expected {what}"));
    if ["usize", "u8", "u16", "u32", "u64", "i64"]
        .iter()
        .any(|t| expected(t))
    {
        Some("write a whole number, without quotes, such as 100")
    } else if expected("a duration") {
        Some("write a duration such as \"30s\", \"5m\", \"1h\" or \"2days\"")
    } else if expected("a boolean") {
        Some("write true or false, without quotes")
    } else if expected("a string") {
        Some("write it in quotes, such as \"value\"")
    } else if expected("f64") || expected("a float") {
        Some("write a number such as 0.8")
    } else if message.contains("socket address") {
        Some("write an address and port such as \"0.0.0.0:25\" or \"[::]:25\"")
    } else if message.starts_with("unknown variant") {
        Some("write one of those, in quotes")
    } else if message.starts_with("unknown field") {
        Some("check the spelling; mailmoat.toml(5) lists every key")
    } else {
        None
    }
}

/// `section.key` of the line holding `offset`: the key before its `=` and the
/// nearest `[section]` above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = line.lines().next().unwrap_or("");
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    })
}

/// The 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where the keys of a TOML document are, from the parser's spans.
pub struct Spans<'a> {
    text: &'a str,
    document: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Spans<'a> {
    pub fn new(text: &'a str) -> Spans<'a> {
        Spans {
            text,
            document: DeTable::parse(text).ok(),
        }
    }

    /// The line of the key at `path` (`["backend", "address"]`), if it is written.
    /// A number steps into an array (`["dkim_sign", "1", "key_file"]`: the key
    /// of the second `[[dkim_sign]]`); a path ending in one names the element.
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let mut table = self.document.as_ref()?.get_ref();
        let mut at = 0;
        let mut segments = path.iter().peekable();
        while let Some(segment) = segments.next() {
            let (key, value) = table.iter().find(|(k, _)| k.get_ref() == segment)?;
            at = key.span().start;
            let mut value = value;
            while let DeValue::Array(items) = value.get_ref() {
                let Some(index) = segments.peek().and_then(|s| s.parse::<usize>().ok()) else {
                    break;
                };
                segments.next();
                value = items.get(index)?;
                at = value.span().start;
            }
            if segments.peek().is_none() {
                break;
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
        Some(line_of(self.text, at))
    }

    /// The line of the key at `path` or, when it is not written, of the nearest
    /// table around it that is.
    pub fn nearest(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| self.line(&path[..n]))
    }
}

/// What a secret is printed as.
pub const HIDDEN: &str = "(hidden)";

/// Whether a configuration key holds a secret, so that an error about its value
/// must not quote it. Keys that name a file holding a secret (`key_file`) are
/// paths, not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    !last.ends_with("_file")
        && (last.ends_with("key") || last.contains("password") || last.contains("secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# address of the backend (a comment with the word address)\n\
                        [server]\nlisten = [\"0.0.0.0:25\"]\n\n\
                        [recipients.domains.\"example.test\"]\nfile = \"r.txt\"\ncallout = true\n\n\
                        [backend]\n# the address:\naddress = \"\"\n";

    #[test]
    fn keys_are_found_by_their_spans_not_by_searching_the_text() {
        let spans = Spans::new(TEXT);
        assert_eq!(spans.line(&["backend", "address"]), Some(11));
        assert_eq!(spans.line(&["server", "listen"]), Some(3));
        assert_eq!(
            spans.line(&["recipients", "domains", "example.test", "callout"]),
            Some(7)
        );
        assert_eq!(
            spans.line(&["recipients", "domains", "example.test", "file"]),
            Some(6)
        );
    }

    #[test]
    fn array_elements_are_found_by_their_index() {
        let text = "[[dkim_sign]]\ndomain = \"a.test\"\nkey_file = \"a.pem\"\n\n\
                    [[dkim_sign]]\ndomain = \"b.test\"\nkey_file = \"b.pem\"\n";
        let spans = Spans::new(text);
        assert_eq!(spans.line(&["dkim_sign", "0", "key_file"]), Some(3));
        assert_eq!(spans.line(&["dkim_sign", "1", "key_file"]), Some(7));
        assert_eq!(spans.nearest(&["dkim_sign", "1", "selector"]), Some(5));
        assert_eq!(spans.line(&["dkim_sign", "2", "key_file"]), None);
    }

    #[test]
    fn a_key_not_written_points_at_its_table() {
        let spans = Spans::new(TEXT);
        assert_eq!(spans.nearest(&["backend", "starttls"]), Some(9));
        assert_eq!(spans.nearest(&["queue", "path"]), None);
    }
}
