//! The log against real files: reopening, torn and damaged segments,
//! compaction, the finished-status bound, the lock on the directory.

use super::*;
use crate::inbox::InboxStore;

struct Dir {
    dir: tempfile::TempDir,
    store: EmbeddedStore,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        Dir { dir, store }
    }

    async fn open(&self, options: LogOptions) -> Result<EmbeddedInbox, InboxError> {
        EmbeddedInbox::open(&self.store, self.dir.path(), options).await
    }

    /// What a crash of the process leaves: the log's files as they are
    /// while it is open (no clean-stop marker), in a new directory.
    fn crash_copy(&self) -> Dir {
        let crashed = Dir::new();
        std::fs::create_dir_all(crashed.dir.path().join(DIR_NAME)).expect("mkdir");
        for segment in self.segments() {
            let name = segment.file_name().expect("name");
            std::fs::copy(&segment, crashed.dir.path().join(DIR_NAME).join(name)).expect("copy");
        }
        crashed
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join(DIR_NAME))
            .expect("list")
            .filter_map(|f| Some(f.ok()?.path()).filter(|p| p.extension().is_some_and(|e| e == "log")))
            .collect();
        files.sort();
        files
    }
}

/// Drops the log and waits until its thread let go of the directory.
async fn close(log: EmbeddedInbox) {
    let closed = log.closed();
    drop(log);
    closed.wait(Duration::from_secs(5)).await;
}

fn small() -> LogOptions {
    LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() }
}

/// Saves and waits until it is on disk; false on a version conflict.
async fn saved(log: &EmbeddedInbox, user: &str, save: Save<'_>) -> Result<bool, InboxError> {
    let saved = log.save(user, save).await?;
    log.written(user).await?;
    Ok(saved)
}

/// A save of `record` at `expected` (+ payload `put`, dropping `drop`).
fn save<'a>(expected: u64, record: &'a [u8], put: Option<(u64, &'a [u8])>, drop: &'a [u64]) -> Save<'a> {
    Save { expected, record, put: put.into_iter().collect(), drop, due: None, finished: Vec::new(), keep_finished: 64 }
}

#[tokio::test]
async fn what_was_saved_reads_back_after_a_reopen() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"hello")), &[])).await.expect("save"));
    let mut second = save(1, b"r2", Some((2, b"world")), &[]);
    second.due = Some(10);
    second.finished = vec![(7, b"{\"done\":7}".to_vec())];
    assert!(saved(&log, "alice", second).await.expect("save"));
    // A stale version is refused and changes nothing.
    assert!(!saved(&log, "alice", save(1, b"stale", None, &[])).await.expect("save"));
    assert!(saved(&log, "bob", save(0, b"b1", None, &[])).await.expect("save"));
    close(log).await;

    let log = dir.open(LogOptions::default()).await.expect("reopen");
    let loaded = log.load("alice").await.expect("load");
    assert_eq!((loaded.version, loaded.record.as_deref()), (2, Some(&b"r2"[..])));
    let payloads = log.payloads("alice", &[1, 2, 3]).await.expect("payloads");
    assert_eq!(payloads, vec![Some(Bytes::from_static(b"hello")), Some(Bytes::from_static(b"world")), None]);
    assert_eq!(log.finished("alice", 7).await.expect("finished").as_deref(), Some(&b"{\"done\":7}"[..]));
    assert_eq!(log.claim_due(10, 1000, 10).await.expect("claim"), vec![("alice".to_string(), 2)]);
    assert!(log.claim_due(10, 1000, 10).await.expect("claim").is_empty(), "leased until 1010");
    assert_eq!(log.users_after(None, 10).await.expect("users"), ["alice", "bob"]);
    assert_eq!(log.users_after(Some("alice"), 10).await.expect("users"), ["bob"]);
    assert_eq!(log.load("carol").await.expect("load").version, 0);
}

