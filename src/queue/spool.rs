//! The spool: the queue on disk. One message file (`ID.msg`, the bytes the next hop
//! receives) and one envelope file (`ID.env`) per message, in one folder per state.
//!
//! Every write is flushed (file, then folder) and every state change is an atomic
//! rename, as in Postfix, so a crash at any point leaves each message either wholly
//! in one state or recoverable by [`Spool::recover`]. A message exists in a state
//! when its envelope file is in that state's folder: the envelope moves last.
//!
//! One file on purpose: the write order (message, envelope, flush, rename), the
//! delivered journal and the recovery that relies on both are one protocol; read
//! apart, each piece looks safe while the whole is not. Its tests live in
//! `spool/tests.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::envelope::Envelope;
pub use crate::config::FlushMode;

/// The folders of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Being written; never acknowledged to the client. Emptied at start.
    Incoming,
    /// New or released mail, to be delivered now.
    Active,
    /// Waiting for the next retry after a temporary failure.
    Deferred,
    /// Kept back by the administrator until released.
    Hold,
    /// Files that could not be read or paired; kept for the administrator.
    Corrupt,
}

impl QueueState {
    /// States that hold mail still to be delivered or released.
    pub const QUEUED: [QueueState; 3] =
        [QueueState::Active, QueueState::Deferred, QueueState::Hold];

    pub fn folder(self) -> &'static str {
        match self {
            QueueState::Incoming => "incoming",
            QueueState::Active => "active",
            QueueState::Deferred => "deferred",
            QueueState::Hold => "hold",
            QueueState::Corrupt => "corrupt",
        }
    }
}

impl std::fmt::Display for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.folder())
    }
}

const ALL_STATES: [QueueState; 5] = [
    QueueState::Incoming,
    QueueState::Active,
    QueueState::Deferred,
    QueueState::Hold,
    QueueState::Corrupt,
];

/// The spool folder and the operations on it. All of them block: call them from
/// a blocking context (`spawn_blocking`) in async code.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// `delivered.log`, opened on first use: messages delivered whose files may
    /// still be there (see [`Spool::journal_delivered`]).
    journal: Mutex<Journal>,
    /// Names of files in `spare/`: removed messages' files, kept to be rewritten
    /// for new messages. ext4 slows down badly under a churn of creating and
    /// deleting files (each new inode is checked against every recently deleted
    /// one), so the spool recycles files instead.
    spares: Mutex<SpareFiles>,
}

/// The journal of delivered messages and how far its removals have got.
#[derive(Debug, Default)]
struct Journal {
    file: Option<File>,
    /// Entries written since it was last emptied.
    written: u64,
    /// Of those, messages whose files are gone.
    removed: u64,
    bytes: u64,
    emptied: Option<std::time::Instant>,
}

/// The journal of delivered messages, in the spool folder.
const JOURNAL: &str = "delivered.log";

/// The files in `spare/`, and the disk space they hold.
#[derive(Debug, Default)]
struct SpareFiles {
    names: Vec<String>,
    bytes: u64,
}

/// What `spare/` may hold; removals beyond it delete. Small, since spare files hold
/// disk space that no message uses.
const MAX_SPARES: usize = 1024;
const MAX_SPARE_BYTES: u64 = 16 * 1024 * 1024;
/// Larger files are deleted, not kept: rewriting a big file saves little.
const MAX_SPARE_FILE: u64 = 256 * 1024;
const SPARE: &str = "spare";

/// What [`Spool::recover`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged files removed from `incoming`.
    pub incoming_removed: usize,
    /// Delivered messages (by the journal) whose files a crash left behind.
    pub delivered_removed: usize,
    /// Messages whose two files were in different folders, reunited.
    pub reunited: usize,
    /// Unpaired files moved to `corrupt`.
    pub corrupt: usize,
}

static SEQUENCE: AtomicU16 = AtomicU16::new(0);

/// A new queue id: the arrival time in microseconds and a sequence number, in
/// upper-case hex, so ids sort by arrival and never repeat within one process.
pub fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{micros:013X}{seq:04X}")
}

