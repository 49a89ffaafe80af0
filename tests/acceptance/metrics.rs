//! `/metrics` and `/healthz` after a known sequence of events, scraped over HTTP
//! as Prometheus would.

use std::net::SocketAddr;

use mailmoat::control::Request;
use mailmoat::queue::admin::AdminCommand;

use crate::support::*;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Waits until a scrape shows `series` at `wanted`.
async fn until(addr: SocketAddr, series: &str, wanted: f64) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        if value(&text, series) == Some(wanted) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never became {wanted}:\n{text}"
        );
        poll_pause().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_and_health_follows_the_spool() {
    let backend = Backend::start(DataEnd::Strict).await;
    let metrics = unused_addr().await;
    let rules = r#"
[[rule]]
name = "no-reject-me"
when.subject = "reject me"
action = "reject"
"#;
    let proxy = Proxy::start_with_rules_and(
        backend.addr,
        "trusted_networks = [\"127.0.0.9/32\"]",
        rules,
        &format!(
            "[mailbomb]\nmessages_per_sender_per_hour = 3\n\n[metrics]\nlisten = \"{metrics}\"\n"
        ),
    )
    .await;

    // Three delivered; a fourth from the same sender past its limit (451 at
    // MAIL); one refused by a rule.
    let mut client = proxy.client().await;
    for n in 0..3 {
        let reply = client
            .send_mail(
                "x@remote.test",
                &["alice@example.test"],
                &sample_message(&format!("m{n}")),
            )
            .await;
        assert_eq!(reply.codes(), "250 2.0.0");
    }
    client.expect("MAIL FROM:<x@remote.test>", "451").await;
    let refused = "Subject: reject me\r\n\r\nno\r\n";
    let reply = client
        .send_mail("y@remote.test", &["alice@example.test"], refused.as_bytes())
        .await;
    assert_eq!(reply.codes(), "550 5.7.1");
    backend.wait_for(3).await;
    proxy.wait_idle().await;

    let text = until(metrics, "mailmoat_deliveries_total{result=\"sent\"}", 3.0).await;
    let expected = [
        ("mailmoat_messages_total{outcome=\"queued\"}", 3.0),
        ("mailmoat_messages_total{outcome=\"rejected\"}", 1.0),
        (
            "mailmoat_refusals_total{stage=\"data\",check=\"rule\"}",
            1.0,
        ),
        (
            "mailmoat_refusals_total{stage=\"mail\",check=\"mailbomb.sender\"}",
            1.0,
        ),
        ("mailmoat_mailbomb_hits_total{limit=\"sender\"}", 1.0),
        ("mailmoat_rule_matches_total{rule=\"no-reject-me\"}", 1.0),
        ("mailmoat_backend_up", 1.0),
        ("mailmoat_queue_messages{state=\"active\"}", 0.0),
        ("mailmoat_queue_messages{state=\"deferred\"}", 0.0),
        ("mailmoat_connections_open", 1.0),
        ("mailmoat_connections_accepted_total", 1.0),
        (
            &format!(
                "mailmoat_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
        ("mailmoat_end_of_data_seconds_count", 4.0),
    ];
    for (series, wanted) in expected {
        assert_eq!(value(&text, series), Some(wanted), "{series}:\n{text}");
    }
    assert_eq!(
        value(&text, "mailmoat_messages_total{outcome=\"tempfailed\"}"),
        Some(0.0)
    );
    drop(client);

    // The backend stops: the next message waits in the queue, the backend is
    // down; it comes back and a flush delivers the message.
    backend.stop();
    let mut client = proxy.client().await;
    let reply = client
        .send_mail(
            "z@remote.test",
            &["alice@example.test"],
            &sample_message("waits"),
        )
        .await;
    assert_eq!(reply.codes(), "250 2.0.0");
    let text = until(metrics, "mailmoat_queue_messages{state=\"deferred\"}", 1.0).await;
    assert_eq!(value(&text, "mailmoat_backend_up"), Some(0.0), "{text}");
    assert_eq!(
        value(&text, "mailmoat_deliveries_total{result=\"deferred\"}"),
        Some(1.0),
        "{text}"
    );
    let again = Backend::start_on(backend.addr, DataEnd::Strict).await;
    let flushed = mailmoat::control::send(
        &proxy.queue_dir().join("control.sock"),
        &Request::Queue(AdminCommand::Flush),
    )
    .await
    .unwrap();
    assert!(flushed.ok, "{}", flushed.text);
    again.wait_for(1).await;
    let text = until(metrics, "mailmoat_deliveries_total{result=\"sent\"}", 4.0).await;
    assert_eq!(value(&text, "mailmoat_backend_up"), Some(1.0), "{text}");
    let text = until(metrics, "mailmoat_queue_messages{state=\"deferred\"}", 0.0).await;
    assert_eq!(
        value(&text, "mailmoat_messages_total{outcome=\"queued\"}"),
        Some(4.0)
    );

    // The operator's one screen.
    let status = mailmoat::control::send(&proxy.queue_dir().join("control.sock"), &Request::Status)
        .await
        .unwrap();
    assert!(status.ok, "{}", status.text);
    let lines: Vec<&str> = status.text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("mailmoat {}, up ", env!("CARGO_PKG_VERSION"))),
        "{}",
        status.text
    );
    assert_eq!(
        lines[1..],
        [
            "connections: 1 open",
            "queue: active 0, deferred 0, hold 0",
            // delivery_workers = 4: half of them at most for one next hop.
            &format!(
                "backend {}: answering (0 of at most 2 deliveries at once)",
                backend.addr
            ),
            "rules: 1 loaded",
            // No check of this test asks DNS.
            "dns 127.0.0.1:9: 0 lookups (0% from the cache, 0 joined one in flight), 0 queries, \
             0 answers, 0 attempts timed out (0.0% of queries lost), 0 lookups failed",
            "refusals in the last hour: mailbomb.sender 1, rule no-reject-me 1",
        ],
        "{}",
        status.text
    );

    // The shipped alert rules and dashboard name only series that exist.
    let exposed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for file in [
        "packaging/prometheus-alerts.yml",
        "packaging/grafana-dashboard.json",
    ] {
        let shipped_text = std::fs::read_to_string(shipped(file)).unwrap();
        let named = shipped_text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("mailmoat_"));
        for name in named {
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exposed.iter().any(|e| e == family),
                "{file}: {name} is not exposed"
            );
        }
    }

    // Health: ok, then 503 naming the spool when it cannot take a write.
    assert_eq!(get(metrics, "/healthz").await, (200, "ok\n".to_string()));
    std::fs::create_dir(proxy.queue_dir().join(".healthz")).unwrap();
    let (status, body) = get(metrics, "/healthz").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("the spool ") && body.contains("cannot be written"),
        "{body}"
    );
    std::fs::remove_dir(proxy.queue_dir().join(".healthz")).unwrap();
    assert_eq!(get(metrics, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_lookups_and_failures_are_counted_by_kind() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dns = DnsServer::start().await;
    dns.mx("good.test", 10, "mx.good.test");
    dns.servfail("broken.test");
    let metrics = unused_addr().await;
    let text = dns
        .serving(&base_config(
            backend.addr,
            "trusted_networks = [\"127.0.0.9/32\"]",
            &format!("[metrics]\nlisten = \"{metrics}\"\n"),
        ))
        .replace(
            "sender_domain_exists = false",
            "sender_domain_exists = true",
        );
    let proxy = Proxy::start_with_text(&text).await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<a@good.test>", "250").await;
    client.expect("RSET", "250").await;
    client.expect("MAIL FROM:<a@broken.test>", "450").await;
    let text = scrape(metrics).await;
    assert_eq!(
        value(&text, "mailmoat_dns_lookups_total{kind=\"mx\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "mailmoat_dns_failures_total{kind=\"mx\"}"),
        Some(1.0),
        "{text}"
    );
}
