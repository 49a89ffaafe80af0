//! The byte level of one client connection: a read buffer that yields lines or feeds
//! the DATA reader, and a write buffer of replies.
//!
//! Replies are only written when the server is about to wait for input. That one rule
//! gives RFC 2920 pipelining: every command of a batch is answered, in order, in one
//! write.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::data::DataReader;
use crate::reply::Reply;

/// Any byte stream a session can run on (plain TCP now, TLS later).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Room made for each read: small while commands come in, so a thousand idle
/// connections cost little; message data gets bigger reads.
const READ_CHUNK: usize = 4 * 1024;
const DATA_CHUNK: usize = 64 * 1024;

/// One line read from the client.
#[derive(Debug)]
pub enum Line {
    /// A line, its LF included.
    Complete(Vec<u8>),
    /// A line longer than the limit; it was read to its end and dropped.
    TooLong,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    TimedOut,
    /// Message data came slower than the minimum rate.
    TooSlow,
    Io(io::Error),
}

/// Whether the server is under stress, and how long any wait for the client may
/// last then: a wait that began before the stress is cut short too.
pub struct Stress {
    pub signal: tokio::sync::watch::Receiver<bool>,
    pub timeout: Duration,
}

/// How fast message data must come, beyond a first allowance (Postfix's
/// `smtpd_min_data_rate`): after `allowance`, each byte received buys
/// `1 / bytes_per_second` seconds more.
#[derive(Debug, Clone, Copy)]
pub struct DataRate {
    pub allowance: Duration,
    pub bytes_per_second: u64,
}

impl DataRate {
    /// By when the data must have ended, `received` bytes in.
    fn deadline(&self, began: Instant, received: u64) -> Option<Instant> {
        (self.bytes_per_second > 0).then(|| {
            began
                + self.allowance
                + Duration::from_secs_f64(received as f64 / self.bytes_per_second as f64)
        })
    }
}

pub struct Connection {
    stream: Box<dyn Stream>,
    /// Received bytes not yet consumed start at `start`.
    input: Vec<u8>,
    start: usize,
    /// Replies waiting to be written.
    output: Vec<u8>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection is encrypted (implicit TLS or after STARTTLS).
    pub tls: bool,
    stress: Option<Stress>,
}

impl Connection {
    pub fn new(stream: Box<dyn Stream>, peer: SocketAddr, local: SocketAddr) -> Self {
        Connection {
            stream,
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            output: Vec::with_capacity(1024),
            peer,
            local,
            tls: false,
            stress: None,
        }
    }

    /// Cuts every wait for the client short while the server is under stress,
    /// including a wait already going on when the stress begins.
    pub fn watch_stress(&mut self, stress: Stress) {
        self.stress = Some(stress);
    }

