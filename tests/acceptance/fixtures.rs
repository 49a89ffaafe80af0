//! The shipped rules, tested the way an administrator tests theirs: every message in
//! `rules/tests/` with what must happen to it, judged by the whole pipeline with the
//! quick-start configuration — and the same messages sent to a running server,
//! which must answer every command exactly as `test-rules` said it would.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use mailmoat::config::Config;
use mailmoat::pipeline::{Pipeline, fixtures, trial};
use mailmoat::rules::RuleSet;

use crate::support::*;

/// The quick-start configuration, with the test's own ports and folders. The
/// trusted networks shrink to 127.0.0.1 so that an untrusted client can connect
/// from 127.0.0.2; fixtures name their client, and [`loopback_for`] maps it.
/// Names are looked up at `dns`, which knows none of the fixtures' domains: SPF,
/// DKIM and DMARC find nothing published, quickly and alike for both.
fn quickstart_copy(dir: &Path, backend: std::net::SocketAddr, dns: &DnsServer) -> String {
    let text = std::fs::read_to_string(shipped("packaging/mailmoat.toml")).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    let set = |table: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value);
    };
    let s = |v: &str| toml::Value::String(v.into());
    let path = |p: &Path| toml::Value::String(p.display().to_string());
    set(
        &mut table,
        "server",
        "listen",
        toml::Value::Array(vec![s("127.0.0.1:0")]),
    );
    set(&mut table, "backend", "address", s(&backend.to_string()));
    set(&mut table, "outbound", "route", s("backend"));
    set(
        &mut table,
        "dns",
        "servers",
        toml::Value::Array(vec![s(&dns.addr.to_string())]),
    );
    set(
        &mut table,
        "relay",
        "trusted_networks",
        toml::Value::Array(vec![s("127.0.0.1/32")]),
    );
    set(&mut table, "queue", "path", path(&dir.join("queue")));
    set(&mut table, "store", "path", path(&dir.join("db")));
    set(&mut table, "archive", "path", path(&dir.join("archive")));
    set(&mut table, "rules", "path", path(&shipped("rules")));
    let recipients = table["recipients"]["domains"]["example.test"]
        .as_table()
        .unwrap()
        .clone();
    let mut recipients = recipients;
    recipients.insert("file".into(), path(&shipped("packaging/recipients.txt")));
    table["recipients"]["domains"]
        .as_table_mut()
        .unwrap()
        .insert("example.test".into(), toml::Value::Table(recipients));
    toml::to_string(&table).unwrap()
}

/// The loopback address standing for a fixture's client: 127.0.0.1 when the
/// quick start trusts it, 127.0.0.2 when it does not.
fn loopback_for(ip: IpAddr) -> IpAddr {
    let quickstart_trusted = ip.is_loopback();
    if quickstart_trusted {
        "127.0.0.1".parse().unwrap()
    } else {
        "127.0.0.2".parse().unwrap()
    }
}

fn rules() -> RuleSet {
    RuleSet::load_dir(&shipped("rules")).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture_dir() -> std::path::PathBuf {
    shipped("rules/tests")
}

#[tokio::test]
async fn shipped_rules_do_what_their_fixtures_say() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let text = quickstart_copy(dir.path(), unused_addr().await, &dns);
    let config = Config::parse(&text, Path::new("quickstart.toml"), dir.path()).unwrap();
    let pipeline = Pipeline::for_trial(Arc::new(config)).unwrap();
    let all = fixtures::load(&fixture_dir()).unwrap();
    assert!(all.len() >= 9, "only {} fixtures", all.len());
    let (report, ok) = fixtures::check_all(&pipeline, &rules(), &fixture_dir())
        .await
        .unwrap();
    assert!(ok, "{report}");
    // The messages as delivered: stripped attachments leave a note and no payload.
    for loaded in all {
        let trial = trial::run(&pipeline, &rules(), &loaded.input()).await;
        let name = loaded.path.display();
        if let Some(delivered) = &trial.delivered {
            let text = String::from_utf8_lossy(delivered);
            if loaded.fixture.rules.iter().any(|r| r.starts_with("strip")) {
                assert!(text.contains("mailmoat removed"), "{name}: {text}");
                assert!(
                    !text.contains("TVqQ") && !text.contains("UEsDB"),
                    "{name}: payload left:\n{text}"
                );
            } else {
                assert!(!text.contains("mailmoat removed"), "{name}");
            }
        }
    }
}

/// "250 2.1.5" — a reply's code and enhanced code, or the code alone when it has
/// none (the banner).
fn codes(code: u16, status: &str) -> String {
    if status.is_empty() {
        code.to_string()
    } else {
        format!("{code} {status}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rules_and_the_running_server_answer_alike_on_every_fixture() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start().await;
    let text = quickstart_copy(dir.path(), backend.addr, &dns);
    let mut proxy = Proxy::start_in(dir, &text).await;
    let pipeline = Pipeline::for_trial(Arc::new(proxy.config.clone())).unwrap();
    let rules = rules();
    let mut compared = 0;
    for loaded in fixtures::load(&fixture_dir()).unwrap() {
        let name = loaded.path.display().to_string();
        let ip = loopback_for(loaded.fixture.ip);
        let mut input = loaded.input();
        input.client_ip = ip;
        let trial = trial::run(&pipeline, &rules, &input).await;
        let expected: Vec<(String, String)> = trial
            .replies(&input)
            .into_iter()
            .map(|(what, reply)| (what, codes(reply.code, &reply.status)))
            .collect();

        let mut client = Client::connect_from(ip, proxy.addr).await;
        let mut got = Vec::new();
        let banner = client.reply().await;
        got.push(banner.code.to_string());
        got.push(
            client
                .command(&format!("EHLO {}", input.helo))
                .await
                .code
                .to_string(),
        );
        let mail = client
            .command(&format!("MAIL FROM:<{}>", input.sender))
            .await;
        got.push(mail.codes());
        let mut any = false;
        let recipients = if mail.code == 250 {
            input.recipients.as_slice()
        } else {
            &[]
        };
        for rcpt in recipients {
            let reply = client.command(&format!("RCPT TO:<{rcpt}>")).await;
            any |= reply.code == 250;
            got.push(reply.codes());
        }
        if any {
            client.expect("DATA", "354").await;
            client.send(&stuff(&loaded.message)).await;
            client.send(b".\r\n").await;
            got.push(client.reply().await.codes());
        }
        client.expect("QUIT", "221").await;
        // The banner and EHLO answers have no enhanced code.
        let expected_codes: Vec<String> = expected
            .iter()
            .map(|(what, c)| {
                if what.starts_with("CONNECT") || what.starts_with("EHLO") {
                    c[..3].to_string()
                } else {
                    c.clone()
                }
            })
            .collect();
        assert_eq!(got, expected_codes, "{name}: {expected:?}");
        compared += 1;
    }
    assert!(compared >= 9);
    proxy.stop().await;
}
