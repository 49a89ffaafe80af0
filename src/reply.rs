//! An SMTP reply with its enhanced status code (RFC 3463), as it goes on the wire.
//! Who decided it and why travel with it in [`crate::verdict::Decision`].

use std::fmt;

/// An SMTP reply: basic code, enhanced status code and human text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// RFC 5321 reply code, e.g. 550.
    pub code: u16,
    /// RFC 3463 enhanced status code, e.g. "5.7.1". Empty for replies that RFC 2034
    /// exempts (the 220 greeting and the EHLO response).
    pub status: String,
    /// Text lines; more than one makes a multi-line reply.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply with an enhanced status code.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: status.to_string(),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Reply {
            code,
            status: String::new(),
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as it goes on the wire, CRLF-terminated, one status code per line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = if self.status.is_empty() {
                fmt_into(out, format_args!("{}{}{}\r\n", self.code, sep, line))
            } else {
                fmt_into(
                    out,
                    format_args!("{}{}{} {}\r\n", self.code, sep, self.status, line),
                )
            };
        }
        if self.lines.is_empty() {
            let _ = fmt_into(out, format_args!("{} {}\r\n", self.code, self.status));
        }
    }

    /// The text of all lines joined, for logs and delivery status notifications.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

fn fmt_into(out: &mut Vec<u8>, args: fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    out.write_fmt(args)
}

impl fmt::Display for Reply {
    /// One line, as logs show it: `550 5.7.1 Relaying denied`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status.is_empty() {
            write!(f, "{} {}", self.code, self.text())
        } else {
            write!(f, "{} {} {}", self.code, self.status, self.text())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_reply_repeats_the_enhanced_code_on_every_line() {
        let reply = Reply {
            code: 214,
            status: "2.0.0".into(),
            lines: vec!["one".into(), "two".into()],
        };
        let mut out = Vec::new();
        reply.write_to(&mut out);
        assert_eq!(out, b"214-2.0.0 one\r\n214 2.0.0 two\r\n");
    }

    #[test]
    fn plain_reply_has_no_enhanced_code() {
        let mut out = Vec::new();
        Reply::plain(250, vec!["mx.example.test".into(), "PIPELINING".into()]).write_to(&mut out);
        assert_eq!(out, b"250-mx.example.test\r\n250 PIPELINING\r\n");
    }
}
