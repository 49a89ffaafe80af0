//! The PROXY protocol (HAProxy's, v1 text and v2 binary): a load balancer in
//! `server.proxy_networks` begins each connection with a header naming the
//! client it accepted, and that client is who the session judges. Parsing is
//! the `ppp` crate's; this reads exactly the header off the socket, so that
//! nothing of the SMTP dialogue after it is consumed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What a balancer said about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A client's connection: its address, and the address it connected to.
    Proxied {
        client: SocketAddr,
        local: SocketAddr,
    },
    /// The balancer's own connection (a health check): no client to serve.
    Local,
}

/// The v2 header's fixed start.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 header accepted: addresses and a few TLVs (HAProxy sends
/// small ones; a kilobyte of them is already odd).
const V2_MAX: usize = 16 + 4096;

/// Reads the header that must open a connection from a balancer, within
/// `timeout`. The error says, for the log, what was wrong.
pub async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<Header, String> {
    tokio::time::timeout(timeout, read_header(stream))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no PROXY header within {}",
                humantime::format_duration(timeout)
            ))
        })
}

async fn read_header(stream: &mut TcpStream) -> Result<Header, String> {
    let io = |e: std::io::Error| format!("connection lost before the PROXY header ended: {e}");
    let mut header = vec![0u8; 5];
    stream.read_exact(&mut header).await.map_err(io)?;
    if header == b"PROXY" {
        // Byte by byte: whatever follows the CRLF is the client's, not ours.
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err("PROXY v1 header longer than 107 bytes".into());
            }
            header.push(stream.read_u8().await.map_err(io)?);
        }
        return parse_v1(&header);
    }
    if header[..] == V2_SIGNATURE[..5] {
        header.resize(16, 0);
        stream.read_exact(&mut header[5..]).await.map_err(io)?;
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if 16 + length > V2_MAX {
            return Err(format!("PROXY v2 header of {length} bytes"));
        }
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await.map_err(io)?;
        return parse_v2(&header);
    }
    Err(format!(
        "no PROXY header: the connection began with {:?}",
        String::from_utf8_lossy(&header)
    ))
}

fn parse_v1(bytes: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "PROXY v1 header not text".to_string())?;
    let parsed = ppp::v1::Header::try_from(text)
        .map_err(|e| format!("bad PROXY v1 header {:?}: {e}", text.trim_end()))?;
    match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Ok(Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            local: (a.destination_address, a.destination_port).into(),
        }),
        ppp::v1::Addresses::Tcp6(a) => Ok(Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            local: (a.destination_address, a.destination_port).into(),
        }),
        // "PROXY UNKNOWN": the balancer's own connection.
        ppp::v1::Addresses::Unknown => Ok(Header::Local),
    }
}

fn parse_v2(bytes: &[u8]) -> Result<Header, String> {
    let parsed =
        ppp::v2::Header::try_from(bytes).map_err(|e| format!("bad PROXY v2 header: {e}"))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(Header::Local);
    }
    match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Ok(Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            local: (a.destination_address, a.destination_port).into(),
        }),
        ppp::v2::Addresses::IPv6(a) => Ok(Header::Proxied {
            client: (a.source_address, a.source_port).into(),
            local: (a.destination_address, a.destination_port).into(),
        }),
        other => Err(format!(
            "PROXY v2 header without a TCP client address ({:?})",
            other.address_family()
        )),
    }
}

/// Whether what a client sent first is a PROXY header (v1, or the start of
/// v2's signature): from a client not in `proxy_networks`, an attempt to pass
/// for another address.
pub fn looks_like_header(first: &[u8]) -> bool {
    first.starts_with(b"PROXY ")
        || (first.len() >= 5 && V2_SIGNATURE.starts_with(&first[..first.len().min(12)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_name_the_client() {
        let v1 = parse_v1(b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 2600\r\n").unwrap();
        assert_eq!(
            v1,
            Header::Proxied {
                client: "127.0.0.5:40000".parse().unwrap(),
                local: "127.0.0.1:2600".parse().unwrap()
            }
        );
        let v6 = parse_v1(b"PROXY TCP6 2001:db8::5 2001:db8::1 40000 25\r\n").unwrap();
        assert!(
            matches!(v6, Header::Proxied { client, .. } if client.ip().to_string() == "2001:db8::5")
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), Header::Local);
        assert!(parse_v1(b"PROXY TCP4 999.0.0.5 127.0.0.1 1 2\r\n").is_err());

        let addresses: ppp::v2::Addresses = (
            "127.0.0.5:40000".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:2600".parse::<SocketAddr>().unwrap(),
        )
            .into();
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        assert_eq!(
            parse_v2(&v2).unwrap(),
            Header::Proxied {
                client: "127.0.0.5:40000".parse().unwrap(),
                local: "127.0.0.1:2600".parse().unwrap()
            }
        );
    }

    #[test]
    fn a_header_is_recognised_from_its_first_bytes() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_header(b"\r\n\r\n\0\r\nQUIT\n!\x11"));
        assert!(!looks_like_header(b"\r\n"));
        assert!(!looks_like_header(b"EHLO client.example\r\n"));
        assert!(!looks_like_header(b"PROXYFOO\r\n"));
    }
}