/// When a message arrived (seconds since the epoch), from its id.
pub fn arrival_of(id: &str) -> Option<u64> {
    let micros = u128::from_str_radix(id.get(..13)?, 16).ok()?;
    Some((micros / 1_000_000) as u64)
}

/// Queue ids are hex; anything else (a path, say) is refused before touching files.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Spool {
    /// Opens the spool, creating its folders if needed.
    pub fn open(root: &Path) -> io::Result<Spool> {
        for state in ALL_STATES {
            fs::create_dir_all(root.join(state.folder())).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", root.join(state.folder()).display()),
                )
            })?;
        }
        fs::create_dir_all(root.join(SPARE))?;
        let mut spares = SpareFiles::default();
        for entry in fs::read_dir(root.join(SPARE))? {
            let entry = entry?;
            let size = entry.metadata()?.len();
            if let Ok(name) = entry.file_name().into_string() {
                spares.names.push(name);
                spares.bytes += size;
            }
        }
        Ok(Spool {
            root: root.to_path_buf(),
            journal: Mutex::new(Journal::default()),
            spares: Mutex::new(spares),
        })
    }

    /// Records that these messages were delivered, before their files go: a
    /// crash before the removal then removes them at the start instead of
    /// delivering them again (and never takes a delivered message for a corrupt
    /// one). Not flushed here: the commit thread flushes it with its batch.
    pub fn journal_delivered(&self, entries: &[(QueueState, String)]) -> io::Result<()> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if journal.file.is_none() {
            journal.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.root.join(JOURNAL))?,
            );
        }
        let mut text = String::with_capacity(entries.len() * 32);
        for (state, id) in entries {
            text.push_str(state.folder());
            text.push(' ');
            text.push_str(id);
            text.push('\n');
        }
        if let Some(file) = journal.file.as_mut() {
            file.write_all(text.as_bytes())?;
        }
        journal.written += entries.len() as u64;
        journal.bytes += text.len() as u64;
        Ok(())
    }

    /// Flushes the journal on its own (for `flush = "fsync"`).
    pub fn sync_journal(&self) -> io::Result<()> {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        match &journal.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    /// One journalled message's files are gone. When all are, and the journal
    /// has grown or has not been emptied for a while, the removals are flushed
    /// and the journal emptied.
    pub fn journalled_removed(&self) -> io::Result<()> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal.removed += 1;
        let caught_up = journal.removed >= journal.written;
        let due = journal.bytes > 256 * 1024
            || journal
                .emptied
                .is_none_or(|at| at.elapsed() > std::time::Duration::from_secs(5));
        if caught_up && due {
            syncfs(&self.root)?;
            if let Some(file) = journal.file.as_mut() {
                file.set_len(0)?;
                file.sync_data()?;
            }
            journal.written = 0;
            journal.removed = 0;
            journal.bytes = 0;
            journal.emptied = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// At start: removes what the journal says was delivered, then empties it.
    /// Returns how many messages it removed.
    fn replay_journal(&self) -> io::Result<usize> {
        let path = self.root.join(JOURNAL);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for line in text.lines() {
            let Some((_, id)) = line.split_once(' ') else {
                continue;
            };
            if !valid_id(id) {
                continue;
            }
            let mut found = false;
            for state in QueueState::QUEUED {
                for ext in ["env", "msg"] {
                    match fs::remove_file(self.file(state, id, ext)) {
                        Ok(()) => found = true,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            removed += usize::from(found);
        }
        for state in QueueState::QUEUED {
            sync_folder(&self.folder(state))?;
        }
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)?
            .sync_all()?;
        Ok(removed)
    }

    /// Opens an existing spool without creating anything.
    pub fn existing(root: &Path) -> io::Result<Spool> {
        if !root.join(QueueState::Active.folder()).is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "there is no queue at {} (has mailmoat run with this configuration?)",
                    root.display()
                ),
            ));
        }
        Ok(Spool {
            root: root.to_path_buf(),
            journal: Mutex::new(Journal::default()),
            spares: Mutex::new(SpareFiles::default()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the spool's lock file: one server (or offline queue command) at a time.
    /// `Ok(None)` means another process holds it.
    pub fn try_lock(&self) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The path of the control socket of a running server.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    fn file(&self, state: QueueState, id: &str, ext: &str) -> PathBuf {
        self.root.join(state.folder()).join(format!("{id}.{ext}"))
    }

    fn folder(&self, state: QueueState) -> PathBuf {
        self.root.join(state.folder())
    }

    /// Makes new messages durable in their state (`active`, or `hold` for
    /// quarantine), as one batch (group commit): every message is written to
    /// `incoming` and renamed into its folder, then one flush
    /// makes the whole batch stable. For each message, `Ok` means its message and
    /// envelope are on stable storage and the client may be told `250`.
    ///
    /// A crash before the flush can leave a message in `active` that was never
    /// acknowledged and whose files may be incomplete; [`recover`] checks every
    /// envelope against its message's size and moves such leftovers to `corrupt`.
    pub fn commit_batch(
        &self,
        batch: &[(&Envelope, &[u8], QueueState)],
        flush: FlushMode,
    ) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(batch.len());
        let mut written: Vec<File> = Vec::with_capacity(batch.len() * 2);
        for (envelope, message, state) in batch {
            let id = &envelope.id;
            let result = self
                .write_file(&self.file(QueueState::Incoming, id, "msg"), message)
                .and_then(|msg| {
                    let env = self.write_file(
                        &self.file(QueueState::Incoming, id, "env"),
                        envelope.to_file_text().as_bytes(),
                    )?;
                    self.publish(id, *state)?;
                    written.extend([msg, env]);
                    Ok(())
                });
            results.push(result);
        }
        let flushed = match flush {
            FlushMode::Syncfs => syncfs(&self.root),
            FlushMode::Fsync => written.iter().try_for_each(File::sync_data).and_then(|()| {
                let mut folders: Vec<QueueState> =
                    batch.iter().map(|(_, _, state)| *state).collect();
                folders.dedup();
                folders
                    .into_iter()
                    .try_for_each(|state| sync_folder(&self.folder(state)))
            }),
        };
        drop(written);
        if let Err(e) = flushed {
            fail_all(&mut results, &e);
        }
        for ((envelope, _, _), result) in batch.iter().zip(&results) {
            if result.is_err() {
                self.discard(&envelope.id);
            }
        }
        results
    }

    /// One message, as [`commit_batch`] does it.
    pub fn commit(&self, envelope: &Envelope, message: &[u8]) -> io::Result<()> {
        self.commit_batch(&[(envelope, message, QueueState::Active)], FlushMode::Fsync)
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Moves a written message from `incoming` to its state, envelope last.
    fn publish(&self, id: &str, state: QueueState) -> io::Result<()> {
        fs::rename(
            self.file(QueueState::Incoming, id, "msg"),
            self.file(state, id, "msg"),
        )?;
        fs::rename(
            self.file(QueueState::Incoming, id, "env"),
            self.file(state, id, "env"),
        )
    }

    /// Removes every trace of a message that could not be committed.
    fn discard(&self, id: &str) {
        for state in [QueueState::Incoming, QueueState::Active, QueueState::Hold] {
            let _ = fs::remove_file(self.file(state, id, "env"));
            let _ = fs::remove_file(self.file(state, id, "msg"));
        }
    }

    pub fn read_envelope(&self, state: QueueState, id: &str) -> io::Result<Envelope> {
        let path = self.file(state, id, "env");
        let text = fs::read_to_string(&path)?;
        let envelope = Envelope::from_file_text(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        if envelope.id != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: holds the envelope of {}", path.display(), envelope.id),
            ));
        }
        Ok(envelope)
    }

    /// Reads a message and checks it against its envelope's size and checksum: a
    /// spool file is reused for a later message, and a crash between writing it and
    /// flushing it could leave old and new bytes mixed.
    pub fn read_message_checked(
        &self,
        state: QueueState,
        envelope: &Envelope,
    ) -> io::Result<Vec<u8>> {
        let message = self.read_message(state, &envelope.id)?;
        let size_ok = message.len() as u64 == envelope.size;
        let crc_ok = envelope.message_crc32.is_empty()
            || envelope.message_crc32 == super::envelope::message_checksum(&message);
        if size_ok && crc_ok {
            Ok(message)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: message does not match its envelope (size or checksum)",
                    envelope.id
                ),
            ))
        }
    }

    /// Sets a damaged message aside in `corrupt/` for the administrator.
    pub fn set_aside(&self, state: QueueState, id: &str) -> io::Result<()> {
        for ext in ["env", "msg"] {
            let from = self.file(state, id, ext);
            if from.exists() {
                fs::rename(from, self.file(QueueState::Corrupt, id, ext))?;
            }
        }
        Ok(())
    }

    pub fn read_message(&self, state: QueueState, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.file(state, id, "msg"))
    }

    /// Replaces the envelope file atomically (write aside, flush, rename over).
    pub fn update_envelope(&self, state: QueueState, envelope: &Envelope) -> io::Result<()> {
        let target = self.file(state, &envelope.id, "env");
        if !target.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is no longer in {state}", envelope.id),
            ));
        }
        let temporary = self.file(state, &envelope.id, "env.tmp");
        let _ = fs::remove_file(&temporary);
        let written = write_new(&temporary, envelope.to_file_text().as_bytes())
            .and_then(|file| file.sync_data())
            .and_then(|()| fs::rename(&temporary, &target));
        if let Err(e) = written {
            // A full disk must not leave a half-written envelope behind.
            let _ = fs::remove_file(&temporary);
            return Err(e);
        }
        sync_folder(&self.folder(state))
    }

    /// Moves a message to another state: message file first, envelope last.
    pub fn move_message(&self, id: &str, from: QueueState, to: QueueState) -> io::Result<()> {
        fs::rename(self.file(from, id, "msg"), self.file(to, id, "msg"))?;
        fs::rename(self.file(from, id, "env"), self.file(to, id, "env"))?;
        sync_folder(&self.folder(to))?;
        sync_folder(&self.folder(from))
    }

    /// Removes a message: envelope first, so a crash leaves only an orphan message
    /// file, which recovery moves aside. The files go to `spare/` for reuse while
    /// there is room. The folder is not flushed: if a crash undoes the removal of a
    /// delivered message, it is delivered once more, never lost.
    pub fn remove(&self, state: QueueState, id: &str) -> io::Result<()> {
        self.retire(&self.file(state, id, "env"), &format!("{id}.env"))?;
        let _ = self.retire(&self.file(state, id, "msg"), &format!("{id}.msg"));
        Ok(())
    }

    /// Moves a file out of the queue into `spare/`, or deletes it when that is full
    /// or the file is large.
    fn retire(&self, path: &Path, name: &str) -> io::Result<()> {
        let size = fs::metadata(path)?.len();
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        if spares.names.len() >= MAX_SPARES
            || spares.bytes + size > MAX_SPARE_BYTES
            || size > MAX_SPARE_FILE
        {
            drop(spares);
            return fs::remove_file(path);
        }
        match fs::rename(path, self.root.join(SPARE).join(name)) {
            Ok(()) => {
                spares.names.push(name.to_string());
                spares.bytes += size;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => {
                // No spare folder (a spool opened with `existing`): just delete.
                drop(spares);
                fs::remove_file(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `path` with `bytes` in it, reusing a spare file when there is one.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<File> {
        let spare = self
            .spares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .pop();
        if let Some(name) = spare
            && fs::rename(self.root.join(SPARE).join(name), path).is_ok()
        {
            if let Ok(meta) = fs::metadata(path) {
                let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
                spares.bytes = spares.bytes.saturating_sub(meta.len());
            }
            // Overwrite in place and cut to size: freeing and allocating blocks is
            // what makes truncation (and unlink) slow, especially with `discard`.
            let mut file = OpenOptions::new().write(true).open(path)?;
            file.write_all(bytes)?;
            file.set_len(bytes.len() as u64)?;
            return Ok(file);
        }
        write_new(path, bytes)
    }

    /// Bytes free for an unprivileged user on the spool's file system.
    /// Writes and removes a small file at the spool's root: can it be written?
    pub fn probe_write(&self) -> io::Result<()> {
        let path = self.root.join(".healthz");
        fs::write(&path, b"ok")?;
        fs::remove_file(&path)
    }

    pub fn free_space(&self) -> io::Result<u64> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a valid C string and a buffer statvfs fills on success.
        let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled the buffer.
        let stat = unsafe { stat.assume_init() };
        Ok(stat.f_bavail * stat.f_frsize)
    }

    /// Ids of the messages in a state, oldest first.
    pub fn ids(&self, state: QueueState) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = fs::read_dir(self.folder(state))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".env").map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The state a message is in.
    pub fn find(&self, id: &str) -> Option<QueueState> {
        if !valid_id(id) {
            return None;
        }
        QueueState::QUEUED
            .into_iter()
            .find(|state| self.file(*state, id, "env").exists())
    }

    /// Puts the spool in order after a crash: clears `incoming` (nothing there was
    /// acknowledged), reunites messages whose files were caught mid-move, and moves
    /// unpaired files to `corrupt`.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut report = Recovery {
            delivered_removed: self.replay_journal()?,
            ..Recovery::default()
        };
        // A message is published message first, envelope last: an envelope still
        // in incoming whose message file already moved was caught mid-publish,
        // before its flush and its 250. Neither file was ever acknowledged.
        let mut unpublished = std::collections::HashSet::new();
        for entry in fs::read_dir(self.folder(QueueState::Incoming))? {
            let path = entry?.path();
            if let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".env"))
            {
                unpublished.insert(id.to_string());
            }
            fs::remove_file(&path)?;
            report.incoming_removed += 1;
        }
        for state in QueueState::QUEUED {
            for entry in fs::read_dir(self.folder(state))? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                if name.ends_with(".tmp") {
                    fs::remove_file(&path)?;
                    continue;
                }
                let Some(id) = name.strip_suffix(".msg") else {
                    continue;
                };
                if self.file(state, id, "env").exists() {
                    continue;
                }
                if unpublished.contains(id) {
                    fs::remove_file(&path)?;
                    report.incoming_removed += 1;
                    continue;
                }
                // The envelope moves last, so a lone message file belongs where its
                // envelope is, or nowhere.
                match QueueState::QUEUED
                    .into_iter()
                    .find(|other| self.file(*other, id, "env").exists())
                {
                    Some(home) => {
                        fs::rename(&path, self.file(home, id, "msg"))?;
                        report.reunited += 1;
                    }
                    None => {
                        fs::rename(&path, self.file(QueueState::Corrupt, id, "msg"))?;
                        report.corrupt += 1;
                    }
                }
            }
        }
        // Only once every lone message file has found its envelope can a lone
        // envelope be called corrupt. An envelope that does not parse, or whose
        // message is not the size it records, was caught by a crash before its
        // flush: it was never acknowledged, and is kept aside, not delivered.
        for state in QueueState::QUEUED {
            for id in self.ids(state)? {
                let message_size = fs::metadata(self.file(state, &id, "msg")).map(|m| m.len());
                let intact = match (self.read_envelope(state, &id), message_size) {
                    (Ok(envelope), Ok(size)) => envelope.size == size,
                    _ => false,
                };
                if !intact {
                    self.set_aside(state, &id)?;
                    report.corrupt += 1;
                }
            }
        }
        for state in ALL_STATES {
            sync_folder(&self.folder(state))?;
        }
        Ok(report)
    }
}

/// Creates and writes a file; flushing it is the caller's business.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    Ok(file)
}

fn fail_all(results: &mut [io::Result<()>], error: &io::Error) {
    for result in results.iter_mut().filter(|r| r.is_ok()) {
        *result = Err(io::Error::new(error.kind(), error.to_string()));
    }
}

/// Flushes everything written to the file system that holds `path`: one call for a
/// whole batch of messages, where fsync would take two per message.
fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let folder = File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `folder` keeps open.
    if unsafe { libc::syncfs(folder.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes a folder, so the names created or renamed in it survive a crash.
fn sync_folder(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests;
