//! clamd's INSTREAM command (clamd(8)): the message in length-prefixed chunks,
//! over TCP or a unix socket; the answer is `stream: OK`, `stream: NAME FOUND`
//! or an error such as `INSTREAM size limit exceeded. ERROR`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::config::ClamdAddress as Address;

/// What clamd said about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Clean,
    /// The signature's name.
    Virus(String),
}

/// One chunk of the stream; clamd reads chunks up to its StreamMaxLength in all.
const CHUNK: usize = 64 * 1024;

/// Scans `message`; an error says why there is no answer (clamd down, the
/// stream over clamd's limit, a reply it did not understand).
pub async fn scan(address: &Address, message: &[u8]) -> Result<Answer, String> {
    match address {
        Address::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to clamd at {addr}: {e}"))?;
            converse(stream, message).await
        }
        Address::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("cannot connect to clamd at {}: {e}", path.display()))?;
            converse(stream, message).await
        }
    }
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    message: &[u8],
) -> Result<Answer, String> {
    let sent = async {
        stream.write_all(b"zINSTREAM\0").await?;
        for chunk in message.chunks(CHUNK) {
            stream
                .write_all(&(chunk.len() as u32).to_be_bytes())
                .await?;
            stream.write_all(chunk).await?;
        }
        stream.write_all(&0u32.to_be_bytes()).await?;
        stream.flush().await
    }
    .await;
    // clamd may stop reading and answer early (a size limit): read the answer
    // whatever the writing did.
    let mut reply = Vec::new();
    let read = stream.read_to_end(&mut reply).await;
    let text = String::from_utf8_lossy(&reply)
        .trim_end_matches(['\0', '\n'])
        .to_string();
    if text.is_empty() {
        return Err(match (sent, read) {
            (Err(e), _) | (_, Err(e)) => format!("clamd closed the stream: {e}"),
            _ => "clamd gave no answer".to_string(),
        });
    }
    read_answer(&text)
}

fn read_answer(text: &str) -> Result<Answer, String> {
    let body = text.strip_prefix("stream: ").unwrap_or(text);
    if body == "OK" {
        return Ok(Answer::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        return Ok(Answer::Virus(name.to_string()));
    }
    Err(format!("clamd: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_answers_are_read_as_clamd_writes_them() {
        assert_eq!(
            Address::parse("unix:/run/clamav/clamd.ctl"),
            Some(Address::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            Address::parse("127.0.0.1:3310"),
            Some(Address::Tcp("127.0.0.1:3310".into()))
        );
        assert_eq!(Address::parse("unix:relative"), None);
        assert_eq!(Address::parse("localhost"), None);
        assert_eq!(read_answer("stream: OK"), Ok(Answer::Clean));
        assert_eq!(
            read_answer("stream: Eicar-Signature FOUND"),
            Ok(Answer::Virus("Eicar-Signature".into()))
        );
        assert_eq!(
            read_answer("INSTREAM size limit exceeded. ERROR"),
            Err("clamd: INSTREAM size limit exceeded. ERROR".into())
        );
    }
}
