//! The `mailmoat` command: serve, check the configuration, and manage the queue.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mailmoat::archive::admin::QuarantineCommand;
use mailmoat::config::Config;
use mailmoat::control::Request;
use mailmoat::local_time;
use mailmoat::queue::admin::{AdminCommand, AdminReply, execute};
use mailmoat::queue::spool::Spool;

#[derive(Parser)]
#[command(name = "mailmoat", version, about = "SMTP filtering front proxy")]
struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/mailmoat/mailmoat.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Run the proxy until SIGTERM or SIGINT.
    Serve,
    /// Validate the configuration and everything it names (certificates, users
    /// file, list and recipients files, rules) as `serve` loads them, and print
    /// the effective settings (secrets left out).
    Check,
    /// Make the running server read its rules, TLS certificate and configuration
    /// again (as SIGHUP does); says which changed settings need a restart.
    Reload,
    /// Show what the server would do with a message, stage by stage — every check
    /// and rule, with this configuration — and the verdict. Nothing is queued or
    /// archived.
    TestRules {
        /// The message file (.eml).
        #[arg(required_unless_present = "fixtures")]
        message: Option<PathBuf>,
        /// Envelope sender ("" for the null sender).
        #[arg(long, required_unless_present = "fixtures")]
        from: Option<String>,
        /// Envelope recipient; repeat for more.
        #[arg(long = "to", required_unless_present = "fixtures")]
        to: Vec<String>,
        /// Check every fixture in this folder instead (NAME.eml with NAME.toml
        /// saying what must happen to it; see rules/README.md). Exits 1 when one
        /// fails.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["message", "from", "to", "output"])]
        fixtures: Option<PathBuf>,
        /// Client address.
        #[arg(long, default_value = "192.0.2.1")]
        ip: std::net::IpAddr,
        /// Client HELO name.
        #[arg(long, default_value = "client.example")]
        helo: String,
        /// As if the client had logged in with this account (SMTP AUTH).
        #[arg(long, value_name = "ACCOUNT")]
        login: Option<String>,
        /// Write the message as it would be delivered to this file.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        auth: Box<mailmoat::sender_auth::AssumedAuth>,
    },
    /// One screen: uptime, connections, the queue by state with the oldest
    /// message's age, the backend's health, the rules loaded, the most frequent
    /// refusals of the last hour.
    Status,
    /// Recipient validation: what RCPT TO would be told about an address, and
    /// the directory's remembered answers.
    Recipients {
        #[command(subcommand)]
        action: RecipientsAction,
    },
    /// Senders allowed or blocked: for everyone (the default) or for one
    /// recipient (--for ADDR), as recipients set them on the quarantine page.
    Lists {
        #[command(subcommand)]
        action: ListsAction,
    },
    /// The quarantine digests of the recipients ([digest]).
    Digest {
        #[command(subcommand)]
        action: DigestAction,
    },
    /// The greylist of a running server: its triplets, networks to let
    /// through, stale entries.
    Greylist {
        #[command(subcommand)]
        action: GreylistAction,
    },
    /// Writes the man pages (mailmoat.8, mailmoat.toml.5, mailmoat-rules.5) and
    /// shell completions (bash, zsh, fish) into a folder; for packagers.
    #[command(hide = true)]
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Inspect and manage the mail queue (of a running or a stopped server).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Manage the users file of SMTP AUTH (auth.users_file).
    Passwd {
        #[command(subcommand)]
        action: PasswdAction,
    },
    /// Review refused, quarantined and discarded mail in the archive; release it.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
}

#[derive(Subcommand)]
enum GreylistAction {
    /// Every triplet with when it was first seen and last passed, and the
    /// networks let through.
    List,
    /// Let an address's network, or a network, through from now on.
    Allow { network: String },
    /// Remove triplets past their retry window or expiry (the server does it
    /// hourly).
    Purge,
}

