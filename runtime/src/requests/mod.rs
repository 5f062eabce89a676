//! Per-request transactions (Django's `ATOMIC_REQUESTS`, docs/semantics.md §8): a tower layer, and the
//! opt-out used by `#[non_atomic_requests]`.

pub(crate) mod blocks;

use crate::error::Error;
use crate::frame::Frame;
use crate::registry::lookup;
use crate::sync::lock;

/// Runs a handler's body outside the per-request transactions of `aliases` (what
/// `#[non_atomic_requests]` expands to). Blocks inside the body work as usual; on an opted-out
/// alias they are outermost blocks and commit on their own.
///
/// If a request transaction already sent statements or registered hooks before the handler ran,
/// or an alias is unknown, nothing is opted out: the error is recorded, and the web layer rolls
/// the request back and answers 500, logging why.
#[doc(hidden)]
pub fn __non_atomic_requests<F: Future>(
    aliases: &[&'static str],
    body: F,
) -> impl Future<Output = F::Output> + use<F> {
    let aliases = aliases.to_vec();
    async move {
        let Some(frame) = Frame::current() else {
            return body.await;
        };
        match opt_out(&frame, &aliases) {
            Ok(child) => child.scope(body).await,
            Err(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "non_atomic_requests failed");
                // Outside a request (no layer) there is no response to fail: the log says it.
                if let Some(request) = &frame.ctx().request {
                    *lock(&request.error) = Some(e);
                }
                body.await
            }
        }
    }
}

