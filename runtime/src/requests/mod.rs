//! Per-request transactions (Django's `ATOMIC_REQUESTS`, docs/semantics.md §8): a tower layer, and the
//! opt-out used by `#[non_atomic_requests]`.

pub(crate) mod blocks;
#[cfg(feature = "tower")]
mod nested;
#[cfg(feature = "tower")]
mod opt_out_layer;
#[cfg(feature = "tower")]
mod response;

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
        let mut below = None;
        if let Some(id) = block {
            let mut st = actx.state();
            st.opt_out(id).map_err(|k| actx.err(k))?;
            // A request sent from a test runs on in the test's transaction (10.3).
            below = st.top_block();
        }
        child = match below {
            Some(test_block) => child.child(index, test_block),
            None => child.opted_out(index),
        };
    }
    Ok(child)
}

#[cfg(feature = "tower")]
pub use layer::{AtomicRequests, AtomicRequestsFuture, AtomicRequestsLayer};
#[cfg(feature = "tower")]
pub use opt_out_layer::{AliasNames, NonAtomicRequests, NonAtomicRequestsLayer};
#[cfg(feature = "tower")]
pub use response::{ErrorBody, HookFailure};

#[cfg(feature = "tower")]
mod layer {
    use std::borrow::Cow;
    use std::panic::AssertUnwindSafe;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Poll};

    use futures_util::FutureExt;
    use futures_util::future::CatchUnwind;
    use http::{Request, Response, StatusCode};
    use tokio::task::futures::TaskLocalFuture;

    use super::blocks::RequestBlocks;
    use super::opt_out_layer::{AliasNames, NonAtomicPaths};
    use super::response::{ErrorBody, HookFailure, Reason};
    use crate::block::end_request_block;
    use crate::context::Context;
    use crate::error::Error;
    use crate::frame::Frame;
    use crate::on_commit::{panic_message, run_request_hooks};
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

    /// What a request's future needs of the layer's configuration once the handler is done.
    #[derive(Clone)]
    struct Settings {
        rollback_if: Predicate,
        error_body: ErrorBody,
        on_hook_failure: HookFailure,
    }

    impl Settings {
        /// The default settings: moved out of a request's future in their place, they cost nothing.
        fn new() -> Self {
            Settings {
                rollback_if: Predicate::ErrorStatus,
                error_body: ErrorBody::Text,
                on_hook_failure: HookFailure::KeepResponse,
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
    /// - on_commit hooks run after the COMMIT and before the response leaves the layer. A hook
    ///   that fails (an error or a panic) after the COMMIT is logged with `tracing`, naming the
    ///   alias and the hook, and by default the handler's response stands and the remaining hooks
    ///   still run: the data is committed, and a 500 would invite the client to send the write
    ///   again. [`on_hook_failure`](Self::on_hook_failure) chooses; [`HookFailure`] says how this
    ///   differs from Django.
    /// - A COMMIT that fails and a panic in the handler roll the request back (as far as the
    ///   COMMIT had not happened) and turn the response into a 500, logged with `tracing`; so does
    ///   a transaction that a failed statement doomed although the handler answered with success
    ///   (the handler ignored the error): its work was rolled back, and the client must not be
    ///   told otherwise. The 500 has a short body saying what happened, never a database's
    ///   message ([`error_body`](Self::error_body), [`ErrorBody`]).
    /// - Several aliases: each its own transaction, nested in the order they were added to
    ///   [`Databases`](crate::Databases) (the first alias outermost), so they commit in reverse
    ///   order. As in Django, the transactions are independent: if the second COMMIT fails after
    ///   the first succeeded, the first stays committed; the response is a 500 and the log names
    ///   the alias that failed.
    /// - Routes opt out of the request transactions before their extractors run with
    ///   [`non_atomic_paths`](Self::non_atomic_paths) or, on the route,
    ///   [`NonAtomicRequestsLayer`](crate::NonAtomicRequestsLayer); a handler opts out with
    ///   `#[non_atomic_requests]`.
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
    ///
    /// The service's response body must be buildable from a `String` (`ResB: From<String>`), for
    /// the layer's own error bodies: axum's `Body`, `http_body_util::Full<Bytes>` and `String`
    /// are.
    #[derive(Clone)]
    pub struct AtomicRequestsLayer {
        settings: Settings,
        non_atomic: Option<Arc<NonAtomicPaths>>,
    }

    impl std::fmt::Debug for AtomicRequestsLayer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AtomicRequestsLayer")
                .field("error_body", &self.settings.error_body)
                .field("on_hook_failure", &self.settings.on_hook_failure)
                .field("non_atomic_paths", &self.non_atomic)
                .finish_non_exhaustive()
        }
    }

    impl Default for AtomicRequestsLayer {
        fn default() -> Self {
            Self::new()
        }
    }

    impl AtomicRequestsLayer {
        /// The layer, rolling back on every 4xx and 5xx response, keeping the response when a
        /// hook fails after the COMMIT, with text error bodies and no path opted out.
        pub fn new() -> Self {
            AtomicRequestsLayer {
                settings: Settings::new(),
                non_atomic: None,
            }
        }

        /// Roll back the request when `predicate` says so of the response status.
        pub fn rollback_if(
            mut self,
            predicate: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
        ) -> Self {
            self.settings.rollback_if = Predicate::Custom(Arc::new(predicate));
            self
        }

        /// What an on_commit hook failing after the request's COMMIT does to the response
        /// (default [`HookFailure::KeepResponse`]: the response stands, the failure is logged).
        ///
        /// ```
        /// use sqlx_atomic::{AtomicRequestsLayer, HookFailure};
        /// // The behaviour of Django (and of a block's caller): the request fails, although
        /// // its data stays committed.
        /// let layer = AtomicRequestsLayer::new().on_hook_failure(HookFailure::ServerError);
        /// # let _ = layer;
        /// ```
        pub fn on_hook_failure(mut self, policy: HookFailure) -> Self {
            self.settings.on_hook_failure = policy;
            self
        }

        /// The body of the responses the layer makes itself (default [`ErrorBody::Text`]).
        ///
        /// ```
        /// use sqlx_atomic::{AtomicRequestsLayer, ErrorBody};
        /// let layer = AtomicRequestsLayer::new().error_body(ErrorBody::Json);
        /// # let _ = layer;
        /// ```
        pub fn error_body(mut self, body: ErrorBody) -> Self {
            self.settings.error_body = body;
            self
        }

        /// Runs the requests for `paths` outside the request transactions of `aliases` (one
        /// name or several), extractors and middleware inside this layer included: as if the
        /// route were wrapped in [`NonAtomicRequestsLayer`](crate::NonAtomicRequestsLayer), with
        /// the rules of `#[non_atomic_requests]` (docs/semantics.md §8.2).
        ///
        /// A path is compared with the path of the request's URI as this layer receives it
        /// (percent-encoded as sent, without the query string, before any routing; inside
        /// `Router::nest`, without the nest's prefix), case-sensitively:
        ///
        /// - a pattern ending in `*` matches every path that starts with the text before the `*`
        ///   (`"/auth/*"` matches `/auth/` and `/auth/login/token`, not `/auth`; `"/auth*"`
        ///   matches `/auth`, `/auth/login` and `/authors` too; `"*"` matches every path);
        /// - any other pattern matches that exact path only (`"/login"` matches neither `/login/`
        ///   nor `/login/x`). No other character is special: `{id}` is not a route parameter.
        ///
        /// Called again, it adds rules; a request opts out of the aliases of every rule that
        /// matches its path. An alias that is not configured is found when a request matches:
        /// that request is rolled back and answered 500, and the log names the alias.
        ///
        /// ```
        /// use sqlx_atomic::AtomicRequestsLayer;
        /// let layer = AtomicRequestsLayer::new()
        ///     .non_atomic_paths(["/login", "/auth/*"], "default")
        ///     .non_atomic_paths(["/reports/*"], ["default", "reports"]);
        /// # let _ = layer;
        /// ```
        pub fn non_atomic_paths<P: Into<Cow<'static, str>>>(
            mut self,
            paths: impl IntoIterator<Item = P>,
            aliases: impl Into<AliasNames>,
        ) -> Self {
            let rules = self.non_atomic.as_deref().cloned().unwrap_or_default();
            let rules = rules.with(paths.into_iter().map(Into::into), aliases.into());
            self.non_atomic = Some(Arc::new(rules));
            self
        }
    }

    impl<S> tower_layer::Layer<S> for AtomicRequestsLayer {
        type Service = AtomicRequests<S>;
        fn layer(&self, inner: S) -> Self::Service {
            AtomicRequests {
                inner,
                settings: self.settings.clone(),
                non_atomic: self.non_atomic.clone(),
            }
        }
    }

    /// The service made by [`AtomicRequestsLayer`].
    #[derive(Clone)]
    pub struct AtomicRequests<S> {
        inner: S,
        settings: Settings,
        non_atomic: Option<Arc<NonAtomicPaths>>,
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
        ResB: From<String> + Send + 'static,
    {
        type Response = Response<ResB>;
        type Error = S::Error;
        type Future = AtomicRequestsFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request<ReqB>) -> Self::Future {
            // Read before the request moves into the handler's future.
            let opted_out = self
                .non_atomic
                .as_deref()
                .and_then(|rules| rules.aliases_of(req.uri().path()));
            // The handler's future is made here, by the service `poll_ready` readied, so the
            // service need not be cloned into the request's future.
            let handler = self.inner.call(req);
            if !is_installed() {
                return no_databases(self.settings.error_body);
            }
            // Sent from inside a test's transaction (10.4): the request nests in it.
            if let Some(frame) = super::nested::test_frame() {
                return in_test(frame, self.settings.clone(), opted_out, handler);
            }
            // The request's context is made only if the handler needs it (see `Frame`).
            let frame = match opted_out {
                None => Frame::request(),
                Some(aliases) => opted_out_frame(&aliases),
            };
            AtomicRequestsFuture {
                state: State::Handler {
                    handler: frame.scope(AssertUnwindSafe(handler).catch_unwind()),
                    settings: self.settings.clone(),
                },
            }
        }
    }

    /// The future of a request sent from inside a test's transaction: the handler runs in
    /// savepoints of the test's transactions (10.4).
    fn in_test<F, B, E>(
        frame: Frame,
        settings: Settings,
        opted_out: Option<AliasNames>,
        handler: F,
    ) -> AtomicRequestsFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: From<String> + Send + 'static,
        E: Send + 'static,
    {
        use super::nested::{Ended, run};
        let body = settings.error_body;
        let rollback_if = settings.rollback_if;
        let rolls_back = move |status| rollback_if.rolls_back(status);
        let ending = Box::pin(async move {
            match run(frame, rolls_back, opted_out, handler).await {
                Ended::Handler(result) => result,
                Ended::Panicked(panic) => Ok(failed(Failure::RolledBack(panic), body)),
                Ended::Failed(e) => Ok(failed(Failure::Transaction(e), body)),
                Ended::OptOutFailed(e) => Ok(failed(Failure::Request(e), body)),
            }
        });
        AtomicRequestsFuture {
            state: State::Ending { ending },
        }
    }

    /// The frame of a request whose path opts out of `aliases`: the handler's future has not
    /// been polled yet, so nothing inside the layer has used the request transactions. As for
    /// `#[non_atomic_requests]`, an alias that cannot be opted out of (an unknown one) opts out
    /// of nothing, and fails the request.
    fn opted_out_frame(aliases: &AliasNames) -> Frame {
        let frame = Frame::request();
        match super::opt_out(&frame, aliases.names()) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "non_atomic_paths: the request could not opt out");
                if let Some(request) = &frame.ctx().request {
                    lock(&request.error).get_or_insert(e);
                }
                frame
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
                settings: Settings,
            },
            /// The request's exits, boxed: a request that reaches them waited on a database.
            Ending { ending: BoxFuture<F::Output> },
            NoDatabases { body: ErrorBody },
            Done,
        }
    }

    impl<F, B, E> Future for AtomicRequestsFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: From<String> + Send + 'static,
        E: Send + 'static,
    {
        type Output = F::Output;

        fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
            let mut state = self.project().state;
            if let StateProj::Handler {
                mut handler,
                settings,
            } = state.as_mut().project()
            {
                let outcome = std::task::ready!(handler.as_mut().poll(cx));
                let Some(ctx) = handler.take_value().and_then(Frame::into_ctx) else {
                    // The handler touched no database (nor any block, hook or flag). The state
                    // stays: polled again, the finished task-local future panics.
                    return Poll::Ready(untouched(outcome, settings.error_body));
                };
                let settings = std::mem::replace(settings, Settings::new());
                let ending = crate::backend::boxed(|| finish(ctx, settings, outcome));
                state.set(State::Ending { ending });
            }
            poll_ending(state, cx)
        }
    }

    /// The states after the handler: ending the request's blocks, or (a request that touched no
    /// database) handing the response on.
    fn poll_ending<F: Future<Output = Result<Response<B>, E>>, B: From<String>, E>(
        mut state: Pin<&mut State<F>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<F::Output> {
        match state.as_mut().project() {
            StateProj::Ending { ending } => {
                let out = std::task::ready!(ending.as_mut().poll(cx));
                state.set(State::Done);
                Poll::Ready(out)
            }
            StateProj::NoDatabases { body } => {
                let body = *body;
                state.set(State::Done);
                Poll::Ready(Ok(Reason::NoDatabases.response(body)))
            }
            StateProj::Handler { .. } | StateProj::Done => {
                panic!("AtomicRequestsFuture polled after completion")
            }
        }
    }

    /// The future of every request while no databases are installed: a 500.
    fn no_databases<F: Future>(body: ErrorBody) -> AtomicRequestsFuture<F> {
        if let Err(e) = registry() {
            tracing::error!(target: "sqlx_atomic", error = %e, "AtomicRequestsLayer: no databases");
        }
        AtomicRequestsFuture {
            state: State::NoDatabases { body },
        }
    }

    /// The response of the layer's no-databases future.
    #[cfg(test)]
    pub(super) async fn no_databases_response(body: ErrorBody) -> Response<String> {
        let future = no_databases::<std::future::Ready<Result<Response<String>, ()>>>(body);
        match future.await {
            Ok(response) => response,
            Err(()) => unreachable!("the layer's own answer is never an error"),
        }
    }

    /// The answer of a request whose handler never created its context: nothing to end.
    fn untouched<B: From<String>, E>(
        outcome: Result<Result<Response<B>, E>, Panic>,
        body: ErrorBody,
    ) -> Result<Response<B>, E> {
        match outcome {
            Ok(result) => result,
            Err(panic) => Ok(failed(Failure::Panicked(panic), body)),
        }
    }

    /// Why the layer answers a request with a 500 of its own.
    enum Failure {
        /// The handler panicked before it used a database.
        Panicked(Panic),
        /// The handler panicked; the request was rolled back.
        RolledBack(Panic),
        /// Ending the request's blocks panicked (not in a hook: hooks' panics are caught).
        EndPanicked(Panic),
        /// A COMMIT (or the rollback of an alias) failed.
        Transaction(Error),
        /// The request was rolled back: a `non_atomic_requests` that could not opt out, or a
        /// request transaction that could not begin.
        Request(Error),
        /// A hook failed after its COMMIT, under [`HookFailure::ServerError`] (already logged).
        Hook,
    }

    /// Logs why the request failed and answers 500 with a body that says so.
    fn failed<B: From<String>>(why: Failure, body: ErrorBody) -> Response<B> {
        let reason = match why {
            Failure::Panicked(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "request panicked; answering 500");
                Reason::Panicked
            }
            Failure::RolledBack(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "request panicked; rolled back, answering 500");
                Reason::Panicked
            }
            Failure::EndPanicked(panic) => {
                tracing::error!(target: "sqlx_atomic", panic = %panic_message(&*panic), "ending the request's transactions panicked; answering 500");
                Reason::CommitUnknown
            }
            Failure::Transaction(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "request transaction failed; answering 500");
                Reason::of_transaction(&e)
            }
            Failure::Request(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "request rolled back");
                Reason::of_request(&e)
            }
            Failure::Hook => Reason::HookFailed,
        };
        reason.response(body)
    }

    /// After the handler: ends the request's blocks (commit or rollback, then the hooks) and
    /// turns a failure into a 500.
    async fn finish<B: From<String>, E>(
        ctx: Arc<Context>,
        settings: Settings,
        outcome: Result<Result<Response<B>, E>, Panic>,
    ) -> Result<Response<B>, E> {
        let request = ctx.request.as_ref().expect("a request's context");
        let rollback = match &outcome {
            Ok(Ok(resp)) => settings.rollback_if.rolls_back(resp.status()),
            Ok(Err(_)) | Err(_) => true,
        } || lock(&request.error).is_some();
        let ran = AssertUnwindSafe(end_request(
            &ctx,
            request,
            rollback,
            settings.on_hook_failure,
        ))
        .catch_unwind()
        .await;
        // Dropped before this point (the request's future was), the context cancels the
        // request's blocks itself.
        request.end();
        let request_error = lock(&request.error).take();
        let body = settings.error_body;
        let Ended {
            failure,
            hook_failed,
        } = match ran {
            Ok(ended) => ended,
            Err(panic) => return Ok(failed(Failure::EndPanicked(panic), body)),
        };
        let hook_fails_request =
            hook_failed && settings.on_hook_failure == HookFailure::ServerError;
        match (outcome, failure, request_error) {
            (Err(panic), ..) => Ok(failed(Failure::RolledBack(panic), body)),
            (Ok(_), Some(e), _) => Ok(failed(Failure::Transaction(e), body)),
            (Ok(_), None, Some(e)) => Ok(failed(Failure::Request(e), body)),
            (Ok(_), None, None) if hook_fails_request => Ok(failed(Failure::Hook, body)),
            (Ok(result), None, None) => result,
        }
    }

    /// How the request's blocks ended.
    struct Ended {
        /// The first COMMIT (or rollback) that failed.
        failure: Option<Error>,
        /// A hook that is not robust failed after its COMMIT.
        hook_failed: bool,
    }

    /// Ends the request's blocks, innermost first, so that the aliases commit in the reverse order
    /// of `Databases::add`; each alias's hooks run after its COMMIT, before the next alias ends.
    /// An alias the request never touched has no context and nothing to end. The exits (and the
    /// hooks they run) run outside the request's frame, as an outermost block's exit does: no
    /// block is open any more.
    async fn end_request(
        ctx: &Context,
        request: &RequestBlocks,
        rollback: bool,
        on_hook_failure: HookFailure,
    ) -> Ended {
        let keep_going = on_hook_failure == HookFailure::KeepResponse;
        let mut ended = Ended {
            failure: None,
            hook_failed: false,
        };
        for (id, actx) in request.blocks(|index| ctx.existing_alias(index)).rev() {
            // After a COMMIT failed, the aliases still open roll back (as an inner block's error
            // fails the blocks around it); those already committed stay committed. So they do
            // after a hook failed, when that fails the request.
            if rollback || ended.failure.is_some() || (ended.hook_failed && !keep_going) {
                // An alias the handler opted out of has no block: nothing to flag.
                let _ = actx.state().set_rollback(true);
            }
            let (exit, hooks) = end_request_block(&actx, id).await;
            if let Some(e) = exit.error {
                ended.failure.get_or_insert(e);
            }
            if !hooks.is_empty() && run_request_hooks(actx.name(), hooks, keep_going).await {
                ended.hook_failed = true;
            }
        }
        ended
    }
}

#[cfg(all(test, feature = "tower"))]
mod tests {
    use http::Response;
    use http::header::CONTENT_TYPE;

    use super::layer::no_databases_response;
    use super::response::ErrorBody;

    #[tokio::test]
    async fn without_databases_every_request_is_a_500_that_says_so() {
        let text: Response<String> = no_databases_response(ErrorBody::Text).await;
        assert_eq!(text.status(), 500);
        assert_eq!(text.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(
            text.body(),
            "the request was not handled: no databases are installed"
        );
        let json: Response<String> = no_databases_response(ErrorBody::Json).await;
        assert_eq!(json.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            json.body(),
            r#"{"error":"no_databases","message":"the request was not handled: no databases are installed"}"#
        );
    }
}
