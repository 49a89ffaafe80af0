//! rspamd's HTTP protocol (`POST /checkv2`): the message as the body, the
//! envelope and the client as request headers; the answer is JSON with the
//! score, the action rspamd recommends and the symbols that fired.

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::config::RspamdEndpoint as Endpoint;

/// What the envelope and the client were, as rspamd wants them.
pub struct CheckRequest<'a> {
    pub ip: std::net::IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub login: Option<&'a str>,
    pub queue_id: &'a str,
}

/// rspamd's verdict.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Score {
    pub score: f64,
    pub required_score: f64,
    /// `reject`, `soft reject`, `rewrite subject`, `add header`, `greylist`,
    /// `no action`.
    pub action: String,
    #[serde(default)]
    pub symbols: BTreeMap<String, serde_json::Value>,
    /// The subject to use for `rewrite subject`.
    pub subject: Option<String>,
}

/// Asks rspamd; an error says why there is no score.
pub async fn check(
    endpoint: &Endpoint,
    request: &CheckRequest<'_>,
    message: &[u8],
) -> Result<Score, String> {
    let mut head = format!(
        "POST /checkv2 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\
         IP: {}\r\nHelo: {}\r\nFrom: {}\r\nQueue-Id: {}\r\n",
        endpoint.address,
        message.len(),
        request.ip,
        header_safe(request.helo),
        header_safe(request.sender),
        header_safe(request.queue_id),
    );
    for rcpt in request.recipients {
        head.push_str(&format!("Rcpt: {}\r\n", header_safe(rcpt)));
    }
    if let Some(user) = request.login {
        head.push_str(&format!("User: {}\r\n", header_safe(user)));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&endpoint.address)
        .await
        .map_err(|e| format!("cannot connect to rspamd at {}: {e}", endpoint.address))?;
    let io = |e: std::io::Error| format!("rspamd at {}: {e}", endpoint.address);
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(message).await.map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io)?;
    read_response(&response)
}

/// Client-controlled values go into request headers: no line breaks.
fn header_safe(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

fn read_response(response: &[u8]) -> Result<Score, String> {
    let split = memchr::memmem::find(response, b"\r\n\r\n")
        .ok_or_else(|| "rspamd: no HTTP response".to_string())?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("rspamd answered {status}"));
    }
    let mut body = &response[split + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let unchunked;
    if chunked {
        unchunked = dechunk(body).ok_or_else(|| "rspamd: bad chunked body".to_string())?;
        body = &unchunked;
    }
    serde_json::from_slice(body).map_err(|e| format!("rspamd: unreadable answer: {e}"))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = memchr::memmem::find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_plain_or_chunked() {
        let json = br#"{"is_skipped":false,"score":15.5,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0}},"subject":null}"#;
        let mut plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec();
        plain.extend_from_slice(json);
        let score = read_response(&plain).unwrap();
        assert_eq!(score.action, "reject");
        assert_eq!(score.score, 15.5);
        assert!(score.symbols.contains_key("GTUBE"));
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        chunked.extend_from_slice(format!("{:x}\r\n", 10).as_bytes());
        chunked.extend_from_slice(&json[..10]);
        chunked.extend_from_slice(format!("\r\n{:x}\r\n", json.len() - 10).as_bytes());
        chunked.extend_from_slice(&json[10..]);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(read_response(&chunked).unwrap(), score);
        assert!(read_response(b"HTTP/1.1 500 Internal\r\n\r\n").is_err());
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:11333/"),
            Some(Endpoint {
                address: "127.0.0.1:11333".into()
            })
        );
        assert_eq!(Endpoint::parse("127.0.0.1:11333"), None);
    }
}
