//! The `LISTEN` task: turns notifications for one outbox table into
//! wake-ups of its poller.
//!
//! It runs on its own one-connection pool built from the user's connect
//! options (the user's pool keeps all its connections), reconnects with
//! capped exponential backoff when the connection is lost or the server is
//! down, and wakes the poller once after every (re)connect, since
//! notifications sent in between are lost. It never panics and never spins:
//! every failure path sleeps.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use super::NOTIFY_CHANNEL;

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Listens until the task is aborted (when the outbox is dropped).
pub(crate) async fn listen(options: PgConnectOptions, table: String, wakeup: Arc<Notify>) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    let mut retry = FIRST_RETRY;
    loop {
        match listen_once(&pool, &table, &wakeup).await {
            Ok(()) => {
                // The connection was lost after it had worked: start over
                // from a short pause.
                retry = FIRST_RETRY;
                tracing::debug!(table = %table, "outbox listener lost its connection; reconnecting");
            }
            Err(error) => {
                tracing::warn!(table = %table, error = %error, retry_in = ?retry, "outbox listener cannot listen; polling continues");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One connection's worth of listening. `Ok` when an established
/// connection was lost, `Err` when connecting or listening failed.
async fn listen_once(pool: &sqlx::PgPool, table: &str, wakeup: &Notify) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    // We reconnect ourselves, with backoff.
    listener.eager_reconnect(false);
    listener.listen(NOTIFY_CHANNEL).await?;
    // Rows saved while we were not listening have had their notification.
    wakeup.notify_one();
    loop {
        match listener.try_recv().await? {
            Some(notification) if notification.payload() == table => wakeup.notify_one(),
            Some(_) => {}
            None => return Ok(()),
        }
    }
}
