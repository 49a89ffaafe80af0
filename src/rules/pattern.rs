//! Patterns, compiled per field for all rules at once, so the cost of a message
//! grows slowly with the number of rules: exact values are one hash lookup, plain
//! text is one Aho-Corasick pass, and regexes and globs are one RegexSet.
//!
//! Pattern syntax, as written in rule files:
//! - `/regex/` or `/regex/i` — a regular expression (the `i` flag ignores case);
//! - with `*` or `?` — a wildcard (glob), matching the whole value, ignoring case;
//! - anything else — the whole value exactly (ignoring case), or, for text fields
//!   (subject, body, headers), a substring ignoring case.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use regex::RegexSet;

/// A global pattern number, shared by all fields.
pub type PatternId = u32;

/// How plain patterns of a field match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// The whole value, ignoring case (addresses, domains, names, types).
    Exact,
    /// Anywhere in the value, ignoring case (subject, body, header values).
    Substring,
}

/// One written pattern, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Regex(String),
    Exact(String),
    Substring(String),
    /// `*.example.com` or `*@example.com`: the value ends with this (lower case),
    /// matched by lookups at each `.` and `@` instead of a regex.
    Suffix(String),
}

/// Reads a written pattern. Errors say what is wrong.
pub fn parse(text: &str, plain: Plain) -> Result<Pattern, String> {
    if text.len() >= 2 && text.starts_with('/') {
        let (body, flags) = match text.rfind('/') {
            Some(end) if end > 0 => (&text[1..end], &text[end + 1..]),
            _ => {
                return Err(format!(
                    "'{text}': a regex must end with / (and an optional i)"
                ));
            }
        };
        let regex = match flags {
            "" => body.to_string(),
            "i" => format!("(?i){body}"),
            other => {
                return Err(format!(
                    "'{text}': unknown regex flag '{other}' (only i is known)"
                ));
            }
        };
        regex::Regex::new(&regex).map_err(|e| format!("'{text}' is not a valid regex: {e}"))?;
        return Ok(Pattern::Regex(regex));
    }
    if plain == Plain::Exact
        && let Some(suffix) = text.strip_prefix('*')
        && (suffix.starts_with('.') || suffix.starts_with('@'))
        && !suffix.contains(['*', '?'])
    {
        return Ok(Pattern::Suffix(suffix.to_lowercase()));
    }
    if text.contains('*') || text.contains('?') {
        return Ok(Pattern::Regex(glob_to_regex(text)));
    }
    Ok(match plain {
        Plain::Exact => Pattern::Exact(text.to_lowercase()),
        Plain::Substring => Pattern::Substring(text.to_string()),
    })
}

/// `*.example.com` → `(?i)^.*\.example\.com$`.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("(?is)^");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

/// All patterns of one field, from every rule.
#[derive(Default)]
pub struct FieldPatternsBuilder {
    exact: HashMap<String, Vec<PatternId>>,
    suffixes: HashMap<String, Vec<PatternId>>,
    substrings: Vec<(String, PatternId)>,
    regexes: Vec<(String, PatternId)>,
}

impl FieldPatternsBuilder {
    pub fn add(&mut self, pattern: Pattern, id: PatternId) {
        match pattern {
            Pattern::Exact(value) => self.exact.entry(value).or_default().push(id),
            Pattern::Suffix(value) => self.suffixes.entry(value).or_default().push(id),
            Pattern::Substring(text) => self.substrings.push((text, id)),
            Pattern::Regex(regex) => self.regexes.push((regex, id)),
        }
    }

    pub fn build(self) -> Result<FieldPatterns, String> {
        let substrings = if self.substrings.is_empty() {
            None
        } else {
            let automaton = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(self.substrings.iter().map(|(text, _)| text.as_str()))
                .map_err(|e| e.to_string())?;
            Some((
                automaton,
                self.substrings.into_iter().map(|(_, id)| id).collect(),
            ))
        };
        let regexes = if self.regexes.is_empty() {
            None
        } else {
            let set = RegexSet::new(self.regexes.iter().map(|(regex, _)| regex.as_str()))
                .map_err(|e| e.to_string())?;
            Some((set, self.regexes.into_iter().map(|(_, id)| id).collect()))
        };
        Ok(FieldPatterns {
            exact: self.exact,
            suffixes: self.suffixes,
            substrings,
            regexes,
        })
    }
}

