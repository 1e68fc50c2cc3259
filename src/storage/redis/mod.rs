//! Redis: rustus's `redis-info-storage` for the upload records, and the upload locks
//! across nodes, so that several tusring processes ("nodes", on one machine or many)
//! can serve the same uploads from one data directory (a shared volume).
//!
//! * [`records`]: [`RedisRecords`], the [`crate::storage::InfoStore`]: rustus's key (the
//!   bare ID) and value (the `.info` JSON), `--redis-info-expiration` as rustus applies
//!   it; a record's `path` must lie in the data directory.
//! * [`locks`]: [`RedisLocks`], the [`crate::storage::Locker`]: this process's lock table
//!   plus a lock in Redis, with newest-wins takeover across nodes (pub/sub).
//! * [`keeper`]: the thread that renews, releases and listens for release requests.
//! * [`conn`]: one runtime's connection: lazy, bounded in time, reconnecting; a Redis
//!   that is down or slow is a 503 with `Retry-After`.
//! * [`protocol`]: keys, scripts, messages and decisions, pure.
//!
//! Each runtime (a core, a helper thread) makes its own records and locker, each with
//! its own connection (the `redis` crate's multiplexed connection, whose driver is a task
//! of that runtime: tokio-uring runs a tokio current-thread runtime underneath). A core
//! thread never blocks on Redis. DESIGN.md, "Several nodes", has the lock protocol and
//! its failure cases.

pub mod conn;
pub mod keeper;
pub mod locks;
pub mod protocol;
pub mod records;

pub use locks::RedisLocks;
pub use records::RedisRecords;

use crate::config::Config;
use conn::RedisConn;
use keeper::Keeper;
use redis::Client;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the startup check waits for Redis (it only decides what is logged).
const STARTUP_CHECK: Duration = Duration::from_secs(1);

/// Redis as startup chose it; shared by every thread, each of which makes its own
/// handles ([`RedisSettings::records`], [`RedisSettings::locks`]).
#[derive(Clone)]
pub struct RedisSettings {
    client: Client,
    /// Where Redis is, without the password.
    shown: String,
    /// `--redis-info-expiration`.
    expiration: Option<Duration>,
    /// The canonical data directory.
    data_dir: PathBuf,
    /// This process's lock keeper.
    keeper: Arc<Keeper>,
}

impl RedisSettings {
    /// Redis of `config` (`--info-db-dsn`), for uploads whose data is in `data_dir`
    /// (canonical). Starts the lock keeper. Redis need not answer now: the daemon starts,
    /// `/ready` says Redis is unreachable, and requests that need it get 503 until it
    /// answers. Runs at startup, so it may block (at most [`STARTUP_CHECK`]).
    pub fn open(config: &Config, data_dir: &Path) -> Result<RedisSettings, String> {
        let dsn = config.info_db_dsn.as_deref().ok_or_else(|| {
            "--info-storage redis-info-storage needs --info-db-dsn (RUSTUS_INFO_DB_DSN), e.g. redis://127.0.0.1:6379/0".to_string()
        })?;
        let client = Client::open(dsn).map_err(|e| format!("--info-db-dsn: {e}"))?;
        let shown = protocol::shown_dsn(client.get_connection_info());
        match client.get_connection_with_timeout(STARTUP_CHECK) {
            Ok(mut c) => match redis::cmd("PING").query::<String>(&mut c) {
                Ok(_) => crate::debug!("Redis at {shown} answers"),
                Err(e) => crate::warn!(
                    "Redis at {shown} does not answer PING ({e}); requests that need it get 503 until it does"
                ),
            },
            Err(e) => crate::warn!(
                "Redis at {shown} cannot be reached now ({e}); serving anyway: /ready says so, and requests that need it get 503 until it answers"
            ),
        }
        let keeper = Keeper::start(client.clone(), shown.clone(), config.redis_lock_expiration)?;
        Ok(RedisSettings {
            client,
            shown,
            expiration: config.redis_info_expiration,
            data_dir: data_dir.to_path_buf(),
            keeper: Arc::new(keeper),
        })
    }

    /// For the startup line: where the records and locks are.
    pub fn describe(&self) -> String {
        format!(
            "records and locks in Redis at {} (node {}, locks expire after {:.1} s unless renewed)",
            self.shown,
            self.keeper.node(),
            self.keeper.lock_expiry().as_secs_f64()
        )
    }

    fn conn(&self) -> Rc<RedisConn> {
        Rc::new(RedisConn::new(self.client.clone(), self.shown.clone()))
    }

    /// The calling runtime's records, on a connection of their own.
    pub fn records(&self) -> RedisRecords {
        RedisRecords::new(
            self.conn(),
            self.expiration,
            self.data_dir.clone(),
            self.keeper.node(),
            self.keeper.clone(),
        )
    }

    /// The calling runtime's locker, on a connection of its own.
    pub fn locks(&self) -> RedisLocks {
        RedisLocks::new(self.conn(), self.keeper.clone())
    }

    /// Lets the keeper release the locks still queued, until `deadline` at most.
    pub fn close(&self, deadline: Instant) {
        self.keeper.close(deadline);
    }
}
