use super::*;
use std::time::Duration;

fn archive(dir: &Path, max_age: Duration, max_size: u64) -> Archive {
    let config = ArchiveConfig {
        path: dir.join("quarantine"),
        max_age,
        max_size,
        release_key: Some(crate::config::Secret::new("0123456789abcdef0123")),
        ..ArchiveConfig::default()
    };
    let store = crate::store::Store::temporary().unwrap();
    Archive::open(&config, &store, "mx.example.test", true).unwrap()
}

pub(crate) fn record(id: &str, time: u64, size: u64) -> Record {
    Record {
        id: id.into(),
        time,
        stage: Stage::Data,
        client_ip: "192.0.2.1".into(),
        client_name: None,
        helo: "h".into(),
        authenticated: false,
        login: None,
        sender: "a@remote.test".into(),
        recipients: vec!["b@example.test".into()],
        size,
        outcome: Outcome::Rejected,
        decided_by: DecidedBy::Rule("x".into()),
        reason: "r".into(),
        reply: "550 5.7.1 no".into(),
        has_message: size > 0,
        released: None,
        received: None,
        from: None,
        subject: None,
        more_releases: Vec::new(),
        deleted_for: Vec::new(),
        request: None,
        actions: Vec::new(),
    }
}

#[test]
fn retention_removes_the_too_old_and_then_the_oldest_beyond_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let now = unix_now();
    let archive = archive(dir.path(), Duration::from_secs(3600), 250);
    let old = record("0001", now - 7200, 10);
    archive.keep(&old, Some(&[b'x'; 10])).unwrap();
    for (id, age) in [("0002", 30), ("0003", 20), ("0004", 10)] {
        archive
            .keep(&record(id, now - age, 100), Some(&[b'y'; 100]))
            .unwrap();
    }
    assert_eq!(archive.enforce_retention().unwrap(), 2);
    let left: Vec<String> = archive.records().map(|r| r.id).collect();
    assert_eq!(left, vec!["0003", "0004"]);
    assert!(!dir.path().join("quarantine/0001.eml").exists());
    assert!(!dir.path().join("quarantine/0002.eml").exists());
    assert!(dir.path().join("quarantine/0004.eml").exists());
}

#[test]
fn release_addresses_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive(dir.path(), Duration::from_secs(3600), 1 << 30);
    let address = archive.release_address("0ABC").unwrap();
    let (local, domain) = address.split_once('@').unwrap();
    assert_eq!(domain, "mx.example.test");
    assert!(archive.is_release_address(local, "MX.example.test"));
    assert_eq!(archive.verify_release(local).as_deref(), Some("0ABC"));
    assert_eq!(archive.verify_release(&local.replace("0ABC", "0ABD")), None);
    assert_eq!(
        archive.verify_release("release+0ABC.00000000000000000000"),
        None
    );
    assert!(!archive.is_release_address("alice", "mx.example.test"));
}

#[test]
fn a_recipients_items_come_from_their_index_which_follows_deletes_and_is_built_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = ArchiveConfig {
        path: dir.path().join("quarantine"),
        ..ArchiveConfig::default()
    };
    let store = crate::store::Store::temporary().unwrap();
    let archive = Archive::open(&config, &store, "mx.example.test", true).unwrap();
    let mut both = record("0002", 2, 0);
    both.recipients = vec!["Alice@example.test".into(), "bob@example.test".into()];
    archive.keep(&record("0001", 1, 0), None).unwrap();
    archive.keep(&both, None).unwrap();
    let mut bobs = record("0003", 3, 0);
    bobs.recipients = vec!["bob@example.test".into()];
    archive.keep(&bobs, None).unwrap();
    let ids = |records: Vec<Record>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(archive.records_for(&["alice@example.test".into()])),
        ["0002"]
    );
    assert_eq!(
        ids(archive.records_for(&["bob@example.test".into()])),
        ["0002", "0003"]
    );
    assert_eq!(
        ids(archive.records_for(&["b@example.test".into(), "BOB@example.test".into()])),
        ["0001", "0002", "0003"]
    );
    // Not a prefix match: "bob@example.tes" is someone else.
    assert!(archive.records_for(&["bob@example.tes".into()]).is_empty());
    assert_eq!(
        ids(archive.records_newest_first().collect()),
        ["0003", "0002", "0001"]
    );
    archive.delete("0002").unwrap();
    assert!(
        archive
            .records_for(&["alice@example.test".into()])
            .is_empty()
    );

    // An archive from before the index: indexed when opened.
    store.tree("archive-by-recipient").unwrap().clear().unwrap();
    let reopened = Archive::open(&config, &store, "mx.example.test", true).unwrap();
    assert_eq!(
        ids(reopened.records_for(&["bob@example.test".into()])),
        ["0003"]
    );
    drop(reopened);

    // Without the pages the index is not kept (and emptied, so it cannot go
    // stale); the items are still found, by reading every record.
    let unindexed = Archive::open(&config, &store, "mx.example.test", false).unwrap();
    let mut carols = record("0004", 4, 0);
    carols.recipients = vec!["carol@example.test".into()];
    unindexed.keep(&carols, None).unwrap();
    assert!(store.tree("archive-by-recipient").unwrap().is_empty());
    assert_eq!(
        ids(unindexed.records_for(&["Carol@example.test".into()])),
        ["0004"]
    );
    drop(unindexed);
    let indexed = Archive::open(&config, &store, "mx.example.test", true).unwrap();
    assert_eq!(
        ids(indexed.records_for(&["carol@example.test".into()])),
        ["0004"]
    );
}
