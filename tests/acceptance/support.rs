//! Real parts for the acceptance tests: a recording backend SMTP server, a raw SMTP
//! client, and a proxy started on loopback ports with a configuration of the test's
//! choosing.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use mailmoat::config::Config;
use mailmoat::server::Server;

pub const WAIT: Duration = Duration::from_secs(20);

/// One turn of a loop that waits for a cause (a message arriving, a log line, a
/// file): how long to look away between two looks. Never a wait for time itself.
pub async fn poll_pause() {
    tokio::time::sleep(Duration::from_millis(20)).await
}

/// One transaction the backend received.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    /// Recipients the backend accepted.
    pub rcpt_to: Vec<String>,
    /// The message as the backend read it (dot-unstuffed).
    pub data: Vec<u8>,
}

/// How the backend ends DATA: strictly on CRLF.CRLF, or also on LF.LF as some
/// servers do (the smuggling tests use both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    Strict,
    Lenient,
}

#[derive(Default)]
struct BackendState {
    messages: Vec<Received>,
    /// Every command line received, in order, across connections.
    commands: Vec<String>,
    connections: usize,
    /// Replies to RCPT for particular addresses (lower case); 250 otherwise.
    rcpt_replies: HashMap<String, String>,
    /// Accounts for AUTH PLAIN; no AUTH offered without them.
    accounts: HashMap<String, String>,
    /// The conversations going on, ended by `stop`.
    sessions: Vec<tokio::task::AbortHandle>,
}

/// A backend SMTP server on a loopback port that records what it receives.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<Mutex<BackendState>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Backend {
    pub async fn start(end: DataEnd) -> Backend {
        Backend::start_on("127.0.0.1:0".parse().unwrap(), end).await
    }

    pub async fn start_on(addr: SocketAddr, end: DataEnd) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(BackendState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let session = tokio::spawn(serve_backend(stream, shared.clone(), end));
                let mut state = shared.lock().unwrap();
                state.connections += 1;
                state.sessions.push(session.abort_handle());
            }
        });
        Backend {
            addr,
            state,
            task: Arc::new(task),
        }
    }

    /// Makes RCPT TO:<address> get `reply` (e.g. "550 5.1.1 no such user").
    pub fn reply_to_rcpt(&self, address: &str, reply: &str) {
        self.state
            .lock()
            .unwrap()
            .rcpt_replies
            .insert(address.to_lowercase(), reply.to_string());
    }

    /// Offers AUTH and accepts this account.
    pub fn add_account(&self, user: &str, password: &str) {
        self.state
            .lock()
            .unwrap()
            .accounts
            .insert(user.to_string(), password.to_string());
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "backend got {} message(s), expected {n}",
                messages.len()
            );
            poll_pause().await;
        }
    }

    /// Stops listening and ends every conversation: the backend is gone.
    pub fn stop(&self) {
        self.task.abort();
        for session in self.state.lock().unwrap().sessions.drain(..) {
            session.abort();
        }
    }
}

async fn serve_backend(stream: TcpStream, state: Arc<Mutex<BackendState>>, end: DataEnd) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let _ = write.write_all(b"220 backend.test ESMTP\r\n").await;
    let mut mail_from = String::new();
    let mut rcpts = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        state.lock().unwrap().commands.push(text.clone());
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            let auth = if state.lock().unwrap().accounts.is_empty() {
                ""
            } else {
                "250-AUTH PLAIN LOGIN\r\n"
            };
            format!(
                "250-backend.test\r\n{auth}250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
            )
        } else if upper.starts_with("AUTH PLAIN ") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(text[11..].trim())
                .unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
            let ok = parts.len() == 3 && {
                let user = String::from_utf8_lossy(parts[1]).to_string();
                let password = String::from_utf8_lossy(parts[2]).to_string();
                state.lock().unwrap().accounts.get(&user) == Some(&password)
            };
            if ok {
                "235 2.7.0 ok\r\n".into()
            } else {
                "535 5.7.8 bad credentials\r\n".into()
            }
        } else if upper.starts_with("HELO") {
            "250 backend.test\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = text[10..].to_string();
            rcpts.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let address = text[8..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_lowercase();
            let custom = state.lock().unwrap().rcpt_replies.get(&address).cloned();
            match custom {
                Some(reply) => format!("{reply}\r\n"),
                None => {
                    rcpts.push(address);
                    "250 2.1.5 Ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let Some(data) = read_backend_data(&mut reader, end).await else {
                return;
            };
            state.lock().unwrap().messages.push(Received {
                mail_from: mail_from.clone(),
                rcpt_to: std::mem::take(&mut rcpts),
                data,
            });
            "250 2.0.0 Ok: stored\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else if upper == "RSET" {
            rcpts.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else {
            "502 5.5.1 not implemented\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads message data line by line, ending as `end` says, and unstuffs dots.
async fn read_backend_data<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    end: DataEnd,
) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        let is_end = line == b".\r\n" || (end == DataEnd::Lenient && line == b".\n");
        if is_end {
            return Some(data);
        }
        if line.starts_with(b".") {
            line.remove(0);
        }
        data.extend_from_slice(&line);
    }
}

/// A byte stream the test client can speak over: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A raw SMTP client for protocol-level tests.
pub struct Client {
    stream: BufReader<Box<dyn Io>>,
}

/// One reply: its code and all its lines as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// "550 5.7.1" — the codes of the last line.
    pub fn codes(&self) -> String {
        let last = self.text.lines().last().unwrap_or("");
        last.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }
}