#[tokio::test]
async fn a_torn_end_is_cut_and_everything_before_it_is_kept() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    for user in ["a", "b", "c"] {
        assert!(saved(&log, user, save(0, user.as_bytes(), Some((1, b"p")), &[])).await.expect("save"));
    }
    let good = log.writer.tail.lock().await.end as usize;
    close(log).await;
    // Half an entry at the end (over the zeros prepared there), as a crash
    // in the middle of a write leaves.
    let last = dir.segments().pop().expect("a segment");
    let mut torn = Vec::new();
    entry::encode(&mut torn, 99, entry::Kind::Record, "d", 1, b"never answered");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.resize(bytes.len().max(good + torn.len()), 0);
    bytes[good..good + torn.len() / 2].copy_from_slice(&torn[..torn.len() / 2]);
    std::fs::write(&last, &bytes).expect("write");

    let log = dir.open(LogOptions::default()).await.expect("reopen past a torn end");
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), good as u64, "the torn bytes are cut");
    for user in ["a", "b", "c"] {
        assert_eq!(log.load(user).await.expect("load").record.as_deref(), Some(user.as_bytes()));
    }
    assert_eq!(log.load("d").await.expect("load").version, 0);
    assert!(saved(&log, "d", save(0, b"d", None, &[])).await.expect("save after the cut"));
    close(log).await;
    let log = dir.open(LogOptions::default()).await.expect("reopen");
    assert_eq!(log.load("d").await.expect("load").record.as_deref(), Some(&b"d"[..]));
}

#[tokio::test]
async fn a_damaged_closed_segment_is_refused_not_read_past() {
    let dir = Dir::new();
    let log = dir.open(small()).await.expect("open");
    let record = vec![b'x'; 4000];
    // Forty users: all of it stays live, so nothing is compacted away.
    for user in 0..40 {
        assert!(saved(&log, &format!("user{user}"), save(0, &record, None, &[])).await.expect("save"));
    }
    close(log).await;
    let segments = dir.segments();
    assert!(segments.len() >= 2, "64 KiB segments rolled: {segments:?}");
    let mut bytes = std::fs::read(&segments[0]).expect("read");
    bytes[5000] ^= 0x55;
    std::fs::write(&segments[0], &bytes).expect("write");
    let refused = dir.open(small()).await.err().expect("a damaged closed segment is refused");
    assert!(refused.0.contains("damaged"), "{refused}");
}

#[tokio::test]
async fn compaction_frees_old_segments_and_keeps_what_is_live() {
    let dir = Dir::new();
    let log = dir.open(small()).await.expect("open");
    let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let mut versions = vec![0u64; users.len()];
    // Every round rewrites each record and replaces its held payload: the
    // log fills with garbage far beyond the live data.
    for round in 1..=60u64 {
        for (i, user) in users.iter().enumerate() {
            let record = format!("{user} round {round} {}", "#".repeat(900));
            let payload = format!("payload {round}");
            let drop = [round - 1];
            let dropped: &[u64] = if round > 1 { &drop } else { &[] };
            let saved =
                saved(&log, user, save(versions[i], record.as_bytes(), Some((round, payload.as_bytes())), dropped));
            assert!(saved.await.expect("save"));
            versions[i] += 1;
        }
    }
    let written = 60 * 10 * 1000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk: u64 = dir.segments().iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
        if on_disk < written / 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no compaction: {on_disk} bytes of {written} written");
        // A lone save wakes the sync thread, which compacts after syncing.
        assert!(
            saved(&log, "tick", save(log.load("tick").await.expect("load").version, b"t", None, &[]))
                .await
                .expect("save")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!dir.segments().iter().any(|p| p.ends_with("0000000001.log")), "the first segment was freed");
    check_rounds(&log, &users, &versions).await;
    close(log).await;
    let log = dir.open(small()).await.expect("reopen after compaction");
    check_rounds(&log, &users, &versions).await;
    close(log).await;
}

/// Every user holds its round-60 record, version and payload only.
async fn check_rounds(log: &EmbeddedInbox, users: &[String], versions: &[u64]) {
    for (user, version) in users.iter().zip(versions) {
        let loaded = log.load(user).await.expect("load");
        assert_eq!(loaded.version, *version);
        let record = String::from_utf8(loaded.record.expect("a record")).expect("utf8");
        assert!(record.starts_with(&format!("{user} round 60 ")), "{user}: {}", &record[..20]);
        let payloads = log.payloads(user, &[59, 60]).await.expect("payloads");
        assert_eq!(payloads, vec![None, Some(Bytes::from_static(b"payload 60"))]);
    }
}

