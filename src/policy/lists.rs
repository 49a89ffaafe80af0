//! Senders allowed or blocked, by each recipient for themselves (from the
//! quarantine page or `mailmoat lists`) and by administrators for everyone.
//! Kept in the embedded store, or in Redis with `[shared]` so that every
//! instance sees one list.
//!
//! Precedence: an administrator's block is final; then the recipient's own
//! entries, the most specific first (the address, then its domain, then each
//! parent domain); then the administrators' allow entries. A block refuses with
//! `550 5.7.1`; an allow spares greylisting and the DNS blocklists for that
//! recipient, and only for a sender whose SPF passes (a forged allowed address
//! gets nothing).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::shared_state::SharedState;

/// The owner of the administrators' entries.
pub const EVERYONE: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Allow,
    Block,
}

impl ListKind {
    /// `allow` or `block` (what a form's button or the command line says).
    pub fn named(name: &str) -> Option<ListKind> {
        match name {
            "allow" => Some(ListKind::Allow),
            "block" => Some(ListKind::Block),
            _ => None,
        }
    }
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        })
    }
}

/// One entry: whose, what, who added it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// A recipient address, or `*` for everyone.
    pub owner: String,
    /// `user@domain` or `@domain` (which covers its subdomains).
    pub sender: String,
    pub kind: ListKind,
    pub added_by: String,
    /// Unix seconds.
    pub time: u64,
}

pub struct SenderLists {
    tree: sled::Tree,
    shared: Arc<SharedState>,
}

/// `Alice@Example.com` → `alice@example.com`; `example.com` or `@example.com`
/// → `@example.com`; anything else is refused with what to write.
pub fn normalize_sender(text: &str) -> Result<String, String> {
    let text = text
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase();
    let (local, domain) = match text.rsplit_once('@') {
        Some((local, domain)) => (local, domain),
        None => ("", text.as_str()),
    };
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let local_ok = !local.contains(char::is_whitespace) && !local.contains('@');
    if !domain_ok || !local_ok {
        return Err(format!(
            "'{text}': write a sender address (someone@example.com) or a domain (example.com)"
        ));
    }
    Ok(format!("{local}@{domain}"))
}

/// The entries that could apply to a sender, the most specific first.
fn candidates(sender: &str) -> Vec<String> {
    let sender = sender.to_lowercase();
    let mut out = vec![sender.clone()];
    if let Some((_, domain)) = sender.rsplit_once('@') {
        let mut domain = domain;
        loop {
            out.push(format!("@{domain}"));
            match domain.split_once('.') {
                Some((_, parent)) if parent.contains('.') => domain = parent,
                _ => break,
            }
        }
    }
    out
}

impl SenderLists {
    pub fn new(tree: sled::Tree, shared: Arc<SharedState>) -> SenderLists {
        SenderLists { tree, shared }
    }

    fn key(owner: &str, sender: &str) -> String {
        format!("{owner}|{sender}")
    }

