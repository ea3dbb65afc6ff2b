//! The id floor: after an unclean stop, new message ids start above every
//! id that may have been handed out.
//!
//! A new message is delivered live as soon as it is taken into the log,
//! before the write and disk sync that make it durable (its API answer
//! waits for that sync). A power cut, a kernel crash or (with writes still
//! waiting behind, writer.rs) a crash of the process can take back the
//! newest writes, and with them ids a device may already have seen,
//! processed and acked. Giving such an id again to a different message would make
//! the device skip it as already seen. So a stop without the clean marker
//! (`CLEAN`, written after the last sync of an orderly close) raises the
//! floor [`STEP`] above the highest id in any user's record or above the
//! floor it had (ids from it on may be the lost ones), whichever is
//! higher, and the floor is kept in `ID_FLOOR` for good: ids jump once per
//! unclean stop, and stay increasing per user (all proto-spec section 8
//! promises). What a stall could hand out unsynced stays far below the
//! step: new messages are refused while writes wait too long for a sync.

use super::Shared;
use super::index::Index;
use super::writer::sync_dir;
use crate::inbox::InboxError;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// More ids than one user can be given between two disk syncs (a sync is
/// at most `inbox.sync_interval_ms` apart from a write, and a stalled one
/// fails the writes waiting on it after `inbox.write_timeout_ms`).
pub const STEP: u64 = 1 << 20;

/// Far above any real id, far below where `id + 1` could overflow.
const MAX: u64 = 1 << 62;

const CLEAN: &str = "CLEAN";
const FLOOR: &str = "ID_FLOOR";

/// The floor for this run: the kept one, raised if the last stop was not
/// clean (`fresh`: the log was just created, nothing was handed out).
/// Removes the clean marker: from now until the next orderly close, a stop
/// is unclean.
///
/// # Errors
/// The directory cannot be read or written, or `ID_FLOOR` is damaged.
pub fn open(shared: &Shared, index: &Index, fresh: bool) -> Result<u64, InboxError> {
    let dir = &shared.dir;
    let io = |what: &str, e: std::io::Error| InboxError(format!("inbox log {what} in {}: {e}", dir.display()));
    let kept = match std::fs::read_to_string(dir.join(FLOOR)) {
        Ok(text) => text.trim().parse::<u64>().ok().filter(|f| *f <= MAX).ok_or_else(|| {
            InboxError(format!(
                "{} is damaged ({text:?}): write a number above every message id ever given, \
                 or the last good value, and start again",
                dir.join(FLOOR).display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("reading the id floor", e)),
    };
    let clean = dir.join(CLEAN);
    if clean.exists() {
        std::fs::remove_file(&clean).map_err(|e| io("removing the clean-stop marker", e))?;
        sync_dir(dir)?;
        return Ok(kept);
    }
    if fresh {
        return Ok(kept);
    }
    // Above the kept floor too: ids from it on may have been handed out
    // since it was raised and lost with this stop.
    let highest = highest_id(shared, index)?;
    let floor = kept.max(highest).saturating_add(STEP).min(MAX);
    let tmp = dir.join(format!("{FLOOR}.new"));
    let mut file = File::create(&tmp).map_err(|e| io("writing the id floor", e))?;
    file.write_all(floor.to_string().as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, dir.join(FLOOR)).map_err(|e| io("naming the id floor", e))?;
    sync_dir(dir)?;
    tracing::warn!(highest, floor, "inbox log: the last stop was not clean; new message ids start at the floor");
    Ok(floor)
}

/// Marks an orderly close, after its last sync succeeded.
///
/// # Errors
/// The marker could not be made durable (the next start raises the floor).
pub fn close(dir: &Path) -> Result<(), InboxError> {
    let marker = File::create(dir.join(CLEAN)).and_then(|f| f.sync_all());
    marker.map_err(|e| InboxError(format!("inbox log clean-stop marker: {e}")))?;
    sync_dir(dir)
}

/// The highest `last_id` in any user's newest record.
fn highest_id(shared: &Shared, index: &Index) -> Result<u64, InboxError> {
    #[derive(serde::Deserialize)]
    struct LastId {
        last_id: u64,
    }
    let mut highest = 0;
    for user in index.users.values() {
        let Some(loc) = user.record else { continue };
        let file = index.file(loc.seg).ok_or_else(|| InboxError("segment vanished".into()))?;
        let value = shared.read(&file, loc)?;
        // A record that does not parse fails that user's every operation
        // anyway (and is reported then).
        if let Ok(record) = serde_json::from_slice::<LastId>(&value) {
            highest = highest.max(record.last_id);
        }
    }
    Ok(highest)
}