fn opt_out(frame: &Frame, aliases: &[&'static str]) -> Result<Frame, Error> {
    // First check every alias, then opt out of all of them: never a partial opt-out.
    let mut targets = Vec::new();
    for alias in aliases {
        let entry = lookup(alias)?;
        let actx = frame.ctx().alias(entry);
        targets.push((entry.index, actx, frame.innermost(entry.index)));
    }
    for (_, actx, block) in &targets {
        if let Some(id) = block {
            actx.state().opt_out_check(*id).map_err(|k| actx.err(k))?;
        }
    }
    let mut child = frame.clone();
    for (index, actx, block) in targets {
        if let Some(id) = block {
            actx.state().opt_out(id).map_err(|k| actx.err(k))?;
        }
        child = child.opted_out(index);
    }
    Ok(child)
}

#[cfg(feature = "tower")]
pub use layer::{AtomicRequests, AtomicRequestsFuture, AtomicRequestsLayer};

#[cfg(feature = "tower")]
mod layer {
    use std::panic::AssertUnwindSafe;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Poll};

    use futures_util::FutureExt;
    use futures_util::future::CatchUnwind;
    use http::{Request, Response, StatusCode};
    use tokio::task::futures::TaskLocalFuture;

    use super::blocks::RequestBlocks;
    use crate::block::end_block;
    use crate::context::Context;
    use crate::error::Error;
    use crate::frame::Frame;
    use crate::on_commit::panic_message;
    use crate::registry::{is_installed, registry};
    use crate::sync::lock;

    /// When a response rolls the request back. The default is a plain value, so that a request
    /// does not touch a reference count for it.
    #[derive(Clone)]
    enum Predicate {
        ErrorStatus,
        Custom(Arc<dyn Fn(StatusCode) -> bool + Send + Sync>),
    }

    impl Predicate {
        fn rolls_back(&self, status: StatusCode) -> bool {
            match self {
                Predicate::ErrorStatus => status.is_client_error() || status.is_server_error(),
                Predicate::Custom(f) => f(status),
            }
        }
    }

    /// A tower [`Layer`](tower_layer::Layer) that runs each request in its own task context and,
    /// for every alias configured with [`atomic_requests(true)`](crate::Database::atomic_requests),
    /// in an outermost atomic block around the handler (Django's `ATOMIC_REQUESTS`).
    ///
    /// - The blocks are lazy: a request that never queries an alias sends nothing to it.
    /// - The request commits when the handler returns a response whose status is not an error,
    ///   and rolls back on a 4xx or 5xx (change with [`rollback_if`](Self::rollback_if)), on a
    ///   panic, on an error of the inner service, and when the handler called
    ///   `set_rollback(true)`.
    /// - on_commit hooks run after the COMMIT and before the response leaves the layer.
    /// - A COMMIT that fails, a failing hook and a panic (in the handler or a hook) turn the
    ///   response into an empty 500, and are logged with `tracing`; so does a transaction that
    ///   a failed statement doomed although the handler answered with success (the handler
    ///   ignored the error): its work was rolled back, and the client must not be told otherwise.
    /// - Several aliases: each its own transaction, nested in the order they were added to
    ///   [`Databases`](crate::Databases) (the first alias outermost), so they commit in reverse
    ///   order. As in Django, the transactions are independent: if the second COMMIT fails after
    ///   the first succeeded, the first stays committed; the response is a 500 and the log names
    ///   the alias that failed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// use axum::{Router, routing::get};
    /// use sqlx_atomic::{AtomicRequestsLayer, Database, Databases};
    /// Databases::new()
    ///     .add("default", Database::connect_lazy("sqlite::memory:")?.atomic_requests(true))
    ///     .install()?;
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(AtomicRequestsLayer::new());
    /// # let _ = app; Ok(()) }
    /// ```
    ///
    /// `Router::layer` wraps each route on its own, and axum boxes every route it wraps. Wrapped
    /// around the whole router instead, the layer is one service that axum does not box: a
    /// request that never queries then costs 0.04–0.08 µs in-process, against about 0.10 µs
    /// through `Router::layer`, and at most about 1 % of an idle request over loopback HTTP
    /// (BENCHMARKS.md). Serve it with `axum::ServiceExt::into_make_service`:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use axum::{Router, extract::Request, routing::get};
    /// use sqlx_atomic::{AtomicRequestsLayer, Database, Databases};
    /// use tower::Layer;
    /// Databases::new()
    ///     .add("default", Database::connect_lazy("sqlite::memory:")?.atomic_requests(true))
    ///     .install()?;
    /// let router = Router::new().route("/", get(|| async { "hello" }));
    /// let app = AtomicRequestsLayer::new().layer(router);
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app));
    /// # drop(server); Ok(()) }
    /// ```
    #[derive(Clone)]
    pub struct AtomicRequestsLayer {
        rollback_if: Predicate,
    }

    impl std::fmt::Debug for AtomicRequestsLayer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AtomicRequestsLayer")
                .finish_non_exhaustive()
        }
    }

    impl Default for AtomicRequestsLayer {
        fn default() -> Self {
            Self::new()
        }
    }

    impl AtomicRequestsLayer {
        /// The layer, rolling back on every 4xx and 5xx response.
        pub fn new() -> Self {
            AtomicRequestsLayer {
                rollback_if: Predicate::ErrorStatus,
            }
        }

        /// Roll back the request when `predicate` says so of the response status.
        pub fn rollback_if(
            mut self,
            predicate: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
        ) -> Self {
            self.rollback_if = Predicate::Custom(Arc::new(predicate));
            self
        }
    }

    impl<S> tower_layer::Layer<S> for AtomicRequestsLayer {
        type Service = AtomicRequests<S>;
        fn layer(&self, inner: S) -> Self::Service {
            AtomicRequests {
                inner,
                rollback_if: self.rollback_if.clone(),
            }
        }
    }

    /// The service made by [`AtomicRequestsLayer`].
    #[derive(Clone)]
    pub struct AtomicRequests<S> {
        inner: S,
        rollback_if: Predicate,
    }

    impl<S: std::fmt::Debug> std::fmt::Debug for AtomicRequests<S> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AtomicRequests")
                .field("inner", &self.inner)
                .finish_non_exhaustive()
        }
    }

    type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

    /// What a panic leaves: its payload.
    type Panic = Box<dyn std::any::Any + Send>;

    impl<S, ReqB, ResB> tower_service::Service<Request<ReqB>> for AtomicRequests<S>
    where
        S: tower_service::Service<Request<ReqB>, Response = Response<ResB>>,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Default + Send + 'static,
    {
        type Response = Response<ResB>;
        type Error = S::Error;
        type Future = AtomicRequestsFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request<ReqB>) -> Self::Future {
            // The handler's future is made here, by the service `poll_ready` readied, so the
            // service need not be cloned into the request's future.
            let handler = self.inner.call(req);
            if !is_installed() {
                return no_databases();
            }
            // The request's context is made only if the handler needs it (see `Frame`).
            AtomicRequestsFuture {
                state: State::Handler {
                    handler: Frame::request().scope(AssertUnwindSafe(handler).catch_unwind()),
                    predicate: self.rollback_if.clone(),
                },
            }
        }
    }

    pin_project_lite::pin_project! {
        /// The future of one request under [`AtomicRequests`]: the handler, in the request's
        /// task context, then (only if the handler used a database) the request's exits.
        pub struct AtomicRequestsFuture<F: Future> {
            #[pin]
            state: State<F>,
        }
    }

    impl<F: Future> std::fmt::Debug for AtomicRequestsFuture<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AtomicRequestsFuture")
                .finish_non_exhaustive()
        }
    }

    pin_project_lite::pin_project! {
        #[project = StateProj]
        enum State<F: Future> {
            Handler {
                #[pin]
                handler: TaskLocalFuture<Frame, CatchUnwind<AssertUnwindSafe<F>>>,
                predicate: Predicate,
            },
            /// The request's exits, boxed: a request that reaches them waited on a database.
            Ending { ending: BoxFuture<F::Output> },
            NoDatabases,
            Done,
        }
    }

    impl<F, B, E> Future for AtomicRequestsFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: Default + Send + 'static,
        E: Send + 'static,
    {
        type Output = F::Output;

        fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
            let mut state = self.project().state;
            if let StateProj::Handler {
                mut handler,
                predicate,
            } = state.as_mut().project()
            {
                let outcome = std::task::ready!(handler.as_mut().poll(cx));
                let Some(ctx) = handler.take_value().and_then(Frame::into_ctx) else {
                    // The handler touched no database (nor any block, hook or flag). The state
                    // stays: polled again, the finished task-local future panics.
                    return Poll::Ready(untouched(outcome));
                };
                let predicate = std::mem::replace(predicate, Predicate::ErrorStatus);
                let ending = crate::backend::boxed(|| finish(ctx, predicate, outcome));
                state.set(State::Ending { ending });
            }
            poll_ending(state, cx)
        }
    }

    /// The states after the handler: ending the request's blocks, or (a request that touched no
    /// database) handing the response on.
    fn poll_ending<F: Future<Output = Result<Response<B>, E>>, B: Default, E>(
        mut state: Pin<&mut State<F>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<F::Output> {
        match state.as_mut().project() {
            StateProj::Ending { ending } => {
                let out = std::task::ready!(ending.as_mut().poll(cx));
                state.set(State::Done);
                Poll::Ready(out)
            }
            StateProj::NoDatabases => {
                state.set(State::Done);
                Poll::Ready(Ok(server_error()))
            }
            StateProj::Handler { .. } | StateProj::Done => {
                panic!("AtomicRequestsFuture polled after completion")
            }
        }
    }

    /// The future of every request while no databases are installed: an empty 500.
    fn no_databases<F: Future>() -> AtomicRequestsFuture<F> {
        if let Err(e) = registry() {
            tracing::error!(target: "sqlx_atomic", error = %e, "AtomicRequestsLayer: no databases");
        }
        AtomicRequestsFuture {
            state: State::NoDatabases,
        }
    }

    fn server_error<B: Default>() -> Response<B> {
        let mut r = Response::new(B::default());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    }

    /// The answer of a request whose handler never created its context: nothing to end.
    fn untouched<B: Default, E>(
        outcome: Result<Result<Response<B>, E>, Panic>,
    ) -> Result<Response<B>, E> {
        match outcome {
            Ok(result) => result,
            Err(panic) => Ok(failed(Failure::Panicked(panic))),
        }
    }

    /// Why a request is answered with an empty 500.
    enum Failure {
        /// The handler panicked before it used a database.
        Panicked(Panic),
        /// The handler panicked; the request was rolled back.
        RolledBack(Panic),
        /// An on_commit hook panicked after the COMMIT.
        HookPanicked(Panic),
        /// A COMMIT (or the rollback of an alias) failed.
        Transaction(Error),
        /// The request was rolled back: a `non_atomic_requests` that could not opt out, or a
        /// request transaction that could not begin.
        Request(Error),
    }

    /// Logs why the request failed and answers 500.
    fn failed<B: Default>(why: Failure) -> Response<B> {
        match why {
            Failure::Panicked(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "request panicked; answering 500");
            }
            Failure::RolledBack(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "request panicked; rolled back, answering 500");
            }
            Failure::HookPanicked(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "on_commit hook panicked; answering 500");
            }
            Failure::Transaction(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "request transaction failed; answering 500");
            }
            Failure::Request(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "request rolled back");
            }
        }
        server_error()
    }

    /// After the handler: ends the request's blocks (commit or rollback, then the hooks) and
    /// turns a failure into a 500.
    async fn finish<B: Default, E>(
        ctx: Arc<Context>,
        predicate: Predicate,
        outcome: Result<Result<Response<B>, E>, Panic>,
    ) -> Result<Response<B>, E> {
        let request = ctx.request.as_ref().expect("a request's context");
        let rollback = match &outcome {
            Ok(Ok(resp)) => predicate.rolls_back(resp.status()),
            Ok(Err(_)) | Err(_) => true,
        } || lock(&request.error).is_some();
        let ran = AssertUnwindSafe(end_request(&ctx, request, rollback))
            .catch_unwind()
            .await;
        // Dropped before this point (the request's future was), the context cancels the
        // request's blocks itself.
        request.end();
        let request_error = lock(&request.error).take();
        let failure = match ran {
            Ok(failure) => failure,
            // A hook panicked (the handler's own panic is caught above).
            Err(panic) => return Ok(failed(Failure::HookPanicked(panic))),
        };
        match (outcome, failure, request_error) {
            (Err(panic), ..) => Ok(failed(Failure::RolledBack(panic))),
            (Ok(_), Some(e), _) => Ok(failed(Failure::Transaction(e))),
            (Ok(_), None, Some(e)) => Ok(failed(Failure::Request(e))),
            (Ok(result), None, None) => result,
        }
    }

    /// Ends the request's blocks, innermost first, so that the aliases commit in the reverse order
    /// of `Databases::add`; returns the first failure. An alias the request never touched has no
    /// context and nothing to end. The exits (and the hooks they run) run outside the request's
    /// frame, as an outermost block's exit does: no block is open any more.
    async fn end_request(ctx: &Context, request: &RequestBlocks, rollback: bool) -> Option<Error> {
        let mut failure = None;
        for (id, actx) in request.blocks(|index| ctx.existing_alias(index)).rev() {
            // After a COMMIT failed, the aliases still open roll back (as an inner block's error
            // fails the blocks around it); those already committed stay committed.
            if rollback || failure.is_some() {
                // An alias the handler opted out of has no block: nothing to flag.
                let _ = actx.state().set_rollback(true);
            }
            if let Some(e) = end_block(&actx, id, 1, true).await.error {
                failure.get_or_insert(e);
            }
        }
        failure
    }
}