    async fn get(&self, keys: &[String]) -> Vec<Option<ListEntry>> {
        let shared_keys: Vec<String> = keys.iter().map(|k| self.shared.key("list", k)).collect();
        let values: Vec<Option<Vec<u8>>> = match self.shared.get(&shared_keys).await {
            Some(values) => values,
            None => keys
                .iter()
                .map(|k| {
                    self.tree
                        .get(k.as_bytes())
                        .ok()
                        .flatten()
                        .map(|v| v.to_vec())
                })
                .collect(),
        };
        values
            .into_iter()
            .map(|v| v.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
            .collect()
    }

    /// The entry that decides for mail from `sender` to `recipient`, if any.
    pub async fn judge(&self, recipient: &str, sender: &str) -> Option<ListEntry> {
        if sender.is_empty() {
            return None;
        }
        let patterns = candidates(sender);
        let recipient = recipient.to_lowercase();
        let mut keys: Vec<String> = patterns.iter().map(|p| Self::key(EVERYONE, p)).collect();
        keys.extend(patterns.iter().map(|p| Self::key(&recipient, p)));
        let found = self.get(&keys).await;
        let (global, own) = found.split_at(patterns.len());
        let global: Vec<&ListEntry> = global.iter().flatten().collect();
        global
            .iter()
            .find(|e| e.kind == ListKind::Block)
            .copied()
            .or_else(|| own.iter().flatten().next())
            .or_else(|| global.first().copied())
            .cloned()
    }

    /// Adds (or replaces) an entry.
    pub async fn add(
        &self,
        owner: &str,
        sender: &str,
        kind: ListKind,
        by: &str,
    ) -> Result<ListEntry, String> {
        let sender = normalize_sender(sender)?;
        let owner = owner.to_lowercase();
        let entry = ListEntry {
            owner: owner.clone(),
            sender: sender.clone(),
            kind,
            added_by: by.to_string(),
            time: crate::archive::unix_now(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        let key = Self::key(&owner, &sender);
        if self
            .shared
            .put(&self.shared.key("list", &key), &bytes, None)
            .await
            .is_none()
        {
            self.tree
                .insert(key.as_bytes(), bytes)
                .map_err(|e| format!("cannot keep the entry: {e}"))?;
        }
        tracing::info!(owner = %owner, sender = %sender, list = %kind, by, "sender list entry added");
        Ok(entry)
    }

    /// Removes an entry; whether there was one.
    pub async fn remove(&self, owner: &str, sender: &str, by: &str) -> Result<bool, String> {
        let sender = normalize_sender(sender)?;
        let owner = owner.to_lowercase();
        let key = Self::key(&owner, &sender);
        let existed = self.get(std::slice::from_ref(&key)).await[0].is_some();
        if self
            .shared
            .remove(&[self.shared.key("list", &key)])
            .await
            .is_none()
        {
            self.tree
                .remove(key.as_bytes())
                .map_err(|e| format!("cannot remove the entry: {e}"))?;
        }
        if existed {
            tracing::info!(owner = %owner, sender = %sender, by, "sender list entry removed");
        }
        Ok(existed)
    }

    /// Every entry of one owner (None: every entry), ordered by owner and sender.
    pub async fn entries(&self, owner: Option<&str>) -> Vec<ListEntry> {
        let raw: Vec<Vec<u8>> = match self.shared.scan("list").await {
            Some(found) => found.into_iter().map(|(_, v)| v).collect(),
            None => self
                .tree
                .iter()
                .filter_map(|item| item.ok().map(|(_, v)| v.to_vec()))
                .collect(),
        };
        let owner = owner.map(str::to_lowercase);
        let mut entries: Vec<ListEntry> = raw
            .iter()
            .filter_map(|bytes| serde_json::from_slice::<ListEntry>(bytes).ok())
            .filter(|e| owner.as_ref().is_none_or(|o| &e.owner == o))
            .collect();
        entries.sort_by(|a, b| (&a.owner, &a.sender).cmp(&(&b.owner, &b.sender)));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> SenderLists {
        let store = crate::store::Store::temporary().unwrap();
        SenderLists::new(store.tree("lists").unwrap(), SharedState::local())
    }

    #[tokio::test]
    async fn the_administrators_block_is_final_then_the_recipients_own_then_global_allow() {
        let lists = lists();
        let alice = "alice@example.test";
        for (owner, sender, kind) in [
            (alice, "news.example.org", ListKind::Block),
            (alice, "friend@news.example.org", ListKind::Allow),
            (EVERYONE, "partner.example", ListKind::Allow),
            (EVERYONE, "spam.example", ListKind::Block),
            (alice, "boss@spam.example", ListKind::Allow),
        ] {
            lists.add(owner, sender, kind, "test").await.unwrap();
        }
        let kind = async |sender: &str| lists.judge(alice, sender).await.map(|e| e.kind);
        assert_eq!(kind("friend@news.example.org").await, Some(ListKind::Allow));
        assert_eq!(
            kind("other@mail.news.example.org").await,
            Some(ListKind::Block)
        );
        assert_eq!(kind("x@partner.example").await, Some(ListKind::Allow));
        assert_eq!(kind("boss@spam.example").await, Some(ListKind::Block));
        assert_eq!(kind("someone@else.example").await, None);
        assert_eq!(
            lists.judge("bob@example.test", "a@news.example.org").await,
            None
        );
        assert!(
            lists
                .remove(alice, "NEWS.example.org", "alice")
                .await
                .unwrap()
        );
        assert_eq!(kind("other@news.example.org").await, None);
        assert_eq!(lists.entries(Some(alice)).await.len(), 2);
        assert!(normalize_sender("not a domain").is_err());
        assert_eq!(normalize_sender("Example.COM").unwrap(), "@example.com");
    }
}