#[derive(Subcommand)]
enum ListsAction {
    /// Every entry, or those of one recipient (--for ADDR) or everyone's (--for '*').
    Show {
        #[arg(long = "for", value_name = "ADDR")]
        owner: Option<String>,
    },
    /// Spare a sender (address or domain) greylisting and the DNS blocklists
    /// when its SPF passes; never the virus or attachment checks.
    Allow {
        sender: String,
        #[arg(long = "for", value_name = "ADDR", default_value = "*")]
        owner: String,
    },
    /// Refuse a sender (address or domain) with 550 5.7.1.
    Block {
        sender: String,
        #[arg(long = "for", value_name = "ADDR", default_value = "*")]
        owner: String,
    },
    /// Take a sender off the list.
    Remove {
        sender: String,
        #[arg(long = "for", value_name = "ADDR", default_value = "*")]
        owner: String,
    },
}

#[derive(Subcommand)]
enum DigestAction {
    /// Send the digests now: to every recipient with new items, or to one.
    Send {
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum RecipientsAction {
    /// What RCPT TO would be told about ADDR and why: the file, the backend's
    /// answer or the directory entry (remembered or searched for now).
    Lookup { address: String },
    /// Forget the directory's remembered answers (on every instance with
    /// [shared]): the next RCPT of each address asks the directory again.
    FlushCache,
}

#[derive(Subcommand)]
enum DkimAction {
    /// Make a signing key: the private key goes to --out (mode 0600), the TXT
    /// record to publish is printed.
    Keygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=): the record goes at SELECTOR._domainkey.DOMAIN.
        #[arg(long)]
        selector: String,
        /// Where to write the private key (PEM).
        #[arg(long)]
        out: PathBuf,
        /// rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
}

#[derive(Subcommand)]
enum PasswdAction {
    /// Add a user or change their password; the password is read from standard
    /// input (one line), so it never appears in a process list.
    Add {
        user: String,
        /// An administrator of the quarantine's web page (sees and acts on
        /// every item, approves release requests).
        #[arg(long)]
        admin: bool,
    },
    /// Remove a user.
    Delete { user: String },
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// List archived items, oldest first.
    List {
        /// Only items since this long ago ("2h", "3days") or this date (2026-11-22).
        #[arg(long)]
        since: Option<String>,
        /// Only items before this long ago ("1h") or up to the end of this date.
        #[arg(long)]
        until: Option<String>,
        /// Only items refused by this rule or check (part of its name).
        #[arg(long)]
        rule: Option<String>,
        /// Only items from this sender (part of the address).
        #[arg(long)]
        sender: Option<String>,
        /// Only items to this recipient (part of the address).
        #[arg(long)]
        recipient: Option<String>,
        /// Only items whose subject holds this text.
        #[arg(long)]
        subject: Option<String>,
        /// Only items with this outcome (rejected, quarantined, discarded, tempfailed).
        #[arg(long)]
        outcome: Option<String>,
        /// Only this item: its archive id, the queue id the client was told.
        #[arg(long)]
        id: Option<String>,
    },
    /// The record, the headers and the parts of an item.
    Show { id: String },
    /// Deliver an item to its recipients, skipping only the rule that caught it.
    Release {
        id: String,
        /// Release to this recipient only; repeat for more.
        #[arg(long = "rcpt")]
        rcpts: Vec<String>,
    },
    /// Remove an item for good.
    Delete { id: String },
    /// Remove every item older than this ("30days").
    Purge {
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// List queued messages with their state and last error.
    List,
    /// Recipients still to be delivered by domain and age in minutes (like
    /// Postfix's qshape): up to 5, 10, 20, 40, 80, 160, and older.
    Shape,
    /// Print a message's envelope and content.
    Show { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
    /// Keep a message back from delivery until released.
    Hold { id: String },
    /// Put a held message back into delivery.
    Release { id: String },
    /// Try all deferred mail now.
    Flush,
    /// Take over the mail of another instance's spool folder (a host that will
    /// not come back): delivered from here, removed there.
    Import { folder: std::path::PathBuf },
    /// Wait until nothing is being delivered or due now (after a flush, say);
    /// exits 1 if that takes longer than the timeout.
    Wait {
        #[arg(long, default_value = "60s")]
        timeout: String,
        /// Wait until nothing waits in the queue at all: deferred mail too
        /// (delivered at a later retry, or by a probe of a next hop that failed).
        #[arg(long)]
        deferred: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailmoat: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Needs no configuration: a key is made before it is configured.
    if let CliCommand::Dkim { action } = cli.command {
        return dkim(action);
    }
    if let CliCommand::Generate { out } = &cli.command {
        return generate_docs(out);
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        CliCommand::Check => {
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            let config = std::sync::Arc::new(config);
            // The very loading `serve` does: what passes here starts there.
            let loaded = mailmoat::server::Loaded::load(&config, None)?;
            print!("{}", config.to_toml());
            eprintln!(
                "{}: configuration OK; {} rule(s) from {}",
                cli.config.display(),
                loaded.rules.current().rules().len(),
                config.rules.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Reload => answer(&config, Request::Reload),
        CliCommand::Status => answer(&config, Request::Status),
        CliCommand::Greylist { action } => {
            use mailmoat::control::GreylistCommand;
            let command = match action {
                GreylistAction::List => GreylistCommand::List,
                GreylistAction::Allow { network } => GreylistCommand::Allow(network),
                GreylistAction::Purge => GreylistCommand::Purge,
            };
            answer(&config, Request::Greylist(command))
        }
        CliCommand::Lists { action } => {
            use mailmoat::control::ListsCommand;
            let command = match action {
                ListsAction::Show { owner } => ListsCommand::Show(owner),
                ListsAction::Allow { sender, owner } => ListsCommand::Add {
                    owner,
                    sender,
                    block: false,
                },
                ListsAction::Block { sender, owner } => ListsCommand::Add {
                    owner,
                    sender,
                    block: true,
                },
                ListsAction::Remove { sender, owner } => ListsCommand::Remove { owner, sender },
            };
            answer(&config, Request::Lists(command))
        }
        CliCommand::Digest {
            action: DigestAction::Send { to },
        } => answer(&config, Request::Digest(to)),
        CliCommand::Recipients { action } => {
            use mailmoat::control::RecipientsCommand;
            let command = match action {
                RecipientsAction::Lookup { address } => RecipientsCommand::Lookup(address),
                RecipientsAction::FlushCache => RecipientsCommand::FlushCache,
            };
            answer(&config, Request::Recipients(command))
        }
        CliCommand::TestRules {
            message,
            from,
            to,
            fixtures,
            ip,
            helo,
            login,
            output,
            auth,
        } => {
            use mailmoat::pipeline::{Pipeline, fixtures as fixture, trial};
            let rules = mailmoat::rules::RuleSet::load_dir(&config.rules.path)?;
            println!(
                "{} rule(s) from {}",
                rules.rules().len(),
                config.rules.path.display()
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let config = std::sync::Arc::new(config);
            let pipeline = if auth.any() {
                Pipeline::for_trial_assuming(config, auth.facts().map_err(anyhow::Error::msg)?)?
            } else {
                Pipeline::for_trial(config)?
            };
            if let Some(dir) = fixtures {
                let (report, ok) = runtime.block_on(fixture::check_all(&pipeline, &rules, &dir))?;
                print!("{report}");
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            let message = message.unwrap_or_default();
            let raw = std::fs::read(&message)
                .map_err(|e| anyhow::anyhow!("{}: {e}", message.display()))?;
            let raw = fixture::crlf(&raw);
            let input = trial::TrialInput {
                client_ip: ip,
                helo,
                login,
                sender: from.unwrap_or_default(),
                recipients: to,
                message: &raw,
            };
            let trial = runtime.block_on(trial::run(&pipeline, &rules, &input));
            print!("{}", trial.report(&input));
            if let (Some(path), Some(delivered)) = (output, &trial.delivered) {
                std::fs::write(&path, delivered)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                println!("message as delivered written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Serve => serve(config),
        CliCommand::Dkim { .. } | CliCommand::Generate { .. } => {
            unreachable!("handled before the configuration is read")
        }
        CliCommand::Passwd { action } => passwd(&config, action),
        CliCommand::Quarantine { action } => {
            let command = match action {
                QuarantineAction::List {
                    since,
                    until,
                    rule,
                    sender,
                    recipient,
                    subject,
                    outcome,
                    id,
                } => QuarantineCommand::List {
                    search: mailmoat::archive::search::Search {
                        id,
                        sender,
                        recipient,
                        subject,
                        check: rule,
                        outcome,
                        since: since
                            .as_deref()
                            .map(|t| parse_time("--since", t, local_time::parse_since))
                            .transpose()?,
                        until: until
                            .as_deref()
                            .map(|t| parse_time("--until", t, local_time::parse_until))
                            .transpose()?,
                    },
                },
                QuarantineAction::Show { id } => QuarantineCommand::Show { id },
                QuarantineAction::Release { id, rcpts } => QuarantineCommand::Release {
                    id,
                    rcpts,
                    // Set by the server from the socket's credentials.
                    by: String::new(),
                },
                QuarantineAction::Delete { id } => QuarantineCommand::Delete { id },
                QuarantineAction::Purge { older_than } => QuarantineCommand::Purge {
                    older_than_secs: humantime::parse_duration(&older_than)
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "--older-than {older_than}: {e} (write \"30days\", \"12h\")"
                            )
                        })?
                        .as_secs(),
                },
            };
            answer(&config, Request::Quarantine(command))
        }
        CliCommand::Queue { action } => {
            let command = match action {
                QueueAction::List => AdminCommand::List,
                QueueAction::Show { id } => AdminCommand::Show(id),
                QueueAction::Delete { id } => AdminCommand::Delete(id),
                QueueAction::Hold { id } => AdminCommand::Hold(id),
                QueueAction::Release { id } => AdminCommand::Release(id),
                QueueAction::Flush => AdminCommand::Flush,
                QueueAction::Shape => AdminCommand::Shape,
                QueueAction::Import { folder } => AdminCommand::Import(
                    std::path::absolute(&folder)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", folder.display()))?
                        .display()
                        .to_string(),
                ),
                QueueAction::Wait { timeout, deferred } => AdminCommand::Wait {
                    seconds: humantime::parse_duration(&timeout)
                        .map_err(|e| {
                            anyhow::anyhow!("--timeout {timeout}: {e} (write \"30s\", \"5m\")")
                        })?
                        .as_secs(),
                    deferred,
                },
            };
            answer(&config, Request::Queue(command))
        }
    }
}

/// The man pages and completions, written into `out` (made if missing).
fn generate_docs(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let command = Cli::command();
    write("mailmoat.8", &mailmoat::manual::program_page(&command)?)?;
    write(
        "mailmoat.toml.5",
        mailmoat::manual::config_page().as_bytes(),
    )?;
    write(
        "mailmoat-rules.5",
        mailmoat::manual::rules_page().as_bytes(),
    )?;
    for (shell, name) in [
        (clap_complete::Shell::Bash, "mailmoat.bash"),
        (clap_complete::Shell::Zsh, "_mailmoat"),
        (clap_complete::Shell::Fish, "mailmoat.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), "mailmoat", &mut script);
        write(name, &script)?;
    }
    println!("man pages and completions written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn dkim(action: DkimAction) -> anyhow::Result<ExitCode> {
    use mailmoat::sender_auth::keys::{Algorithm, generate};
    let DkimAction::Keygen {
        domain,
        selector,
        out,
        algorithm,
    } = action;
    if out.exists() {
        anyhow::bail!(
            "{}: exists; mailmoat does not overwrite a key (choose another --out, or a new selector)",
            out.display()
        );
    }
    let key = generate(match algorithm.as_str() {
        "ed25519" => Algorithm::Ed25519,
        _ => Algorithm::Rsa2048,
    })?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&out)
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        file.write_all(key.private_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    eprintln!("private key written to {}", out.display());
    eprintln!("publish this TXT record, then add to mailmoat.toml:");
    eprintln!(
        "  [[dkim_sign]]\n  domain = \"{domain}\"\n  selector = \"{selector}\"\n  key_file = \"{}\"",
        out.display()
    );
    // Zone-file form: strings of at most 255 bytes.
    let strings: Vec<String> = key
        .record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        strings.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a queue or quarantine command and prints its answer: on standard output
/// and exit 0, or on standard error and exit 1.
fn answer(config: &Config, request: Request) -> anyhow::Result<ExitCode> {
    let reply = control_request(config, request)?;
    if reply.ok {
        print!("{}", with_newline(&reply.text));
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("mailmoat: {}", with_newline(&reply.text));
        Ok(ExitCode::from(1))
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// Edits the users file: write aside, then rename over, so a running server
/// never reads half a file.
fn passwd(config: &Config, action: PasswdAction) -> anyhow::Result<ExitCode> {
    let path = config
        .auth
        .users_file
        .clone()
        .ok_or_else(|| anyhow::anyhow!("auth.users_file is not set in the configuration"))?;
    let mut lines: Vec<String> = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let named =
        |line: &String, user: &str| line.split_once(':').is_some_and(|(name, _)| name == user);
    let message = match action {
        PasswdAction::Add { user, admin } => {
            if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
                anyhow::bail!("'{user}': a user name has no ':' and no spaces");
            }
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!("no password given on standard input");
            }
            let entry = format!(
                "{user}:{}{}",
                mailmoat::policy::auth::hash_password(password)?,
                if admin { ":admin" } else { "" }
            );
            match lines.iter_mut().find(|l| named(l, &user)) {
                Some(line) => *line = entry,
                None => lines.push(entry),
            }
            format!(
                "{user}: password set in {}{}",
                path.display(),
                if admin { " (administrator)" } else { "" }
            )
        }
        PasswdAction::Delete { user } => {
            let before = lines.len();
            lines.retain(|l| !named(l, &user));
            if lines.len() == before {
                anyhow::bail!("{user}: not in {}", path.display());
            }
            format!("{user}: removed from {}", path.display())
        }
    };
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, lines.join("\n") + "\n")?;
    // Password hashes are for the server's eyes only.
    std::fs::set_permissions(&aside, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&aside, &path)?;
    println!("{message}");
    Ok(ExitCode::SUCCESS)
}

/// `--since`, `--until`: a duration ago ("2h") or a date ("2026-11-22"), as
/// unix seconds.
fn parse_time(option: &str, text: &str, parse: fn(&str) -> Option<u64>) -> anyhow::Result<u64> {
    parse(text).ok_or_else(|| {
        anyhow::anyhow!("{option} {text}: write a time ago (\"2h\") or a date (2026-11-22)")
    })
}

/// Runs a command offline when no server holds the spool, else through the
/// running server's control socket.
fn control_request(config: &Config, request: Request) -> anyhow::Result<AdminReply> {
    let spool = Spool::existing(&config.queue.path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(_lock) = spool.try_lock()? {
        return match request {
            Request::Queue(command) => Ok(execute(&spool, None, &command)),
            Request::Quarantine(command) => runtime.block_on(offline_quarantine(config, &command)),
            Request::Reload => Ok(AdminReply {
                ok: false,
                text: "no mailmoat is running with this queue: nothing to reload".into(),
            }),
            Request::Status => {
                let queue =
                    mailmoat::queue::Queue::new(spool, config.queue.flush, Default::default())?;
                Ok(AdminReply {
                    ok: false,
                    text: format!(
                        "no mailmoat is running with this queue\nqueue: {}",
                        mailmoat::control::census_line(&queue.census())
                    ),
                })
            }
            Request::Digest(_) => Ok(AdminReply {
                ok: false,
                text: "no mailmoat is running with this queue: digests are sent by the server"
                    .into(),
            }),
            Request::Lists(command) => {
                let store = mailmoat::store::Store::open(&config.store.path)?;
                let lists = mailmoat::policy::lists::SenderLists::new(
                    store.tree("sender-lists")?,
                    mailmoat::shared_state::SharedState::open(&config.shared)?,
                );
                Ok(runtime.block_on(mailmoat::control::lists_command(
                    &lists,
                    command,
                    "mailmoat lists",
                )))
            }
            Request::Recipients(command) => {
                let config = std::sync::Arc::new(config.clone());
                runtime.block_on(async {
                    let dns = std::sync::Arc::new(mailmoat::dns::Dns::new(&config.dns)?);
                    let store = mailmoat::store::Store::open(&config.store.path)?;
                    let pipeline = mailmoat::pipeline::Pipeline::build(
                        config.clone(),
                        dns,
                        Some(&store),
                        mailmoat::shared_state::SharedState::open(&config.shared)?,
                    )?;
                    Ok(mailmoat::control::recipients_command(&pipeline, command).await)
                })
            }
            Request::Greylist(command) => {
                let store = mailmoat::store::Store::open(&config.store.path)?;
                let shared = mailmoat::shared_state::SharedState::open(&config.shared)?;
                let greylist =
                    mailmoat::policy::greylist::Greylist::open(&config.greylist, &store, shared)?;
                Ok(runtime.block_on(mailmoat::control::greylist_command(
                    &greylist,
                    config.greylist.enabled,
                    command,
                )))
            }
        };
    }
    let socket = spool.control_socket();
    runtime
        .block_on(mailmoat::control::send(&socket, &request))
        .map_err(|e| {
            anyhow::anyhow!(
                "the queue {} is locked by a running mailmoat, which does not answer on {}: {e}",
                config.queue.path.display(),
                socket.display()
            )
        })
}

/// The archive of a stopped server: opened here, with a pipeline that keeps into
/// its queue, so that a release is judged and queued as the server would.
async fn offline_quarantine(
    config: &Config,
    command: &QuarantineCommand,
) -> anyhow::Result<AdminReply> {
    let config = std::sync::Arc::new(config.clone());
    let store = mailmoat::store::Store::open(&config.store.path)?;
    let archive = std::sync::Arc::new(mailmoat::archive::Archive::open(
        &config.archive,
        &store,
        &config.server.hostname,
        config.web.listen.is_some(),
    )?);
    let rules = mailmoat::rules::RuleSet::load_dir(&config.rules.path)?;
    let metrics = std::sync::Arc::new(mailmoat::metrics::Metrics::new());
    let queue = std::sync::Arc::new(mailmoat::queue::Queue::new(
        Spool::open(&config.queue.path)?,
        config.queue.flush,
        metrics.clone(),
    )?);
    let shared = mailmoat::shared_state::SharedState::local();
    let dns = std::sync::Arc::new(mailmoat::dns::Dns::new(&config.dns)?);
    let pipeline =
        mailmoat::pipeline::Pipeline::build(config.clone(), dns, Some(&store), shared.clone())?
            .keeping(std::sync::Arc::new(mailmoat::services::Services {
                metrics,
                queue,
                archive: Some(archive.clone()),
                reporter: None,
                shared,
            }));
    Ok(mailmoat::control::quarantine(&pipeline, &archive, &rules, command).await)
}

/// glibc raises its mmap threshold each time a large buffer is freed, and from
/// then on keeps such buffers in its heaps, which do not shrink: after a burst of
/// large messages the memory stays taken. A fixed threshold maps every message
/// buffer apart and gives it back when it is freed (and lets a growing buffer be
/// moved by mremap instead of copied); fewer arenas keep less memory per thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn serve(config: Config) -> anyhow::Result<ExitCode> {
    tune_allocator();
    mailmoat::logging::init(&config.log);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = mailmoat::server::Server::start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
