//! The responses the request layer makes itself, and the choices that shape them: what a hook
//! failing after the COMMIT does to the response ([`HookFailure`]), and the body of the layer's
//! own error responses ([`ErrorBody`]).

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::error::{Error, ErrorKind};

/// What an on_commit hook that fails after the request's COMMIT does to the response; set with
/// [`AtomicRequestsLayer::on_hook_failure`](crate::AtomicRequestsLayer::on_hook_failure).
///
/// A hook fails when it returns an error or panics. Either way the failure is logged with
/// `tracing` at ERROR level, with the alias and the hook's name (given with
/// [`OnCommit::name`](crate::OnCommit::name); `<unnamed>` otherwise), and a panic is caught: it
/// never unwinds into the server. A [`robust`](crate::OnCommit::robust) hook's failure is logged
/// and never changes anything.
///
/// This differs from Django on purpose. In Django an exception from an `on_commit` callback that
/// is not robust propagates out of the request, which then errors out although its data was
/// committed. A 500 after a committed write tells the client that the write failed and invites it
/// to send the request again: a duplicate order, a second payment. The default,
/// [`KeepResponse`](Self::KeepResponse), keeps the handler's response, which tells the truth
/// about the data.
///
/// This concerns the layer's own COMMIT only: blocks nested inside the request, and `#[atomic]`
/// blocks outside the layer, keep the hook rules of docs/semantics.md §5 (a failing hook stops the
/// remaining hooks of its commit and its failure reaches the block's caller).
///
/// ```
/// use sqlx_atomic::{AtomicRequestsLayer, HookFailure};
/// let layer = AtomicRequestsLayer::new().on_hook_failure(HookFailure::ServerError);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HookFailure {
    /// The handler's response stands; the failure is logged, and the remaining hooks of the
    /// commit still run (a panicking hook does not stop the others). With several aliases, the
    /// other aliases still commit and run their hooks.
    #[default]
    KeepResponse,
    /// The response becomes a 500 with the layer's error body ([`ErrorBody`]), saying that a hook
    /// failed after the commit; the failure is logged. As for a block (docs/semantics.md §5.7),
    /// the remaining hooks of that commit are dropped (and logged), and the aliases not yet
    /// committed roll back (§8.4). The data of the commit whose hook failed stays committed.
    ServerError,
}

/// The body of the responses the layer makes itself (a COMMIT that failed, a transaction doomed
/// by an error the handler ignored, an opt-out that failed, a panic, a hook failure under
/// [`HookFailure::ServerError`], no databases installed); set with
/// [`AtomicRequestsLayer::error_body`](crate::AtomicRequestsLayer::error_body).
///
/// The body says what happened to the request in one short sentence, and nothing else: never a
/// database's message, SQL, URL or credential (those go to the `tracing` log). Each case has a
/// stable code:
///
/// | code | status | text |
/// |---|---|---|
/// | `commit_failed` | 500 | the request's transaction could not be committed; its changes were rolled back |
/// | `commit_unknown` | 500 | the connection failed while the request's transaction was committing; whether its changes were saved is unknown |
/// | `rolled_back` | 500 | the request's database work failed and was rolled back |
/// | `opt_out_failed` | 500 | the request could not run outside its transaction; its changes were rolled back |
/// | `panicked` | 500 | the request panicked; its changes were rolled back |
/// | `hook_failed` | 500 | the request's changes were committed, but an on_commit hook failed afterwards |
/// | `no_databases` | 500 | the request was not handled: no databases are installed |
///
/// ```
/// use sqlx_atomic::{AtomicRequestsLayer, ErrorBody};
/// // {"error": "rolled_back", "message": "the request's database work failed and was rolled back"}
/// let layer = AtomicRequestsLayer::new().error_body(ErrorBody::Json);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorBody {
    /// The text, as `text/plain; charset=utf-8`.
    #[default]
    Text,
    /// `{"error": "<code>", "message": "<text>"}`, as `application/json`.
    Json,
    /// No body and no `Content-Type`.
    Empty,
}

/// Why the layer answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    CommitFailed,
    CommitUnknown,
    RolledBack,
    OptOutFailed,
    Panicked,
    HookFailed,
    NoDatabases,
}