#[tokio::test]
async fn only_the_newest_finished_statuses_are_kept() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    for (version, ids) in [[1u64, 2], [3, 4], [5, 6]].into_iter().enumerate() {
        let mut s = save(version as u64, b"r", None, &[]);
        s.finished = ids.iter().map(|id| (*id, format!("{{\"id\":{id}}}").into_bytes())).collect();
        s.keep_finished = 3;
        assert!(saved(&log, "alice", s).await.expect("save"));
    }
    let kept = |log: &EmbeddedInbox| {
        let index = log.index();
        index.users["alice"].finished.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    };
    assert_eq!(kept(&log), [4, 5, 6]);
    assert_eq!(log.finished("alice", 3).await.expect("read"), None);
    assert_eq!(log.finished("alice", 6).await.expect("read").as_deref(), Some(&b"{\"id\":6}"[..]));
    close(log).await;
    let log = dir.open(LogOptions::default()).await.expect("reopen");
    assert_eq!(kept(&log), [4, 5, 6], "the bound holds after a reopen");
}

#[tokio::test]
async fn a_second_open_of_the_directory_is_refused_until_the_first_closes() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    let refused = dir.open(LogOptions::default()).await.err().expect("refused");
    assert!(refused.0.contains("in use"), "{refused}");
    close(log).await;
    close(dir.open(LogOptions::default()).await.expect("open again")).await;
}

#[tokio::test]
async fn with_interval_syncs_a_save_is_answered_before_the_sync_and_still_kept() {
    let dir = Dir::new();
    let options = LogOptions { sync_before_answer: false, sync_interval: Duration::from_millis(50), ..small() };
    let log = dir.open(options).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"p")), &[])).await.expect("save"));
    // Answered from the page cache; the sync follows within the interval.
    let written = {
        let tail = log.writer.tail.lock().await;
        (tail.active, tail.end)
    };
    let mut synced = log.writer.synced.subscribe();
    let reached = synced.wait_for(|s| s.upto >= written);
    tokio::time::timeout(Duration::from_secs(2), reached).await.expect("synced within the interval").expect("open");
    close(log).await;
    let log = dir.open(options).await.expect("reopen");
    assert_eq!(log.payloads("alice", &[1]).await.expect("payloads"), vec![Some(Bytes::from_static(b"p"))]);
}

#[tokio::test]
async fn a_torn_save_keeps_none_of_its_entries() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"one")), &[])).await.expect("save"));
    close(log).await;
    // The next save's payload reached the disk, its record (written last)
    // did not: a payload no record lists would be kept forever.
    let last = dir.segments().pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read");
    entry::encode(&mut bytes, 3, entry::Kind::Payload, "alice", 2, b"two");
    std::fs::write(&last, &bytes).expect("write");

    let log = dir.open(LogOptions::default()).await.expect("reopen");
    let loaded = log.load("alice").await.expect("load");
    assert_eq!((loaded.version, loaded.record.as_deref()), (1, Some(&b"r1"[..])), "the torn save is gone whole");
    let payloads = log.payloads("alice", &[1, 2]).await.expect("payloads");
    assert_eq!(payloads, vec![Some(Bytes::from_static(b"one")), None]);
}

#[tokio::test]
async fn an_empty_segment_left_by_a_failed_roll_does_not_block_the_start() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", None, &[])).await.expect("save"));
    close(log).await;
    let first = dir.segments().pop().expect("a segment");
    // A torn write in the first segment, and an empty second one.
    let mut bytes = std::fs::read(&first).expect("read");
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&first, &bytes).expect("write");
    std::fs::write(dir.dir.path().join(DIR_NAME).join("0000000002.log"), b"").expect("empty segment");

    let log = dir.open(LogOptions::default()).await.expect("reopen");
    assert_eq!(dir.segments(), [first], "the empty segment is removed, the torn end cut");
    assert_eq!(log.load("alice").await.expect("load").version, 1);
    assert!(saved(&log, "alice", save(1, b"r2", None, &[])).await.expect("a save after it"));
}

