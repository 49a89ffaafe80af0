//! An administrator's first day: `check` is the truth about `serve` (both refuse the
//! same broken configurations, at the line of the key), no secret is ever printed,
//! and a renewed certificate is taken on reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailmoat");

/// A working configuration with every file-naming setting in use; the broken cases
/// below each change one thing.
fn full_config(listen: SocketAddr, backend: SocketAddr) -> String {
    base_config(backend, "trusted_networks = []", "")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"{listen}\"]"),
        )
        .replace("[checks]\n", "[checks]\nclient_deny_file = \"deny.txt\"\n")
        + r#"
[tls]
cert_file = "cert.pem"
key_file = "key.pem"

[auth]
source = "users"
users_file = "users.txt"

[archive]
release_key = "release-key-that-must-never-be-printed-7f3a"
"#
}

/// Writes the files the configuration names into `dir`.
fn write_files(dir: &Path) {
    let (cert, key) = test_certificate();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("recipients.txt"), RECIPIENTS).unwrap();
    std::fs::write(dir.join("users.txt"), "# users\n").unwrap();
    std::fs::write(dir.join("deny.txt"), "# denied clients\n192.0.2.0/24\n").unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
}

/// The 1-based line of the first line of `text` holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the configuration"))
        + 1
}

fn check(config: &Path) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("check")
        .output()
        .unwrap()
}

/// Runs `serve`: Ok(error output) when it exits, Err(()) when it starts listening.
async fn serve_outcome(config: &Path, listen: SocketAddr) -> Result<String, ()> {
    let log = config.with_extension("log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "serve exited with success");
            return Ok(std::fs::read_to_string(&log).unwrap());
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            return Err(());
        }
        assert!(
            Instant::now() < deadline,
            "serve neither started nor exited"
        );
        poll_pause().await;
    }
}

/// One broken configuration: what to change, the key whose line the error must
/// name (found in the changed text), and words the error must hold.
struct Broken {
    what: &'static str,
    change: fn(&Path, String) -> String,
    at: &'static str,
    says: &'static str,
}

