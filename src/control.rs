//! The control socket of a running server (`control.sock` in the spool folder):
//! how `mailmoat queue …` and `mailmoat quarantine …` reach the server that holds
//! the spool and the store, so its state and its files never disagree.

use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::archive::Archive;
use crate::archive::admin::QuarantineCommand;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::queue::admin::{AdminCommand, AdminReply, execute};
use crate::rules::RulesHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Queue(AdminCommand),
    Quarantine(QuarantineCommand),
    /// Read the rules, the certificate and the configuration again.
    Reload,
    Greylist(GreylistCommand),
    /// One screen about the running server.
    Status,
    Recipients(RecipientsCommand),
    /// Send the quarantine digests now, to everyone due or to one address.
    Digest(Option<String>),
    Lists(ListsCommand),
}

/// `mailmoat lists …`: the sender lists (owner `*`: everyone's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ListsCommand {
    Show(Option<String>),
    Add {
        owner: String,
        sender: String,
        block: bool,
    },
    Remove {
        owner: String,
        sender: String,
    },
}

/// `mailmoat recipients …`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RecipientsCommand {
    /// What RCPT TO would be told about an address, and why.
    Lookup(String),
    /// Forget the directory's remembered answers.
    FlushCache,
}

/// `mailmoat greylist …`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GreylistCommand {
    List,
    /// Let a network (or an address's network) through from now on.
    Allow(String),
    /// Remove the triplets past their retry window or expiry.
    Purge,
}

/// What the server lends to the commands.
pub struct Context {
    pub queue: Arc<Queue>,
    pub archive: Option<Arc<Archive>>,
    /// Releases are judged and queued by it, as new mail is.
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rules: Arc<RulesHandle>,
    pub config: Arc<crate::config::Config>,
    pub reloader: Arc<crate::reload::Reloader>,
    pub greylist: Arc<crate::policy::greylist::Greylist>,
    /// Its figures for `status`.
    pub dns: Arc<crate::dns::Dns>,
    pub shared: Arc<crate::shared_state::SharedState>,
    pub started: std::time::Instant,
    /// The quarantine's digests, when `[web]` is on.
    pub digests: Option<Arc<crate::web::digest::Digests>>,
}

