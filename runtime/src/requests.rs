//! Per-request transactions (Django's `ATOMIC_REQUESTS`, SEMANTICS 8): a tower layer, and the
//! opt-out used by `#[non_atomic_requests]`.

use crate::config::lookup;
use crate::context::{Frame, lock};
use crate::error::Error;

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
                *lock(&frame.ctx.request_error) = Some(e);
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
        let actx = frame.ctx.alias(entry);
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
pub use layer::{AtomicRequests, AtomicRequestsLayer};

#[cfg(feature = "tower")]
mod layer {
    use std::panic::AssertUnwindSafe;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Poll};

    use futures_util::FutureExt;
    use http::{Request, Response, StatusCode};

    use crate::block::Atomic;
    use crate::config::registry;
    use crate::context::{Context, Frame, lock};
    use crate::error::Error;

    type Predicate = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

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
    ///   response into an empty 500, and are logged with `tracing`.
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
                rollback_if: Arc::new(|s: StatusCode| s.is_client_error() || s.is_server_error()),
            }
        }

        /// Roll back the request when `predicate` says so of the response status.
        pub fn rollback_if(
            mut self,
            predicate: impl Fn(StatusCode) -> bool + Send + Sync + 'static,
        ) -> Self {
            self.rollback_if = Arc::new(predicate);
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

    impl<S, ReqB, ResB> tower_service::Service<Request<ReqB>> for AtomicRequests<S>
    where
        S: tower_service::Service<Request<ReqB>, Response = Response<ResB>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Default + Send + 'static,
    {
        type Response = Response<ResB>;
        type Error = S::Error;
        type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request<ReqB>) -> Self::Future {
            let ready = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, ready);
            let predicate = self.rollback_if.clone();
            let handler = inner.call(req);
            Box::pin(handle(handler, predicate))
        }
    }

    fn server_error<B: Default>() -> Response<B> {
        let mut r = Response::new(B::default());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    }

    async fn handle<F, B, E>(handler: F, predicate: Predicate) -> Result<Response<B>, E>
    where
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: Default + Send + 'static,
        E: Send + 'static,
    {
        let aliases: Vec<Arc<str>> = match registry() {
            Ok(r) => r
                .entries
                .iter()
                .filter(|e| e.db.atomic_requests)
                .map(|e| e.name.clone())
                .collect(),
            Err(e) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "AtomicRequestsLayer: no databases");
                return Ok(server_error());
            }
        };
        let ctx = Context::new(false);
        let run = Frame::root(ctx.clone()).scope(wrap(
            aliases.clone(),
            aliases,
            Box::pin(handler),
            predicate,
            ctx.clone(),
        ));
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(Ok(result)) => {
                if let Some(e) = lock(&ctx.request_error).take() {
                    tracing::error!(target: "sqlx_atomic", error = %e, "request rolled back");
                    return Ok(server_error());
                }
                result
            }
            Ok(Err(e)) => {
                tracing::error!(target: "sqlx_atomic", error = %e, "request transaction failed; answering 500");
                Ok(server_error())
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(target: "sqlx_atomic", panic = %msg, "request panicked; rolled back, answering 500");
                Ok(server_error())
            }
        }
    }

    type Handler<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

    fn wrap<B, E>(
        all: Vec<Arc<str>>,
        mut rest: Vec<Arc<str>>,
        handler: Handler<B, E>,
        predicate: Predicate,
        ctx: Arc<Context>,
    ) -> BoxFuture<Result<Result<Response<B>, E>, Error>>
    where
        B: Send + 'static,
        E: Send + 'static,
    {
        if rest.is_empty() {
            return Box::pin(async move {
                let result = handler.await;
                let rollback = match &result {
                    Ok(resp) => predicate(resp.status()),
                    Err(_) => true,
                } || lock(&ctx.request_error).is_some();
                if rollback {
                    for alias in &all {
                        // An alias the handler opted out of has no block: nothing to flag.
                        let _ = crate::control::using(alias.to_string()).set_rollback(true);
                    }
                }
                Ok(result)
            });
        }
        let alias = rest.remove(0);
        Box::pin(
            Atomic::new()
                .using(alias.to_string())
                .run(async move { wrap(all, rest, handler, predicate, ctx).await }),
        )
    }
}
