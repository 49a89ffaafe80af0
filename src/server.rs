//! Puts the stages together: spool and schedule, delivery workers, recipient
//! validation, the control socket and the SMTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::queue::delivery::Delivery;
use crate::queue::spool::Spool;
use crate::smtp::listener::{ConnectionLimits, Phase, accept_loop};
use crate::smtp::memory::MemoryBudget;
use crate::smtp::session::Shared;
use crate::smtp_client::Target;
use crate::store::Store;

/// A started server.
pub struct Server {
    /// The addresses actually listened on (port 0 in the config becomes a real port).
    pub local_addrs: Vec<SocketAddr>,
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
        let queue = Arc::new(Queue::new(spool, config.queue.flush)?);
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

        let rules = Arc::new(
            crate::rules::RulesHandle::load(&config.rules.path)
                .map_err(|e| anyhow::anyhow!("rules not loaded: {e}"))?,
        );
        tracing::info!(rules = rules.current().rules().len(), dir = %config.rules.path.display(), "rules loaded");
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut background = vec![tokio::spawn(rules.clone().watch(hangup))];
        let dns = Arc::new(crate::dns::Dns::new(&config.dns)?);
        let delivery = Arc::new(Delivery::new(
            config.clone(),
            queue.clone(),
            Some(dns.clone()),
        )?);
        let workers = delivery.spawn_workers(config.queue.delivery_workers);

        let archive = if config.archive.enabled {
            let archive = Arc::new(crate::archive::Archive::open(
                &config.archive,
                store.tree("archive")?,
                &config.server.hostname,
            )?);
            background.push(tokio::spawn(crate::archive::retention_loop(
                archive.clone(),
            )));
            Some(archive)
        } else {
            None
        };
        let reporter = archive.as_ref().and_then(|a| {
            crate::archive::report::Reporter::new(a.clone(), queue.clone(), &config.server.hostname)
        });
        if let Some(reporter) = &reporter {
            background.push(tokio::spawn(reporter.clone().digest_loop()));
        }

        let control_path = queue.spool.control_socket();
        let context = Arc::new(crate::control::Context {
            queue: queue.clone(),
            archive: archive.clone(),
            rules: rules.clone(),
            config: config.clone(),
        });
        let control = match crate::control::serve(&control_path, context).await {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(path = %control_path.display(), error = %e, "no control socket; `mailmoat queue` will not reach this server");
                None
            }
        };

        let (shutdown, shutdown_rx) = watch::channel(Phase::Running);
        let tls = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => Some(crate::smtp::tls::acceptor(cert, key)?),
            _ => None,
        };
        let backend_target = Target::from_backend(
            &config.backend,
            &config.backend.address,
            &config.server.hostname,
        )?;
        let auth =
            crate::policy::auth::Authenticator::new(&config.auth, &backend_target)?.map(Arc::new);
        let limits = ConnectionLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_ip,
        );
        let pipeline = Pipeline::build(
            config.clone(),
            dns.clone(),
            Some(store.tree("recipient-callouts")?),
        )?
        .keeping(queue.clone(), archive, reporter);
        let shared = Arc::new(Shared {
            pipeline: Arc::new(pipeline),
            tls: tls.clone(),
            auth,
            config: config.clone(),
            rules,
            shutdown: shutdown_rx.clone(),
            connections: limits.clone(),
            memory: MemoryBudget::new(config.limits.data_memory.bytes()),
        });
        let mut local_addrs = Vec::new();
        let mut listeners = Vec::new();
        let plain = config.server.listen.iter().map(|a| (a, None));
        let implicit = config.server.listen_tls.iter().map(|a| (a, tls.clone()));
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
                shutdown_rx.clone(),
            )));
        }
        tracing::info!(listen = ?local_addrs, hostname = %config.server.hostname, "mailmoat started");
        Ok(Server {
            local_addrs,
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
