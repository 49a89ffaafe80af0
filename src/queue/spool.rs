//! The spool: the queue on disk. One message file (`ID.msg`, the bytes the next hop
//! receives) and one envelope file (`ID.env`) per message, in one folder per state.
//!
//! Every write is flushed (file, then folder) and every state change is an atomic
//! rename, as in Postfix, so a crash at any point leaves each message either wholly
//! in one state or recoverable by [`Spool::recover`]. A message exists in a state
//! when its envelope file is in that state's folder: the envelope moves last.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::envelope::Envelope;

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
}

/// What [`Spool::recover`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged files removed from `incoming`.
    pub incoming_removed: usize,
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
        Ok(Spool {
            root: root.to_path_buf(),
        })
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

    /// Makes a new message durable in `active`. When this returns Ok, the message and
    /// its envelope are on stable storage and the client may be told `250`.
    pub fn commit(&self, envelope: &Envelope, message: &[u8]) -> io::Result<()> {
        let id = &envelope.id;
        let result = (|| {
            write_new(&self.file(QueueState::Incoming, id, "msg"), message)?;
            write_new(
                &self.file(QueueState::Incoming, id, "env"),
                envelope.to_toml().as_bytes(),
            )?;
            fs::rename(
                self.file(QueueState::Incoming, id, "msg"),
                self.file(QueueState::Active, id, "msg"),
            )?;
            fs::rename(
                self.file(QueueState::Incoming, id, "env"),
                self.file(QueueState::Active, id, "env"),
            )?;
            sync_folder(&self.folder(QueueState::Active))
        })();
        if result.is_err() {
            for state in [QueueState::Incoming, QueueState::Active] {
                let _ = fs::remove_file(self.file(state, id, "env"));
                let _ = fs::remove_file(self.file(state, id, "msg"));
            }
        }
        result
    }

    pub fn read_envelope(&self, state: QueueState, id: &str) -> io::Result<Envelope> {
        let path = self.file(state, id, "env");
        let text = fs::read_to_string(&path)?;
        Envelope::from_toml(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {}", path.display(), e.message()),
            )
        })
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
        write_new(&temporary, envelope.to_toml().as_bytes())?;
        fs::rename(&temporary, &target)?;
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
    /// file, which recovery clears away.
    pub fn remove(&self, state: QueueState, id: &str) -> io::Result<()> {
        fs::remove_file(self.file(state, id, "env"))?;
        let _ = fs::remove_file(self.file(state, id, "msg"));
        sync_folder(&self.folder(state))
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
        let mut report = Recovery::default();
        for entry in fs::read_dir(self.folder(QueueState::Incoming))? {
            fs::remove_file(entry?.path())?;
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
        // envelope be called corrupt.
        for state in QueueState::QUEUED {
            for id in self.ids(state)? {
                if !self.file(state, &id, "msg").exists() {
                    fs::rename(
                        self.file(state, &id, "env"),
                        self.file(QueueState::Corrupt, &id, "env"),
                    )?;
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

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Flushes a folder, so the names created or renamed in it survive a crash.
fn sync_folder(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::{QueuedRecipient, RecipientStatus};

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            arrived: 0,
            sender: "a@b.test".into(),
            client_ip: "192.0.2.1".into(),
            helo: "h".into(),
            eight_bit: false,
            smtputf8: false,
            size: 3,
            attempts: 0,
            next_attempt: 0,
            recipients: vec![QueuedRecipient {
                address: "c@d.test".into(),
                status: RecipientStatus::Pending,
                last_reply: String::new(),
            }],
        }
    }

    #[test]
    fn commit_move_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let id = new_id();
        spool.commit(&envelope(&id), b"abc").unwrap();
        assert_eq!(spool.find(&id), Some(QueueState::Active));
        assert_eq!(spool.read_message(QueueState::Active, &id).unwrap(), b"abc");
        spool
            .move_message(&id, QueueState::Active, QueueState::Hold)
            .unwrap();
        assert_eq!(spool.ids(QueueState::Hold).unwrap(), vec![id.clone()]);
        let mut env = spool.read_envelope(QueueState::Hold, &id).unwrap();
        env.attempts = 4;
        spool.update_envelope(QueueState::Hold, &env).unwrap();
        assert_eq!(
            spool.read_envelope(QueueState::Hold, &id).unwrap().attempts,
            4
        );
        spool.remove(QueueState::Hold, &id).unwrap();
        assert_eq!(spool.find(&id), None);
    }

    #[test]
    fn recovery_reunites_half_moved_messages_and_clears_incoming() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let id = new_id();
        spool.commit(&envelope(&id), b"abc").unwrap();
        // A crash between the two renames of a move to hold.
        fs::rename(
            spool.file(QueueState::Active, &id, "msg"),
            spool.file(QueueState::Hold, &id, "msg"),
        )
        .unwrap();
        fs::write(spool.file(QueueState::Incoming, "FFFF", "msg"), b"partial").unwrap();
        fs::write(spool.file(QueueState::Deferred, "EEEE", "msg"), b"orphan").unwrap();
        let report = spool.recover().unwrap();
        assert_eq!(
            report,
            Recovery {
                incoming_removed: 1,
                reunited: 1,
                corrupt: 1
            }
        );
        assert_eq!(spool.read_message(QueueState::Active, &id).unwrap(), b"abc");
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(valid_id(&a));
        assert!(!valid_id("../etc"));
    }
}