impl Client {
    pub async fn connect(proxy: SocketAddr) -> Client {
        Client::connect_from("127.0.0.1".parse().unwrap(), proxy).await
    }

    /// Connects from a chosen loopback address (127.0.0.0/8 is all local on Linux),
    /// to test trusted and untrusted clients on one machine.
    pub async fn connect_from(local: IpAddr, proxy: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        let stream = socket.connect(proxy).await.expect("connect to proxy");
        Client {
            stream: BufReader::new(Box::new(stream)),
        }
    }

    /// Connects with implicit TLS (port 465 style), trusting `ca`.
    pub async fn connect_tls(proxy: SocketAddr, ca: &[u8]) -> Client {
        let stream = TcpStream::connect(proxy).await.expect("connect to proxy");
        let tls = tls_connector(ca)
            .connect("mx.example.test".try_into().unwrap(), stream)
            .await
            .expect("TLS handshake");
        Client {
            stream: BufReader::new(Box::new(tls)),
        }
    }

    /// After `220 Ready to start TLS`: the handshake, on whatever the connection
    /// is. Bytes already buffered from the server are dropped (there should be none).
    pub async fn start_tls(self, ca: &[u8]) -> Client {
        let plain = self.stream.into_inner();
        let tls = tls_connector(ca)
            .connect("mx.example.test".try_into().unwrap(), plain)
            .await
            .expect("TLS handshake");
        Client {
            stream: BufReader::new(Box::new(tls)),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("send");
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read reply");
            assert!(n > 0, "connection closed; got so far: {text:?}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("reply code");
                return Reply { code, text };
            }
        }
    }

    /// A reply if one comes within `wait`, else None (the server said nothing).
    pub async fn try_reply(&mut self, wait: Duration) -> Option<Reply> {
        let mut line = String::new();
        let mut text = String::new();
        loop {
            line.clear();
            match tokio::time::timeout(wait, self.stream.read_line(&mut line)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) if text.is_empty() => return None,
                Ok(Ok(0)) | Ok(Err(_)) => panic!("connection closed mid-reply: {text:?}"),
                Ok(Ok(_)) => {}
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("reply code");
                return Some(Reply { code, text });
            }
        }
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply starts with `expected` ("250", "550 5.7.1").
    pub async fn expect(&mut self, line: &str, expected: &str) -> Reply {
        let reply = self.command(line).await;
        assert!(
            reply.text.starts_with(expected)
                || reply
                    .text
                    .lines()
                    .last()
                    .unwrap_or("")
                    .starts_with(expected),
            "{line:?}: expected {expected:?}, got {:?}",
            reply.text
        );
        reply
    }

    /// Reads the greeting and says EHLO.
    pub async fn hello(&mut self) {
        let greeting = self.reply().await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        self.expect("EHLO client.test", "250").await;
    }

    /// Whether the server has closed the connection (reads to EOF).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }

    /// A whole transaction; returns the reply to the end of data.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), "250").await;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
        }
        self.expect("DATA", "354").await;
        self.send(&stuff(message)).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// Dot-stuffs a message for sending (RFC 5321 4.5.2).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// Splits the proxy's Received: header (first header, with folded lines) off a
