//! Opting out of the request transactions before extractors run: a layer for one route
//! ([`NonAtomicRequestsLayer`]) and the path rules of
//! [`AtomicRequestsLayer::non_atomic_paths`](crate::AtomicRequestsLayer::non_atomic_paths).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

/// One or more alias names, for the opt-outs of the request layer: made from a `&'static str`, an
/// array, a slice or a `Vec` of them.
///
/// ```
/// use sqlx_atomic::AliasNames;
/// let one = AliasNames::from("default");
/// let two = AliasNames::from(["default", "reports"]);
/// assert_eq!(one.names(), ["default"]);
/// assert_eq!(two.names(), ["default", "reports"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasNames(Arc<[&'static str]>);

impl AliasNames {
    /// The names, in the order given.
    pub fn names(&self) -> &[&'static str] {
        &self.0
    }
}

impl From<&'static str> for AliasNames {
    fn from(alias: &'static str) -> Self {
        AliasNames(Arc::from([alias]))
    }
}

impl<const N: usize> From<[&'static str; N]> for AliasNames {
    fn from(aliases: [&'static str; N]) -> Self {
        AliasNames(Arc::from(aliases))
    }
}

impl From<&[&'static str]> for AliasNames {
    fn from(aliases: &[&'static str]) -> Self {
        AliasNames(Arc::from(aliases))
    }
}

impl From<Vec<&'static str>> for AliasNames {
    fn from(aliases: Vec<&'static str>) -> Self {
        AliasNames(Arc::from(aliases))
    }
}

/// A tower [`Layer`](tower_layer::Layer) for one route that runs it, extractors included, outside
/// the request transactions of some aliases: `#[non_atomic_requests]` for a whole route, in effect
/// before the route's extractors run, so that an extractor that queries the database (an
/// authentication extractor, say) can commit on its own.
///
/// Put it on the route, inside [`AtomicRequestsLayer`](crate::AtomicRequestsLayer). The rules are
/// those of `#[non_atomic_requests]` (docs/semantics.md §8.2): on an opted-out alias the route runs
/// in autocommit and its blocks are outermost blocks; if a middleware between the two layers
/// already used the request transaction, or an alias is unknown, nothing is opted out, the
/// error is logged, and the request rolls back and is answered 500. Outside the request layer it
/// changes nothing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use axum::{Router, routing::post};
/// use sqlx_atomic::{AtomicRequestsLayer, Database, Databases, NonAtomicRequestsLayer};
/// Databases::new()
///     .add("default", Database::connect_lazy("sqlite::memory:")?.atomic_requests(true))
///     .install()?;
/// let app: Router = Router::new()
///     .route(
///         "/login",
///         post(|| async { "welcome" }).layer(NonAtomicRequestsLayer::new("default")),
///     )
///     .layer(AtomicRequestsLayer::new());
/// # let _ = app; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NonAtomicRequestsLayer {
    aliases: AliasNames,
}

impl NonAtomicRequestsLayer {
    /// The layer opting out of the request transactions of `aliases`: one name
    /// (`new("default")`) or several (`new(["default", "reports"])`).
    pub fn new(aliases: impl Into<AliasNames>) -> Self {
        NonAtomicRequestsLayer {
            aliases: aliases.into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for NonAtomicRequestsLayer {
    type Service = NonAtomicRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NonAtomicRequests {
            inner,
            aliases: self.aliases.clone(),
        }
    }
}

/// The service made by [`NonAtomicRequestsLayer`].
#[derive(Debug, Clone)]
pub struct NonAtomicRequests<S> {
    inner: S,
    aliases: AliasNames,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req> tower_service::Service<Req> for NonAtomicRequests<S>
where
    S: tower_service::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Nothing of the inner future runs before its first poll, which is inside the opt-out.
        let inner = self.inner.call(req);
        Box::pin(super::__non_atomic_requests(self.aliases.names(), inner))
    }
}

/// The path rules of [`AtomicRequestsLayer::non_atomic_paths`](crate::AtomicRequestsLayer::non_atomic_paths),
/// in the order added.
#[derive(Debug, Clone, Default)]
pub(crate) struct NonAtomicPaths {
    rules: Vec<(Pattern, AliasNames)>,
}

/// A path pattern: the exact path, or (written with a trailing `*`) every path starting with the
/// text before the `*`.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(Cow<'static, str>),
    Prefix(Cow<'static, str>),
}

impl Pattern {
    fn new(pattern: Cow<'static, str>) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(Cow::Owned(prefix.to_owned())),
            None => Pattern::Exact(pattern),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(p) => path == p,
            Pattern::Prefix(p) => path.starts_with(&**p),
        }
    }
}

impl NonAtomicPaths {
    /// The rules with `paths` opting out of `aliases` added.
    pub(crate) fn with(
        &self,
        paths: impl IntoIterator<Item = Cow<'static, str>>,
        aliases: AliasNames,
    ) -> NonAtomicPaths {
        let mut rules = self.rules.clone();
        rules.extend(
            paths
                .into_iter()
                .map(|p| (Pattern::new(p), aliases.clone())),
        );
        NonAtomicPaths { rules }
    }

    /// The aliases a request for `path` opts out of: those of every rule that matches, each
    /// once; `None` when no rule matches.
    pub(crate) fn aliases_of(&self, path: &str) -> Option<AliasNames> {
        let mut matching = self.rules.iter().filter(|(p, _)| p.matches(path));
        let (_, first) = matching.next()?;
        let Some((_, second)) = matching.next() else {
            return Some(first.clone());
        };
        let mut all: Vec<&'static str> = Vec::new();
        for name in first
            .names()
            .iter()
            .chain(second.names())
            .chain(matching.flat_map(|(_, a)| a.names()))
        {
            if !all.contains(name) {
                all.push(name);
            }
        }
        Some(AliasNames::from(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&'static str, &'static [&'static str])]) -> NonAtomicPaths {
        list.iter().fold(NonAtomicPaths::default(), |r, (p, a)| {
            r.with([Cow::Borrowed(*p)], AliasNames::from(*a))
        })
    }

    #[test]
    fn exact_paths_and_star_prefixes() {
        let r = rules(&[("/login", &["default"]), ("/auth/*", &["default"])]);
        assert!(r.aliases_of("/login").is_some());
        assert!(r.aliases_of("/login/").is_none());
        assert!(r.aliases_of("/logins").is_none());
        assert!(r.aliases_of("/auth/").is_some());
        assert!(r.aliases_of("/auth/token/refresh").is_some());
        assert!(r.aliases_of("/auth").is_none());
        assert!(r.aliases_of("/").is_none());
        let all = rules(&[("*", &["a"])]);
        assert!(all.aliases_of("/anything").is_some());
        assert!(all.aliases_of("").is_some());
    }

    #[test]
    fn every_matching_rule_adds_its_aliases_once() {
        let r = rules(&[
            ("/a/*", &["default"]),
            ("/a/b", &["reports", "default"]),
            ("/a/b*", &["other"]),
        ]);
        assert_eq!(
            r.aliases_of("/a/b").unwrap().names(),
            ["default", "reports", "other"]
        );
        assert_eq!(r.aliases_of("/a/c").unwrap().names(), ["default"]);
    }
}
