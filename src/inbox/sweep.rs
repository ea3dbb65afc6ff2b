//! The background sweep of expired messages (embedded store only: Redis
//! expires inbox keys by itself). Without it a user who never connects or
//! receives again would keep expired payloads on disk forever.

use super::Inbox;
use std::sync::Arc;
use std::time::Duration;

/// Users looked at per step.
const PAGE: usize = 1000;
/// Pause between steps, so a sweep of millions of users never hogs the
/// store's write lock.
const STEP_PAUSE: Duration = Duration::from_millis(20);

/// Sweeps every user's inbox every `every`, forever.
pub async fn sweep_forever(inbox: Arc<Inbox>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut after: Option<String> = None;
        loop {
            match inbox.sweep(after.as_deref(), PAGE).await {
                Ok(Some(last)) => after = Some(last),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox sweep stopped early; next round retries");
                    break;
                }
            }
            tokio::time::sleep(STEP_PAUSE).await;
        }
    }
}