/// message as the backend got it.
pub fn strip_received(data: &[u8]) -> (&str, &[u8]) {
    assert!(data.starts_with(b"Received: "), "no Received: header first");
    let mut end = 0;
    loop {
        let lf = end + data[end..].iter().position(|&b| b == b'\n').unwrap();
        end = lf + 1;
        if !matches!(data.get(end), Some(b' ') | Some(b'\t')) {
            break;
        }
    }
    (std::str::from_utf8(&data[..end]).unwrap(), &data[end..])
}

/// A proxy under test with its own folder.
pub struct Proxy {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub server: Option<Server>,
    pub config: Config,
}

/// The base configuration of the tests; `extra` is appended (later keys of the same
/// table must not repeat those below — use `Proxy::start_with_text` for full control).
pub fn base_config(backend: SocketAddr, relay: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.example.test"
shutdown_grace = "2s"

[limits]
command_timeout = "10s"
data_timeout = "10s"

[relay]
hosted_domains = ["example.test", "other.test"]
{relay}

[recipients.domains."example.test"]
file = "recipients.txt"

[backend]
address = "{backend}"
connect_timeout = "2s"
command_timeout = "5s"

# Tests never leave loopback: no MX lookups, no real name servers.
[outbound]
route = "backend"

[dns]
servers = ["127.0.0.1:9"]
timeout = "1s"

[checks]
sender_domain_exists = false

# Sender authentication adds an Authentication-Results header to inbound mail;
# the tests of other stages compare bytes, so it is on only where tested
# (sender_auth.rs).
[sender_auth]
spf = false
dkim = false
dmarc = false
arc = false

[queue]
path = "queue"
min_backoff = "1s"
max_backoff = "2s"
delivery_workers = 4

[store]
path = "db"

{extra}
"#
    )
}

/// The test's copy of a shipped file (`rules/10-attachments.toml`,
/// `packaging/mailmoat.toml`): tests never read the working tree's `rules/` or
/// `packaging/`, which an administrator edits; `shipped::copies_match_what_is_shipped`
/// keeps the copies equal to what is committed.
pub fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/shipped")
        .join(path)
}

pub const RECIPIENTS: &str =
    "alice@example.test\nbob@example.test\ncarol@example.test\npostmaster@example.test\n";

impl Proxy {
    /// Starts a proxy in this process with the base configuration.
    pub async fn start(backend: SocketAddr, relay: &str, extra: &str) -> Proxy {
        Proxy::start_with_text(&base_config(backend, relay, extra)).await
    }

    pub async fn start_with_text(text: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
        Proxy::start_in(dir, text).await
    }

    /// Starts a proxy with one rule file (`rules/50-test.toml` in its folder).
    pub async fn start_with_rules(backend: SocketAddr, relay: &str, rules: &str) -> Proxy {
        Proxy::start_with_rules_and(backend, relay, rules, "").await
    }

    /// As [`Proxy::start_with_rules`], with `extra` configuration.
    pub async fn start_with_rules_and(
        backend: SocketAddr,
        relay: &str,
        rules: &str,
        extra: &str,
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("recipients.txt"), RECIPIENTS).unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/50-test.toml"), rules).unwrap();
        Proxy::start_in(dir, &base_config(backend, relay, extra)).await
    }

    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> Proxy {
        let config_path = dir.path().join("mailmoat.toml");
        std::fs::write(&config_path, text).unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let server = Server::start(config.clone()).await.expect("start proxy");
        Proxy {
            addr: server.local_addrs[0],
            dir,
            server: Some(server),
            config,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mailmoat.toml")
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// Files in a queue folder.
    pub fn queue_files(&self, state: &str) -> Vec<String> {
        list_files(&self.queue_dir().join(state))
    }

    /// Waits until the queue delivers nothing and has nothing due: whatever was
    /// going to arrive now has arrived.
    pub async fn wait_idle(&self) {
        let server = self.server.as_ref().expect("a running proxy");
        assert!(
            server.queue.wait_idle(WAIT).await,
            "the queue is still busy"
        );
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub async fn client(&self) -> Client {
        let mut client = Client::connect(self.addr).await;
        client.hello().await;
        client
    }
}

/// `mailmoat --config CONFIG ARGS…`: whether it succeeded, and what it printed
/// (standard output, then standard error).
pub fn run_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailmoat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

pub fn list_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A loopback address nothing listens on.
pub async fn unused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Waits until `check` holds or fails the test.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        poll_pause().await;
    }
}