impl Reason {
    /// The reason of a request transaction's failure: what the client may conclude about its
    /// data.
    pub(crate) fn of_transaction(e: &Error) -> Reason {
        match e.kind() {
            ErrorKind::CommitUnknown(_) => Reason::CommitUnknown,
            // An error (a statement's, a lost connection's) doomed the transaction before the
            // COMMIT: the handler's work failed, not the COMMIT.
            ErrorKind::RolledBack(_) | ErrorKind::Aborted | ErrorKind::ConnectionLost => {
                Reason::RolledBack
            }
            _ => Reason::CommitFailed,
        }
    }

    /// The reason of an error recorded for the request (by an opt-out, or a request block that
    /// could not begin).
    pub(crate) fn of_request(e: &Error) -> Reason {
        match e.kind() {
            ErrorKind::OptOut(_) | ErrorKind::UnknownAlias => Reason::OptOutFailed,
            _ => Reason::RolledBack,
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Reason::CommitFailed => "commit_failed",
            Reason::CommitUnknown => "commit_unknown",
            Reason::RolledBack => "rolled_back",
            Reason::OptOutFailed => "opt_out_failed",
            Reason::Panicked => "panicked",
            Reason::HookFailed => "hook_failed",
            Reason::NoDatabases => "no_databases",
        }
    }

    /// One sentence, with neither `"` nor `\` (it is put into JSON as it is).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Reason::CommitFailed => {
                "the request's transaction could not be committed; its changes were rolled back"
            }
            Reason::CommitUnknown => {
                "the connection failed while the request's transaction was committing; whether its changes were saved is unknown"
            }
            Reason::RolledBack => "the request's database work failed and was rolled back",
            Reason::OptOutFailed => {
                "the request could not run outside its transaction; its changes were rolled back"
            }
            Reason::Panicked => "the request panicked; its changes were rolled back",
            Reason::HookFailed => {
                "the request's changes were committed, but an on_commit hook failed afterwards"
            }
            Reason::NoDatabases => "the request was not handled: no databases are installed",
        }
    }

    /// The layer's 500 for this reason, with the body `body` asks for.
    pub(crate) fn response<B: From<String>>(self, body: ErrorBody) -> Response<B> {
        let (text, content_type) = match body {
            ErrorBody::Text => (
                self.message().to_owned(),
                Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            ),
            ErrorBody::Json => (
                format!(
                    "{{\"error\":\"{}\",\"message\":\"{}\"}}",
                    self.code(),
                    self.message()
                ),
                Some(HeaderValue::from_static("application/json")),
            ),
            ErrorBody::Empty => (String::new(), None),
        };
        let mut response = Response::new(B::from(text));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        if let Some(value) = content_type {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reason; 7] = [
        Reason::CommitFailed,
        Reason::CommitUnknown,
        Reason::RolledBack,
        Reason::OptOutFailed,
        Reason::Panicked,
        Reason::HookFailed,
        Reason::NoDatabases,
    ];

    #[test]
    fn every_body_has_its_content_type_and_exact_text() {
        for reason in ALL {
            assert!(!reason.message().contains(['"', '\\']), "{reason:?}");
            let text: Response<String> = reason.response(ErrorBody::Text);
            assert_eq!(text.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(text.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
            assert_eq!(text.body(), reason.message());
            let json: Response<String> = reason.response(ErrorBody::Json);
            assert_eq!(json.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(
                json.body(),
                &format!(
                    "{{\"error\":\"{}\",\"message\":\"{}\"}}",
                    reason.code(),
                    reason.message()
                )
            );
            let empty: Response<String> = reason.response(ErrorBody::Empty);
            assert_eq!(empty.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(empty.headers().get(CONTENT_TYPE).is_none());
            assert!(empty.body().is_empty());
        }
    }

    #[test]
    fn a_transaction_error_is_told_by_what_the_client_may_conclude() {
        let unknown = Error::named("a", ErrorKind::CommitUnknown(sqlx::Error::PoolClosed));
        assert_eq!(Reason::of_transaction(&unknown), Reason::CommitUnknown);
        let refused = Error::named("a", ErrorKind::Sqlx(sqlx::Error::RowNotFound));
        assert_eq!(Reason::of_transaction(&refused), Reason::CommitFailed);
        let aborted = Error::named("a", ErrorKind::Aborted);
        assert_eq!(Reason::of_transaction(&aborted), Reason::RolledBack);
        let opt_out = Error::named("a", ErrorKind::UnknownAlias);
        assert_eq!(Reason::of_request(&opt_out), Reason::OptOutFailed);
        let busy = Error::named("a", ErrorKind::ConcurrentBlocks);
        assert_eq!(Reason::of_request(&busy), Reason::RolledBack);
    }
}
