//! The quarantine in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromium-driver) by fantoccini; nothing is downloaded. A digest
//! is read at the test backend, its links are followed and the buttons
//! clicked as a recipient would; the screenshots of the README are taken here
//! (into `target/screenshots`, or the folder `MAILMOAT_SCREENSHOTS` names).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};

use crate::scanning::MARKER;
use crate::support::*;
use crate::web::{Quarantine, links};

struct Browser {
    driver: Child,
    page: WebDriver,
    shots: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        ensure_package("command -v chromium", "chromium");
        ensure_package("command -v chromedriver", "chromium-driver");
        let port = unused_addr().await.port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            poll_pause().await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,760"]
            }),
        );
        let page = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        let shots = std::env::var_os("MAILMOAT_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
            });
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            page,
            shots,
        }
    }

    async fn go(&self, url: &str) {
        self.page.goto(url).await.unwrap();
    }

    /// The page's text once it shows `needle` (a click's page may still be
    /// loading); fails the test with what it shows after a while.
    async fn shows(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = match self.page.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page does not show '{needle}': {text}"
            );
            poll_pause().await;
        }
    }

    async fn click(&self, label: &str) {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        self.page
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button '{label}': {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.page.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(mut self) {
        let _ = self.page.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_and_an_administrator_use_the_quarantine_in_a_browser() {
    let (clamd, q) = Quarantine::with_clamd().await;
    let browser = Browser::start().await;
    let base = format!("http://{}", q.web);

    // Held for alice: an ordinary message, one from a sender she will block,
    // one from a sender she will allow, and a virus.
    for (from, subject) in [
        ("news@friend.test", "[hold] Quarterly report"),
        ("promo@stranger.test", "[hold] Cheap watches"),
        ("partner@friend.test", "[hold] Contract draft"),
    ] {
        assert!(
            q.send(from, "alice@example.test", subject)
                .await
                .starts_with("250")
        );
    }
    let virus = format!("Virus attached {MARKER}");
    assert!(
        q.send("it@friend.test", "alice@example.test", &virus)
            .await
            .starts_with("250")
    );
    q.send(
        "news@friend.test",
        "bob@example.test",
        "[hold] For bob only",
    )
    .await;
    let delivered = q.backend.messages().len();

    // The digest, read at the backend: a release link for the report.
    let digests = q.digests(&["--to", "alice@example.test"]).await;
    assert_eq!(digests.len(), 1);
    let digest = String::from_utf8_lossy(&digests[0].data).to_string();
    let release = digest
        .lines()
        .skip_while(|l| !l.contains("\"[hold] Quarterly report\""))
        .find_map(|l| l.trim().strip_prefix("Release: "))
        .expect("a release link for the report")
        .to_string();
    let open = digest
        .lines()
        .find_map(|l| l.strip_prefix("Open your quarantine: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(links(&digests[0]).contains(&release));
    // The digest as a mail program shows its HTML part.
    let html = digest
        .split("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
        .nth(1)
        .and_then(|rest| rest.split("\r\n--=_digest").next())
        .expect("an HTML part");
    let file = tempfile::Builder::new().suffix(".html").tempfile().unwrap();
    std::fs::write(file.path(), html).unwrap();
    browser
        .go(&format!("file://{}", file.path().display()))
        .await;
    browser.shot("digest").await;

    // The link opens a page that asks; the button releases, once.
    browser.go(&release).await;
    browser
        .shows("Release “[hold] Quarterly report” to alice@example.test?")
        .await;
    browser.shot("confirm").await;
    q.proxy.wait_idle().await;
    assert_eq!(
        q.backend.messages().len(),
        delivered + 1,
        "only the digest so far"
    );
    browser.click("Release it").await;
    browser.shows("Released: delivered as").await;
    q.proxy.wait_idle().await;
    let now = q.backend.messages();
    assert_eq!(now.len(), delivered + 2);
    let released = now.last().unwrap();
    assert_eq!(released.rcpt_to, ["alice@example.test"]);
    assert!(String::from_utf8_lossy(&released.data).contains("Subject: [hold] Quarterly report"));

    // Her quarantine: the list, then "block sender" on the watches.
    browser.go(&open).await;
    browser
        .shows("Open the mail held for alice@example.test.")
        .await;
    browser.click("Open my quarantine").await;
    let list = browser.shows("[hold] Cheap watches").await;
    assert!(!list.contains("For bob only"), "{list}");
    browser.shot("messages").await;
    let watches = q.item("[hold] Cheap watches").await;
    browser.go(&format!("{base}/item/{watches}")).await;
    browser.shows("promo@stranger.test").await;
    browser.shot("message").await;
    browser.click("Block sender").await;
    browser
        .shows("promo@stranger.test is on the block list")
        .await;
    browser.go(&format!("{base}/lists")).await;
    browser.shows("promo@stranger.test").await;
    browser.shot("senders").await;
    let mut client = q.proxy.client().await;
    client
        .expect("MAIL FROM:<promo@stranger.test>", "250")
        .await;
    let refused = client
        .expect("RCPT TO:<alice@example.test>", "550 5.7.1")
        .await;
    assert!(
        refused.text.contains("Sender blocked by the recipient"),
        "{refused:?}"
    );

    // "Release and allow": the contract goes out, and partner@friend.test
    // (SPF passes) is no longer greylisted from a new client.
    let contract = q.item("[hold] Contract draft").await;
    browser.go(&format!("{base}/item/{contract}")).await;
    browser.shows("[hold] Contract draft").await;
    browser.click("Release and allow sender").await;
    browser.shows("1 message(s) released").await;
    q.proxy.wait_idle().await;
    assert!(
        q.backend
            .messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("Subject: [hold] Contract draft"))
    );
    let mut client = Client::connect_from("127.0.0.9".parse().unwrap(), q.proxy.addr).await;
    client.hello().await;
    client
        .expect("MAIL FROM:<partner@friend.test>", "250")
        .await;
    client
        .expect("RCPT TO:<alice@example.test>", "250 2.1.5")
        .await;
    client.expect("RSET", "250").await;
    client
        .expect("MAIL FROM:<someone-else@friend.test>", "250")
        .await;
    let other = client.command("RCPT TO:<alice@example.test>").await;
    assert!(
        other.codes().starts_with("45"),
        "not allowed: greylisted {other:?}"
    );

    // Her session cannot open bob's item.
    let bobs = q.item("[hold] For bob only").await;
    browser.go(&format!("{base}/item/{bobs}")).await;
    browser.shows("This is not for you").await;

    // The virus: she can only ask; the administrator approves.
    let infected = q.item(&virus).await;
    browser.go(&format!("{base}/item/{infected}")).await;
    browser.shows("only an administrator can release it").await;
    assert!(
        browser
            .page
            .find(Locator::XPath("//button[normalize-space(.)='Release']"))
            .await
            .is_err()
    );
    browser.click("Ask for release").await;
    browser.shows("an administrator decides").await;
    browser.click("Sign out").await;
    browser.shows("Send me my link").await;
    browser.go(&base).await;
    browser
        .page
        .find(Locator::Css("input[name=user]"))
        .await
        .unwrap()
        .send_keys("root")
        .await
        .unwrap();
    browser
        .page
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(crate::web::ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.shot("sign-in").await;
    browser.click("Sign in").await;
    browser.shows("Every message held").await;
    browser.go(&format!("{base}/requests")).await;
    browser.shows(&virus).await;
    browser.shot("requests").await;
    browser.go(&format!("{base}/item/{infected}")).await;
    browser.shows("Approve release").await;
    browser.click("Approve release").await;
    browser.shows("Approved and released as").await;
    q.proxy.wait_idle().await;
    assert!(
        q.backend
            .messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains(MARKER)),
        "the approved release arrived"
    );

    // The message trace: the refused watches, found by sender.
    browser
        .go(&format!("{base}/?sender=promo%40stranger.test"))
        .await;
    let found = browser.shows("promo@stranger.test").await;
    assert!(
        found.contains("during the dialogue"),
        "the refusal at RCPT: {found}"
    );
    browser.shot("search").await;
    browser.close().await;
    drop(clamd);
}