/// A realistic message with a dot-leading line, 8-bit text and long-ish lines.
pub fn sample_message(subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@remote.test>\r\n\
         To: Alice <alice@example.test>\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{subject}@remote.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello Alice,\r\n\
         .a line that starts with a dot\r\n\
         ..and one with two\r\n\
         Grüße, with 8-bit text.\r\n\
         {}\r\n\
         \r\n\
         -- \r\n\
         Sender\r\n",
        "x".repeat(900)
    )
    .into_bytes()
}

/// Base64 with line breaks every 76 characters, as mail programs write it.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A zip archive of the given files.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut buffer);
        for (name, data) in files {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
    }
    buffer.into_inner()
}

/// A self-signed certificate for mx.example.test and 127.0.0.1:
/// (certificate PEM, key PEM).
pub fn test_certificate() -> (String, String) {
    let names = vec!["mx.example.test".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

pub fn tls_connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

pub fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A DNS server on a loopback port answering from a table, for tests that need
/// MX, address, PTR and blocklist answers without leaving the machine.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<DnsZone>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct DnsZone {
    records: HashMap<String, Vec<hickory_proto::rr::RData>>,
    servfail: Vec<String>,
    /// Names never answered: the query times out.
    silent: Vec<String>,
    /// Every question asked: (name, type).
    asked: Vec<(String, String)>,
    /// The SOA minimum that negative answers carry, if they carry an SOA.
    negative_minimum: Option<u32>,
    /// The TTL of every record answered (60 unless set).
    ttl: Option<u32>,
    /// Every other query goes unanswered, as through a lossy resolver.
    lossy: bool,
    received: usize,
}

fn dns_name(name: &str) -> hickory_proto::rr::Name {
    hickory_proto::rr::Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap()
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        use hickory_proto::op::{Message, OpCode, ResponseCode};
        use hickory_proto::rr::Record;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(DnsZone::default()));
        let table = zone.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let Some(question) = query.queries.first().cloned() else {
                    continue;
                };
                let name = question
                    .name()
                    .to_string()
                    .trim_end_matches('.')
                    .to_lowercase();
                let mut response = Message::response(query.metadata.id, OpCode::Query);
                response.metadata.authoritative = true;
                response.metadata.recursion_available = true;
                response.add_query(question.clone());
                {
                    let mut zone = table.lock().unwrap();
                    zone.asked
                        .push((name.clone(), question.query_type().to_string()));
                    zone.received += 1;
                    if zone.silent.contains(&name) || (zone.lossy && zone.received % 2 == 1) {
                        continue;
                    }
                    if zone.servfail.contains(&name) {
                        response.metadata.response_code = ResponseCode::ServFail;
                    } else if let Some(records) = zone.records.get(&name) {
                        for rdata in records
                            .iter()
                            .filter(|r| r.record_type() == question.query_type())
                        {
                            response.add_answer(Record::from_rdata(
                                question.name().clone(),
                                zone.ttl.unwrap_or(60),
                                rdata.clone(),
                            ));
                        }
                    } else {
                        response.metadata.response_code = ResponseCode::NXDomain;
                        if let Some(minimum) = zone.negative_minimum {
                            let soa = hickory_proto::rr::rdata::SOA::new(
                                dns_name("ns.test"),
                                dns_name("hostmaster.test"),
                                1,
                                3600,
                                600,
                                86400,
                                minimum,
                            );
                            response.add_authority(Record::from_rdata(
                                dns_name("test"),
                                3600,
                                hickory_proto::rr::RData::SOA(soa),
                            ));
                        }
                    }
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        });
        DnsServer { addr, zone, task }
    }

    fn add(&self, name: &str, rdata: hickory_proto::rr::RData) {
        self.zone
            .lock()
            .unwrap()
            .records
            .entry(name.trim_end_matches('.').to_lowercase())
            .or_default()
            .push(rdata);
    }

    /// A test configuration (from [`base_config`]) that resolves through this
    /// server instead of the address nothing answers on.
    pub fn serving(&self, config: &str) -> String {
        let unanswered = "servers = [\"127.0.0.1:9\"]";
        assert!(config.contains(unanswered), "not a base configuration");
        config.replace(unanswered, &format!("servers = [\"{}\"]", self.addr))
    }

    pub fn a(&self, name: &str, ip: &str) {
        self.add(
            name,
            hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(ip.parse().unwrap())),
        );
    }

    pub fn mx(&self, domain: &str, preference: u16, host: &str) {
        let exchange = if host == "." {
            hickory_proto::rr::Name::root()
        } else {
            dns_name(host)
        };
        self.add(
            domain,
            hickory_proto::rr::RData::MX(hickory_proto::rr::rdata::MX::new(preference, exchange)),
        );
    }

    /// A TXT record; text longer than 255 bytes goes in several strings, as
    /// zone files publish long DKIM keys.
    pub fn txt(&self, name: &str, text: &str) {
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|chunk| String::from_utf8(chunk.to_vec()).unwrap())
            .collect();
        self.add(
            name,
            hickory_proto::rr::RData::TXT(hickory_proto::rr::rdata::TXT::new(strings)),
        );
    }

    /// A name that exists with no records of the asked type (NODATA).
    pub fn exists(&self, name: &str) {
        self.zone
            .lock()
            .unwrap()
            .records
            .entry(name.trim_end_matches('.').to_lowercase())
            .or_default();
    }

    pub fn servfail(&self, name: &str) {
        self.zone.lock().unwrap().servfail.push(name.to_lowercase());
    }

    /// Negative answers carry an SOA with this minimum (RFC 2308's negative TTL).
    /// Records are answered with this TTL.
    pub fn ttl(&self, seconds: u32) {
        self.zone.lock().unwrap().ttl = Some(seconds);
    }

    /// The first query and every other one after it go unanswered.
    pub fn lose_every_other_query(&self) {
        self.zone.lock().unwrap().lossy = true;
    }

    pub fn negative_minimum(&self, seconds: u32) {
        self.zone.lock().unwrap().negative_minimum = Some(seconds);
    }

    /// Never answers for `name`, as a dead or filtered name server.
    pub fn silent(&self, name: &str) {
        self.zone.lock().unwrap().silent.push(name.to_lowercase());
    }

    /// How many times `name` was asked for records of `kind` ("TXT", "A").
    pub fn asked(&self, name: &str, kind: &str) -> usize {
        self.zone
            .lock()
            .unwrap()
            .asked
            .iter()
            .filter(|(n, k)| n == name && k == kind)
            .count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every log line of this test process, as JSON (one subscriber for all tests;
/// each test finds its own lines by a value only it uses).
static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing the proxy's log lines (idempotent).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogBuffer(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("mailmoat=info")
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

/// The captured log lines for which `matches` holds.
pub fn logged(matches: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let Some(buffer) = LOGS.get() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&buffer.lock().unwrap()).to_string();
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|value| matches(value))
        .collect()
}

