//! What tusring keeps in Redis and says over it, as pure functions and constants: key
//! names, the lock scripts, the release message, the check of a record's `path`, and
//! the decisions of the lock keeper. Table-tested; no I/O.
//!
//! * A record is rustus's: the key is the bare upload ID, the value the `.info` JSON.
//! * An upload's lock is `tusring:lock:<id>` = the holder's token, with an expiry
//!   (`PX`), renewed while held. A token is `<node>:<n>`: the node that took it (a
//!   random name per process) and a counter, so a node recognises a token of its own.
//! * `tusring:waiter:<id>` = the token of the newest request waiting for the upload,
//!   so an older waiter, on any node, gives up (423) as it does within one node.
//! * A request that finds the upload held publishes `<id> <holder's token>` on
//!   [`RELEASE_CHANNEL`]; the node whose token it is asks its holder to let go.

use crate::storage::id::UploadId;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pub/sub channel of release requests (one for all uploads: they are rare, one per
/// contended lock, and every node must hear them).
pub const RELEASE_CHANNEL: &str = "tusring:release";

/// SCAN's `MATCH` for record keys: every key, since an upload ID a hook chose can be
/// any ID; each candidate is then checked with the ID rule (`UploadId::parse`), which
/// leaves out tusring's own `tusring:*` keys (an ID holds no `:`), and `SCAN`'s `TYPE
/// string` leaves out keys that cannot be records.
pub const RECORD_PATTERN: &str = "*";

/// The key of the upload's lock.
pub fn lock_key(id: &UploadId) -> String {
    format!("tusring:lock:{id}")
}

/// The key naming the newest request waiting for the upload.
pub fn waiter_key(id: &UploadId) -> String {
    format!("tusring:waiter:{id}")
}

/// The key the write probe sets (`/ready`, `/health`), per node.
pub fn probe_key(node: &str) -> String {
    format!("tusring:probe:{node}")
}

/// The prefix of every token node `node` hands out.
pub fn token_prefix(node: &str) -> String {
    format!("{node}:")
}

/// Whether `token` was handed out by the node whose prefix is `prefix`.
pub fn is_own_token(token: &str, prefix: &str) -> bool {
    token.starts_with(prefix)
}

/// The release request for the upload `id` held by `holder` (a token).
pub fn release_message(id: &UploadId, holder: &str) -> String {
    format!("{id} {holder}")
}

/// Parses a release request: the upload and the holder's token.
pub fn parse_release_message(msg: &[u8]) -> Option<(UploadId, &str)> {
    let text = std::str::from_utf8(msg).ok()?;
    let (id, token) = text.split_once(' ')?;
    let id = crate::storage::layout::parse_upload_id(id)?;
    (!token.is_empty() && !token.contains(' ')).then_some((id, token))
}

/// How a lock request asks Redis ([`ACQUIRE`]'s mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Take it if free; never register as a waiter (a creation, the sweep, an assembly).
    Try,
    /// The first look of a request that may take over: take it if free, else register
    /// as the newest waiter.
    Register,
    /// A later look: give up if a newer request registered since.
    Wait,
}

impl Mode {
    /// The script's argument.
    pub fn arg(self) -> &'static str {
        match self {
            Mode::Try => "t",
            Mode::Register => "r",
            Mode::Wait => "w",
        }
    }
}

/// Takes an upload's lock. KEYS: lock, waiter. ARGV: token, this node's token prefix,
/// lock expiry (ms), mode ([`Mode::arg`]), waiter key expiry (ms).
///
/// Returns 1 when the lock is taken; -1 when a newer request waits (give up); else the
/// holder's token. A key held by a token of this node is stale and taken: the caller
/// holds this process's own lock for the upload, and a request of this process takes
/// the Redis lock only under it, so no other request here can still be holding it (its
/// release is on its way, or was lost while Redis was away).
///
/// On taking the lock, the waiter key is removed if it is ours, and otherwise set to our
/// token, so an older waiter sees that a newer request came and gives up (it never takes
/// the upload over from a newer holder).
pub const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
local waiter = redis.call('GET', KEYS[2])
if ARGV[4] == 'w' and waiter and waiter ~= ARGV[1] then
  return -1
end
if (not holder) or string.sub(holder, 1, string.len(ARGV[2])) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  if waiter == ARGV[1] then
    redis.call('DEL', KEYS[2])
  elseif waiter then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[5])
  end
  return 1
end
if ARGV[4] == 'r' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[5])
end
return holder
"#;

/// Renews locks. KEYS: lock keys; ARGV[1]: expiry (ms), then one token per key. Returns
/// one integer per key: 1 renewed, 0 not ours any more (expired, or taken).
pub const RENEW: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// Releases locks, only where the holder is still the token given. KEYS: lock keys;
/// ARGV: one token per key. Returns how many were released.
pub const RELEASE: &str = r#"
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"#;

/// What [`ACQUIRE`] said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is ours.
    Taken,
    /// A newer request waits for the upload: give up (423).
    Superseded,
    /// Held by this token.
    HeldBy(String),
}

impl Acquire {
    /// From the script's reply (an integer or the holder's token).
    pub fn from_reply(v: &redis::Value) -> Option<Acquire> {
        match v {
            redis::Value::Int(1) => Some(Acquire::Taken),
            redis::Value::Int(-1) => Some(Acquire::Superseded),
            redis::Value::BulkString(b) => {
                Some(Acquire::HeldBy(String::from_utf8_lossy(b).into_owned()))
            }
            redis::Value::SimpleString(s) => Some(Acquire::HeldBy(s.clone())),
            _ => None,
        }
    }
}

