//! The README's command examples, run in the order it gives them, in a folder laid
//! out like a clone (copies of the shipped `packaging/` and `rules/`): every command
//! must work, and print what the README shows where it shows output. A command the
//! test cannot run is named in `NOT_RUN_HERE` with the reason, so an example added to
//! the README is either run here or excused, never forgotten; a synopsis (a line with
//! a placeholder such as `ID` or `[--since 2h]`) is checked against `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mailmoat");

/// Commands that change the machine or need what a test cannot give, and where they
/// are tested instead.
const NOT_RUN_HERE: &[(&str, &str)] = &[
    (
        "apt-get install",
        "installs packages; .ci/run installs them",
    ),
    (
        "dpkg -i",
        "installs the package; packaging/test-deb.sh does",
    ),
    (
        "bash packaging/build-deb.sh",
        "builds the package; packaging/test-deb.sh does",
    ),
    ("cargo test", "runs this test"),
    (
        "queue import /srv/",
        "needs a second instance's spool; instances.rs takes one over",
    ),
];

/// Files the README's examples name without showing them.
const INPUTS: &[(&str, &str)] = &[
    (
        "bad.toml",
        "[relay]\nhosted_domains = [\"example.test\"]\ntrusted_networks = [\"10.0.0.0/33\"]\n",
    ),
    (
        "tls.toml",
        "[relay]\nhosted_domains = [\"example.test\"]\n[recipients.domains.\"example.test\"]\ncallout = true\n\
         [tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    ),
    ("cert.pem", "a certificate was meant to be here\n"),
    ("key.pem", "nor is this a key\n"),
];

/// How long one command may take before the test calls it hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Example {
    /// Where it is in the README, for the failure message.
    line: usize,
    command: String,
    /// What the README shows it prints; `…` stands for text that differs each time.
    shown: Vec<String>,
    /// `text` blocks show the whole output; `sh` blocks show a line of it.
    whole_output: bool,
    python: bool,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let mut block = Vec::new();
        for (m, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push((m + 1, l));
        }
        match lang.trim() {
            "python" => out.push(Example {
                line: n + 2,
                command: block.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n"),
                shown: Vec::new(),
                whole_output: false,
                python: true,
            }),
            "sh" => shell_examples(&block, false, &mut out),
            "text" if block.first().is_some_and(|(_, l)| l.starts_with("$ ")) => {
                shell_examples(&block, true, &mut out)
            }
            _ => {}
        }
    }
    out
}

/// In a `sh` block each line is a command (a trailing `# …` is a remark) and a line
/// `# …` under one is a line it prints; in a `text` block commands start with `$ `
/// and every other line is what the one above prints.
fn shell_examples(block: &[(usize, &str)], prompt: bool, out: &mut Vec<Example>) {
    let first_of_block = out.len();
    let mut i = 0;
    while i < block.len() {
        let (n, line) = block[i];
        i += 1;
        let command = if prompt {
            line.strip_prefix("$ ")
        } else if line.starts_with('#') || line.trim().is_empty() {
            None
        } else {
            Some(line)
        };
        match command {
            Some(first) => {
                let mut command = first.trim_end().to_string();
                while command.ends_with('\\') && i < block.len() {
                    command.pop();
                    command = format!("{} {}", command.trim_end(), block[i].1.trim());
                    i += 1;
                }
                if !prompt && let Some(remark) = command.find(" #") {
                    command.truncate(remark);
                }
                out.push(Example {
                    line: n,
                    command: command.trim_end().to_string(),
                    shown: Vec::new(),
                    whole_output: prompt,
                    python: false,
                });
            }
            None if out.len() > first_of_block => {
                let shown = if prompt {
                    Some(line)
                } else {
                    line.strip_prefix("# ")
                };
                if let Some(shown) = shown {
                    out.last_mut().unwrap().shown.push(shown.to_string());
                }
            }
            None => {}
        }
    }
}