#[tokio::test]
async fn a_writer_stuck_in_the_log_holds_up_the_others_only_until_their_timeout() {
    let dir = Dir::new();
    let options = LogOptions { timeout: Duration::from_millis(200), ..LogOptions::default() };
    let log = dir.open(options).await.expect("open");
    // As if a write were stuck in the kernel while holding the log.
    let stuck = log.writer.tail.lock().await;
    let started = std::time::Instant::now();
    let refused = saved(&log, "alice", save(0, b"r1", None, &[])).await.expect_err("an error, not a hang");
    assert!(refused.0.contains("took no write"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(stuck);
    assert!(saved(&log, "alice", save(0, b"r1", None, &[])).await.expect("save once it is free"));
}

/// Ids the inbox gives `user` for `n` new messages.
async fn append(inbox: &crate::inbox::Inbox, user: &str, n: usize) -> Vec<u64> {
    use crate::inbox::{AckMode, NewMessage};
    let new = NewMessage {
        action: 200,
        bytes: 1,
        ttl_ms: None,
        collapse_key: None,
        idempotency_key: None,
        ack: AckMode::Device,
    };
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(inbox.append(user, &new, b"x").await.expect("append").id);
    }
    ids
}

#[tokio::test]
async fn after_an_unclean_stop_new_ids_start_above_every_id_handed_out() {
    use crate::inbox::Inbox;
    let config = crate::config::InboxConfig::default();
    let first = Dir::new();
    let log = Arc::new(first.open(LogOptions::default()).await.expect("open"));
    let inbox = Inbox::new(log.clone(), &config);
    assert_eq!(append(&inbox, "alice", 3).await, [1, 2, 3]);
    assert_eq!(append(&inbox, "bob", 1).await, [1]);
    // What a crash leaves: the files as they are while the log is open
    // (no clean-stop marker).
    let crashed = first.crash_copy();
    drop(inbox);
    close(Arc::into_inner(log).expect("one owner")).await;

    let log = Arc::new(crashed.open(LogOptions::default()).await.expect("open after the crash"));
    let inbox = Inbox::new(log.clone(), &config);
    let floor = 3 + floor::STEP;
    assert_eq!(append(&inbox, "alice", 2).await, [floor, floor + 1], "above every id of any user");
    assert_eq!(append(&inbox, "bob", 1).await, [floor]);
    assert_eq!(inbox.read("alice").await.expect("read").expect("kept").messages.len(), 5, "nothing lost");
    drop(inbox);
    close(Arc::into_inner(log).expect("one owner")).await;

    // A clean stop keeps the floor where it is.
    let log = Arc::new(crashed.open(LogOptions::default()).await.expect("reopen"));
    let inbox = Inbox::new(log.clone(), &config);
    assert_eq!(append(&inbox, "carol", 1).await, [floor], "the floor is kept, not raised again");
    assert_eq!(append(&inbox, "alice", 1).await, [floor + 2]);
    drop(inbox);
    close(Arc::into_inner(log).expect("one owner")).await;

    // The log that stopped cleanly goes on where it was.
    let log = Arc::new(first.open(LogOptions::default()).await.expect("reopen"));
    assert_eq!(append(&Inbox::new(log, &config), "alice", 1).await, [4]);
}

#[tokio::test]
async fn a_second_unclean_stop_raises_the_floor_again() {
    use crate::inbox::Inbox;
    let config = crate::config::InboxConfig::default();
    let dir = Dir::new();
    let inbox_dir = dir.dir.path().join(DIR_NAME);
    let log = Arc::new(dir.open(LogOptions::default()).await.expect("open"));
    assert_eq!(append(&Inbox::new(log.clone(), &config), "alice", 1).await, [1]);
    close(Arc::into_inner(log).expect("one owner")).await;
    // Two unclean stops in a row, the second before anything written
    // after the first reached the disk: ids from the first floor on may
    // have been seen, so the floor rises above it.
    for n in 1..=2u64 {
        std::fs::remove_file(inbox_dir.join("CLEAN")).expect("a clean stop left its marker");
        let log = Arc::new(dir.open(LogOptions::default()).await.expect("open after an unclean stop"));
        assert_eq!(log.id_floor(), 1 + n * floor::STEP);
        close(Arc::into_inner(log).expect("one owner")).await;
    }
    // A damaged floor file stops the start with what to do.
    std::fs::write(inbox_dir.join("ID_FLOOR"), "18446744073709551615").expect("write");
    let refused = dir.open(LogOptions::default()).await.err().expect("refused");
    assert!(refused.0.contains("is damaged"), "{refused}");
}

#[tokio::test]
async fn while_a_sync_is_stuck_new_messages_are_refused_and_acks_still_written() {
    let dir = Dir::new();
    let options = LogOptions { timeout: Duration::from_millis(200), ..LogOptions::default() };
    let log = dir.open(options).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"one")), &[])).await.expect("save"));
    // What the log shows while its syncs have been stuck for 10 s.
    let stuck = |since: Option<std::time::Instant>| {
        log.writer.want.lock().unwrap_or_else(PoisonError::into_inner).unsynced_since = since;
    };
    stuck(std::time::Instant::now().checked_sub(Duration::from_secs(10)));
    let refused = log.save("alice", save(1, b"r2", Some((2, b"two")), &[])).await.expect_err("refused");
    assert!(refused.0.contains("nothing synced to disk"), "{refused}");
    assert!(log.save("alice", save(1, b"r2 (an ack)", None, &[])).await.expect("no new message: written"));
    stuck(None);
    assert!(saved(&log, "alice", save(2, b"r3", Some((2, b"two")), &[])).await.expect("taken again"));
    close(log).await;
}