impl Context {
    pub async fn handle(&self, request: Request) -> AdminReply {
        match request {
            Request::Reload => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload("mailmoat reload")).await
                {
                    Ok(report) => AdminReply {
                        ok: report.ok,
                        text: report.lines.join("\n"),
                    },
                    Err(e) => AdminReply {
                        ok: false,
                        text: format!("reload failed: {e}"),
                    },
                }
            }
            Request::Queue(AdminCommand::Wait { seconds, deferred }) => {
                let timeout = std::time::Duration::from_secs(seconds);
                let (settled, what) = if deferred {
                    (
                        self.queue.wait_empty(timeout).await,
                        "the queue is empty: nothing waits (held mail aside)",
                    )
                } else {
                    (
                        self.queue.wait_idle(timeout).await,
                        "the queue is idle: nothing is being delivered or due now",
                    )
                };
                if settled {
                    AdminReply {
                        ok: true,
                        text: what.into(),
                    }
                } else {
                    let census = census_line(&self.queue.census());
                    AdminReply {
                        ok: false,
                        text: format!("the queue is still busy after {seconds}s: {census}"),
                    }
                }
            }
            Request::Queue(command) => {
                if matches!(command, AdminCommand::Flush) {
                    // "Try now" includes next hops that failed before.
                    self.queue.health.retry_now();
                }
                let spool = self.queue.spool.clone();
                let scheduler = self.queue.scheduler.clone();
                tokio::task::spawn_blocking(move || execute(&spool, Some(&scheduler), &command))
                    .await
                    .unwrap_or_else(|e| AdminReply {
                        ok: false,
                        text: e.to_string(),
                    })
            }
            Request::Quarantine(command) => match &self.archive {
                Some(archive) => {
                    quarantine(&self.pipeline, archive, &self.rules.current(), &command).await
                }
                None => AdminReply {
                    ok: false,
                    text: "the archive is off ([archive] enabled = false)".into(),
                },
            },
            Request::Status => {
                let queue = self.queue.clone();
                let census = tokio::task::spawn_blocking(move || queue.census())
                    .await
                    .unwrap_or_default();
                let backend = &self.config.backend.address;
                let answering = hop_line(&self.queue.health, backend, &self.config);
                let metrics = &self.metrics;
                let mut text = format!(
                    "mailmoat {}, up {}\nconnections: {} open\nqueue: {}\nbackend {backend}: {answering}\nrules: {} loaded\n",
                    env!("CARGO_PKG_VERSION"),
                    age(self.started.elapsed().as_secs()),
                    metrics.open_connections(),
                    census_line(&census),
                    self.rules.current().rules().len(),
                );
                if let Some(shared) = self.shared.describe() {
                    text.push_str(&format!("shared state: {shared}\n"));
                }
                text.push_str(&dns_line(&self.dns));
                if let Some(directory) = self.pipeline.recipients.directory() {
                    text.push_str(&directory_line(directory).await);
                }
                let top = metrics.top_refusals(5);
                if top.is_empty() {
                    text.push_str("refusals in the last hour: none");
                } else {
                    let listed: Vec<String> =
                        top.iter().map(|(what, n)| format!("{what} {n}")).collect();
                    text.push_str(&format!("refusals in the last hour: {}", listed.join(", ")));
                }
                AdminReply { ok: true, text }
            }
            Request::Recipients(command) => recipients_command(&self.pipeline, command).await,
            Request::Lists(command) => {
                lists_command(&self.pipeline.lists, command, "mailmoat lists").await
            }
            Request::Digest(to) => match &self.digests {
                Some(digests) => match digests.send(to.as_deref()).await {
                    Ok(sent) if sent.is_empty() => AdminReply {
                        ok: true,
                        text: "nothing new is held: no digest sent".into(),
                    },
                    Ok(sent) => AdminReply {
                        ok: true,
                        text: sent
                            .iter()
                            .map(|(to, n)| format!("digest queued for {to}: {n} item(s)"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    },
                    Err(text) => AdminReply { ok: false, text },
                },
                None => AdminReply {
                    ok: false,
                    text: "the quarantine's web pages are off ([web] listen): digests link to them"
                        .into(),
                },
            },
            Request::Greylist(command) => {
                // Listing and purging walk the embedded store: not on an async
                // worker. The shared list is read from that thread too.
                let greylist = self.greylist.clone();
                let enabled = self.config.greylist.enabled;
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    runtime.block_on(greylist_command(&greylist, enabled, command))
                })
                .await
                .unwrap_or_else(|e| AdminReply {
                    ok: false,
                    text: e.to_string(),
                })
            }
        }
    }
}

