//! A next hop that hangs holds only its own share of the delivery workers: a
//! backend that never answers the end of data, and one that never greets, with
//! forty messages for it; mail for the relay host goes meanwhile, `status` and
//! `/metrics` say the backend is not answering and why, and when a working
//! server takes the backend's port the forty arrive, with or without `queue
//! flush`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailmoat::control::Request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::metrics::{scrape, value};
use crate::support::*;

/// How the hung backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hang {
    /// Greets, takes the message, never answers its end (a hung transport or
    /// content filter) — once told to hang.
    EndOfData,
    /// Takes the connection and never says a word.
    Greeting,
}

/// A backend that hangs as `Hang` says, and counts the connections open to it
/// at once, from its side.
struct Hung {
    addr: SocketAddr,
    hanging: Arc<AtomicBool>,
    delivered: Arc<AtomicUsize>,
    /// Connections taken in all, and the most open at once.
    taken: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    first_hang: Arc<Mutex<Option<Instant>>>,
    /// A copy of every accepted socket, to tell which are still open.
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
    listener: tokio::task::JoinHandle<()>,
}

/// Whether the client has closed `socket` (read without taking anything).
fn closed(socket: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match socket.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

impl Hung {
    async fn start(hang: Hang) -> Hung {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hanging = Arc::new(AtomicBool::new(hang == Hang::Greeting));
        let delivered = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let first_hang = Arc::new(Mutex::new(None));
        let sockets = Arc::new(Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (h, d, t, m, f, s) = (
            hanging.clone(),
            delivered.clone(),
            taken.clone(),
            most.clone(),
            first_hang.clone(),
            sockets.clone(),
        );
        let listener = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                t.fetch_add(1, SeqCst);
                // Counted at once, from the kernel's view: a connection the
                // proxy closed before opening this one is seen closed here.
                let std = stream.into_std().unwrap();
                let copy = std.try_clone().unwrap();
                let stream = tokio::net::TcpStream::from_std(std).unwrap();
                {
                    let mut open = s.lock().unwrap();
                    open.retain(|socket| !closed(socket));
                    open.push(copy);
                    m.fetch_max(open.len(), SeqCst);
                }
                let (h, d, f) = (h.clone(), d.clone(), f.clone());
                tokio::spawn(async move {
                    match hang {
                        Hang::Greeting => {
                            f.lock().unwrap().get_or_insert_with(Instant::now);
                            let mut stream = stream;
                            let mut buf = [0u8; 512];
                            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                        }
                        Hang::EndOfData => serve_until_end_of_data(stream, &h, &d, &f).await,
                    }
                });
            }
        });
        Hung {
            addr,
            hanging,
            delivered,
            taken,
            most,
            first_hang,
            sockets,
            listener,
        }
    }

    /// Stops taking connections; those taken stay as they are (hung).
    fn stop_listening(&self) {
        self.listener.abort();
    }

    fn open_now(&self) -> usize {
        let mut open = self.sockets.lock().unwrap();
        open.retain(|socket| !closed(socket));
        open.len()
    }
}

