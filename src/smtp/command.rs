//! One command line from the client, checked and parsed.
//!
//! smtp-proto parses verbs and ESMTP parameters. The path inside `<…>` of MAIL and RCPT
//! is parsed by [`crate::address`] from the raw text instead, because smtp-proto strips
//! source routes, unquotes local parts, turns `<postmaster>` into an empty address and
//! refuses address literals — all things the relay decision must see. smtp-proto also
//! accepts a bare LF and drops a bare CR, so line endings are checked here first.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};

use crate::reply::Reply;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

/// A command the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        path: String,
        params: MailParams,
    },
    Rcpt {
        path: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// AUTH with a mechanism and the optional initial response (RFC 4954).
    Auth {
        mechanism: Mechanism,
        initial: Option<String>,
    },
    /// Recognised but not offered here (BDAT, ETRN …).
    NotImplemented(&'static str),
}

/// The SASL mechanisms offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    Other,
}

pub use crate::pipeline::MailParams;

/// A line that is not a usable command, with the reply it gets. (A matter of
/// syntax: the session answers it; no check judged anything.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub reply: Reply,
    /// Counted towards the session's error limit.
    pub counts_as_error: bool,
}

fn refuse(code: u16, status: &str, text: impl Into<String>) -> Malformed {
    Malformed {
        reply: Reply::new(code, status, text),
        counts_as_error: true,
    }
}

/// Checks the line ending and characters of a line (LF included) and returns the
/// line without its CRLF.
pub fn check_line(line: &[u8]) -> Result<&[u8], Malformed> {
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Err(refuse(
            500,
            "5.5.2",
            "Syntax error: bare LF; lines must end with CRLF (RFC 5321 2.3.8)",
        ));
    };
    if body.contains(&b'\r') || body.contains(&b'\n') {
        return Err(refuse(
            500,
            "5.5.2",
            "Syntax error: bare CR; lines must end with CRLF (RFC 5321 2.3.8)",
        ));
    }
    if body.contains(&0) {
        return Err(refuse(
            500,
            "5.5.2",
            "Syntax error: NUL character in command",
        ));
    }
    Ok(body)
}

/// Parses one command line (ending in LF).
pub fn parse(line: &[u8]) -> Result<Command, Malformed> {
    let body = check_line(line)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| refuse(500, "5.5.2", "Syntax error: command is not valid UTF-8"))?;
    let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
    match verb.as_str() {
        "MAIL" => parse_mail(text),
        "RCPT" => parse_rcpt(text),
        _ => parse_other(text),
    }
}

/// `MAIL FROM:<path> params`: the path from the raw text, the parameters by smtp-proto.
fn parse_mail(text: &str) -> Result<Command, Malformed> {
    let syntax = || refuse(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]");
    let argument = strip_keyword(&text[4..], "FROM:").ok_or_else(syntax)?;
    let (path, rest) = crate::address::split_path_argument(argument).ok_or_else(syntax)?;
    let line = format!("MAIL FROM:<>{rest}\r\n");
    let request = proto_parse(&line)?;
    let Request::Mail { from } = request else {
        return Err(syntax());
    };
    let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
    if from.flags & !known != 0
        || from.env_id.is_some()
        || from.trans_id.is_some()
        || from.mtrk.is_some()
        || from.solicit.is_some()
        || from.by != 0
        || from.hold_for != 0
        || from.hold_until != 0
        || from.mt_priority != 0
    {
        return Err(refuse(
            555,
            "5.5.4",
            "Unsupported MAIL parameter; this server offers SIZE, BODY and SMTPUTF8",
        ));
    }
    Ok(Command::Mail {
        path: path.to_string(),
        params: MailParams {
            size: (from.size > 0).then_some(from.size),
            eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        },
    })
}

/// `RCPT TO:<path>`: no RCPT parameters are announced (DSN is not offered).
fn parse_rcpt(text: &str) -> Result<Command, Malformed> {
    let syntax = || refuse(501, "5.5.4", "Syntax: RCPT TO:<address>");
    let argument = strip_keyword(&text[4..], "TO:").ok_or_else(syntax)?;
    let (path, rest) = crate::address::split_path_argument(argument).ok_or_else(syntax)?;
    if !rest.trim().is_empty() {
        return Err(refuse(
            555,
            "5.5.4",
            "Unsupported RCPT parameter; this server offers none",
        ));
    }
    Ok(Command::Rcpt {
        path: path.to_string(),
    })
}

