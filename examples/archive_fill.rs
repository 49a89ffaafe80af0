//! Fills the archive of a stopped server with refusal records, for measuring
//! the quarantine's pages on a large archive (a month of a busy gateway's
//! refusals is hundreds of thousands of records).
//!
//!     cargo run --release --example archive_fill -- mailmoat.toml 300000
//!
//! Each record is a refusal at RCPT from a blocklisted client, one second
//! apart, ending now; one in a thousand is for alice@example.test, the rest
//! for 5,000 other addresses.

use mailmoat::archive::{Archive, Record};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, count] = args.as_slice() else {
        anyhow::bail!("usage: archive_fill CONFIG COUNT");
    };
    let config = mailmoat::config::Config::load(std::path::Path::new(config))?;
    let count: u64 = count.parse()?;
    let store = mailmoat::store::Store::open(&config.store.path)?;
    let archive = Archive::open(
        &config.archive,
        &store,
        &config.server.hostname,
        config.web.listen.is_some(),
    )?;
    let now = mailmoat::archive::unix_now();
    for i in 0..count {
        let recipient = if i % 1000 == 0 {
            "alice@example.test".to_string()
        } else {
            format!("user{}@example.test", i % 5000)
        };
        let record: Record = serde_json::from_value(serde_json::json!({
            "id": format!("{:013X}{:04X}", (now - count + i) * 1_000_000, i % 0x10000),
            "time": now - count + i,
            "stage": "rcpt",
            "client_ip": "192.0.2.1",
            "helo": "spam.example",
            "authenticated": false,
            "sender": "spammer@spam.example",
            "recipients": [recipient],
            "size": 0,
            "outcome": "rejected",
            "decided_by": {"check": "dnsbl"},
            "reason": "listed by zen.spamhaus.org",
            "reply": "554 5.7.1 Service unavailable; client host blocked",
            "has_message": false,
            "released": null,
        }))?;
        archive.keep(&record, None)?;
    }
    println!("{} records in the archive", archive.records().count());
    Ok(())
}