/// The compiled patterns of one field.
#[derive(Default)]
pub struct FieldPatterns {
    exact: HashMap<String, Vec<PatternId>>,
    suffixes: HashMap<String, Vec<PatternId>>,
    substrings: Option<(AhoCorasick, Vec<PatternId>)>,
    regexes: Option<(RegexSet, Vec<PatternId>)>,
}

impl FieldPatterns {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.suffixes.is_empty()
            && self.substrings.is_none()
            && self.regexes.is_none()
    }

    /// Adds the ids of every pattern that matches `value` to `hits`.
    pub fn matches(&self, value: &str, hits: &mut Vec<PatternId>) {
        if !self.exact.is_empty() || !self.suffixes.is_empty() {
            let lower = value.to_lowercase();
            if let Some(ids) = self.exact.get(&lower) {
                hits.extend_from_slice(ids);
            }
            if !self.suffixes.is_empty() {
                for (at, _) in lower.match_indices(['.', '@']) {
                    if let Some(ids) = self.suffixes.get(&lower[at..]) {
                        hits.extend_from_slice(ids);
                    }
                }
            }
        }
        if let Some((automaton, ids)) = &self.substrings {
            for found in automaton.find_overlapping_iter(value) {
                hits.push(ids[found.pattern().as_usize()]);
            }
        }
        if let Some((set, ids)) = &self.regexes {
            for index in set.matches(value).iter() {
                hits.push(ids[index]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(patterns: &[(&str, Plain)]) -> FieldPatterns {
        let mut builder = FieldPatternsBuilder::default();
        for (i, (text, plain)) in patterns.iter().enumerate() {
            builder.add(parse(text, *plain).unwrap(), i as PatternId);
        }
        builder.build().unwrap()
    }

    fn hits(field: &FieldPatterns, value: &str) -> Vec<PatternId> {
        let mut hits = Vec::new();
        field.matches(value, &mut hits);
        hits.sort();
        hits.dedup();
        hits
    }

    #[test]
    fn exact_glob_and_regex() {
        let f = field(&[
            ("Spam.Example", Plain::Exact),
            ("*.spam.example", Plain::Exact),
            ("/^bulk[0-9]+\\./i", Plain::Exact),
        ]);
        assert_eq!(hits(&f, "spam.example"), vec![0]);
        assert_eq!(hits(&f, "mx.SPAM.example"), vec![1]);
        assert_eq!(hits(&f, "a.b.spam.example"), vec![1]);
        assert_eq!(hits(&f, "BULK7.example"), vec![2]);
        assert!(hits(&f, "notspam.example").is_empty());
    }

    #[test]
    fn address_suffixes() {
        let f = field(&[
            ("*@Spam.example", Plain::Exact),
            ("*.exe", Plain::Exact),
            ("a*b", Plain::Exact),
        ]);
        assert_eq!(hits(&f, "Bob@spam.EXAMPLE"), vec![0]);
        assert!(hits(&f, "bob@notspam.example").is_empty());
        assert_eq!(hits(&f, "invoice.pdf.EXE"), vec![1]);
        assert_eq!(hits(&f, "a-to-b"), vec![2]);
    }

    #[test]
    fn text_fields_match_substrings_ignoring_case() {
        let f = field(&[
            ("free money", Plain::Substring),
            ("/\\bviagra\\b/i", Plain::Substring),
        ]);
        assert_eq!(hits(&f, "Get FREE MONEY now, Viagra"), vec![0, 1]);
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            parse("/unclosed(/", Plain::Exact)
                .unwrap_err()
                .contains("not a valid regex")
        );
        assert!(
            parse("/x/g", Plain::Exact)
                .unwrap_err()
                .contains("unknown regex flag")
        );
    }
}