fn broken_cases() -> Vec<Broken> {
    vec![
        Broken {
            what: "missing certificate",
            change: |_, t| t.replace("cert_file = \"cert.pem\"", "cert_file = \"gone.pem\""),
            at: "cert_file",
            says: "gone.pem",
        },
        Broken {
            what: "certificate file with no PEM certificate",
            change: |dir, t| {
                std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
                t
            },
            at: "cert_file",
            says: "no certificate in it",
        },
        Broken {
            what: "key of another certificate",
            change: |dir, t| {
                std::fs::write(dir.join("key.pem"), test_certificate().1).unwrap();
                t
            },
            at: "cert_file",
            says: "do not go together",
        },
        Broken {
            what: "missing key",
            change: |_, t| t.replace("key_file = \"key.pem\"", "key_file = \"nokey.pem\""),
            at: "key_file",
            says: "nokey.pem",
        },
        Broken {
            what: "missing users file",
            change: |_, t| t.replace("users_file = \"users.txt\"", "users_file = \"nobody.txt\""),
            at: "users_file",
            says: "mailmoat passwd add",
        },
        Broken {
            what: "users file line without a hash",
            change: |dir, t| {
                std::fs::write(dir.join("users.txt"), "alice@example.test:notahash\n").unwrap();
                t
            },
            at: "users_file",
            says: "users.txt:1: 'alice@example.test' has no valid password hash",
        },
        Broken {
            what: "users source without a users file",
            change: |_, t| t.replace("users_file = \"users.txt\"\n", ""),
            at: "source = \"users\"",
            says: "needs auth.users_file",
        },
        Broken {
            what: "bad list entry",
            change: |dir, t| {
                std::fs::write(dir.join("deny.txt"), "192.0.2.0/24\n10.0.0.999\n").unwrap();
                t
            },
            at: "client_deny_file",
            says: "deny.txt:2: '10.0.0.999'",
        },
        Broken {
            what: "missing recipients file",
            change: |dir, t| {
                std::fs::remove_file(dir.join("recipients.txt")).unwrap();
                t
            },
            at: "file = \"recipients.txt\"",
            says: "recipients.txt",
        },
        Broken {
            what: "bad recipients file entry",
            change: |dir, t| {
                std::fs::write(
                    dir.join("recipients.txt"),
                    "alice@example.test\nnot an address\n",
                )
                .unwrap();
                t
            },
            at: "file = \"recipients.txt\"",
            says: "recipients.txt:2",
        },
        Broken {
            what: "missing backend CA",
            change: |_, t| t.replace("[backend]\n", "[backend]\nca_file = \"exchange-ca.pem\"\n"),
            at: "ca_file",
            says: "exchange-ca.pem",
        },
        Broken {
            what: "bad socket address",
            change: |_, t| t.replace("address = \"127.0.0.1:", "address = \"127.0.0.1;"),
            at: "address = \"127.0.0.1;",
            says: "",
        },
        Broken {
            what: "listen without a port",
            change: |_, t| {
                t.replace(
                    "listen = [\"127.0.0.1:",
                    "listen = [\"localhost\", \"127.0.0.1:",
                )
            },
            at: "listen =",
            says: "such as \"0.0.0.0:25\"",
        },
        Broken {
            what: "a number in quotes",
            change: |_, t| t.replace("[limits]\n", "[limits]\nrecipient_limit = \"many\"\n"),
            at: "recipient_limit",
            says: "write a whole number",
        },
        Broken {
            what: "a duration without a unit",
            change: |_, t| t.replace("command_timeout = \"10s\"", "command_timeout = \"10\""),
            at: "command_timeout = \"10\"",
            says: "\"30s\"",
        },
        Broken {
            what: "file and callout both",
            change: |_, t| {
                t.replace(
                    "file = \"recipients.txt\"\n",
                    "file = \"recipients.txt\"\ncallout = true\n",
                )
            },
            at: "file = \"recipients.txt\"",
            says: "callout at line",
        },
        Broken {
            what: "rule without conditions",
            change: |dir, t| {
                std::fs::write(
                    dir.join("rules/block.toml"),
                    "[[rule]]\nname = \"block\"\naction = \"reject\"\n",
                )
                .unwrap();
                t
            },
            at: "",
            says: "block.toml:1: rule 'block': no when. conditions",
        },
        Broken {
            what: "rule with an empty when",
            change: |dir, t| {
                std::fs::write(
                    dir.join("rules/block.toml"),
                    "# blocks\n[[rule]]\nname = \"block\"\nwhen = {}\naction = \"reject\"\n",
                )
                .unwrap();
                t
            },
            at: "",
            says: "block.toml:2:",
        },
        Broken {
            what: "the second DKIM signing key is no key",
            change: |dir, t| {
                let key = mailmoat::sender_auth::keys::generate(
                    mailmoat::sender_auth::keys::Algorithm::Ed25519,
                )
                .unwrap();
                std::fs::write(dir.join("dkim-good.pem"), key.private_pem).unwrap();
                std::fs::write(dir.join("dkim-bad.pem"), "not a key\n").unwrap();
                t + "\n[[dkim_sign]]\ndomain = \"example.test\"\nselector = \"a\"\nkey_file = \"dkim-good.pem\"\n\
                     \n[[dkim_sign]]\ndomain = \"example.test\"\nselector = \"b\"\nkey_file = \"dkim-bad.pem\"\n"
            },
            at: "key_file = \"dkim-bad.pem\"",
            says: "PEM private key",
        },
        Broken {
            what: "clamd without a port",
            change: |_, t| t + "\n[antivirus]\nclamd = \"localhost\"\n",
            at: "clamd = ",
            says: "write \"127.0.0.1:3310\" or \"unix:/run/clamav/clamd.ctl\"",
        },
        Broken {
            what: "short release key",
            change: |_, t| {
                t.replace(
                    "release-key-that-must-never-be-printed-7f3a",
                    "short-secret",
                )
            },
            at: "release_key",
            says: "too short",
        },
    ]
}

