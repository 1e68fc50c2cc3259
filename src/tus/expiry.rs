//! The expiration extension as pure functions (tus-protocol §2.4): whether an upload has
//! expired, and when it will.
//!
//! An unfinished upload expires `lifetime` after its last write. The last write is the
//! data file's modification time (every PATCH, and the creation, change it), so the
//! `.info` record keeps rustus's format and needs no new field. Finished uploads never
//! expire.

/// An upload's standing under the expiration rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Finished (or expiration is off): never expires.
    Never,
    /// Unfinished; expires at this unix second (the `Upload-Expires` value).
    At(i64),
    /// Unfinished and past its expiry: 410 until the sweep removes it.
    Expired,
}

/// The expiry of an upload last written at `last_write` (unix seconds), given the
/// lifetime in seconds (`None` = expiration off) and whether it is finished.
pub fn expiry(now: i64, last_write: i64, lifetime: Option<u64>, finished: bool) -> Expiry {
    let Some(lifetime) = lifetime else {
        return Expiry::Never;
    };
    if finished {
        return Expiry::Never;
    }
    let at = last_write.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
    if now >= at {
        Expiry::Expired
    } else {
        Expiry::At(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(i64, i64, Option<u64>, bool, Expiry)] = &[
            (100, 0, None, false, Expiry::Never),
            (100, 0, Some(10), true, Expiry::Never),
            (100, 95, Some(10), false, Expiry::At(105)),
            (104, 95, Some(10), false, Expiry::At(105)),
            (105, 95, Some(10), false, Expiry::Expired),
            (1_000, 95, Some(10), false, Expiry::Expired),
            // A modification time in the future (clock stepped back) only delays.
            (100, 200, Some(10), false, Expiry::At(210)),
            (
                i64::MAX,
                i64::MAX - 1,
                Some(u64::MAX),
                false,
                Expiry::Expired,
            ),
            (0, i64::MAX - 1, Some(u64::MAX), false, Expiry::At(i64::MAX)),
            (0, i64::MIN, Some(5), false, Expiry::Expired),
        ];
        for &(now, last, life, finished, want) in cases {
            assert_eq!(
                expiry(now, last, life, finished),
                want,
                "{now} {last} {life:?}"
            );
        }
    }
}
