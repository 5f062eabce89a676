//! The chain of blocks a future runs in: the task-local frame that every block, query and hook
//! looks up to find the task's context and its innermost block on an alias.

use std::sync::{Arc, OnceLock};

use crate::context::Context;

tokio::task_local! {
    static FRAME: Frame;
}

/// What a future sees of the context: the task's context and the chain of blocks it runs in.
///
/// Each block runs its body with a frame one link longer, so two branches of one `join!` see
/// different chains; that is how concurrent blocks of one alias in one task are detected (7.4).
///
/// A request's frame (see the web layer) creates its context only when the handler first needs
/// it, so a request that never touches a database allocates nothing for it; its deferred
/// outermost blocks are found below the chain, without a link of their own.
pub(crate) struct Frame {
    /// The task's context: set when the frame is made, except a request's root frame's, which is
    /// made on first use (reading a set cell is one load, as reading an enum's tag would be).
    ctx: OnceLock<Arc<Context>>,
    /// The innermost link, held inline: a task's outermost block allocates no link.
    head: Option<Head>,
    /// The links around `head`, innermost first.
    chain: Option<Arc<Link>>,
}

/// A link of the chain: a block of `alias`, or (`block: None`) an alias whose enclosing block
/// was opted out of (`non_atomic_requests`).
#[derive(Clone, Copy)]
struct Head {
    alias: usize,
    block: Option<u64>,
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        Frame {
            ctx: OnceLock::from(self.ctx().clone()),
            head: self.head,
            chain: self.chain.clone(),
        }
    }
}

struct Link {
    head: Head,
    parent: Option<Arc<Link>>,
}

impl Frame {
    pub(crate) fn root(ctx: Arc<Context>) -> Self {
        Frame {
            ctx: OnceLock::from(ctx),
            head: None,
            chain: None,
        }
    }

    /// The root frame of a request: its context, created on first use, has a deferred outermost
    /// block on each alias configured with `atomic_requests(true)`.
    #[cfg(feature = "tower")]
    pub(crate) fn request() -> Self {
        Frame {
            ctx: OnceLock::new(),
            head: None,
            chain: None,
        }
    }

    /// The task's context, created on first use for a request's frame.
    pub(crate) fn ctx(&self) -> &Arc<Context> {
        self.ctx.get_or_init(|| {
            Context::for_request(crate::requests::blocks::RequestBlocks::new(
                crate::registry::registry().map_or(&[], |r| &r.request_aliases),
            ))
        })
    }

    /// The context, if it was ever created (a request's frame that nothing used has none).
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn into_ctx(self) -> Option<Arc<Context>> {
        self.ctx.into_inner()
    }

    /// The frame a block's body runs in.
    pub(crate) fn child(&self, alias: usize, block: u64) -> Frame {
        self.link(alias, Some(block))
    }

    /// The frame of a handler that opted out of the alias's request block.
    pub(crate) fn opted_out(&self, alias: usize) -> Frame {
        self.link(alias, None)
    }

    fn link(&self, alias: usize, block: Option<u64>) -> Frame {
        Frame {
            ctx: OnceLock::from(self.ctx().clone()),
            head: Some(Head { alias, block }),
            // The old head moves into the chain: only a nested block allocates a link.
            chain: self.head.map(|head| {
                Arc::new(Link {
                    head,
                    parent: self.chain.clone(),
                })
            }),
        }
    }

    /// The innermost block of `alias` this frame runs in.
    pub(crate) fn innermost(&self, alias: usize) -> Option<u64> {
        if let Some(head) = self.head {
            if head.alias == alias {
                return head.block;
            }
            let mut link = self.chain.as_deref();
            while let Some(l) = link {
                if l.head.alias == alias {
                    return l.head.block;
                }
                link = l.parent.as_deref();
            }
        }
        // Below the chain: the request's deferred block on the alias, if any.
        self.ctx().deferred_block(alias)
    }

    pub(crate) fn current() -> Option<Frame> {
        FRAME.try_with(Frame::clone).ok()
    }

    /// Whether the task runs in a frame, without cloning it (nor making a request's context).
    pub(crate) fn is_set() -> bool {
        FRAME.try_with(|_| ()).is_ok()
    }

    /// Calls `f` with the task's frame, if any, without cloning it.
    pub(crate) fn with_current<R>(f: impl FnOnce(&Frame) -> R) -> Option<R> {
        FRAME.try_with(f).ok()
    }

    /// `fut` running in this frame (a nameable future: no `async fn` layer around tokio's).
    pub(crate) fn scope<F: Future>(
        self,
        fut: F,
    ) -> tokio::task::futures::TaskLocalFuture<Frame, F> {
        FRAME.scope(self, fut)
    }
}