#[tokio::test]
async fn check_and_serve_agree_on_every_broken_configuration_and_name_the_key_line() {
    let backend = Backend::start(DataEnd::Strict).await;
    // The working configuration: check passes it, serve starts with it.
    {
        let dir = tempfile::tempdir().unwrap();
        let listen = unused_addr().await;
        write_files(dir.path());
        let config = dir.path().join("mailmoat.toml");
        std::fs::write(&config, full_config(listen, backend.addr)).unwrap();
        let output = check(&config);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            serve_outcome(&config, listen).await.is_err(),
            "check passed it, so serve starts"
        );
    }
    for case in broken_cases() {
        let dir = tempfile::tempdir().unwrap();
        let listen = unused_addr().await;
        write_files(dir.path());
        let text = (case.change)(dir.path(), full_config(listen, backend.addr));
        let config = dir.path().join("mailmoat.toml");
        std::fs::write(&config, &text).unwrap();
        let output = check(&config);
        let said = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(!output.status.success(), "{}: check passed it", case.what);
        if !case.at.is_empty() {
            let place = format!("mailmoat.toml:{}: ", line_of(&text, case.at));
            assert!(
                said.contains(&place),
                "{}: the error names {place}: {said}",
                case.what
            );
        }
        assert!(said.contains(case.says), "{}: {said}", case.what);
        let first = said.lines().find(|l| l.starts_with("mailmoat: ")).unwrap();
        let served = serve_outcome(&config, listen)
            .await
            .unwrap_or_else(|()| panic!("{}: check refused it but serve started", case.what));
        assert!(
            served.contains(first.trim_start_matches("mailmoat: ")),
            "{}: serve says the same as check ({first}): {served}",
            case.what
        );
    }
}

const RELEASE_KEY: &str = "release-key-that-must-never-be-printed-7f3a";

/// The real process with the full configuration and one rule that refuses mail
/// (so the archive, its report and the release key are in use).
async fn full_daemon(dir: &Path, backend: SocketAddr, format: &str) -> (PathBuf, SocketAddr) {
    let listen = unused_addr().await;
    write_files(dir);
    std::fs::write(
        dir.join("rules/block.toml"),
        "[[rule]]\nname = \"block-spam\"\nwhen.subject = \"buy now\"\naction = \"reject\"\n",
    )
    .unwrap();
    let text = full_config(listen, backend).replace(
        "[archive]\n",
        &format!("[log]\nformat = \"{format}\"\n\n[archive]\nbackup_address = \"postmaster@example.test\"\n"),
    );
    let config = dir.join("mailmoat.toml");
    std::fs::write(&config, text).unwrap();
    (config, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_printed_by_check_or_logged_by_serve() {
    const PASSWORD: &str = "guessed-password-never-logged-91c2";
    for format in ["text", "json"] {
        let backend = Backend::start(DataEnd::Strict).await;
        let dir = tempfile::tempdir().unwrap();
        let (config, listen) = full_daemon(dir.path(), backend.addr, format).await;
        let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();

        let output = check(&config);
        assert!(output.status.success());
        let printed = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            printed.contains("release_key = \"(hidden)\""),
            "the key is named, its value hidden: {printed}"
        );

        let daemon = crate::cli::Daemon::start(&config, listen).await;
        // Refused mail: archived, reported to the backup address with signed
        // release addresses.
        let mut client = Client::connect(listen).await;
        client.hello().await;
        let reply = client
            .send_mail(
                "x@spam.test",
                &["alice@example.test"],
                &sample_message("buy now"),
            )
            .await;
        assert_eq!(reply.codes(), "550 5.7.1");
        let report = backend.wait_for(1).await;
        assert!(
            String::from_utf8_lossy(&report[0].data).contains("release+"),
            "the report carries release addresses"
        );
        // A wrong password, through TLS.
        let mut client = Client::connect(listen).await;
        client.hello().await;
        client.expect("STARTTLS", "220 2.0.0").await;
        let mut client = client.start_tls(&cert).await;
        client.expect("EHLO client.test", "250").await;
        client
            .expect(
                &format!(
                    "AUTH PLAIN {}",
                    b64(&format!("\0alice@example.test\0{PASSWORD}"))
                ),
                "535 5.7.8",
            )
            .await;
        // A changed key on reload is named, not printed.
        std::fs::write(
            &config,
            std::fs::read_to_string(&config)
                .unwrap()
                .replace(RELEASE_KEY, "another-release-key-also-secret-0d9e"),
        )
        .unwrap();
        let reload = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("reload")
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&reload.stdout).to_string();
        assert!(
            answer.contains("archive.release_key"),
            "reload names the changed key: {answer}"
        );
        daemon.terminate();

        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        assert!(log.contains("block-spam"), "the log was written: {log}");
        if format == "json" {
            json_lists_are_arrays(&log, listen);
        }
        for secret in [
            RELEASE_KEY,
            "another-release-key-also-secret-0d9e",
            PASSWORD,
        ] {
            assert!(!printed.contains(secret), "check printed {secret}");
            assert!(!answer.contains(secret), "reload printed {secret}");
            assert!(!log.contains(secret), "{format} log holds {secret}:\n{log}");
        }
    }
}

