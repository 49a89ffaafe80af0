//! DNS that a lossy resolver cannot stall: many sessions asking the same name
//! make one query; a negative answer is kept for its SOA's minimum; a server
//! that never answers costs an attempt, not the budget, while another server
//! answers — and a lookup no server answers ends within the budget; a lost
//! query costs the server's usual answer time; a name in use is asked again
//! before it expires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// A name server that reads every query and answers none, counting them.
struct BlackHole {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start() -> BlackHole {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while socket.recv_from(&mut buffer).await.is_ok() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        BlackHole {
            addr,
            queries,
            task,
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const SPF_ON: (&str, &str) = ("[sender_auth]\nspf = false", "[sender_auth]\nspf = true");
const SENDER_DOMAIN_ON: (&str, &str) = (
    "sender_domain_exists = false",
    "sender_domain_exists = true",
);

/// A proxy resolving through `servers` with `dns` settings, the base
/// configuration otherwise, with `changes` (from, to) made to it.
async fn proxy_with(
    backend: &Backend,
    servers: &[SocketAddr],
    dns: &str,
    changes: &[(&str, &str)],
) -> Proxy {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let mut text = base_config(backend.addr, "trusted_networks = [\"127.0.0.9/32\"]", "").replace(
        "servers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"",
        &format!("servers = [{}]\n{dns}", list.join(", ")),
    );
    for (from, to) in changes {
        assert!(text.contains(from), "no {from:?} in the base configuration");
        text = text.replace(from, to);
    }
    assert!(text.contains(&list[0]), "not a base configuration");
    Proxy::start_with_text(&text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_from_one_domain_make_one_spf_query() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.txt("remote.test", "v=spf1 ip4:127.0.0.0/8 -all");
    let proxy = proxy_with(&backend, &[dns.addr], "timeout = \"5s\"", &[SPF_ON]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(proxy.client().await);
    }
    // Every MAIL FROM at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client.command("MAIL FROM:<news@remote.test>").await.codes()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "250 2.1.0");
    }
    assert_eq!(
        dns.asked("remote.test", "TXT"),
        1,
        "one query for fifty lookups"
    );
    // What the engine did, as `mailmoat status` shows it.
    let status = mailmoat::control::send(
        &proxy.queue_dir().join("control.sock"),
        &mailmoat::control::Request::Status,
    )
    .await
    .unwrap()
    .text;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("dns {}: ", dns.addr)))
        .unwrap_or_else(|| panic!("{status}"));
    let queries: u64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" queries"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let lookups: u64 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(lookups >= 1 && queries == 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_answer_is_kept_for_its_soa_minimum() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.negative_minimum(2);
    let proxy = proxy_with(
        &backend,
        &[dns.addr],
        "timeout = \"5s\"\nnegative_ttl_min = \"1s\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    let mut client = proxy.client().await;
    let refused = |reply: Reply| assert_eq!(reply.code, 550, "{reply:?}");
    let first = Instant::now();
    refused(client.command("MAIL FROM:<a@missing.test>").await);
    refused(client.command("MAIL FROM:<b@missing.test>").await);
    let asked = || dns.asked("missing.test", "MX");
    assert_eq!(asked(), 1, "the second lookup is answered from the cache");
    // Asked again in the last tenth of the SOA minimum's two seconds (the
    // refresh of a name in use), not after the one-second floor.
    while asked() == 1 {
        refused(client.command("MAIL FROM:<c@missing.test>").await);
        poll_pause().await;
    }
    let kept = first.elapsed();
    assert!(
        kept >= Duration::from_millis(1800),
        "asked again after {kept:?}, before the last tenth of the SOA minimum"
    );
    assert_eq!(asked(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_costs_an_attempt_and_the_next_is_asked() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    let hole = BlackHole::start().await;
    let budget = Duration::from_secs(4);
    let proxy = proxy_with(
        &backend,
        &[hole.addr, dns.addr],
        "timeout = \"4s\"\nattempt_timeout = \"200ms\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    let mut client = proxy.client().await;
    for n in 0..6 {
        let domain = format!("d{n}.test");
        dns.mx(&domain, 10, &format!("mx.{domain}"));
        let started = Instant::now();
        let reply = client.command(&format!("MAIL FROM:<a@{domain}>")).await;
        let took = started.elapsed();
        assert_eq!(reply.codes(), "250 2.1.0", "{domain}");
        assert!(
            took < budget / 2,
            "{domain}: {took:?}, not an attempt's wait"
        );
        client.command("RSET").await;
    }
    assert!(
        hole.queries.load(Ordering::Relaxed) >= 1,
        "the dead server was asked first for some names"
    );
    // No server answers: the lookup ends within its budget, as a temporary
    // failure.
    dns.silent("gone.test");
    let started = Instant::now();
    let reply = client.command("MAIL FROM:<a@gone.test>").await;
    let took = started.elapsed();
    assert_eq!(reply.code, 450, "{reply:?}");
    assert!(took < budget + Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_query_costs_the_servers_usual_answer_time_not_the_attempt_timeout() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.lose_every_other_query();
    let attempt_timeout = Duration::from_secs(3);
    let proxy = proxy_with(
        &backend,
        &[dns.addr],
        "timeout = \"10s\"\nattempt_timeout = \"3s\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    let mut client = proxy.client().await;
    let mut asked = 0;
    for n in 0..6 {
        let domain = format!("lossy{n}.test");
        dns.mx(&domain, 10, &format!("mx.{domain}"));
        let started = Instant::now();
        let reply = client.command(&format!("MAIL FROM:<a@{domain}>")).await;
        let took = started.elapsed();
        assert_eq!(reply.codes(), "250 2.1.0", "{domain}");
        asked += dns.asked(&domain, "MX");
        // The first lookup knows nothing of the server and waits a quarter of
        // the attempt; later ones wait what its answers took (at least 50 ms).
        if n > 0 {
            assert!(
                took < attempt_timeout / 3,
                "{domain}: {took:?}, the whole attempt_timeout"
            );
        }
        client.command("RSET").await;
    }
    // Queries were lost and asked again (as two copies at once while the
    // server is seen to lose them).
    assert!(asked > 6, "{asked} queries for six names: none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_use_is_asked_again_before_it_expires() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    // Ten seconds: its last tenth is a second wide, wide enough for a busy machine.
    let ttl = Duration::from_secs(10);
    dns.ttl(ttl.as_secs() as u32);
    dns.mx("steady.test", 10, "mx.steady.test");
    let proxy = proxy_with(
        &backend,
        &[dns.addr],
        "timeout = \"5s\"\npositive_ttl_min = \"0s\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    let first = Instant::now();
    let asked = || dns.asked("steady.test", "MX");
    // Mail from the domain keeps coming, a session at a time: the answer is
    // refreshed in its last tenth, while the cached one still serves.
    while asked() < 2 {
        let mut client = proxy.client().await;
        let reply = client.command("MAIL FROM:<a@steady.test>").await;
        assert_eq!(reply.codes(), "250 2.1.0");
        client.command("QUIT").await;
        poll_pause().await;
    }
    let refreshed = first.elapsed();
    assert!(
        refreshed >= ttl * 9 / 10 - Duration::from_millis(100) && refreshed < ttl,
        "asked again after {refreshed:?}, not in the last tenth of {ttl:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_name_is_answered_from_its_stale_record_while_the_servers_are_silent() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.ttl(1);
    dns.mx("stale.test", 10, "mx.stale.test");
    let budget = Duration::from_secs(5);
    let proxy = proxy_with(
        &backend,
        &[dns.addr],
        "timeout = \"5s\"\npositive_ttl_min = \"0s\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    let mut client = proxy.client().await;
    let reply = client.command("MAIL FROM:<a@stale.test>").await;
    assert_eq!(reply.codes(), "250 2.1.0");
    client.command("RSET").await;
    dns.silent("stale.test");
    // Past the TTL the refreshes go unanswered; the checks go on with the
    // record known, without waiting for the budget.
    while dns.asked("stale.test", "MX") < 3 {
        let started = Instant::now();
        let reply = client.command("MAIL FROM:<a@stale.test>").await;
        let took = started.elapsed();
        assert_eq!(reply.codes(), "250 2.1.0");
        assert!(took < budget / 5, "waited {took:?} for a silent server");
        client.command("RSET").await;
        poll_pause().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_published_with_ttl_zero_is_kept_for_positive_ttl_min() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.ttl(0);
    dns.mx("zero.test", 10, "mx.zero.test");
    let proxy = proxy_with(
        &backend,
        &[dns.addr],
        "timeout = \"5s\"",
        &[SENDER_DOMAIN_ON],
    )
    .await;
    for _ in 0..20 {
        let mut client = proxy.client().await;
        let reply = client.command("MAIL FROM:<a@zero.test>").await;
        assert_eq!(reply.codes(), "250 2.1.0");
        client.command("QUIT").await;
    }
    assert_eq!(
        dns.asked("zero.test", "MX"),
        1,
        "twenty sessions within the default positive_ttl_min (10s) ask once"
    );
}