/// Whether the log's files hold `bytes` (what a crash of the process
/// would keep).
fn on_file(dir: &Dir, bytes: &[u8]) -> bool {
    dir.segments().iter().any(|s| std::fs::read(s).expect("read").windows(bytes.len()).any(|w| w == bytes))
}

#[tokio::test]
async fn writes_wait_behind_for_the_next_sync_and_read_back_meanwhile() {
    let dir = Dir::new();
    // No sync nobody asks for during the test.
    let options = LogOptions { sync_interval: Duration::from_secs(60), ..LogOptions::default() };
    let log = dir.open(options).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"one")), &[])).await.expect("save"));
    assert!(on_file(&dir, b"r1") && on_file(&dir, b"one"));
    // An ack-like save (no new message) waits behind, readable at once.
    assert!(log.save("alice", save(1, b"r2 (acked)", None, &[])).await.expect("save"));
    assert!(log.save("bob", save(0, b"b1", None, &[])).await.expect("save"));
    assert!(!on_file(&dir, b"r2 (acked)") && !on_file(&dir, b"b1"), "not written yet");
    assert_eq!(log.load("alice").await.expect("load").record.as_deref(), Some(&b"r2 (acked)"[..]));
    assert_eq!(log.load("bob").await.expect("load").record.as_deref(), Some(&b"b1"[..]));
    assert_eq!(log.payloads("alice", &[1]).await.expect("payloads"), vec![Some(Bytes::from_static(b"one"))]);

    // What a crash now keeps: the answered message, not the ack.
    let crashed = dir.crash_copy();
    let after_crash = crashed.open(options).await.expect("open the crashed copy");
    assert_eq!(after_crash.load("alice").await.expect("load").record.as_deref(), Some(&b"r1"[..]));
    assert_eq!(after_crash.load("bob").await.expect("load").record, None);
    close(after_crash).await;

    // The next new message's sync writes everything before it.
    assert!(saved(&log, "alice", save(2, b"r3", Some((2, b"two")), &[])).await.expect("save"));
    assert!(on_file(&dir, b"r2 (acked)") && on_file(&dir, b"b1") && on_file(&dir, b"r3"));
    close(log).await;
    let log = dir.open(options).await.expect("reopen");
    assert_eq!(log.load("alice").await.expect("load").record.as_deref(), Some(&b"r3"[..]));
    assert_eq!(log.load("bob").await.expect("load").record.as_deref(), Some(&b"b1"[..]));
    let both = log.payloads("alice", &[1, 2]).await.expect("payloads");
    assert_eq!(both, vec![Some(Bytes::from_static(b"one")), Some(Bytes::from_static(b"two"))]);
    close(log).await;
}

#[tokio::test]
async fn beyond_the_write_behind_bound_a_save_writes_itself() {
    let dir = Dir::new();
    let options = LogOptions { sync_interval: Duration::from_secs(60), write_behind_bytes: 100, ..small() };
    let log = dir.open(options).await.expect("open");
    assert!(log.save("alice", save(0, b"small", None, &[])).await.expect("save"));
    assert!(!on_file(&dir, b"small"), "behind");
    assert!(log.save("alice", save(1, &[b'x'; 200], None, &[])).await.expect("save"));
    assert!(on_file(&dir, b"small") && on_file(&dir, &[b'x'; 200]), "the waiting bytes, then the large save");
    assert_eq!(log.load("alice").await.expect("load").record.as_deref(), Some(&[b'x'; 200][..]));
    close(log).await;

    // With sync = "interval" a new message does not wait behind: its
    // answer means the page cache has it (a crash of the process keeps
    // it); an ack-like save still waits.
    let options = LogOptions { sync_before_answer: false, ..options };
    let log = dir.open(options).await.expect("reopen");
    assert!(log.save("alice", save(2, b"r3 (an ack)", None, &[])).await.expect("save"));
    assert!(!on_file(&dir, b"r3 (an ack)"), "behind");
    assert!(log.save("alice", save(3, b"r4", Some((1, b"one")), &[])).await.expect("save"));
    assert!(on_file(&dir, b"r3 (an ack)") && on_file(&dir, b"r4"), "the new message at once, after what waited");
    close(log).await;
}