/// The certificate a STARTTLS handshake with the proxy shows (the client trusts
/// `ca`, so the handshake itself also proves the chain).
async fn served_certificate(listen: SocketAddr, ca: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut stream = BufReader::new(stream);
    let reply = async |stream: &mut BufReader<tokio::net::TcpStream>| {
        let mut line = String::new();
        loop {
            line.clear();
            stream.read_line(&mut line).await.unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line[..3].to_string();
            }
        }
    };
    assert_eq!(reply(&mut stream).await, "220");
    stream
        .get_mut()
        .write_all(b"EHLO client.test\r\n")
        .await
        .unwrap();
    assert_eq!(reply(&mut stream).await, "250");
    stream.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert_eq!(reply(&mut stream).await, "220");
    let tls = tls_connector(ca)
        .connect("mx.example.test".try_into().unwrap(), stream.into_inner())
        .await
        .expect("TLS handshake with the certificate trusted");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_reload_without_a_restart() {
    let backend = Backend::start(DataEnd::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, listen) = full_daemon(dir.path(), backend.addr, "text").await;
    let old_pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let daemon = crate::cli::Daemon::start(&config, listen).await;
    let old = served_certificate(listen, &old_pem).await;
    // A session open across the renewal keeps its connection.
    let mut open = Client::connect(listen).await;
    open.hello().await;

    // Renewal: certbot (or the administrator) replaces both files.
    let (new_pem, new_key) = test_certificate();
    std::fs::write(dir.path().join("cert.pem"), &new_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &new_key).unwrap();
    let reload = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("reload")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&reload.stdout).to_string();
    assert!(reload.status.success(), "{answer}");
    assert!(answer.contains("tls: certificate reloaded"), "{answer}");
    assert!(
        !answer.contains("restart"),
        "nothing else changed: {answer}"
    );
    let new = served_certificate(listen, new_pem.as_bytes()).await;
    assert_ne!(old, new);
    assert_eq!(
        new,
        CertificateDer::from_pem_slice(new_pem.as_bytes())
            .unwrap()
            .to_vec()
    );
    open.expect("NOOP", "250").await;

    // A renewal gone wrong (a key that does not fit) keeps the certificate in force.
    std::fs::write(dir.path().join("key.pem"), test_certificate().1).unwrap();
    let reload = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("reload")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&reload.stderr).to_string();
    assert!(!reload.status.success(), "a failed part fails the command");
    assert!(
        answer.contains("the certificate in force stays") && answer.contains("do not go together"),
        "{answer}"
    );
    assert_eq!(served_certificate(listen, new_pem.as_bytes()).await, new);

    // SIGHUP (systemctl reload) does the same.
    let (hup_pem, hup_key) = test_certificate();
    std::fs::write(dir.path().join("cert.pem"), &hup_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &hup_key).unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    let expected = CertificateDer::from_pem_slice(hup_pem.as_bytes())
        .unwrap()
        .to_vec();
    let deadline = Instant::now() + WAIT;
    // The reload runs in the server after the signal: wait for its log line.
    loop {
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        if log.matches("TLS certificate reloaded").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no reload after SIGHUP: {log}");
        poll_pause().await;
    }
    assert_eq!(
        served_certificate(listen, hup_pem.as_bytes()).await,
        expected
    );
    daemon.terminate();
}

/// Every line is one JSON object; lists are arrays, not joined strings.
fn json_lists_are_arrays(log: &str, listen: SocketAddr) {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {log}"))
    };
    assert_eq!(
        find("mailmoat started")["listen"],
        serde_json::json!([listen.to_string()])
    );
    let refused = find("message");
    assert_eq!(
        refused["recipients"],
        serde_json::json!(["alice@example.test"])
    );
    assert_eq!(refused["rules"], serde_json::json!(["block-spam(reject)"]));
    assert_eq!(refused["result"], "rejected");
    assert_eq!(
        find("changed settings take effect only after a restart")["settings"],
        serde_json::json!(["archive.release_key"])
    );
}