/// Waits for a log line for which `matches` holds.
pub async fn wait_for_logged(
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = logged(&matches).pop() {
            return line;
        }
        assert!(Instant::now() < deadline, "no log line: {what}");
        poll_pause().await;
    }
}

/// Makes sure a Debian package the tests read with is installed: `check` is a
/// shell command that succeeds when it is. Installs it when missing (CI runs as
/// root on Debian; `.ci/run` installs them first anyway).
pub fn ensure_package(check: &str, package: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let present = || {
        std::process::Command::new("sh")
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return;
    }
    let _ = std::process::Command::new("apt-get")
        .args(["install", "-y", "-q", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    assert!(
        present(),
        "{package} is needed (apt-get install {package}); .ci/run installs it"
    );
}

/// The archive's list (`quarantine list`) of a running proxy, of one sender's
/// items or of all.
pub async fn archive_list(proxy: &Proxy, sender: Option<&str>) -> String {
    let reply = mailmoat::control::send(
        &proxy.queue_dir().join("control.sock"),
        &mailmoat::control::Request::Quarantine(
            mailmoat::archive::admin::QuarantineCommand::List {
                search: mailmoat::archive::search::Search {
                    sender: sender.map(str::to_string),
                    ..Default::default()
                },
            },
        ),
    )
    .await
    .unwrap();
    assert!(reply.ok, "{}", reply.text);
    reply.text
}
