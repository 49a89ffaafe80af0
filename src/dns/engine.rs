//! The lookups themselves, made so that a resolver that loses queries cannot
//! stall the checks:
//!
//! - **one query per name at a time**: lookups of the same name and type made
//!   while one is in flight wait for it and share its answer, or its failure;
//! - **a cache**: answers kept by their TTL (at least `[dns] positive_ttl_min`),
//!   negative answers (NXDOMAIN, no
//!   such record) by their SOA's minimum as RFC 2308 says, clamped to
//!   `[dns] negative_ttl_min`..`negative_ttl_max` (the floor when the answer
//!   carries no SOA), at most `cache_entries` of them;
//! - **short attempts inside a budget**: an attempt waits as long as its server
//!   usually takes to answer (RFC 6298's estimate from its answers so far, a
//!   quarter of `attempt_timeout` before the first; at least `MIN_ATTEMPT`, at
//!   most `attempt_timeout`; from the third attempt of a lookup on, doubled
//!   each time), then the next goes to the next server while
//!   the earlier ones may still answer: a lost query costs a fast resolver
//!   milliseconds, not the whole `attempt_timeout`. To a server that loses
//!   more than one query in ten lately each attempt goes as two copies at
//!   once. A truncated answer is asked
//!   again over TCP; a lookup that spends the `[dns] timeout` budget is a
//!   temporary failure, never longer;
//! - **prefetch**: a cached answer used in the last tenth of its time is asked
//!   again at once in the background (as unbound's `prefetch`), so a name in
//!   steady use never expires under the lookups that need it;
//! - **stale answers** (RFC 8767): an answer past its time, by at most
//!   `STALE_LIMIT`, is used while it is asked again in the background, and
//!   whenever the servers do not answer: a lost refresh delays no check, and a
//!   dead resolver refuses no mail whose names were known an hour ago.
//!
//! Counted for `mailmoat status` and the metrics: lookups, cache hits, queries
//! sent, answers, timeouts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long past its TTL an answer may still serve while it is asked again.
const STALE_LIMIT: Duration = Duration::from_secs(3600);

/// The shortest wait for one attempt, however fast the server answered before:
/// unbound's floor for its retransmission timer.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// What a lookup gives: the server's answer (NOERROR, with or without records,
/// or NXDOMAIN), or why there is none.
pub type Answer = Result<Arc<Message>, Failure>;

/// Why a lookup has no answer: all temporary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The budget ran out with no usable answer (lost queries, dead servers).
    Timeout,
    /// The servers answered SERVFAIL, REFUSED or nonsense.
    Server(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("no answer within the DNS budget"),
            Failure::Server(why) => f.write_str(why),
        }
    }
}

/// The settings the engine runs with (`[dns]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<SocketAddr>,
    pub budget: Duration,
    pub attempt_timeout: Duration,
    pub positive_ttl_min: Duration,
    pub negative_ttl_min: Duration,
    pub negative_ttl_max: Duration,
    pub cache_entries: usize,
}

/// What the engine has done, counted since it started.
#[derive(Debug, Default)]
pub struct Counts {
    pub lookups: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Lookups that waited for one already in flight.
    pub joined: AtomicU64,
    /// Query packets sent (UDP and TCP).
    pub queries: AtomicU64,
    pub answers: AtomicU64,
    /// Attempts that got no answer in their time.
    pub timeouts: AtomicU64,
    /// Lookups that ended without an answer.
    pub failures: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub lookups: u64,
    pub cache_hits: u64,
    pub joined: u64,
    pub queries: u64,
    pub answers: u64,
    pub timeouts: u64,
    pub failures: u64,
}

