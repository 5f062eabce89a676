//! A request sent through the layer from inside a test's rolled-back transaction
//! (docs/semantics.md §10.3): its request blocks nest in the test's transactions as savepoints,
//! like Django's test client inside a `TestCase`, so the request leaves nothing behind.

use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use http::{Response, StatusCode};

use crate::block::Atomic;
use crate::error::Error;
use crate::frame::Frame;
use crate::registry::registry;
use crate::requests::AliasNames;

/// How a nested request ended.
pub(super) enum Ended<R> {
    /// The handler's own result, to pass on: its request savepoints were released, or rolled
    /// back by the commit rule (a 4xx or 5xx, an error of the inner service).
    Handler(R),
    /// The handler panicked; its savepoints were rolled back.
    Panicked(Box<dyn Any + Send>),
    /// A request savepoint could not be released (the handler ignored an error that doomed it):
    /// it was rolled back.
    Failed(Error),
    /// The request's path opts out of an alias, and opting out failed: the handler did not run.
    OptOutFailed(Error),
}

/// Why a request savepoint is left by its error path.
enum Exit<R> {
    /// The commit rule rolls the request back; the handler's result is passed on.
    RollBack(R),
    /// The library's error.
    Failed(Error),
    /// Opting out failed.
    OptOut(Error),
}

impl<R> From<Error> for Exit<R> {
    fn from(e: Error) -> Self {
        Exit::Failed(e)
    }
}

/// The frame to run a request in, when the calling task is inside a test's transaction.
pub(super) fn test_frame() -> Option<Frame> {
    Frame::with_current(|frame| frame.ctx().in_test().then(|| frame.clone())).flatten()
}

/// Runs `handler` in `frame` (a test's), inside a savepoint on each alias configured with
/// `atomic_requests(true)`, first alias outermost, with the layer's commit rule; out of the
/// savepoints of `opted_out` (the layer's path rules), as in production.
pub(super) async fn run<F, B, E>(
    frame: Frame,
    rolls_back: impl Fn(StatusCode) -> bool + Send,
    opted_out: Option<AliasNames>,
    handler: F,
) -> Ended<Result<Response<B>, E>>
where
    F: Future<Output = Result<Response<B>, E>> + Send,
    B: Send,
    E: Send,
{
    let aliases: Vec<Cow<'static, str>> = registry().map_or_else(
        |_| Vec::new(),
        |r| {
            r.request_aliases
                .iter()
                .map(|&i| Cow::Owned(r.entries[i].name.to_string()))
                .collect()
        },
    );
    let body = async move {
        let result = match opted_out {
            None => handler.await,
            Some(names) => {
                let frame = Frame::current().expect("inside the request's blocks");
                match super::opt_out(&frame, names.names()) {
                    Ok(child) => child.scope(handler).await,
                    Err(e) => return Err(Exit::OptOut(e)),
                }
            }
        };
        match result {
            Ok(response) if !rolls_back(response.status()) => Ok(Ok(response)),
            result => Err(Exit::RollBack(result)),
        }
    };
    let nested = frame.scope(AssertUnwindSafe(nest(aliases.into_iter(), body)).catch_unwind());
    match nested.await {
        Ok(Ok(result)) | Ok(Err(Exit::RollBack(result))) => Ended::Handler(result),
        Ok(Err(Exit::Failed(e))) => Ended::Failed(e),
        Ok(Err(Exit::OptOut(e))) => Ended::OptOutFailed(e),
        Err(panic) => Ended::Panicked(panic),
    }
}

/// `body` inside a block on each of `aliases`, the first outermost.
async fn nest<I, F, R>(mut aliases: I, body: F) -> Result<R, Exit<R>>
where
    I: Iterator<Item = Cow<'static, str>> + Send,
    F: Future<Output = Result<R, Exit<R>>> + Send,
    R: Send,
{
    match aliases.next() {
        None => body.await,
        Some(alias) => {
            let inner = Box::pin(nest(aliases, body));
            Atomic::new().using(alias).run(inner).await
        }
    }
}
