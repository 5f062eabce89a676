//! std mutexes, locked without regard to poisoning: no critical section of the library leaves
//! its data half-changed, so a panic elsewhere while one was held leaves nothing to repair.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