/// A plain SMTP server that, once `hanging`, never answers the end of data.
async fn serve_until_end_of_data(
    stream: tokio::net::TcpStream,
    hanging: &AtomicBool,
    delivered: &AtomicUsize,
    first_hang: &Mutex<Option<Instant>>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let _ = write.write_all(b"220 hung.test ESMTP\r\n").await;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-hung.test\r\n250 8BITMIME\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            loop {
                let mut data = String::new();
                if reader.read_line(&mut data).await.unwrap_or(0) == 0 {
                    return;
                }
                if data == ".\r\n" {
                    break;
                }
            }
            if hanging.load(SeqCst) {
                first_hang.lock().unwrap().get_or_insert_with(Instant::now);
                // Hangs until the proxy closes.
                let mut rest = String::new();
                while reader.read_line(&mut rest).await.unwrap_or(0) > 0 {}
                return;
            }
            delivered.fetch_add(1, SeqCst);
            b"250 2.0.0 taken\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 ok\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

async fn status_of(proxy: &Proxy) -> String {
    let status = mailmoat::control::send(&proxy.queue_dir().join("control.sock"), &Request::Status)
        .await
        .unwrap();
    status.text
}

/// Sends one outbound message through the relay host and checks it arrives
/// within ten seconds.
async fn relay_goes(proxy: &Proxy, relay: &Backend, n: usize) {
    let mut client = proxy.client().await;
    let subject = format!("outbound {n}");
    let reply = client
        .send_mail(
            "alice@example.test",
            &["friend@remote.test"],
            format!("Subject: {subject}\r\n\r\nout\r\n").as_bytes(),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let sent = Instant::now();
    loop {
        let arrived = relay
            .messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains(&subject));
        if arrived {
            return;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{subject} did not reach the relay host within 10 s"
        );
        poll_pause().await;
    }
}

const CONCURRENCY: usize = 4;

async fn a_hung_backend_holds_only_its_share(hang: Hang, flush: bool) {
    let hung = Hung::start(hang).await;
    let relay = Backend::start(DataEnd::Strict).await;
    let metrics = unused_addr().await;
    let text = base_config(
        hung.addr,
        "trusted_networks = [\"127.0.0.1/32\"]",
        &format!("[metrics]\nlisten = \"{metrics}\"\n"),
    )
    .replace(
        "command_timeout = \"5s\"",
        "command_timeout = \"2s\"\ngreeting_timeout = \"2s\"\nprobe_interval = \"500ms\"",
    )
    .replace(
        "route = \"backend\"",
        &format!("route = \"relayhost\"\nrelayhost = \"{}\"", relay.addr),
    )
    .replace(
        "delivery_workers = 4",
        &format!("delivery_workers = 8\ndestination_concurrency = {CONCURRENCY}"),
    )
    // Retries an hour apart: only probes and the hop's return move the mail.
    .replace("min_backoff = \"1s\"", "min_backoff = \"1h\"")
    .replace("max_backoff = \"2s\"", "max_backoff = \"2h\"");
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    if hang == Hang::EndOfData {
        // It works first, so its window opens to the full share; then it hangs.
        for n in 0..12 {
            let body = format!("Subject: warm {n}\r\n\r\nx\r\n");
            let reply = client
                .send_mail("s@remote.test", &["alice@example.test"], body.as_bytes())
                .await;
            assert_eq!(reply.codes(), "250 2.0.0");
        }
        eventually("warm-up delivered", || hung.delivered.load(SeqCst) == 12).await;
        hung.hanging.store(true, SeqCst);
    }
    for n in 0..40 {
        let body = format!("Subject: held {n}\r\n\r\nx\r\n");
        let reply = client
            .send_mail("s@remote.test", &["alice@example.test"], body.as_bytes())
            .await;
        assert_eq!(reply.codes(), "250 2.0.0");
    }
    relay_goes(&proxy, &relay, 1).await;

    // Not answering, and why, within a command timeout (2 s) of the first hang.
    let why = match hang {
        Hang::EndOfData => "no answer to the end of data within 2s",
        Hang::Greeting => "no greeting within 2s",
    };
    let status = loop {
        let status = status_of(&proxy).await;
        if status.contains("NOT answering") {
            break status;
        }
        poll_pause().await;
    };
    let first_hang = hung.first_hang.lock().unwrap().expect("it hung");
    assert!(
        first_hang.elapsed() < Duration::from_millis(3500),
        "reported {:?} after the first hang",
        first_hang.elapsed()
    );
    assert!(status.contains(why), "{status}");
    let scraped = scrape(metrics).await;
    assert_eq!(
        value(&scraped, "mailmoat_backend_up"),
        Some(0.0),
        "{scraped}"
    );
    relay_goes(&proxy, &relay, 2).await;
    // Probes go on, one every probe_interval.
    let before = hung.taken.load(SeqCst);
    eventually("three more probes", || {
        hung.taken.load(SeqCst) >= before + 3
    })
    .await;
    relay_goes(&proxy, &relay, 3).await;
    assert!(
        hung.most.load(SeqCst) <= CONCURRENCY,
        "{} connections at once to the hung backend",
        hung.most.load(SeqCst)
    );
    assert!(hung.open_now() >= 1, "it is still being probed");

    // A working server takes the backend's port; the hung connections stay.
    hung.stop_listening();
    let addr = hung.addr;
    let backend = loop {
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            drop(listener);
            break Backend::start_on(addr, DataEnd::Strict).await;
        }
        poll_pause().await;
    };
    let back = Instant::now();
    if flush {
        let flushed = std::process::Command::new(env!("CARGO_BIN_EXE_mailmoat"))
            .arg("--config")
            .arg(proxy.config_path())
            .args(["queue", "flush"])
            .output()
            .unwrap();
        assert!(flushed.status.success(), "{flushed:?}");
    }
    let held = |messages: &[Received]| -> BTreeSet<String> {
        messages
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(&m.data).to_string();
                text.lines()
                    .find_map(|l| l.strip_prefix("Subject: held ").map(str::to_string))
            })
            .collect()
    };
    loop {
        if held(&backend.messages()).len() == 40 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "{} of 40 arrived within 30 s of the backend's return",
            held(&backend.messages()).len()
        );
        poll_pause().await;
    }
    proxy.wait_idle().await;
    let received = backend.messages();
    assert_eq!(received.len(), 40, "each once");
    let status = status_of(&proxy).await;
    assert!(
        status.contains(&format!("backend {addr}: answering")),
        "{status}"
    );
    assert!(proxy.queue_files("deferred").is_empty());
    assert!(proxy.queue_files("active").is_empty());
    drop(hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hung_at_the_end_of_data_holds_only_its_share_and_returns() {
    a_hung_backend_holds_only_its_share(Hang::EndOfData, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hung_at_the_end_of_data_returns_at_once_with_queue_flush() {
    a_hung_backend_holds_only_its_share(Hang::EndOfData, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_greets_holds_only_its_share_and_returns() {
    a_hung_backend_holds_only_its_share(Hang::Greeting, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_greets_returns_at_once_with_queue_flush() {
    a_hung_backend_holds_only_its_share(Hang::Greeting, true).await;
}
