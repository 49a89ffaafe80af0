//! Puts the stages together: spool and schedule, delivery workers, recipient
//! validation, the control socket and the SMTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Setting};
use crate::memory::MemoryBudget;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::queue::delivery::Delivery;
use crate::queue::health::Answering;
use crate::queue::spool::Spool;
use crate::reload::Reloader;
use crate::services::Services;
use crate::smtp::admission::{ConnectionLimits, Phase};
use crate::smtp::listener::accept_loop;
use crate::smtp::session::Shared;
use crate::smtp_client::Target;
use crate::store::Store;

/// Everything the configuration names that is read from files: the TLS
/// certificate and key, the users file, the list files, the recipients files, the
/// backend's CA and the rules. `mailmoat check` loads exactly this, with this
/// code, so a configuration it passes is one `serve` starts with.
pub struct Loaded {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<crate::policy::auth::Authenticator>,
    /// The judging parts, keeping nothing yet.
    pub pipeline: Pipeline,
    pub rules: crate::rules::RulesHandle,
    pub dns: Arc<crate::dns::Dns>,
    /// Where the state that judges clients is shared with other instances.
    pub shared: Arc<crate::shared_state::SharedState>,
}

impl Loaded {
    /// Loads and checks every file; `store` keeps callout answers and the
    /// greylist (none: `check`, which must not take the running server's store).
    pub fn load(config: &Arc<Config>, store: Option<&Store>) -> anyhow::Result<Loaded> {
        Loaded::load_files(config, store).map_err(|e| config.locate(e))
    }

    fn load_files(config: &Arc<Config>, store: Option<&Store>) -> anyhow::Result<Loaded> {
        let tls = crate::smtp::tls::configured(&config.tls)?;
        let backend = Target::from_backend(
            &config.backend,
            &config.backend.address,
            &config.server.hostname,
        )?;
        // `check` (no store) must not count anything: its state is its own.
        let shared = match store {
            Some(_) => crate::shared_state::SharedState::open(&config.shared)
                .context(Setting::new(&["shared", "redis"]))?,
            None => crate::shared_state::SharedState::local(),
        };
        let dns = Arc::new(crate::dns::Dns::new(&config.dns)?);
        let pipeline = Pipeline::build(config.clone(), dns.clone(), store, shared.clone())?;
        let auth = crate::policy::auth::Authenticator::new(
            &config.auth,
            &backend,
            shared.clone(),
            pipeline.recipients.directory(),
        )?;
        // A rule's error names its own file and line.
        let rules = crate::rules::RulesHandle::load(&config.rules.path)
            .map_err(|e| anyhow::anyhow!("rules not loaded: {e}"))?;
        Ok(Loaded {
            tls,
            auth,
            pipeline,
            rules,
            dns,
            shared,
        })
    }
}

/// A started server.
pub struct Server {
    /// The addresses actually listened on (port 0 in the config becomes a real port).
    pub local_addrs: Vec<SocketAddr>,
    /// Where the quarantine's pages are served, when `[web] listen` is set.
    pub web_addr: Option<SocketAddr>,
    pub queue: Arc<Queue>,
    config: Arc<Config>,
    shutdown: watch::Sender<Phase>,
    limits: Arc<ConnectionLimits>,
    listeners: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    /// Rule reloads, archive retention, digests.
    background: Vec<JoinHandle<()>>,
    /// Held for the server's lifetime: one server per spool.
    _lock: std::fs::File,
}

impl Server {
    /// Opens the queue and store, resumes queued mail and starts listening.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let config = Arc::new(config);
        let spool = Spool::open(&config.queue.path)?;
        let lock = spool.try_lock()?.with_context(|| {
            format!(
                "the queue {} is in use by another mailmoat process (lock file {}/lock)",
                config.queue.path.display(),
                config.queue.path.display()
            )
        })?;
        let store = Store::open(&config.store.path)?;
        let memory = MemoryBudget::new(config.limits.data_memory.bytes());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let queue = open_queue(&config, spool, metrics.clone(), memory.clone())?;