    /// Starts TLS on this connection (after `220 Ready to start TLS`). Whatever
    /// the client sent after STARTTLS in plain text is thrown away unread: it must
    /// not be taken for commands of the encrypted session (CVE-2011-0411).
    /// Returns how many bytes were thrown away.
    pub async fn start_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        timeout: Duration,
    ) -> io::Result<usize> {
        self.flush().await?;
        let discarded = self.input.len() - self.start;
        self.input.clear();
        self.start = 0;
        let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.stream, placeholder);
        let tls = tokio::time::timeout(timeout, acceptor.accept(plain))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Box::new(tls);
        self.tls = true;
        Ok(discarded)
    }

    /// Queues a reply; it is sent before the next wait for input or at [`flush`].
    pub fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        self.stream.flush().await
    }

    /// Whether more input is already buffered (the client pipelined).
    pub fn has_buffered_input(&self) -> bool {
        self.start < self.input.len()
    }

    /// Waits up to `timeout` for the client to send something (before the banner,
    /// it should not). True when it did.
    pub async fn wait_input(&mut self, timeout: Duration) -> bool {
        self.input.reserve(READ_CHUNK);
        matches!(
            tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input)).await,
            Ok(Ok(n)) if n > 0
        )
    }

    /// Input received and not yet read.
    pub fn pending(&self) -> &[u8] {
        &self.input[self.start..]
    }

    /// Whether a whole command line is already buffered.
    pub fn has_complete_line(&self) -> bool {
        memchr::memchr(b'\n', &self.input[self.start..]).is_some()
    }

    /// Sends pending replies, then waits for more input, until `deadline`.
    async fn fill(&mut self, deadline: Instant, chunk: usize) -> Result<(), ReadError> {
        self.flush().await.map_err(ReadError::Io)?;
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        // read_buf appends to spare capacity, so a read cancelled by shutdown (or
        // by stress beginning) leaves the buffer as it was.
        self.input.reserve(chunk);
        // Under stress, a wait lasts at most the stress timeout: from its start,
        // or from the stress's if that began during the wait (the loop comes
        // round again then).
        let read = loop {
            let stressed = self
                .stress
                .as_ref()
                .map(|s| (*s.signal.borrow(), s.timeout));
            let until = match stressed {
                Some((true, patience)) => deadline.min(Instant::now() + patience),
                _ => deadline,
            };
            let reading = tokio::time::timeout_at(until, self.stream.read_buf(&mut self.input));
            match (&mut self.stress, stressed) {
                (Some(stress), Some((false, _))) => tokio::select! {
                    read = reading => break read,
                    changed = stress.signal.changed() => {
                        if changed.is_err() {
                            self.stress = None;
                        }
                    }
                },
                _ => break reading.await,
            }
        };
        let n = match read {
            Err(_) => return Err(ReadError::TimedOut),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads one line of at most `limit` octets (LF included). The whole line must
    /// arrive by `deadline`: a client dripping a byte at a time does not keep the
    /// connection by it.
    pub async fn read_line(&mut self, limit: usize, deadline: Instant) -> Result<Line, ReadError> {
        let mut discarding = false;
        loop {
            let pending = &self.input[self.start..];
            if let Some(lf) = memchr::memchr(b'\n', pending) {
                let line = pending[..=lf].to_vec();
                self.start += lf + 1;
                if discarding || line.len() > limit {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if pending.len() > limit {
                // Drop what we have but keep reading to the end of this line, so the
                // rest is not taken for a command.
                discarding = true;
                self.start = self.input.len();
            }
            self.fill(deadline, READ_CHUNK).await?;
        }
    }

    /// Feeds input to the DATA reader until it sees the end of the data. Each
    /// line must arrive whole within `timeout` of the one before it, all of it by
    /// `last` (the session's own end), and the whole at no less than `rate`.
    pub async fn read_data(
        &mut self,
        reader: &mut DataReader,
        timeout: Duration,
        rate: DataRate,
        last: Instant,
    ) -> Result<(), ReadError> {
        let began = Instant::now();
        let mut received: u64 = 0;
        let mut lines = reader.lines();
        let mut line_deadline = (Instant::now() + timeout).min(last);
        loop {
            let pending = &self.input[self.start..];
            if !pending.is_empty() {
                match reader.feed(pending) {
                    Some(used) => {
                        self.start += used;
                        return Ok(());
                    }
                    None => {
                        received += pending.len() as u64;
                        self.start = self.input.len();
                    }
                }
                if reader.lines() != lines {
                    lines = reader.lines();
                    line_deadline = (Instant::now() + timeout).min(last);
                }
            }
            let rate_deadline = rate.deadline(began, received);
            let deadline = rate_deadline.map_or(line_deadline, |d| d.min(line_deadline));
            match self.fill(deadline, DATA_CHUNK).await {
                Err(ReadError::TimedOut) if rate_deadline.is_some_and(|d| d < line_deadline) => {
                    return Err(ReadError::TooSlow);
                }
                other => other?,
            }
        }
    }

    /// Gives back the memory a large message needed, once it is read.
    pub fn shrink(&mut self) {
        if self.input.capacity() > 2 * READ_CHUNK && self.start == self.input.len() {
            self.input = Vec::with_capacity(READ_CHUNK);
            self.start = 0;
        }
    }

    /// Writes pending replies and closes the sending side.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
