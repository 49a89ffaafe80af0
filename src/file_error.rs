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

    /// A TOML syntax or type error, at the line the parser points to.
    pub fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> FileError {
        FileError::new(
            file,
            error.span().map(|span| line_of(text, span.start)),
            error.message().trim(),
        )
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
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        let mut table = self.document.as_ref()?.get_ref();
        let (last, tables) = path.split_last()?;
        for segment in tables {
            let (_, value) = table.iter().find(|(k, _)| k.get_ref() == segment)?;
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
        let (key, _) = table.iter().find(|(k, _)| k.get_ref() == last)?;
        Some(line_of(self.text, key.span().start))
    }

    /// The line of the key at `path` or, when it is not written, of the nearest
    /// table around it that is.
    pub fn nearest(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| self.line(&path[..n]))
    }
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
    fn a_key_not_written_points_at_its_table() {
        let spans = Spans::new(TEXT);
        assert_eq!(spans.nearest(&["backend", "starttls"]), Some(9));
        assert_eq!(spans.nearest(&["queue", "path"]), None);
    }
}