impl Figures {
    /// Each count with its name, for the metrics.
    pub fn totals(&self) -> [(&'static str, u64); 7] {
        [
            ("lookups", self.lookups),
            ("cache_hits", self.cache_hits),
            ("joined", self.joined),
            ("queries", self.queries),
            ("answers", self.answers),
            ("timeouts", self.timeouts),
            ("failures", self.failures),
        ]
    }

    /// The share of queries that got no answer, in percent.
    pub fn lost_percent(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            100.0 * self.queries.saturating_sub(self.answers) as f64 / self.queries as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Lower case, fully qualified.
    name: String,
    kind: RecordType,
}

/// How fast one server answers: RFC 6298's smoothed round trip and its
/// variation.
#[derive(Debug, Clone, Copy)]
struct RoundTrip {
    smoothed: Duration,
    variation: Duration,
}

impl RoundTrip {
    fn first(sample: Duration) -> RoundTrip {
        RoundTrip {
            smoothed: sample,
            variation: sample / 2,
        }
    }

    fn with(self, sample: Duration) -> RoundTrip {
        let difference = self.smoothed.abs_diff(sample);
        RoundTrip {
            smoothed: self.smoothed * 7 / 8 + sample / 8,
            variation: self.variation * 3 / 4 + difference / 4,
        }
    }

    fn timeout(self) -> Duration {
        self.smoothed + 4 * self.variation
    }
}

struct Cached {
    answer: Arc<Message>,
    stored: Instant,
    expires: Instant,
}

pub struct Engine {
    settings: Settings,
    cache: Mutex<HashMap<Key, Cached>>,
    in_flight: Mutex<HashMap<Key, Shared<BoxFuture<'static, Answer>>>>,
    /// Where the next lookup's first attempt goes: the servers take turns.
    next_server: AtomicUsize,
    round_trips: Mutex<HashMap<SocketAddr, RoundTrip>>,
    /// The share of each server's attempts gone unanswered lately (a moving
    /// average, one eighth per attempt).
    losses: Mutex<HashMap<SocketAddr, f32>>,
    pub counts: Counts,
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine {
            settings,
            cache: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            next_server: AtomicUsize::new(0),
            round_trips: Mutex::new(HashMap::new()),
            losses: Mutex::new(HashMap::new()),
            counts: Counts::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn figures(&self) -> Figures {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Figures {
            lookups: get(&c.lookups),
            cache_hits: get(&c.cache_hits),
            joined: get(&c.joined),
            queries: get(&c.queries),
            answers: get(&c.answers),
            timeouts: get(&c.timeouts),
            failures: get(&c.failures),
        }
    }

    /// Looks `name` up for records of `kind`: from the cache, with a lookup in
    /// flight, or by asking the servers.
    pub async fn lookup(self: &Arc<Self>, name: &Name, kind: RecordType) -> Answer {
        self.counts.lookups.fetch_add(1, Ordering::Relaxed);
        let key = Key {
            name: name.to_lowercase().to_ascii(),
            kind,
        };
        if let Some((answer, refresh)) = self.cached(&key) {
            self.counts.cache_hits.fetch_add(1, Ordering::Relaxed);
            if refresh && let (asking, true) = self.ask(key) {
                // Prefetch, as unbound does: a name still in use is asked
                // again before it expires (or once it has, while the stale
                // answer serves), so no lookup waits on its refresh.
                tokio::spawn(asking);
            }
            return Ok(answer);
        }
        let (asking, started) = self.ask(key);
        if !started {
            self.counts.joined.fetch_add(1, Ordering::Relaxed);
        }
        asking.await
    }

    /// The servers' answer for `key`: the lookup in flight, or a new one (then
    /// true: the caller started it).
    fn ask(self: &Arc<Self>, key: Key) -> (Shared<BoxFuture<'static, Answer>>, bool) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match in_flight.get(&key) {
                Some(shared) => (shared.clone(), false),
                None => {
                    let engine = self.clone();
                    let asked = key.clone();
                    let shared = async move {
                        let answer = engine.resolve(&asked).await;
                        engine
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&asked);
                        answer
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(key, shared.clone());
                    (shared, true)
                }
            }
        }
    }

    /// A cached answer, its TTLs lowered by the time it has been kept, and
    /// whether it is to be asked again now: in the last tenth of its time, or
    /// past it (stale, then with TTLs of one second).
    fn cached(&self, key: &Key) -> Option<(Arc<Message>, bool)> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(key)?;
        let now = Instant::now();
        if entry.expires + STALE_LIMIT <= now {
            cache.remove(key);
            return None;
        }
        let kept = entry.expires.duration_since(entry.stored);
        let refresh = now.duration_since(entry.stored) >= kept * 9 / 10;
        let aged = now.duration_since(entry.stored).as_secs() as u32;
        if aged == 0 {
            return Some((entry.answer.clone(), refresh));
        }
        let mut answer = (*entry.answer).clone();
        for record in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(aged).max(1);
        }
        Some((Arc::new(answer), refresh))
    }

    /// How long an answer may be kept: by its records' TTL, or for a negative
    /// answer by its SOA (RFC 2308), within the configured bounds.
    fn keep_for(&self, answer: &Message) -> Option<Duration> {
        let negative =
            answer.metadata.response_code == ResponseCode::NXDomain || answer.answers.is_empty();
        let seconds = if negative {
            let from_soa = answer.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(Duration::from_secs(u64::from(r.ttl.min(soa.minimum)))),
                _ => None,
            });
            from_soa.unwrap_or(self.settings.negative_ttl_min).clamp(
                self.settings.negative_ttl_min,
                self.settings.negative_ttl_max,
            )
        } else {
            let ttl = answer.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
            Duration::from_secs(u64::from(ttl).min(86_400)).max(self.settings.positive_ttl_min)
        };
        (!seconds.is_zero()).then_some(seconds)
    }

    fn store(&self, key: &Key, answer: &Arc<Message>) {
        let Some(keep) = self.keep_for(answer) else {
            return;
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.settings.cache_entries {
            cache.retain(|_, entry| entry.expires + STALE_LIMIT > now);
            if cache.len() >= self.settings.cache_entries {
                // Still full: the half that expires soonest goes.
                let mut expiries: Vec<Instant> = cache.values().map(|e| e.expires).collect();
                expiries.sort_unstable();
                let cut = expiries[expiries.len() / 2];
                cache.retain(|_, entry| entry.expires > cut);
            }
        }
        cache.insert(
            key.clone(),
            Cached {
                answer: answer.clone(),
                stored: now,
                expires: now + keep,
            },
        );
    }

    /// How long an attempt to `server` waits when `unanswered` attempts of the
    /// same lookup went unanswered before it.
    /// A server not heard from yet gets a quarter of `attempt_timeout`, then
    /// twice that: at a start every session waits on the same first names, and
    /// a lost query there should not cost them the whole attempt.
    fn attempt_wait(&self, server: SocketAddr, unanswered: usize) -> Duration {
        let most = self.settings.attempt_timeout;
        let usual = self
            .round_trips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
            .map_or(most / 4, |rtt| rtt.timeout());
        // The second attempt waits as long as the first (a query lost on the
        // way is the usual cause, not a slow server); later ones twice as long
        // each, so a server in trouble is not flooded.
        let backoff = 2u32.saturating_pow(unanswered.saturating_sub(1).min(16) as u32);
        let wait = usual.max(MIN_ATTEMPT) * backoff;
        wait.min(most)
    }

    /// How many copies of a query go to `server` at once: two while it loses
    /// more than one query in ten lately (both lost is then the exception a
    /// retry covers), else one.
    fn copies(&self, server: SocketAddr) -> usize {
        let lossy = self
            .losses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
            .is_some_and(|share| *share > 0.1);
        if lossy { 2 } else { 1 }
    }

    fn count_loss(&self, server: SocketAddr, lost: bool) {
        let mut losses = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        let share = losses.entry(server).or_insert(0.0);
        *share = *share * 7.0 / 8.0 + if lost { 1.0 / 8.0 } else { 0.0 };
    }

    fn answered_in(&self, server: SocketAddr, took: Duration) {
        self.count_loss(server, false);
        let mut round_trips = self.round_trips.lock().unwrap_or_else(|p| p.into_inner());
        let next = match round_trips.get(&server) {
            Some(rtt) => rtt.with(took),
            None => RoundTrip::first(took),
        };
        round_trips.insert(server, next);
    }

    /// Asks the servers: an attempt, each to the next server, whenever the one
    /// before has waited its time (`attempt_wait`), earlier ones still
    /// listening, until an answer or the budget's end.
    async fn resolve(&self, key: &Key) -> Answer {
        let servers = &self.settings.servers;
        if servers.is_empty() {
            self.counts.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::Server("no name servers configured".into()));
        }
        let deadline = tokio::time::Instant::now() + self.settings.budget;
        let first = self.next_server.fetch_add(1, Ordering::Relaxed);
        let mut attempts = FuturesUnordered::new();
        let mut sent = 0usize;
        let mut failure = Failure::Timeout;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let server = servers[(first + sent) % servers.len()];
            let unanswered = sent;
            for _ in 0..self.copies(server) {
                attempts.push(async move {
                    let started = tokio::time::Instant::now();
                    (server, started, self.attempt(server, key).await)
                });
            }
            sent += 1;
            // Wait for an answer until the next attempt is due. When is looked
            // at again every MIN_ATTEMPT: at a cold start the first answers of
            // other lookups tell how fast the server is, and an attempt lost
            // before any did need not wait the whole attempt_timeout.
            loop {
                let next = (now + self.attempt_wait(server, unanswered)).min(deadline);
                let look_again = (tokio::time::Instant::now() + MIN_ATTEMPT).min(next);
                let done = tokio::select! {
                    done = attempts.next(), if !attempts.is_empty() => done,
                    () = tokio::time::sleep_until(look_again) => {
                        if look_again < next {
                            continue;
                        }
                        if !attempts.is_empty() {
                            self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                            self.count_loss(server, true);
                        }
                        break;
                    }
                };
                match done.map(|(server, started, result)| {
                    if result.is_ok() {
                        // Each attempt has its own socket and id: the answer is
                        // to this attempt, so its time is a true sample (Karn).
                        self.answered_in(server, started.elapsed());
                    }
                    result
                }) {
                    Some(Ok(answer)) => {
                        let answer = Arc::new(answer);
                        self.store(key, &answer);
                        return Ok(answer);
                    }
                    // A server that refuses or fails: in the first round each
                    // next server is asked at once; after that, at the next
                    // attempt's time, so failing servers are not flooded.
                    Some(Err(why)) => {
                        failure = Failure::Server(why);
                        if attempts.is_empty() && sent < servers.len() {
                            break;
                        }
                    }
                    // Nothing in flight: wait for the next attempt's time.
                    None => {
                        tokio::time::sleep_until(next).await;
                        break;
                    }
                }
            }
        }
        self.counts.failures.fetch_add(1, Ordering::Relaxed);
        Err(failure)
    }

    /// One query to one server (over TCP again when the UDP answer is
    /// truncated). An error names what the server said.
    async fn attempt(&self, server: SocketAddr, key: &Key) -> Result<Message, String> {
        let name = Name::from_ascii(&key.name).map_err(|e| format!("bad name: {e}"))?;
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name, key.kind));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        query.edns = Some(edns);
        let id = query.metadata.id;
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let answer = self.over_udp(server, &bytes, id, key).await?;
        let answer = if answer.metadata.truncation {
            self.over_tcp(server, &bytes, id, key).await?
        } else {
            answer
        };
        match answer.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
            code => Err(format!("{server} answered {code}")),
        }
    }

    async fn over_udp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        id: u16,
        key: &Key,
    ) -> Result<Message, String> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        };
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| e.to_string())?;
        socket.connect(server).await.map_err(|e| e.to_string())?;
        socket.send(bytes).await.map_err(|e| e.to_string())?;
        self.counts.queries.fetch_add(1, Ordering::Relaxed);
        let mut buffer = vec![0u8; 65535];
        loop {
            let n = socket.recv(&mut buffer).await.map_err(|e| e.to_string())?;
            // Anything else on this port is not the answer (RFC 5452): ignored.
            if let Ok(answer) = Message::from_vec(&buffer[..n])
                && answers(&answer, id, key)
            {
                self.counts.answers.fetch_add(1, Ordering::Relaxed);
                return Ok(answer);
            }
        }
    }

    async fn over_tcp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        id: u16,
        key: &Key,
    ) -> Result<Message, String> {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.map_err(|e| e.to_string())?;
        self.counts.queries.fetch_add(1, Ordering::Relaxed);
        let len = stream.read_u16().await.map_err(|e| e.to_string())? as usize;
        let mut buffer = vec![0u8; len];
        stream
            .read_exact(&mut buffer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = Message::from_vec(&buffer).map_err(|e| e.to_string())?;
        if !answers(&answer, id, key) {
            return Err(format!("{server} answered another question over TCP"));
        }
        self.counts.answers.fetch_add(1, Ordering::Relaxed);
        Ok(answer)
    }
}

/// Whether a message answers our query: our id, a response, our question.
fn answers(message: &Message, id: u16, key: &Key) -> bool {
    message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && message.metadata.op_code == OpCode::Query
        && message.queries.first().is_some_and(|q| {
            q.query_type() == key.kind
                && q.query_class() == DNSClass::IN
                && q.name().to_lowercase().to_ascii() == key.name
        })
}
