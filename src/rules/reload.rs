//! The rules in force, and their reload: on SIGHUP and when a file in the rules
//! folder changes. A rule set with an error is refused (logged with file and line);
//! the rules in force stay. A session keeps the set it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::{RuleError, RuleSet};

pub struct RulesHandle {
    dir: PathBuf,
    current: RwLock<Arc<RuleSet>>,
    /// What the folder looked like when last loaded (names, sizes, times).
    fingerprint: RwLock<Vec<(PathBuf, u64, Option<SystemTime>)>>,
}

impl RulesHandle {
    /// Loads the folder; an error here stops the server from starting.
    pub fn load(dir: &Path) -> Result<RulesHandle, RuleError> {
        let fingerprint = fingerprint(dir);
        let rules = RuleSet::load_dir(dir)?;
        Ok(RulesHandle {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(rules)),
            fingerprint: RwLock::new(fingerprint),
        })
    }

    /// A fixed rule set, never reloaded (tests).
    pub fn fixed(rules: RuleSet) -> RulesHandle {
        RulesHandle {
            dir: PathBuf::new(),
            current: RwLock::new(Arc::new(rules)),
            fingerprint: RwLock::new(Vec::new()),
        }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the folder again; on error the rules in force stay.
    pub fn reload(&self) -> Result<usize, RuleError> {
        let fingerprint = fingerprint(&self.dir);
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        let rules = RuleSet::load_dir(&self.dir)?;
        let count = rules.rules().len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        Ok(count)
    }

    /// Whether a file in the folder changed since the last load.
    pub fn changed(&self) -> bool {
        !self.dir.as_os_str().is_empty()
            && *self.fingerprint.read().unwrap_or_else(|p| p.into_inner()) != fingerprint(&self.dir)
    }

    /// Reloads when a file in the folder changes; logs the outcome. (SIGHUP
    /// reloads everything: [`crate::reload::Reloader`].)
    /// Reloads whenever a rule file changes; `counted` hears how each went.
    pub async fn watch(self: Arc<Self>, counted: impl Fn(bool) + Send + 'static) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            if !self.changed() {
                continue;
            }
            // Compiling thousands of rules takes a while: not on an async worker.
            let handle = self.clone();
            if let Ok(ok) =
                tokio::task::spawn_blocking(move || handle.reload_and_log("rules folder changed"))
                    .await
            {
                counted(ok);
            }
        }
    }

    /// True when the new rules are in force.
    pub fn reload_and_log(&self, why: &str) -> bool {
        match self.reload() {
            Ok(count) => {
                tracing::info!(rules = count, dir = %self.dir.display(), why, "rules reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, why, "rules not reloaded; the rules in force stay");
                false
            }
        }
    }
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    super::rule_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, size, modified)
        })
        .collect()
}
