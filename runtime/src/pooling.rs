//! Transaction-pooling mode (`Database::transaction_pooling`): what is sent differently when a
//! pooler such as pgbouncer hands each transaction to whichever server connection is free.

use sqlx::{Database, Execute, Pool};

use crate::alias::AliasCtx;
use crate::backend::Backend;
use crate::error::{Error, ErrorKind};
use crate::parts::Parts;

/// `query` taken apart to run unnamed on `alias`; refused, before anything is sent, when it keeps
/// state in the server session.
pub(crate) fn unnamed<'q, DB: Database>(
    query: impl Execute<'q, DB>,
    alias: &str,
) -> Result<Parts<DB>, sqlx::Error> {
    let parts = Parts::new(query)?.unnamed();
    if let Some((statement, instead)) = session_scoped(parts.text()) {
        return Err(
            Error::named(alias, ErrorKind::SessionState { statement, instead }).into_sqlx(),
        );
    }
    Ok(parts)
}

/// What a statement keeps in the server session, and what to use instead; `None` when it keeps
/// nothing the library recognises. The check reads the statement's text: a function that sets
/// session state from inside (`set_config(.., false)` in a user's function, say) is not seen.
pub(crate) fn session_scoped(sql: &str) -> Option<(&'static str, &'static str)> {
    let mut words = words(sql);
    let first = words.next()?;
    let is = |w: &str, kw: &str| w.eq_ignore_ascii_case(kw);
    if is(first, "SET") {
        let second = words.next().unwrap_or("");
        if ["LOCAL", "TRANSACTION", "CONSTRAINTS"]
            .iter()
            .any(|kw| is(second, kw))
        {
            return None;
        }
        return Some((
            "a session `SET`",
            "use `SET LOCAL` inside an atomic block, which lasts for its transaction",
        ));
    }
    if is(first, "RESET") || is(first, "DISCARD") {
        return Some((
            "`RESET`/`DISCARD`",
            "session settings do not exist in this mode; use `SET LOCAL` inside a block",
        ));
    }
    if is(first, "LISTEN") || is(first, "UNLISTEN") {
        return Some((
            "`LISTEN`",
            "listen on a connection of its own that does not go through the pooler",
        ));
    }
    if is(first, "PREPARE") || is(first, "DEALLOCATE") {
        return Some((
            "a named prepared statement",
            "send the statement itself; the library sends every statement unnamed",
        ));
    }
    if is(first, "LOAD") {
        return Some(("`LOAD`", "load the library in the server's configuration"));
    }
    if is(first, "CREATE") {
        let mut second = words.next().unwrap_or("");
        if is(second, "LOCAL") || is(second, "GLOBAL") {
            second = words.next().unwrap_or("");
        }
        if (is(second, "TEMP") || is(second, "TEMPORARY")) && !contains(sql, "ON COMMIT DROP") {
            return Some((
                "a temporary table",
                "create it with `ON COMMIT DROP` inside an atomic block",
            ));
        }
        return None;
    }
    if is(first, "DECLARE") && contains(sql, "WITH HOLD") {
        return Some((
            "a cursor `WITH HOLD`",
            "declare the cursor without `WITH HOLD` inside an atomic block",
        ));
    }
    if contains(sql, "pg_advisory_lock")
        || contains(sql, "pg_try_advisory_lock")
        || contains(sql, "pg_advisory_unlock")
    {
        return Some((
            "a session advisory lock",
            "use `pg_advisory_xact_lock` inside an atomic block, released at its end",
        ));
    }
    None
}

/// The words of a statement, after leading comments; a word ends at anything but a letter, a
/// digit or `_`.
fn words(sql: &str) -> impl Iterator<Item = &str> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Whether `haystack` contains `needle`, ignoring ASCII case (and collapsing nothing: the
/// needles are single-spaced, as statements are written).
fn contains(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A hint for the errors a transaction pooler causes when the mode is off: sqlx's named
/// prepared statements (`sqlx_s_N`) shared between the pooler's clients.
pub(crate) fn pooler_hint(code: Option<&str>, message: &str) -> Option<&'static str> {
    let named = message.contains("prepared statement \"sqlx_s_");
    let pooled = match code {
        Some("26000" | "42P05") => named || message.contains("unnamed prepared statement"),
        // pgbouncer refuses a startup parameter sqlx sends, unless told to ignore it.
        Some("08P01") => {
            named || message.contains("unsupported startup parameter: extra_float_digits")
        }
        _ => false,
    };
    pooled.then_some(
        "if this database sits behind a transaction pooler (pgbouncer's pool_mode = \
         transaction), turn on transaction-pooling mode for the alias: \
         `Database::transaction_pooling(true)` or the URL parameter `atomic_pooling=transaction`",
    )
}

/// Begins the transaction of its own that a statement outside any block runs in, in
/// transaction-pooling mode.
pub(crate) async fn own_transaction<DB: Backend>(
    pool: &Pool<DB>,
    actx: Option<&AliasCtx>,
) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
    if let Some(a) = actx {
        a.record("BEGIN");
    }
    pool.begin().await
}

