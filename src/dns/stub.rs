//! The engine on a loopback port, for the DNS clients inside mailmoat that
//! speak the protocol themselves (hickory, under mail-auth's SPF, DKIM, DMARC
//! and ARC): they ask it as they would ask a resolver, and get the engine's
//! coalesced, cached, budgeted answers. UDP, and TCP for answers too long for
//! the asker's UDP size.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::engine::Engine;

/// Starts answering on a loopback port; returns where.
pub async fn start(engine: Arc<Engine>) -> std::io::Result<SocketAddr> {
    // UDP and TCP on the same port.
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr()?;
    let udp = Arc::new(udp);
    tokio::spawn(serve_udp(udp, engine.clone()));
    tokio::spawn(serve_tcp(tcp, engine));
    Ok(addr)
}

async fn serve_udp(socket: Arc<UdpSocket>, engine: Arc<Engine>) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buffer[..n]) else {
            continue;
        };
        let engine = engine.clone();
        let socket = socket.clone();
        tokio::spawn(async move {
            let limit = query
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().max(512));
            let mut response = answer(&engine, &query).await;
            let mut bytes = response.to_vec().unwrap_or_default();
            if bytes.len() > usize::from(limit) {
                // Too long for the asker's UDP: it asks again over TCP.
                response.answers.clear();
                response.authorities.clear();
                response.additionals.clear();
                response.metadata.truncation = true;
                bytes = response.to_vec().unwrap_or_default();
            }
            let _ = socket.send_to(&bytes, peer).await;
        });
    }
}

async fn serve_tcp(listener: TcpListener, engine: Arc<Engine>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            while let Ok(len) = stream.read_u16().await {
                let mut buffer = vec![0u8; usize::from(len)];
                if stream.read_exact(&mut buffer).await.is_err() {
                    return;
                }
                let Ok(query) = Message::from_vec(&buffer) else {
                    return;
                };
                let bytes = answer(&engine, &query).await.to_vec().unwrap_or_default();
                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&bytes);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The engine's answer to a query, as a response to it.
async fn answer(engine: &Arc<Engine>, query: &Message) -> Message {
    let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = query.queries.clone();
    let Some(question) = query.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    match engine.lookup(question.name(), question.query_type()).await {
        Ok(found) => {
            response.metadata.response_code = found.metadata.response_code;
            response.answers = found.answers.clone();
            response.authorities = found.authorities.clone();
            response.additionals = found.additionals.clone();
            response.edns = query.edns.clone();
        }
        Err(_) => response.metadata.response_code = ResponseCode::ServFail,
    }
    response
}