/// `mailmoat lists`: show, add, remove.
pub async fn lists_command(
    lists: &crate::policy::lists::SenderLists,
    command: ListsCommand,
    by: &str,
) -> AdminReply {
    use crate::policy::lists::ListKind;
    let result = match command {
        ListsCommand::Show(owner) => {
            let entries = lists.entries(owner.as_deref()).await;
            if entries.is_empty() {
                Ok("no sender is listed".to_string())
            } else {
                let width = entries.iter().map(|e| e.owner.len()).max().unwrap_or(0);
                Ok(entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{:width$}  {:5}  {}  (added by {}, {})",
                            e.owner,
                            e.kind.to_string(),
                            e.sender,
                            e.added_by,
                            crate::local_time::local(e.time)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
        ListsCommand::Add {
            owner,
            sender,
            block,
        } => {
            let kind = if block {
                ListKind::Block
            } else {
                ListKind::Allow
            };
            lists
                .add(&owner, &sender, kind, by)
                .await
                .map(|e| format!("{}: {} is on the {kind} list", e.owner, e.sender))
        }
        ListsCommand::Remove { owner, sender } => {
            lists.remove(&owner, &sender, by).await.and_then(|existed| {
                if existed {
                    Ok(format!("{owner}: {sender} removed"))
                } else {
                    Err(format!("{owner}: {sender} is not listed"))
                }
            })
        }
    };
    match result {
        Ok(text) => AdminReply { ok: true, text },
        Err(text) => AdminReply { ok: false, text },
    }
}

/// `recipients lookup` and `flush-cache`, on a running server or a pipeline
/// built for the command.
pub async fn recipients_command(pipeline: &Pipeline, command: RecipientsCommand) -> AdminReply {
    match command {
        RecipientsCommand::Lookup(address) => match pipeline.recipients.explain(&address).await {
            Ok(text) => AdminReply { ok: true, text },
            Err(text) => AdminReply { ok: false, text },
        },
        RecipientsCommand::FlushCache => match pipeline.recipients.flush_directory_cache().await {
            Some(held) => AdminReply {
                ok: true,
                text: format!(
                    "the directory's remembered answers are forgotten ({held} held here); \
                     every address is searched for again"
                ),
            },
            None => AdminReply {
                ok: false,
                text: "no directory is configured ([ldap] url): nothing is cached".into(),
            },
        },
    }
}

/// "ldap: ldap://dc1 answers (3 ms); 1200 lookups, 1100 from the cache, 0 failures"
async fn directory_line(directory: &crate::directory::Directory) -> String {
    let totals: std::collections::HashMap<&str, u64> = directory.totals().into_iter().collect();
    let urls = directory.config().url.join(", ");
    let answering = match directory.probe().await {
        Ok(took) => format!("answers ({} ms)", took.as_millis()),
        Err(why) => format!("does not answer: {why}"),
    };
    format!(
        "directory {urls}: {answering}; {} lookups, {} from the cache, {} failures\n",
        totals["lookups"], totals["cache_hits"], totals["failures"]
    )
}

/// "active 0, deferred 2 (oldest 1h 20m), hold 0"
pub fn census_line(census: &[(&str, usize, Option<u64>)]) -> String {
    census
        .iter()
        .map(|(state, n, oldest)| match oldest {
            Some(secs) if *n > 0 => format!("{state} {n} (oldest {})", age(*secs)),
            _ => format!("{state} {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a next hop is doing, for `status`.
fn hop_line(
    hops: &crate::queue::health::NextHops,
    address: &str,
    config: &crate::config::Config,
) -> String {
    use crate::queue::health::Answering;
    let in_flight = hops.in_flight(address);
    let concurrency = config.queue.destination_concurrency();
    match hops.answering(address) {
        Answering::Unknown => "not tried yet".into(),
        Answering::Yes => {
            format!("answering ({in_flight} of at most {concurrency} deliveries at once)")
        }
        Answering::No { why, since } => {
            let unix = since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!(
                "NOT answering since {}: {why}; one probe every {}, {in_flight} attempt(s) open",
                crate::local_time::local(unix),
                humantime::format_duration(config.backend.probe_interval)
            )
        }
    }
}

/// "2d 3h", "1h 20m", "5m 2s", "40s"
pub fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A greylist command, on the running server's greylist or, when none runs, on
/// the store's.
pub async fn greylist_command(
    greylist: &crate::policy::greylist::Greylist,
    enabled: bool,
    command: GreylistCommand,
) -> AdminReply {
    use crate::local_time::local;
    let ok = |text: String| AdminReply { ok: true, text };
    match command {
        GreylistCommand::List => {
            let (triplets, networks) = greylist.list().await;
            let mut out = String::new();
            if !enabled {
                out.push_str("greylisting is off ([greylist] enabled = false)\n");
            }
            for t in &triplets {
                let state = match t.passed {
                    Some(at) => format!("passed, last {}", local(at)),
                    None => "waiting".to_string(),
                };
                out.push_str(&format!(
                    "{}  first {}  {state}\n",
                    t.triplet,
                    local(t.first)
                ));
            }
            for (network, passes) in &networks {
                let why = match passes {
                    Some(n) => format!("{n} passes"),
                    None => "allowed by an administrator".to_string(),
                };
                out.push_str(&format!("{network}  let through ({why})\n"));
            }
            out.push_str(&format!(
                "{} triplet(s), {} network(s) let through",
                triplets.len(),
                networks.len()
            ));
            ok(out)
        }
        GreylistCommand::Allow(network) => match greylist.allow(&network).await {
            Ok(key) => ok(format!("{key} is let through from now on")),
            Err(why) => AdminReply {
                ok: false,
                text: why,
            },
        },
        GreylistCommand::Purge => {
            // Triplets in Redis expire by themselves; this purges the embedded store.
            let removed = greylist.purge(crate::policy::greylist::now());
            ok(format!("{removed} stale triplet(s) removed"))
        }
    }
}

/// One line about DNS: the servers asked and what the engine has done.
fn dns_line(dns: &crate::dns::Dns) -> String {
    let f = dns.figures();
    let servers: Vec<String> = dns.servers().iter().map(ToString::to_string).collect();
    let hit_share = if f.lookups == 0 {
        0.0
    } else {
        100.0 * f.cache_hits as f64 / f.lookups as f64
    };
    format!(
        "dns {}: {} lookups ({:.0}% from the cache, {} joined one in flight), {} queries, \
         {} answers, {} attempts timed out ({:.1}% of queries lost), {} lookups failed\n",
        servers.join(", "),
        f.lookups,
        hit_share,
        f.joined,
        f.queries,
        f.answers,
        f.timeouts,
        f.lost_percent(),
        f.failures
    )
}

/// `mailmoat quarantine …`: a release through the pipeline, the rest on the
/// archive.
pub async fn quarantine(
    pipeline: &Pipeline,
    archive: &Archive,
    rules: &crate::rules::RuleSet,
    command: &QuarantineCommand,
) -> AdminReply {
    match command {
        QuarantineCommand::Release { id, rcpts, by } => {
            match pipeline.release(rules, id, rcpts, by).await {
                Ok(queue_id) => AdminReply {
                    ok: true,
                    text: format!("{id}: released, queued as {queue_id}"),
                },
                Err(e) => AdminReply { ok: false, text: e },
            }
        }
        other => crate::archive::admin::execute(archive, other),
    }
}

/// Serves the control socket.
pub async fn serve(path: &Path, context: Arc<Context>) -> io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let context = context.clone();
            // Who asked, from the kernel (SO_PEERCRED), not from what the
            // client says: the name the archive records for a release.
            let asker = match stream.peer_cred() {
                Ok(credentials) => user_name(credentials.uid()),
                Err(_) => "unknown user".to_string(),
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match serde_json::from_str::<Request>(&line) {
                    Ok(mut request) => {
                        if let Request::Quarantine(QuarantineCommand::Release { by, .. }) =
                            &mut request
                        {
                            *by = format!("admin ({asker})");
                        }
                        context.handle(request).await
                    }
                    Err(e) => AdminReply {
                        ok: false,
                        text: format!("bad request: {e}"),
                    },
                };
                let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
                bytes.push(b'\n');
                let _ = write.write_all(&bytes).await;
            });
        }
    }))
}

/// The login name of a user id (`root`), or `uid 1000` when it has none.
pub fn user_name(uid: u32) -> String {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `entry` and `buffer`, both ours and alive
    // for the call; `found` points at `entry` or is null.
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() || entry.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buffer`.
    unsafe { std::ffi::CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// Sends a request to a running server.
pub async fn send(path: &Path, request: &Request) -> io::Result<AdminReply> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_ids_are_named_from_the_password_database() {
        assert_eq!(super::user_name(0), "root");
        assert_eq!(super::user_name(3_999_999_999), "uid 3999999999");
    }
}