        let loaded = Loaded::load(&config, Some(&store))?;
        let rules = Arc::new(loaded.rules);
        tracing::info!(rules = rules.current().rules().len(), dir = %config.rules.path.display(), "rules loaded");
        let tls = crate::smtp::tls::Certificates::new(loaded.tls);
        let reloader = Arc::new(Reloader {
            running: config.clone(),
            rules: rules.clone(),
            tls: tls.clone(),
            relay: loaded.pipeline.relay_networks.clone(),
            metrics: metrics.clone(),
        });
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut background = vec![
            tokio::spawn(rules.clone().watch({
                let metrics = metrics.clone();
                move |ok| metrics.rules_reloaded(ok)
            })),
            tokio::spawn(reloader.clone().on_hangup(hangup)),
            tokio::spawn(loaded.pipeline.greylist.clone().purge_loop()),
        ];
        let dns = loaded.dns;
        dns.count_into(metrics.clone());
        loaded.shared.count_into(metrics.clone());
        loaded.shared.start().await;
        let delivery = Arc::new(Delivery::new(
            config.clone(),
            queue.clone(),
            Some(dns.clone()),
        )?);
        let workers = delivery.spawn_workers(config.queue.delivery_workers);
        let services = Arc::new(keeping_services(
            &config,
            &store,
            metrics.clone(),
            queue.clone(),
            loaded.shared.clone(),
            &mut background,
        )?);
        let greylist = loaded.pipeline.greylist.clone();
        let pipeline = Arc::new(loaded.pipeline.keeping(services.clone()));
        let web = match (&services.archive, config.web.enabled()) {
            (Some(archive), true) => Some(crate::web::Web::new(
                config.clone(),
                archive.clone(),
                pipeline.clone(),
                rules.clone(),
                queue.clone(),
                &store,
                loaded.shared.clone(),
            )?),
            _ => None,
        };
        let mut web_addr = None;
        if let Some(web) = &web {
            let (address, task) = crate::web::serve(web.clone()).await?;
            web_addr = Some(address);
            background.push(task);
            if config.digest.enabled {
                background.push(tokio::spawn(web.digests().run()));
            }
        }
        let control = start_control(crate::control::Context {
            digests: web.as_ref().map(|w| w.digests()),
            queue: queue.clone(),
            archive: services.archive.clone(),
            pipeline: pipeline.clone(),
            metrics: metrics.clone(),
            rules: rules.clone(),
            config: config.clone(),
            reloader,
            greylist,
            dns: dns.clone(),
            shared: loaded.shared.clone(),
            started: std::time::Instant::now(),
        })
        .await;

        let (shutdown, shutdown_rx) = watch::channel(Phase::Running);
        let limits = ConnectionLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_ip,
            config.limits.stress_threshold,
        );
        let shared = Arc::new(Shared {
            pipeline,
            tls: tls.clone(),
            auth: loaded.auth.map(Arc::new),
            config: config.clone(),
            rules,
            shutdown: shutdown_rx.clone(),
            connections: limits.clone(),
            memory,
        });
        let (local_addrs, listeners) = listen(&config, &shared, &limits, &shutdown_rx).await?;
        if let Some(address) = config.metrics.listen {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot serve metrics on {address}"))?;
            let health = Arc::new(ServerHealth {
                queue: queue.clone(),
                dns: dns.clone(),
                directory: shared.pipeline.recipients.directory().cloned(),
                backend: config.backend.address.clone(),
                phase: shutdown_rx.clone(),
            });
            background.push(tokio::spawn(crate::metrics::serve(
                listener, metrics, health,
            )));
            tracing::info!(listen = %address, "metrics served at /metrics and /healthz");
        }
        tracing::info!(listen = %crate::logging::list(&local_addrs), hostname = %config.server.hostname, "mailmoat started");
        Ok(Server {
            local_addrs,
            web_addr,
            queue,
            config,
            shutdown,
            limits,
            listeners,
            workers,
            control,
            background,
            _lock: lock,
        })
    }

    /// Stops accepting, lets sessions finish what they are doing (a DATA in progress
    /// is read and queued) within the grace period; past it, tells every session
    /// still open `421 4.3.2` and closes it; then stops delivery.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(Phase::Draining);
        for listener in &self.listeners {
            listener.abort();
        }
        let grace = self.config.server.shutdown_grace;
        let all = u32::try_from(self.limits.max_total).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.limits.total.acquire_many(all))
            .await
            .is_err()
        {
            let open = self.limits.open();
            tracing::warn!(
                sessions = open,
                "sessions still open after the shutdown grace period; closing them"
            );
            let _ = self.shutdown.send(Phase::Closing);
            // Long enough for each to write its 421.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.limits.total.acquire_many(all),
            )
            .await;
        }
        for task in &self.background {
            task.abort();
        }
        self.queue.scheduler.stop();
        for worker in self.workers {
            let _ = tokio::time::timeout(grace, worker).await;
        }
        if let Some(control) = self.control {
            control.abort();
            let _ = std::fs::remove_file(self.queue.spool.control_socket());
        }
        tracing::info!("mailmoat stopped");
    }
}

