//! Real outside parts the tests start themselves on loopback ports: Debian's
//! `redis-server` (no persistence) and `haproxy` (TCP mode, PROXY v2 to each
//! backend). Each stops when dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// A redis-server of the test's own.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        ensure_package("command -v redis-server", "redis-server");
        let mut redis = RedisServer {
            addr: unused_addr().await,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.start_again().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts it (again, empty) on its port and waits until it answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr = self.addr;
        eventually_async("redis-server answers PING", || async move {
            redis_reply(addr, &["PING"], 1).await == Some(vec!["+PONG".to_string()])
        })
        .await;
    }

    /// Kills it (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command's reply line (`+PONG`, `:3`, `$1`…), or None when it does
    /// not answer.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        redis_reply(self.addr, args, 1).await?.pop()
    }

    /// A string value (None: no such key).
    pub async fn get(&self, key: &str) -> Option<String> {
        let reply = redis_reply(self.addr, &["GET", key], 2).await?;
        reply.get(1).cloned()
    }

    /// Keys matching a pattern.
    pub async fn keys(&self, pattern: &str) -> usize {
        let reply = self
            .command(&["KEYS", pattern])
            .await
            .expect("redis answers");
        reply.trim_start_matches('*').parse().unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).bytes());
    }
    out
}

/// The first `lines` lines of Redis's reply to one command (RESP, by hand:
/// the tests must not read Redis through the code under test); None when it
/// does not answer.
async fn redis_reply(addr: SocketAddr, args: &[&str], lines: usize) -> Option<Vec<String>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(&encode(args)).await.ok()?;
    let mut reader = BufReader::new(stream);
    let mut reply = Vec::new();
    while reply.len() < lines {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        // A missing value ($-1) has no second line.
        let nil = line == "$-1";
        reply.push(line);
        if nil {
            break;
        }
    }
    (!reply.is_empty()).then_some(reply)
}

/// Waits until an async check holds or fails the test.
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        poll_pause().await;
    }
}

/// haproxy in TCP mode, round robin over `backends`, each sent a PROXY v2
/// header and health-checked (with a PROXY header of its own), so that a dead
/// instance gets no new connections.
pub struct HaProxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    pub async fn start(backends: &[SocketAddr]) -> HaProxy {
        ensure_package("command -v haproxy", "haproxy");
        let addr = unused_addr().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            // Few connections, so that haproxy starts within a 1024-file limit.
            "global\n  maxconn 256\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
             retries 3\n  option redispatch\n\
             frontend smtp\n  bind {addr}\n  default_backend mm\n\
             backend mm\n  balance roundrobin\n"
        );
        for (i, backend) in backends.iter().enumerate() {
            config.push_str(&format!(
                "  server mm{i} {backend} send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 1\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("haproxy.log");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start haproxy");
        let deadline = std::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "haproxy did not start ({exited:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            poll_pause().await;
        }
        HaProxy {
            addr,
            child,
            _dir: dir,
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