/// How long the waiter key lives: past any wait for the upload (the takeover wait),
/// and at least as long as a lock.
pub fn waiter_expiry(lock_expiry: Duration, wait: Duration) -> Duration {
    lock_expiry.max(wait * 2)
}

/// How often held locks are renewed: a third of their expiry, so two renewals in a row
/// can fail before a lock could expire.
pub fn renew_period(lock_expiry: Duration) -> Duration {
    lock_expiry / 3
}

/// Whether a lock last renewed (or taken) `since` ago must be taken as lost although
/// Redis did not say so (it cannot be reached): past two thirds of its expiry, so its
/// holder stops before another node could take it. The time is measured from when the
/// renewal was sent, which is before Redis applied it.
pub fn presumed_lost(since: Duration, lock_expiry: Duration) -> bool {
    since >= lock_expiry * 2 / 3
}

/// When a lock last renewed (or taken) at `renewed` is [`presumed_lost`]: a renewal
/// still waiting for Redis then is given up, so the holder is stopped in time.
pub fn lost_at(renewed: Instant, lock_expiry: Duration) -> Instant {
    renewed + lock_expiry * 2 / 3
}

/// Whether a record's data `path` may be used: an absolute path inside `data_dir`,
/// without `.` or `..` components. A record in Redis can be written by anyone who can
/// reach Redis, a wider door than a local info directory, so a path elsewhere (another
/// file of this machine) is refused.
pub fn path_allowed(path: &str, data_dir: &Path) -> bool {
    let p = Path::new(path);
    // Split by hand: `Path::components` drops interior `.` components.
    p.is_absolute()
        && !path.contains('\0')
        && !path.split('/').any(|part| part == "." || part == "..")
        && p.starts_with(data_dir)
        && p != data_dir
}

/// A DSN as it may be logged: scheme, host, port and database, never the password.
pub fn shown_dsn(info: &redis::ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => format!("redis://{host}:{port}/{db}"),
        redis::ConnectionAddr::Unix(path) => format!("redis+unix://{}?db={db}", path.display()),
        other => format!("{other}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_messages_round_trip_and_refuse_junk() {
        let id = UploadId::parse("5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00").unwrap();
        let msg = release_message(&id, "ab12:7");
        assert_eq!(msg, "5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00 ab12:7");
        assert_eq!(parse_release_message(msg.as_bytes()), Some((id, "ab12:7")));
        for bad in [
            &b""[..],
            b"5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00",
            b"5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00 ",
            b"tusring:lock:x ab:1",
            b"../etc/passwd ab:1",
            b"5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00 a b",
            b"\xff\xfe x",
        ] {
            assert_eq!(parse_release_message(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_recognised_by_their_node() {
        let prefix = token_prefix("9f3a");
        assert!(is_own_token("9f3a:12", &prefix));
        assert!(!is_own_token("9f3ab:12", &prefix));
        assert!(!is_own_token("1111:12", &prefix));
    }

    #[test]
    fn acquire_replies() {
        use redis::Value;
        assert_eq!(Acquire::from_reply(&Value::Int(1)), Some(Acquire::Taken));
        assert_eq!(
            Acquire::from_reply(&Value::Int(-1)),
            Some(Acquire::Superseded)
        );
        assert_eq!(
            Acquire::from_reply(&Value::BulkString(b"n:3".to_vec())),
            Some(Acquire::HeldBy("n:3".into()))
        );
        assert_eq!(Acquire::from_reply(&Value::Int(0)), None);
        assert_eq!(Acquire::from_reply(&Value::Nil), None);
    }

    #[test]
    fn renewal_timing() {
        let ttl = Duration::from_secs(6);
        assert_eq!(renew_period(ttl), Duration::from_secs(2));
        // Two renewals may fail (2 s, 4 s); at 4 s the holder is told to stop.
        assert!(!presumed_lost(Duration::from_millis(3999), ttl));
        assert!(presumed_lost(Duration::from_secs(4), ttl));
        // A renewal still waiting then is given up at that same moment.
        let renewed = Instant::now();
        let at = lost_at(renewed, ttl);
        assert!(presumed_lost(at - renewed, ttl));
        assert!(!presumed_lost(at - renewed - Duration::from_millis(1), ttl));
        assert_eq!(
            waiter_expiry(Duration::from_secs(1), Duration::from_secs(1)),
            Duration::from_secs(2)
        );
        assert_eq!(
            waiter_expiry(Duration::from_secs(5), Duration::from_secs(1)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn record_paths_must_stay_in_the_data_directory() {
        let dir = Path::new("/srv/tus/data");
        for (path, ok) in [
            ("/srv/tus/data/5c8d9f1e-0b7a-4c1e-9d3f-2a6b8c4e1f00", true),
            ("/srv/tus/data/2026/12/3/5c8d9f1e", true),
            ("/srv/tus/data", false),
            ("/srv/tus/data/", false),
            ("/srv/tus/database/x", false),
            ("/srv/tus/data/../secret", false),
            ("/srv/tus/data/./x", false),
            ("/etc/passwd", false),
            ("srv/tus/data/x", false),
            ("data/x", false),
            ("", false),
            ("/srv/tus/data/x\0y", false),
        ] {
            assert_eq!(path_allowed(path, dir), ok, "{path}");
        }
    }

    #[test]
    fn dsns_are_shown_without_their_password() {
        use redis::IntoConnectionInfo;
        let info = "redis://user:s3cret@10.0.0.5:6380/2"
            .into_connection_info()
            .unwrap();
        assert_eq!(shown_dsn(&info), "redis://10.0.0.5:6380/2");
        let info = "redis://localhost".into_connection_info().unwrap();
        assert_eq!(shown_dsn(&info), "redis://localhost:6379/0");
    }
}
