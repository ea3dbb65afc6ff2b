//! Revocations in the embedded store's file: table `revocations`, user ->
//! `[u64 BE before][u64 BE until]`.

use super::{Revocation, RevocationError, RevocationStore};
use crate::store::EmbeddedStore;
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

const REVOCATIONS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("revocations");

fn failed(e: impl std::fmt::Display) -> RevocationError {
    RevocationError(e.to_string())
}

#[async_trait]
impl RevocationStore for EmbeddedStore {
    async fn save(&self, user: &str, revocation: Revocation) -> Result<(), RevocationError> {
        let user = user.to_string();
        self.write_tables(move |txn| {
            let mut table = txn.open_table(REVOCATIONS)?;
            table.insert(user.as_str(), (revocation.before, revocation.until))?;
            Ok(())
        })
        .await
        .map_err(failed)
    }

    async fn load(&self, now: u64) -> Result<Vec<(String, Revocation)>, RevocationError> {
        self.read_tables(|db| {
            let txn = db.begin_read()?;
            let table = match txn.open_table(REVOCATIONS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut live = Vec::new();
            for entry in table.iter()? {
                let (user, value) = entry?;
                let (before, until) = value.value();
                if until > now {
                    live.push((user.value().to_string(), Revocation { before, until }));
                }
            }
            Ok(live)
        })
        .map_err(failed)
    }
}
