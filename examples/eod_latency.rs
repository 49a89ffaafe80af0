//! Load generator for the benchmark: the time from sending the end of data
//! (`<CRLF>.<CRLF>`) to the server's reply, with N sessions at once.
//!
//!     cargo run --release --example eod_latency -- 127.0.0.1:2535 50 4000 5120
//!
//! Arguments: target (loopback only), sessions, messages, body bytes. Prints p50,
//! p90, p99 and max in milliseconds. Written in Rust so that the client's own CPU
//! use does not swamp the figure on a two-core machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
}

async fn session(
    target: SocketAddr,
    body: Arc<Vec<u8>>,
    left: Arc<AtomicUsize>,
) -> std::io::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let mut conn = BufReader::new(stream);
        reply(&mut conn).await?;
        for command in [
            &b"EHLO latency.test\r\n"[..],
            b"MAIL FROM:<bench@example.org>\r\n",
            b"RCPT TO:<user@example.com>\r\n",
            b"DATA\r\n",
        ] {
            conn.get_mut().write_all(command).await?;
            reply(&mut conn).await?;
        }
        conn.get_mut().write_all(&body).await?;
        let start = Instant::now();
        conn.get_mut().write_all(b".\r\n").await?;
        let answer = reply(&mut conn).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(answer.starts_with("250"), "{answer}");
        conn.get_mut().write_all(b"QUIT\r\n").await?;
        reply(&mut conn).await?;
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let target: SocketAddr = args.get(1).map_or("127.0.0.1:2535", |s| s).parse().unwrap();
    assert!(target.ip().is_loopback(), "loopback targets only");
    let sessions: usize = args.get(2).map_or(Ok(50), |s| s.parse()).unwrap();
    let messages: usize = args.get(3).map_or(Ok(4000), |s| s.parse()).unwrap();
    let size: usize = args.get(4).map_or(Ok(5120), |s| s.parse()).unwrap();
    let mut body = b"Subject: latency\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(&[b'x'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    let body = Arc::new(body);
    let left = Arc::new(AtomicUsize::new(messages));
    let tasks: Vec<_> = (0..sessions)
        .map(|_| tokio::spawn(session(target, body.clone(), left.clone())))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap().expect("session failed"));
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "end-of-data -> 250 at c={sessions}, {} messages: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        all[all.len() - 1]
    );
}