/// Skips spaces and a case-insensitive keyword such as `FROM:`, tolerating spaces
/// after the colon as Postfix does.
fn strip_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    let text = text.trim_start();
    let head = text.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| text[keyword.len()..].trim_start())
}

fn parse_other(text: &str) -> Result<Command, Malformed> {
    let line = format!("{text}\r\n");
    let request = proto_parse(&line)?;
    Ok(match request {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Expn { .. } => Command::Expn,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: if mechanism == AUTH_PLAIN {
                Mechanism::Plain
            } else if mechanism == AUTH_LOGIN {
                Mechanism::Login
            } else {
                Mechanism::Other
            },
            initial: (!initial_response.is_empty()).then(|| initial_response.into_owned()),
        },
        other => Command::NotImplemented(other.name()),
    })
}

fn proto_parse(line: &str) -> Result<Request<Cow<'_, str>>, Malformed> {
    Request::parse(&mut line.as_bytes().iter()).map_err(|e| match e {
        ProtoError::UnknownCommand | ProtoError::NeedsMoreData { .. } => {
            refuse(500, "5.5.2", "Error: command not recognized")
        }
        ProtoError::SyntaxError { syntax } => refuse(501, "5.5.4", format!("Syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => {
            refuse(501, "5.5.4", format!("Invalid parameter: {param}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            refuse(555, "5.5.4", format!("Unsupported parameter: {param}"))
        }
        ProtoError::InvalidSenderAddress => refuse(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => refuse(501, "5.1.3", "Bad recipient address syntax"),
        ProtoError::ResponseTooLong | ProtoError::InvalidResponse { .. } => {
            refuse(500, "5.5.2", "Error: command not recognized")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &[u8]) -> (u16, String) {
        let err = parse(line).unwrap_err();
        (err.reply.code, err.reply.status)
    }

    #[test]
    fn line_endings_are_checked_before_parsing() {
        assert_eq!(code(b"NOOP\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"NO\rOP\r\n"), (500, "5.5.2".into()));
        assert_eq!(code(b"NOOP\x00\r\n"), (500, "5.5.2".into()));
        assert_eq!(parse(b"NOOP\r\n"), Ok(Command::Noop));
    }

    #[test]
    fn mail_keeps_the_raw_path_and_reads_parameters() {
        assert_eq!(
            parse(b"mail from:<@a.test:\"x y\"@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n"),
            Ok(Command::Mail {
                path: "@a.test:\"x y\"@b.test".into(),
                params: MailParams {
                    size: Some(1000),
                    eight_bit: true,
                    smtputf8: true
                }
            })
        );
        assert_eq!(
            parse(b"MAIL FROM: <>\r\n"),
            Ok(Command::Mail {
                path: String::new(),
                params: MailParams::default()
            })
        );
    }

    #[test]
    fn unannounced_parameters_are_refused() {
        assert_eq!(
            code(b"MAIL FROM:<a@b.test> RET=FULL\r\n"),
            (555, "5.5.4".into())
        );
        assert_eq!(
            code(b"MAIL FROM:<a@b.test> FOO=BAR\r\n"),
            (555, "5.5.4".into())
        );
        assert_eq!(
            code(b"RCPT TO:<a@b.test> NOTIFY=NEVER\r\n"),
            (555, "5.5.4".into())
        );
    }

    #[test]
    fn rcpt_path_is_raw() {
        assert_eq!(
            parse(b"RCPT TO:<user@[127.0.0.1]>\r\n"),
            Ok(Command::Rcpt {
                path: "user@[127.0.0.1]".into()
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>\r\n"),
            Ok(Command::Rcpt {
                path: "Postmaster".into()
            })
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(code(b"RCPT TO:user@x.test\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"MAIL TO:<a@b.test>\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"EHLO\r\n"), (501, "5.5.4".into()));
        assert_eq!(code(b"FROB\r\n"), (500, "5.5.2".into()));
    }

    #[test]
    fn other_verbs() {
        assert_eq!(
            parse(b"ehlo client.test\r\n"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(parse(b"STARTTLS\r\n"), Ok(Command::StartTls));
        assert_eq!(
            parse(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGFsaWNlAHNlY3JldA==".into())
            })
        );
        assert_eq!(
            parse(b"auth login\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Login,
                initial: None
            })
        );
        assert_eq!(
            parse(b"BDAT 10 LAST\r\n"),
            Ok(Command::NotImplemented("BDAT"))
        );
        assert_eq!(parse(b"QUIT\r\n"), Ok(Command::Quit));
    }
}
