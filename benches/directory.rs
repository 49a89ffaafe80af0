//! What the directory costs at RCPT: 10,000 RCPTs for 1,000 distinct addresses
//! (ten sessions at once, each walking the thousand addresses) against a real
//! slapd, first with an empty cache, then warm; beside the same RCPTs to a
//! domain validated by a recipients file of the same thousand addresses.
//!
//!     cargo bench --bench directory
//!
//! Prints, per pass, the searches slapd logged, the wall time per RCPT and the
//! ratio to the file. Needs Debian's slapd and ldap-utils (`.ci/run` installs
//! them).

#[path = "../tests/acceptance/slapd.rs"]
#[allow(dead_code)]
mod slapd;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SESSIONS: usize = 10;
const ADDRESSES: usize = 1000;
const ROUNDS: usize = 5;

/// One SMTP session: MAIL, then every address once (from its own starting
/// point), each RCPT's reply read before the next, as a client does.
async fn session(proxy: SocketAddr, domain: &'static str, offset: usize) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let reply = async |lines: &mut tokio::io::Lines<BufReader<_>>| loop {
        let line: String = lines.next_line().await.unwrap().unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    };
    reply(&mut lines).await;
    for command in ["EHLO bench.test", "MAIL FROM:<sender@remote.test>"] {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        reply(&mut lines).await;
    }
    for i in 0..ADDRESSES {
        let n = (i + offset) % ADDRESSES;
        write
            .write_all(format!("RCPT TO:<user{n}@{domain}>\r\n").as_bytes())
            .await
            .unwrap();
        let answer = reply(&mut lines).await;
        assert!(answer.starts_with("250"), "user{n}@{domain}: {answer}");
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
}

/// Ten sessions at once; the wall time per RCPT.
async fn pass(proxy: SocketAddr, domain: &'static str) -> Duration {
    let started = Instant::now();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|s| tokio::spawn(session(proxy, domain, s * ADDRESSES / SESSIONS)))
        .collect();
    for s in sessions {
        s.await.unwrap();
    }
    started.elapsed() / (SESSIONS * ADDRESSES) as u32
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let directory = slapd::Slapd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..ADDRESSES)
        .map(|n| format!("user{n}@file.test\n"))
        .collect();
    std::fs::write(dir.path().join("recipients.txt"), list).unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"mx.bench.test\"\n\
         [limits]\nrecipient_limit = {ADDRESSES}\n\
         [relay]\nhosted_domains = [\"example.test\", \"file.test\"]\ntrusted_networks = []\n\
         [recipients.domains.\"example.test\"]\nldap = true\n\
         [recipients.domains.\"file.test\"]\nfile = \"recipients.txt\"\n\
         [backend]\naddress = \"127.0.0.1:9\"\n[outbound]\nroute = \"backend\"\n\
         [dns]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n\
         [checks]\nsender_domain_exists = false\n\
         [sender_auth]\nspf = false\ndkim = false\ndmarc = false\narc = false\n\
         [queue]\npath = \"queue\"\n[store]\npath = \"db\"\n{}",
        directory.config("")
    );
    let path = dir.path().join("mailmoat.toml");
    std::fs::write(&path, text).unwrap();
    let config = mailmoat::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let server = mailmoat::server::Server::start(config).await.unwrap();
    let proxy = server.local_addrs[0];

    println!(
        "{} RCPTs per pass: {SESSIONS} sessions at once, {ADDRESSES} distinct addresses each",
        SESSIONS * ADDRESSES
    );
    let searched = |before: usize| directory.searches("(mail=user") - before;
    let cold = pass(proxy, "example.test").await;
    println!(
        "directory, empty cache: {:>6.1} us per RCPT, {} searches",
        cold.as_secs_f64() * 1e6,
        searched(0)
    );
    let after_cold = searched(0);
    let (mut warm, mut file) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        warm.push(pass(proxy, "example.test").await);
        file.push(pass(proxy, "file.test").await);
    }
    warm.sort();
    file.sort();
    let (warm, file) = (warm[ROUNDS / 2], file[ROUNDS / 2]);
    println!(
        "directory, warm cache:  {:>6.1} us per RCPT, {} searches (median of {ROUNDS})",
        warm.as_secs_f64() * 1e6,
        searched(after_cold)
    );
    println!(
        "recipients file:        {:>6.1} us per RCPT (median of {ROUNDS})",
        file.as_secs_f64() * 1e6
    );
    println!(
        "warm directory / file: {:.2}x; empty cache / file: {:.2}x",
        warm.as_secs_f64() / file.as_secs_f64(),
        cold.as_secs_f64() / file.as_secs_f64()
    );
    server.shutdown().await;
}
