//! The embedded store (sled) for small, slowly changing state. Messages never go
//! here: the spool is the queue (sled grows without bound under per-message churn).

use std::path::Path;

/// An open store. sled allows one process per store, which is why the server opens
/// it and the queue commands do not need it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock") {
                    anyhow::anyhow!(
                        "the store {} is locked: another mailmoat process is using it ({text})",
                        path.display()
                    )
                } else {
                    anyhow::anyhow!("cannot open the store {}: {text}", path.display())
                }
            })?;
        Ok(Store { db })
    }

    /// A store in memory, gone when dropped (trials keep nothing).
    pub fn temporary() -> anyhow::Result<Store> {
        Ok(Store {
            db: sled::Config::new().temporary(true).open()?,
        })
    }

    /// A named collection of keys, one per kind of state.
    pub fn tree(&self, name: &str) -> anyhow::Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }
}
