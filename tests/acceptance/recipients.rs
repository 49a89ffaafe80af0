//! Unknown local users are refused at RCPT (550 5.1.1), from a recipients file or by
//! asking the backend, so the proxy never bounces mail to forged senders.

use crate::support::*;

const UNTRUSTED: &str = "trusted_networks = [\"127.0.0.2/32\"]";

#[tokio::test]
async fn recipients_file_refuses_unknown_users_at_rcpt() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client
        .expect("RCPT TO:<BOB@example.test>", "250 2.1.5")
        .await;
    let reply = client
        .expect("RCPT TO:<dave@example.test>", "550 5.1.1")
        .await;
    assert!(reply.text.contains("User unknown"), "{reply:?}");
    // A hosted domain without validation accepts any local part.
    client
        .expect("RCPT TO:<anyone@other.test>", "250 2.1.5")
        .await;
}

#[tokio::test]
async fn callout_asks_the_backend_once_and_remembers_the_answer() {
    let backend = Backend::start(DataEnd::Strict).await;
    backend.reply_to_rcpt("ghost@other.test", "550 5.1.1 <ghost@other.test>: unknown");
    let extra = "[recipients.domains.\"other.test\"]\ncallout = true\n";
    let proxy = Proxy::start(backend.addr, UNTRUSTED, extra).await;
    let probes = |address: &str| {
        backend
            .commands()
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(&format!("RCPT TO:<{address}>")))
            .count()
    };

    for _ in 0..2 {
        let mut client = proxy.client().await;
        client.expect("MAIL FROM:<sender@remote.test>", "250").await;
        client
            .expect("RCPT TO:<ghost@other.test>", "550 5.1.1")
            .await;
        client
            .expect("RCPT TO:<real@other.test>", "250 2.1.5")
            .await;
    }
    // Second session: answered from the cache, the backend was not asked again.
    assert_eq!(probes("ghost@other.test"), 1);
    assert_eq!(probes("real@other.test"), 1);
    // The probe used the null sender and sent no message.
    assert!(backend.commands().iter().any(|c| c == "MAIL FROM:<>"));
    assert!(backend.messages().is_empty());
}

#[tokio::test]
async fn callout_to_an_unreachable_backend_is_a_temporary_failure() {
    let dead = unused_addr().await;
    let extra = "[recipients.domains.\"other.test\"]\ncallout = true\n";
    let proxy = Proxy::start(dead, UNTRUSTED, extra).await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client
        .expect("RCPT TO:<someone@other.test>", "451 4.4.3")
        .await;
}

#[tokio::test]
async fn a_user_added_to_the_recipients_file_is_accepted_without_a_restart() {
    let backend = Backend::start(DataEnd::Strict).await;
    let proxy = Proxy::start(backend.addr, UNTRUSTED, "").await;
    let mut client = proxy.client().await;
    client.expect("MAIL FROM:<sender@remote.test>", "250").await;
    client
        .expect("RCPT TO:<newcomer@example.test>", "550 5.1.1")
        .await;
    let file = proxy.dir.path().join("recipients.txt");
    let mut list = std::fs::read_to_string(&file).unwrap();
    list.push_str("newcomer@example.test\n");
    std::fs::write(&file, list).unwrap();
    client
        .expect("RCPT TO:<newcomer@example.test>", "250 2.1.5")
        .await;
    // A broken edit keeps the list in force.
    std::fs::write(&file, "alice@example.test\nthis is not an address\n").unwrap();
    client
        .expect("RCPT TO:<newcomer@example.test>", "250 2.1.5")
        .await;
}