/// The queue, with what was left in the spool loaded and logged.
fn open_queue(
    config: &Config,
    spool: Spool,
    metrics: Arc<crate::metrics::Metrics>,
    memory: Arc<MemoryBudget>,
) -> anyhow::Result<Arc<Queue>> {
    let queue = Arc::new(Queue::new(spool, config.queue.flush, metrics)?.with_memory(memory));
    let recovery = queue.load()?;
    tracing::info!(
        queue = %config.queue.path.display(),
        active = queue.spool.ids(crate::queue::spool::QueueState::Active)?.len(),
        deferred = queue.spool.ids(crate::queue::spool::QueueState::Deferred)?.len(),
        hold = queue.spool.ids(crate::queue::spool::QueueState::Hold)?.len(),
        incoming_removed = recovery.incoming_removed,
        delivered_removed = recovery.delivered_removed,
        reunited = recovery.reunited,
        corrupt = recovery.corrupt,
        "queue loaded"
    );
    Ok(queue)
}

/// Where accepted and refused mail goes: the queue, the archive (with its
/// retention and its reports to the backup mailbox, running in `background`).
fn keeping_services(
    config: &Config,
    store: &Store,
    metrics: Arc<crate::metrics::Metrics>,
    queue: Arc<Queue>,
    shared: Arc<crate::shared_state::SharedState>,
    background: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Services> {
    let archive = if config.archive.enabled {
        let archive = Arc::new(crate::archive::Archive::open(
            &config.archive,
            store,
            &config.server.hostname,
            config.web.listen.is_some(),
        )?);
        background.push(tokio::spawn(crate::archive::retention_loop(
            archive.clone(),
        )));
        Some(archive)
    } else {
        None
    };
    let reporter = archive.as_ref().and_then(|a| {
        crate::archive::report::Reporter::new(
            a.clone(),
            queue.clone(),
            metrics.clone(),
            &config.server.hostname,
        )
    });
    if let Some(reporter) = &reporter {
        background.push(tokio::spawn(reporter.clone().digest_loop()));
    }
    Ok(Services {
        metrics,
        queue,
        archive,
        reporter,
        shared,
    })
}

/// The control socket `mailmoat queue|quarantine|reload|status` reach.
async fn start_control(context: crate::control::Context) -> Option<JoinHandle<()>> {
    let path = context.queue.spool.control_socket();
    match crate::control::serve(&path, Arc::new(context)).await {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no control socket; `mailmoat queue` will not reach this server");
            None
        }
    }
}

/// Listens on every address of `[server] listen` and `listen_tls`.
async fn listen(
    config: &Config,
    shared: &Arc<Shared>,
    limits: &Arc<ConnectionLimits>,
    shutdown: &watch::Receiver<Phase>,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
    let mut local_addrs = Vec::new();
    let mut listeners = Vec::new();
    let plain = config.server.listen.iter().map(|a| (a, false));
    let implicit = config.server.listen_tls.iter().map(|a| (a, true));
    for (address, implicit_tls) in plain.chain(implicit) {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        local_addrs.push(listener.local_addr()?);
        listeners.push(tokio::spawn(accept_loop(
            listener,
            implicit_tls,
            shared.clone(),
            limits.clone(),
            shutdown.clone(),
        )));
    }
    Ok((local_addrs, listeners))
}

/// What `/healthz` looks at: the listeners accept while the server runs, and the
/// spool takes a write.
struct ServerHealth {
    queue: Arc<Queue>,
    dns: Arc<crate::dns::Dns>,
    directory: Option<Arc<crate::directory::Directory>>,
    backend: String,
    phase: watch::Receiver<Phase>,
}

impl crate::metrics::HealthCheck for ServerHealth {
    fn problem(&self) -> Option<String> {
        if *self.phase.borrow() != Phase::Running {
            return Some("shutting down: no new connections are taken".into());
        }
        self.queue.spool.probe_write().err().map(|e| {
            format!(
                "the spool {} cannot be written: {e}",
                self.queue.spool.root().display()
            )
        })
    }

    fn refresh(&self, metrics: &crate::metrics::Metrics) {
        metrics.queue(&self.queue.census());
        metrics.dns_engine(&self.dns.figures().totals());
        if let Some(directory) = &self.directory {
            metrics.directory(&directory.totals());
        }
        // Unknown (nothing sent yet) counts as up: only a failure says down.
        let answering = self.queue.health.answering(&self.backend);
        metrics.backend(!matches!(answering, Answering::No { .. }));
    }
}
