//! The one-time move of an inbox kept in the store's redb file (versions
//! before the log) into the log: read every record, payload and webhook
//! check, write them into the first segment (still under a temporary
//! name) and sync it; `open` then names it a segment and drops the old
//! tables. A crash before the naming imports again at the next start; a
//! crash after it leaves old tables nobody reads (a few unused pages).

use super::entry::Kind;
use super::writer::{Tail, Writer};
use crate::inbox::InboxError;
use crate::store::EmbeddedStore;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("inbox_records");
const PAYLOADS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox_payloads");
const DUE: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("inbox_webhook_due");
const DUE_BY_MESSAGE: TableDefinition<(&str, u64), u64> = TableDefinition::new("inbox_webhook_due_by_message");

type Owned = (Kind, String, u64, Vec<u8>);

pub fn from_store(store: &EmbeddedStore, writer: &Writer, tail: &mut Tail) -> Result<(), InboxError> {
    let failed = |e: crate::store::StoreError| InboxError(format!("importing the redb inbox: {e}"));
    let entries: Vec<Owned> = store
        .read_tables(|db| {
            let txn = db.begin_read()?;
            let mut out: Vec<Owned> = Vec::new();
            match txn.open_table(RECORDS) {
                Ok(table) => {
                    for row in table.iter()? {
                        let (user, value) = row?;
                        let value = value.value();
                        let version = value.first_chunk::<8>().map_or(0, |v| u64::from_be_bytes(*v));
                        let record = value.get(8..).unwrap_or_default().to_vec();
                        out.push((Kind::Record, user.value().to_string(), version, record));
                    }
                }
                Err(TableError::TableDoesNotExist(_)) => return Ok(out),
                Err(e) => return Err(e.into()),
            }
            if let Ok(table) = txn.open_table(PAYLOADS) {
                for row in table.iter()? {
                    let (key, value) = row?;
                    let (user, id) = key.value();
                    out.push((Kind::Payload, user.to_string(), id, value.value().to_vec()));
                }
            }
            if let Ok(table) = txn.open_table(DUE_BY_MESSAGE) {
                for row in table.iter()? {
                    let (key, at) = row?;
                    let (user, id) = key.value();
                    out.push((Kind::Due, user.to_string(), id, at.value().to_le_bytes().to_vec()));
                }
            }
            Ok(out)
        })
        .map_err(failed)?;
    if entries.is_empty() {
        return Ok(());
    }
    let borrowed: Vec<(Kind, &str, u64, &[u8])> =
        entries.iter().map(|(kind, user, key, value)| (*kind, user.as_str(), *key, value.as_slice())).collect();
    writer.write_entries(tail, &borrowed)?;
    writer.sync_tail(tail)?;
    let users = entries.iter().filter(|e| e.0 == Kind::Record).count();
    tracing::info!(users, entries = entries.len(), "moved the inbox from the redb file into the inbox log");
    Ok(())
}

/// Drops the old tables, once the log holding their copy is named.
pub async fn drop_old_tables(store: &EmbeddedStore) -> Result<(), InboxError> {
    let failed = |e: crate::store::StoreError| InboxError(format!("dropping the redb inbox tables: {e}"));
    store
        .write_tables(|txn| {
            txn.delete_table(RECORDS)?;
            txn.delete_table(PAYLOADS)?;
            txn.delete_table(DUE_BY_MESSAGE)?;
            txn.delete_table(DUE)?;
            Ok(())
        })
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::InboxStore;
    use crate::inbox::log::{EmbeddedInbox, LogOptions};

    #[tokio::test]
    async fn an_inbox_in_the_redb_file_is_moved_into_the_log_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        // As the redb inbox (before the log) left it.
        store
            .write_tables(|txn| {
                let mut value = 3u64.to_be_bytes().to_vec();
                value.extend_from_slice(b"{\"last_id\":2}");
                txn.open_table(RECORDS)?.insert("alice", value.as_slice())?;
                // More than a small segment holds: the move must not roll
                // while the first segment has no name yet.
                let mut records = txn.open_table(RECORDS)?;
                for i in 0..100 {
                    let mut value = 1u64.to_be_bytes().to_vec();
                    value.extend_from_slice(&[b'x'; 1000]);
                    records.insert(format!("user{i}").as_str(), value.as_slice())?;
                }
                txn.open_table(PAYLOADS)?.insert(("alice", 2), b"hello".as_slice())?;
                txn.open_table(DUE)?.insert((500, "alice", 2), ())?;
                txn.open_table(DUE_BY_MESSAGE)?.insert(("alice", 2), 500)?;
                Ok(())
            })
            .await
            .expect("old tables");
        // A move cut short by a crash left a partial first segment under
        // its temporary name: it is started over, not read.
        std::fs::create_dir_all(dir.path().join("inbox")).expect("dir");
        std::fs::write(dir.path().join("inbox/first.log.new"), b"half an entry").expect("partial");
        let small = LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() };
        let log = EmbeddedInbox::open(&store, dir.path(), small).await.expect("open");
        assert!(dir.path().join("inbox/0000000001.log").exists() && !dir.path().join("inbox/first.log.new").exists());
        assert!(!dir.path().join("inbox/0000000002.log").exists(), "no roll during the move");
        assert_eq!(log.load("user99").await.expect("load").version, 1);
        let loaded = log.load("alice").await.expect("load");
        assert_eq!((loaded.version, loaded.record.as_deref()), (3, Some(&b"{\"last_id\":2}"[..])));
        assert_eq!(
            log.payloads("alice", &[2]).await.expect("payloads"),
            vec![Some(bytes::Bytes::from_static(b"hello"))]
        );
        assert_eq!(log.claim_due(600, 1000, 10).await.expect("claim"), vec![("alice".to_string(), 2)]);
        let gone = store
            .read_tables(|db| Ok(matches!(db.begin_read()?.open_table(RECORDS), Err(TableError::TableDoesNotExist(_)))))
            .expect("read");
        assert!(gone, "the old tables are dropped after the move");
        let closed = log.closed();
        drop(log);
        closed.wait(std::time::Duration::from_secs(5)).await;
        // A second start reads the log and imports nothing again.
        let log = EmbeddedInbox::open(&store, dir.path(), small).await.expect("reopen");
        assert_eq!(log.load("alice").await.expect("load").version, 3);
        assert_eq!(log.load("user0").await.expect("load").version, 1);
    }
}
