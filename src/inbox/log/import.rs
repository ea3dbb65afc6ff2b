//! The one-time move of an inbox kept in the store's redb file (versions
//! before the log) into the log: read every record, payload and webhook
//! check, write them to the empty log synced, then drop the old tables.
//! A crash in between leaves the old tables; the log is no longer empty
//! then, so they are not imported twice (and are dropped by nothing: a
//! few unused pages).

use super::entry::Kind;
use super::writer::Writer;
use crate::inbox::InboxError;
use crate::store::EmbeddedStore;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("inbox_records");
const PAYLOADS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox_payloads");
const DUE: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("inbox_webhook_due");
const DUE_BY_MESSAGE: TableDefinition<(&str, u64), u64> = TableDefinition::new("inbox_webhook_due_by_message");

type Owned = (Kind, String, u64, Vec<u8>);

pub async fn from_store(store: &EmbeddedStore, writer: &Writer) -> Result<(), InboxError> {
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
    writer.write_entries(&borrowed)?;
    writer.sync()?;
    let users = entries.iter().filter(|e| e.0 == Kind::Record).count();
    tracing::info!(users, entries = entries.len(), "moved the inbox from the redb file into the inbox log");
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
