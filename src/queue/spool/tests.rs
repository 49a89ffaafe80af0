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
        message_crc32: String::new(),
        next_hop: None,
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
            delivered_removed: 0,
            reunited: 1,
            corrupt: 1
        }
    );
    assert_eq!(spool.read_message(QueueState::Active, &id).unwrap(), b"abc");
}

/// Found by the kill -9 soak: a kill between the two renames of a publish left
/// the message file in active and the envelope in incoming. That message was
/// never acknowledged: it goes, and is not called corrupt.
#[test]
fn a_message_caught_mid_publish_is_removed_not_called_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = new_id();
    let env = envelope(&id);
    spool
        .write_file(&spool.file(QueueState::Incoming, &id, "msg"), b"abc")
        .unwrap();
    spool
        .write_file(
            &spool.file(QueueState::Incoming, &id, "env"),
            env.to_file_text().as_bytes(),
        )
        .unwrap();
    fs::rename(
        spool.file(QueueState::Incoming, &id, "msg"),
        spool.file(QueueState::Active, &id, "msg"),
    )
    .unwrap();
    let report = spool.recover().unwrap();
    assert_eq!(report.corrupt, 0, "{report:?}");
    assert_eq!(report.incoming_removed, 2, "{report:?}");
    assert_eq!(spool.find(&id), None);
    assert!(spool.ids(QueueState::Corrupt).unwrap().is_empty());
}

#[test]
fn recovery_sets_aside_messages_caught_before_their_flush() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (torn, empty, whole) = (new_id(), new_id(), new_id());
    for id in [&torn, &empty, &whole] {
        spool.commit(&envelope(id), b"abc").unwrap();
    }
    fs::write(spool.file(QueueState::Active, &torn, "msg"), b"ab").unwrap();
    fs::write(spool.file(QueueState::Active, &empty, "env"), b"").unwrap();
    let report = spool.recover().unwrap();
    assert_eq!(report.corrupt, 2);
    assert_eq!(spool.ids(QueueState::Active).unwrap(), vec![whole]);
    assert_eq!(spool.ids(QueueState::Corrupt).unwrap().len(), 2);
}

#[test]
fn removed_files_are_rewritten_for_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let old = new_id();
    spool
        .commit(&envelope(&old), b"a much longer old message")
        .unwrap();
    spool.remove(QueueState::Active, &old).unwrap();
    assert_eq!(spool.spares.lock().unwrap().names.len(), 2);
    let new = new_id();
    spool.commit(&envelope(&new), b"abc").unwrap();
    assert_eq!(spool.spares.lock().unwrap().names.len(), 0);
    assert_eq!(spool.spares.lock().unwrap().bytes, 0);
    assert_eq!(
        spool.read_message(QueueState::Active, &new).unwrap(),
        b"abc"
    );
    assert_eq!(
        spool.read_envelope(QueueState::Active, &new).unwrap().id,
        new
    );
    assert_eq!(spool.recover().unwrap().corrupt, 0);
}

#[test]
fn a_reused_file_with_stale_bytes_is_caught_on_reading() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = new_id();
    let mut env = envelope(&id);
    env.message_crc32 = crate::queue::envelope::message_checksum(b"abc");
    spool.commit(&env, b"abc").unwrap();
    assert_eq!(
        spool
            .read_message_checked(QueueState::Active, &env)
            .unwrap(),
        b"abc"
    );
    // As if a crash had left an old message's bytes of the same size.
    fs::write(spool.file(QueueState::Active, &id, "msg"), b"old").unwrap();
    let err = spool
        .read_message_checked(QueueState::Active, &env)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    spool.set_aside(QueueState::Active, &id).unwrap();
    assert_eq!(spool.ids(QueueState::Corrupt).unwrap(), vec![id]);
}

#[test]
fn ids_are_unique_and_ordered() {
    let a = new_id();
    let b = new_id();
    assert_ne!(a, b);
    assert!(valid_id(&a));
    assert!(!valid_id("../etc"));
}

#[test]
fn a_delivered_message_caught_by_a_crash_is_removed_not_delivered_again_nor_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let whole = new_id();
    let half = new_id();
    let kept = new_id();
    for id in [&whole, &half, &kept] {
        spool.commit(&envelope(id), b"abc").unwrap();
    }
    spool
        .journal_delivered(&[
            (QueueState::Active, whole.clone()),
            (QueueState::Active, half.clone()),
        ])
        .unwrap();
    spool.sync_journal().unwrap();
    // The crash: `half` lost its envelope (removals go envelope first), `whole`
    // was not touched yet.
    fs::remove_file(dir.path().join("active").join(format!("{half}.env"))).unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let report = spool.recover().unwrap();
    assert_eq!(report.delivered_removed, 2);
    assert_eq!(report.corrupt, 0, "a delivered message is never corrupt");
    assert_eq!(spool.ids(QueueState::Active).unwrap(), vec![kept]);
    assert!(spool.ids(QueueState::Corrupt).unwrap().is_empty());
    // Replayed once: the journal is empty now.
    assert_eq!(
        fs::read_to_string(dir.path().join("delivered.log")).unwrap(),
        ""
    );
}