/// Commits the statement's own transaction, or rolls it back when the statement failed.
pub(crate) async fn end_own_transaction<DB: Backend, T>(
    tx: sqlx::Transaction<'static, DB>,
    result: Result<T, sqlx::Error>,
    actx: Option<&AliasCtx>,
) -> Result<T, sqlx::Error> {
    let commit = result.is_ok();
    if let Some(a) = actx {
        a.record(if commit { "COMMIT" } else { "ROLLBACK" });
    }
    if commit {
        tx.commit().await?;
    } else {
        // The statement's error is the one to report; the connection's state is settled by
        // the ROLLBACK or, should it fail, by closing the connection when the pool sees it.
        let _ = tx.rollback().await;
    }
    result
}

/// Deallocates the statements sqlx clients without transaction-pooling mode left on the server
/// connection the pooler chose (every one is named `sqlx_s_N`, and no client can use them again
/// in a later transaction), so that the statement sqlx is about to name cannot collide with one.
/// Clients in the mode leave none: they close theirs before the transaction ends.
pub(crate) const CLEAR_LEFTOVERS: &str = "DO $$ DECLARE s record; BEGIN \
     FOR s IN SELECT name FROM pg_prepared_statements WHERE name LIKE 'sqlx\\_s\\_%' \
     LOOP EXECUTE format('DEALLOCATE %I', s.name); END LOOP; END $$";

/// Ends the transaction that preparing or describing a statement ran in, in transaction-pooling
/// mode: the named statement sqlx made is closed on the server connection that has it (the
/// transaction keeps the pooler on that one), and sqlx forgets it, so that no later query of
/// this client names a statement the pooler's other server connections do not have. The
/// returned statement keeps its metadata, which is all a later unnamed query uses. Statements
/// are prepared named only because sqlx's `prepare` has no unnamed form.
pub(crate) async fn forget_statements<DB: Backend, T>(
    mut tx: sqlx::Transaction<'_, DB>,
    result: Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    use sqlx::Connection;
    let value = result?;
    (*tx).clear_cached_statements().await?;
    tx.commit().await?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_are_recognised() {
        for sql in [
            "SET search_path = app",
            "set session statement_timeout = 5",
            "  -- comment\n SET x = 1",
            "/* c */ RESET ALL",
            "DISCARD ALL",
            "LISTEN jobs",
            "PREPARE p AS SELECT 1",
            "CREATE TEMP TABLE t (v int)",
            "create local temporary table t (v int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "select PG_TRY_ADVISORY_LOCK(1)",
            "LOAD 'auto_explain'",
        ] {
            assert!(session_scoped(sql).is_some(), "{sql}");
        }
        for sql in [
            "SET LOCAL statement_timeout = 5",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "CREATE TEMP TABLE t (v int) ON COMMIT DROP",
            "CREATE TABLE settings (v int)",
            "SELECT pg_advisory_xact_lock(1)",
            "INSERT INTO t (note) VALUES ('SET x')",
            "UPDATE t SET v = 1",
            "DECLARE c CURSOR FOR SELECT 1",
            "",
        ] {
            assert!(session_scoped(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn the_poolers_errors_get_a_hint() {
        assert!(
            pooler_hint(
                Some("26000"),
                "prepared statement \"sqlx_s_2\" does not exist"
            )
            .is_some()
        );
        assert!(
            pooler_hint(
                Some("42P05"),
                "prepared statement \"sqlx_s_1\" already exists"
            )
            .is_some()
        );
        assert!(
            pooler_hint(
                Some("08P01"),
                "bind message supplies 2 parameters, but prepared statement \"sqlx_s_2\" requires 0"
            )
            .is_some()
        );
        assert!(pooler_hint(Some("26000"), "unnamed prepared statement does not exist").is_some());
        assert!(
            pooler_hint(
                Some("08P01"),
                "unsupported startup parameter: extra_float_digits"
            )
            .is_some()
        );
        assert!(pooler_hint(Some("23505"), "duplicate key").is_none());
        assert!(pooler_hint(Some("26000"), "prepared statement \"mine\" does not exist").is_none());
    }
}
