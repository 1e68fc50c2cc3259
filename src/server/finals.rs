//! The index of finals waiting for their parts (`concatenation-unfinished`), one object
//! every core and the sweep share through [`super::Shared`].

use crate::storage::id::UploadId;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Finals created before all their parts were complete and not yet reported assembled:
/// final ID → its part IDs. Invariant: a final is in the map from the moment its info
/// record is written until its assembly has written the complete record and (with
/// `--remove-parts`) removed its parts, or until it is deleted or swept; while it is in
/// the map its HEAD shows no `Upload-Offset` (`concat::head_headers`), even once its data
/// file is complete. The map is per process and is not persisted: after a restart it is rebuilt
/// from the records (`concat::rebuild_index`), and a waiting final the rebuild has not
/// reached yet is found again by the next HEAD of it (`concat::recover`). Lookups by
/// part scan the map (O(waiting finals)), which stays small: finals only wait while
/// their parts upload. The mutex is held for one map operation, never across an
/// `.await`.
///
/// A final whose assembly was tried and failed (a full disk, an I/O error), and one the
/// rebuild found (its last part may have completed before the restart), is marked to be
/// tried again: its next HEAD assembles it ([`WaitingFinals::take_retry`]), since no
/// PATCH of a part is left to do it.
#[derive(Debug, Default)]
pub struct WaitingFinals {
    map: Mutex<BTreeMap<UploadId, Waiting>>,
}

/// One waiting final.
#[derive(Debug)]
struct Waiting {
    parts: Vec<UploadId>,
    /// Its next HEAD tries the assembly (see [`WaitingFinals`]).
    retry: bool,
}

impl WaitingFinals {
    /// An empty index.
    pub fn new() -> WaitingFinals {
        WaitingFinals::default()
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<UploadId, Waiting>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `final_id` waits for `parts`.
    pub fn register(&self, final_id: UploadId, parts: &[UploadId]) {
        let parts = parts.to_vec();
        let waiting = Waiting {
            parts,
            retry: false,
        };
        self.map().insert(final_id, waiting);
    }

    /// Marks a final in the index to be assembled by its next HEAD (its assembly failed,
    /// or the index was rebuilt after a restart); nothing if it is not in the index.
    pub fn retry_later(&self, final_id: &UploadId) {
        if let Some(w) = self.map().get_mut(final_id) {
            w.retry = true;
        }
    }

    /// Whether the final was marked by [`WaitingFinals::retry_later`]; clears the mark,
    /// so one HEAD, not every HEAD, tries the assembly again.
    pub fn take_retry(&self, final_id: &UploadId) -> bool {
        self.map()
            .get_mut(final_id)
            .is_some_and(|w| std::mem::take(&mut w.retry))
    }

    /// Takes a final out of the index (assembled, deleted or swept).
    pub fn forget(&self, final_id: &UploadId) {
        self.map().remove(final_id);
    }

    /// Whether `final_id` is in the index.
    pub fn contains(&self, final_id: &UploadId) -> bool {
        self.map().contains_key(final_id)
    }

    /// Whether a waiting final names this upload as a part (such a part is not deleted by
    /// DELETE or `--remove-parts`).
    pub fn part_in_use(&self, part: &UploadId) -> bool {
        self.needed_by_another(part, None)
    }

    /// Whether a final in the index other than `assembled` names `part`.
    pub fn needed_by_another(&self, part: &UploadId, assembled: Option<&UploadId>) -> bool {
        self.map()
            .iter()
            .any(|(f, w)| Some(f) != assembled && w.parts.contains(part))
    }

    /// The waiting finals that name `part`.
    pub fn waiting_on(&self, part: &UploadId) -> Vec<UploadId> {
        self.map()
            .iter()
            .filter(|(_, w)| w.parts.contains(part))
            .map(|(f, _)| *f)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finals_are_found_by_their_parts_until_forgotten() {
        let index = WaitingFinals::new();
        let (f1, f2) = (UploadId::random(), UploadId::random());
        let (a, b, c) = (UploadId::random(), UploadId::random(), UploadId::random());
        index.register(f1, &[a, b]);
        index.register(f2, &[b, c]);
        assert!(index.contains(&f1) && index.contains(&f2));
        assert!(index.part_in_use(&a) && index.part_in_use(&c));
        assert!(!index.part_in_use(&f1), "a final is not a part");
        assert!(index.needed_by_another(&a, None));
        assert!(!index.needed_by_another(&a, Some(&f1)), "only f1 needs a");
        assert!(index.needed_by_another(&b, Some(&f1)), "f2 needs b too");
        let mut on_b = index.waiting_on(&b);
        on_b.sort();
        let mut both = vec![f1, f2];
        both.sort();
        assert_eq!(on_b, both);
        index.forget(&f1);
        assert!(!index.contains(&f1));
        assert!(!index.part_in_use(&a));
        assert_eq!(index.waiting_on(&b), vec![f2]);
        // Registering again replaces the parts list.
        index.register(f2, &[a]);
        assert!(!index.part_in_use(&c));
        assert_eq!(index.waiting_on(&a), vec![f2]);
    }

    #[test]
    fn a_retry_mark_is_taken_once_and_only_for_a_final_in_the_index() {
        let index = WaitingFinals::new();
        let (f, p, other) = (UploadId::random(), UploadId::random(), UploadId::random());
        index.retry_later(&f);
        assert!(!index.take_retry(&f), "not in the index: no mark");
        index.register(f, &[p]);
        assert!(!index.take_retry(&f), "registered unmarked");
        index.retry_later(&f);
        assert!(!index.take_retry(&other));
        assert!(index.take_retry(&f));
        assert!(!index.take_retry(&f), "taken once");
        index.retry_later(&f);
        index.register(f, &[p]);
        assert!(!index.take_retry(&f), "registering again clears the mark");
    }

    #[test]
    fn two_indexes_do_not_share_state() {
        let (one, two) = (WaitingFinals::new(), WaitingFinals::new());
        let (f, p) = (UploadId::random(), UploadId::random());
        one.register(f, &[p]);
        assert!(one.part_in_use(&p));
        assert!(!two.part_in_use(&p));
    }
}