#[tokio::test]
async fn zeros_prepared_ahead_are_not_entries_and_closed_segments_end_at_their_entries() {
    let dir = Dir::new();
    let log = dir.open(LogOptions::default()).await.expect("open");
    assert!(saved(&log, "alice", save(0, b"r1", Some((1, b"one")), &[])).await.expect("save"));
    let end = log.writer.tail.lock().await.end;
    let file = std::fs::read(&dir.segments()[0]).expect("read");
    assert!(file.len() as u64 > end && file[end as usize..].iter().all(|b| *b == 0), "zeros ahead");
    close(log).await;
    // Read back as the end of the log, and written over from there.
    let log = dir.open(LogOptions::default()).await.expect("reopen");
    assert_eq!(log.writer.tail.lock().await.end, end);
    assert!(saved(&log, "alice", save(1, b"r2", Some((2, b"two")), &[])).await.expect("save"));
    close(log).await;
    let log = dir.open(LogOptions::default()).await.expect("reopen");
    let both = log.payloads("alice", &[1, 2]).await.expect("payloads");
    assert_eq!(both, vec![Some(Bytes::from_static(b"one")), Some(Bytes::from_static(b"two"))]);
    close(log).await;

    // Small segments: every closed one ends with its last entry.
    let dir = Dir::new();
    let log = dir.open(small()).await.expect("open");
    let payload = [7u8; 1000];
    for version in 0..200u64 {
        assert!(saved(&log, "bob", save(version, b"r", Some((version + 1, &payload)), &[])).await.expect("save"));
    }
    close(log).await;
    let segments = dir.segments();
    assert!(segments.len() > 2, "rolled: {segments:?}");
    for closed in &segments[..segments.len() - 1] {
        let bytes = std::fs::read(closed).expect("read");
        let mut at = 0;
        while at < bytes.len() {
            at += entry::decode(&bytes[at..]).expect("only entries").1;
        }
    }
    let log = dir.open(small()).await.expect("reopen");
    assert_eq!(log.payloads("bob", &[200]).await.expect("payloads"), vec![Some(Bytes::copy_from_slice(&payload))]);
    close(log).await;

    // Zeros at the end of a closed segment are damage (its end was synced
    // before the next segment began), not space prepared ahead.
    let first = segments[0].clone();
    let mut bytes = std::fs::read(&first).expect("read");
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&first, &bytes).expect("write");
    let refused = dir.open(small()).await.err().expect("refused");
    assert!(refused.0.contains("is damaged"), "{refused}");
}

#[test]
fn the_statuses_forgotten_are_the_oldest_beyond_the_bound() {
    use proptest::prelude::*;
    let lists =
        (proptest::collection::btree_set(1u64..200, 0..40), proptest::collection::vec(1u64..200, 0..5), 0usize..40);
    proptest!(|((kept, new, keep) in lists)| {
        let mut index = Index::default();
        let file = Arc::new(tempfile::tempfile().expect("tempfile"));
        index.segments.insert(1, index::Segment { file, len: 0, live: 0 });
        for (off, id) in kept.iter().enumerate() {
            let mut buf = Vec::new();
            let len = entry::encode(&mut buf, off as u64, entry::Kind::Finished, "alice", *id, b"{}") as u32;
            let (e, _) = entry::decode(&buf).expect("decode");
            index.apply(&e, Loc { seg: 1, off: off as u64 * 100, len });
        }
        let finished: Vec<(u64, Vec<u8>)> = new.iter().map(|id| (*id, Vec::new())).collect();
        let mut save = save(0, b"r", None, &[]);
        save.finished = finished;
        save.keep_finished = keep;
        // What it means: every id kept or new, in order, but the newest `keep`.
        let mut all: Vec<u64> = kept.iter().copied().chain(new.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all.truncate(all.len().saturating_sub(keep));
        prop_assert_eq!(writer::forget(&index, "alice", &save), all);
    });
}