/// Whether `actual` is what `shown` shows, `…` standing for any text.
fn shows(shown: &str, actual: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() == 1 {
        return shown == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// A placeholder (`ID`, `DIR`, `ADDR`) or an optional part (`[--since 2h]`): the
/// line is a synopsis, not something to run as it is.
fn is_synopsis(command: &str) -> bool {
    command.contains('[')
        || command.split_whitespace().any(|word| {
            let word = word.trim_end_matches("...");
            !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase())
        })
}

/// The clone the README speaks of: its `packaging/` and `rules/`, the proxy and the
/// test backend on ports of their own.
struct Clone {
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    backend: SocketAddr,
    servers: Vec<(Child, PathBuf)>,
}

impl Clone {
    async fn new() -> Clone {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        copy_tree(&shipped("packaging"), &root.join("packaging"));
        copy_tree(&shipped("rules"), &root.join("rules"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(BIN, root.join("bin/mailmoat")).unwrap();
        // The system's interpreter, where Debian's python3-aiosmtpd is.
        std::os::unix::fs::symlink("/usr/bin/python3", root.join("bin/python3")).unwrap();
        for (name, text) in INPUTS {
            std::fs::write(root.join(name), text).unwrap();
        }
        let (proxy, backend) = (unused_addr().await, unused_addr().await);
        // The configuration as shipped, with this test's ports, and with TLS and a
        // users file as an installed system would have them.
        let (cert, key) = test_certificate();
        std::fs::write(root.join("etc/cert.pem"), cert).unwrap();
        std::fs::write(root.join("etc/key.pem"), key).unwrap();
        std::fs::write(root.join("packaging/users.txt"), "").unwrap();
        let config = root.join("packaging/mailmoat.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = edit(&text, "127.0.0.1:2525", &proxy.to_string());
        let text = edit(&text, "127.0.0.1:2526", &backend.to_string());
        let text = edit(
            &text,
            "# cert_file = \"/etc/mailmoat/cert.pem\"",
            "cert_file = \"../etc/cert.pem\"",
        );
        let text = edit(
            &text,
            "# key_file = \"/etc/mailmoat/key.pem\"",
            "key_file = \"../etc/key.pem\"",
        );
        let text = edit(
            &text,
            "# users_file = \"users.txt\"",
            "users_file = \"users.txt\"",
        );
        std::fs::write(&config, text).unwrap();
        Clone {
            dir,
            proxy,
            backend,
            servers: Vec::new(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The command as it runs here: the binary the README builds, the configuration
    /// every example means (the quick start's, which stands in for the installed
    /// one), this test's ports.
    fn localize(&self, command: &str) -> String {
        let mut command = command
            .replace("cargo run --release --", "mailmoat")
            .replace("./target/release/mailmoat", "mailmoat")
            .replace(
                "--config /etc/mailmoat/mailmoat.toml",
                "--config packaging/mailmoat.toml",
            )
            .replace("--config mailmoat.toml", "--config packaging/mailmoat.toml")
            .replace("/etc/mailmoat/", "etc/");
        if command.starts_with("mailmoat ") && !command.starts_with("mailmoat --config") {
            command =
                command.replacen("mailmoat ", "mailmoat --config packaging/mailmoat.toml ", 1);
        }
        replace_port(
            &replace_port(&command, 2525, self.proxy.port()),
            2526,
            self.backend.port(),
        )
    }

    fn shell(&self, command: &str) -> Command {
        let mut shell = Command::new("bash");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(self.root())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.root().join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            // Servers' output reaches their log as they print it.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        shell
    }

    async fn run(&self, command: &str) -> (bool, String) {
        let child = self
            .shell(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{command:?} did not end"))
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    }

    /// A server the README starts: run in the background until the test ends,
    /// ready once it listens on `addr`.
    async fn start_server(&mut self, command: &str, addr: SocketAddr) {
        let log = self
            .root()
            .join(format!("server-{}.log", self.servers.len()));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .shell(&format!("exec {command}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.servers.push((child, log.clone()));
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let exited = self.servers.last_mut().unwrap().0.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{command:?} is not listening on {addr}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            poll_pause().await;
        }
    }

    fn server_output(&self, index: usize) -> String {
        std::fs::read_to_string(&self.servers[index].1).unwrap_or_default()
    }

    fn edit_config(&self, from: &str, to: &str) {
        let path = self.root().join("packaging/mailmoat.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(&text, from, to)).unwrap();
    }
}

/// `text` with `from` replaced by `to`; `from` must be there, so the README and the
/// shipped configuration cannot drift apart unseen.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the configuration has no {from:?}");
    text.replace(from, to)
}

fn replace_port(text: &str, port: u16, with: u16) -> String {
    let re = regex::Regex::new(&format!(r"\b{port}\b")).unwrap();
    re.replace_all(text, with.to_string().as_str()).to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn every_command_example_of_the_readme_runs_and_prints_what_it_shows() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(examples.len() > 30, "the README's examples were not found");
    let mut clone = Clone::new().await;
    let mut ran = 0;
    for example in &examples {
        let at = format!("README.md:{}: {}", example.line, example.command);
        if example.python {
            let script = clone.root().join("example.py");
            std::fs::write(
                &script,
                replace_port(&example.command, 2525, clone.proxy.port()),
            )
            .unwrap();
            println!("run: {at}");
            let (ok, output) = clone.run("python3 example.py").await;
            assert!(ok, "{at}\n{output}");
            ran += 1;
            continue;
        }
        if let Some((_, why)) = NOT_RUN_HERE
            .iter()
            .find(|(what, _)| example.command.contains(what))
        {
            println!("not run: {at} ({why})");
            continue;
        }
        let command = clone.localize(&example.command);
        if is_synopsis(&example.command) {
            check_synopsis(&clone, &command, &at).await;
            println!("synopsis checked: {at}");
            continue;
        }
        println!("run: {at}");
        before(&clone, example).await;
        if command.ends_with(" serve") {
            clone.start_server(&command, clone.proxy).await;
        } else if command.contains("-m aiosmtpd") {
            clone.start_server(&command, clone.backend).await;
        } else {
            let (ok, output) = clone.run(&command).await;
            if example.shown.is_empty() {
                assert!(ok, "{at}\nfailed:\n{output}");
            } else if example.whole_output {
                let actual: Vec<&str> = output.lines().collect();
                assert!(
                    actual.len() == example.shown.len()
                        && example.shown.iter().zip(&actual).all(|(s, a)| shows(s, a)),
                    "{at}\nthe README shows:\n{}\nit prints:\n{output}",
                    example.shown.join("\n")
                );
            } else {
                for shown in &example.shown {
                    assert!(
                        output.lines().any(|line| shows(shown, line)),
                        "{at}\nthe README shows the line {shown:?}; it prints:\n{output}"
                    );
                }
            }
            after(&clone, example, &output).await;
        }
        ran += 1;
    }
    assert!(ran > 20, "only {ran} examples ran");
}

/// What the README's prose asks for before a command.
async fn before(clone: &Clone, example: &Example) {
    if example.command.contains("--local-interface 127.0.0.2") {
        // "take the list down to ["127.0.0.1/32"], run `… reload`"
        clone.edit_config(
            "trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]",
            "trusted_networks = [\"127.0.0.1/32\"]",
        );
        let (ok, output) = clone
            .run("mailmoat --config packaging/mailmoat.toml reload")
            .await;
        assert!(
            ok && output.contains("relay: trusted_networks and never_relay_networks reloaded")
                && !output.contains("needs a restart"),
            "reload: {output}"
        );
    }
    if example.command.ends_with(" reload")
        && example
            .shown
            .iter()
            .any(|line| line.contains("limits.message_size_limit"))
    {
        // "names every other changed setting that takes effect only after a restart"
        clone.edit_config(
            "message_size_limit = 10485760",
            "message_size_limit = \"20MB\"",
        );
    }
}

/// What the README says a command brought about, beyond what it prints.
async fn after(clone: &Clone, example: &Example, output: &str) {
    let command = &example.command;
    if command.ends_with("queue list") && !command.starts_with("mailmoat ") {
        // "With no backend listening yet, the message waits in the queue"
        assert!(
            output.contains("alice@example.test"),
            "the quick start's messages are not in the queue:\n{output}"
        );
    }
    if command.ends_with("queue flush") && !command.starts_with("mailmoat ") {
        // "delivers the waiting message at once": swaks's and Python's, both printed
        // by the backend.
        eventually("the backend printed both messages", || {
            let printed = clone.server_output(1);
            printed.contains("Subject: hello") && printed.contains("Subject: test")
        })
        .await;
    }
}

/// A synopsis names subcommands and options that exist: `--help` of the subcommand
/// lists each option the line uses.
async fn check_synopsis(clone: &Clone, command: &str, at: &str) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "mailmoat").expect(at) + 1;
    let mut path = Vec::new();
    let mut i = start;
    while i < words.len() {
        if words[i] == "--config" {
            i += 2;
            continue;
        }
        let word = words[i];
        if word.starts_with('-') || word.starts_with('[') || is_synopsis(word) {
            break;
        }
        path.push(word);
        i += 1;
    }
    let (ok, help) = clone
        .run(&format!("mailmoat {} --help", path.join(" ")))
        .await;
    assert!(ok, "{at}\nno such command:\n{help}");
    for option in words[i..]
        .iter()
        .map(|w| w.trim_start_matches('['))
        .filter(|w| w.starts_with("--"))
    {
        let option = option.trim_end_matches([']', '.']);
        assert!(
            help.contains(option),
            "{at}\n{option} is not an option of `mailmoat {}`:\n{help}",
            path.join(" ")
        );
    }
}

#[test]
fn readme_examples_are_read_as_commands_and_output() {
    let readme = "```sh\nswaks --to a # remark\n# <** 550 no\n```\n\
                  ```text\n$ mailmoat a \\\n    --b c\nline one\n$ mailmoat d\n```\n\
                  ```text\nnot a command\n```\n";
    let found = examples(readme);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].command, "swaks --to a");
    assert_eq!(found[0].shown, vec!["<** 550 no"]);
    assert_eq!(found[1].command, "mailmoat a --b c");
    assert_eq!(found[1].shown, vec!["line one"]);
    assert!(found[2].shown.is_empty());
    assert!(shows("p=MIIB…\" )", "p=MIIBxyz\" \"abc\" )"));
    assert!(!shows("p=MIIB…\" )", "p=MIIA\" )"));
    assert!(is_synopsis("mailmoat queue show ID"));
    assert!(is_synopsis("mailmoat quarantine list [--since 2h]"));
    assert!(!is_synopsis("mailmoat queue wait --deferred"));
}
