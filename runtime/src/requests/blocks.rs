//! The request's own part of a task context: its deferred outermost blocks and its error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::alias::AliasCtx;
use crate::error::Error;
use crate::registry::AliasEntry;
use crate::state::{BlockOpts, TxState};
use crate::sync::lock;

/// What a request's context has that another task's has not: an outermost block on each alias
/// configured with `atomic_requests(true)`, entered only when the alias is first used (so a request
/// that never touches an alias costs it nothing), and an error that turns the response into a 500.
pub(crate) struct RequestBlocks {
    /// `aliases[k]` is the registry index of the alias of the block with id `k + 1`.
    aliases: &'static [usize],
    /// An error to answer the request with a 500.
    pub(crate) error: Mutex<Option<Error>>,
    /// The request's blocks were ended (the layer's exits ran to the end).
    ended: AtomicBool,
}

impl RequestBlocks {
    /// The blocks of a request on the aliases `aliases` (registry indices).
    pub(crate) fn new(aliases: &'static [usize]) -> Self {
        RequestBlocks {
            aliases,
            error: Mutex::new(None),
            ended: AtomicBool::new(false),
        }
    }

    /// How many blocks the request has (their ids are 1 to this).
    pub(crate) fn count(&self) -> u64 {
        self.aliases.len() as u64
    }

    /// The id of the block on alias `index`, if the request has one there.
    pub(crate) fn block_on(&self, index: usize) -> Option<u64> {
        self.aliases
            .iter()
            .position(|&i| i == index)
            .map(|k| k as u64 + 1)
    }

    /// Enters the request's block on `entry`'s alias in its new `state`, lazily as any block.
    pub(crate) fn enter<H>(&self, entry: &AliasEntry, state: &mut TxState<H>) {
        let Some(id) = self.block_on(entry.index) else {
            return;
        };
        match state.enter(id, BlockOpts::default()) {
            Ok(()) => {
                tracing::trace!(target: "sqlx_atomic", alias = %entry.name, depth = 1, "request block entered");
            }
            Err(kind) => {
                let error = Error::at(&entry.name, kind);
                tracing::error!(target: "sqlx_atomic", error = %error, "the request transaction could not begin");
                lock(&self.error).get_or_insert(error);
            }
        }
    }

    /// The request's blocks on the aliases the request touched, innermost last, with their alias
    /// contexts (`existing`: the task's context of an alias, if it was made); an alias the request
    /// never touched has none and nothing to end.
    pub(crate) fn blocks<F>(
        &self,
        existing: F,
    ) -> impl DoubleEndedIterator<Item = (u64, Arc<AliasCtx>)>
    where
        F: Fn(usize) -> Option<Arc<AliasCtx>>,
    {
        self.aliases
            .iter()
            .enumerate()
            .filter_map(move |(k, &index)| Some((k as u64 + 1, existing(index)?)))
    }

    /// The request's blocks were ended: nothing is left to cancel when the context is dropped.
    #[cfg(feature = "tower")]
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    /// The request's context is dropped: if its blocks were not ended, the request's future was
    /// dropped (7.1), and its blocks are left in failure, innermost first; a transaction's
    /// connection is rolled back or closed in the background.
    pub(crate) fn cancel_unended<F>(&self, existing: F)
    where
        F: Fn(usize) -> Option<Arc<AliasCtx>>,
    {
        if self.ended.load(Ordering::Relaxed) {
            return;
        }
        for (id, actx) in self.blocks(existing).rev() {
            actx.cancel_block(id);
        }
    }
}
