//! The outbox table and the statements on it, per backend.

use crate::backend::BackendKind;

/// The PostgreSQL channel the outbox notifies after a commit that wrote jobs.
#[cfg(feature = "postgres")]
pub(crate) const CHANNEL: &str = "sqlx_atomic_outbox";

/// A job's states.
pub(crate) const PENDING: i16 = 0;
pub(crate) const DELIVERED: i16 = 1;
pub(crate) const DEAD: i16 = 2;

/// How many parameters one INSERT row binds.
pub(crate) const ROW_PARAMS: usize = 6;

/// Rows per INSERT: within every backend's limit on bound parameters (SQLite's 32,766 is the
/// lowest).
pub(crate) const ROWS_PER_INSERT: usize = 5_000;

/// The table and its partial indexes on SQLite and PostgreSQL, which differ in the id column
/// only.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! text_table {
    ($id:literal) => {
        [
            concat!(
                "CREATE TABLE IF NOT EXISTS sqlx_atomic_outbox (
    id ",
                $id,
                ",
    delivery_id TEXT NOT NULL,
    name TEXT NOT NULL,
    job_key TEXT,
    payload TEXT NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
)"
            ),
            "CREATE INDEX IF NOT EXISTS sqlx_atomic_outbox_pending ON sqlx_atomic_outbox (id) WHERE state = 0",
            "CREATE INDEX IF NOT EXISTS sqlx_atomic_outbox_pending_key ON sqlx_atomic_outbox (job_key, id) \
             WHERE state = 0 AND job_key IS NOT NULL",
        ]
    };
}

/// The statements that create the outbox table and its indexes, in order.
///
/// A claim reads the pending jobs in id order and stops at its batch size, so its index holds
/// the pending jobs in id order (on MySQL, where an index has no condition, all jobs by state
/// then id): delivered jobs kept for `keep_delivered` are never scanned. `delivery_id` has no
/// UNIQUE index: it is unique by construction (a random prefix per process and a counter), and
/// the index would cost every job's INSERT, and every delivery's UPDATE, an entry.
pub(crate) fn create(kind: BackendKind) -> &'static [&'static str] {
    match kind {
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => &text_table!("INTEGER PRIMARY KEY AUTOINCREMENT"),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => &text_table!("BIGSERIAL PRIMARY KEY"),
        #[cfg(feature = "mysql")]
        BackendKind::MySql => &["CREATE TABLE IF NOT EXISTS sqlx_atomic_outbox (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    delivery_id VARCHAR(64) NOT NULL,
    name VARCHAR(255) NOT NULL,
    job_key VARCHAR(255),
    payload LONGTEXT NOT NULL,
    state SMALLINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    INDEX sqlx_atomic_outbox_pending (state, id),
    INDEX sqlx_atomic_outbox_key (job_key, id)
) ENGINE=InnoDB"],
    }
}

/// The INSERT of `rows` jobs.
pub(crate) fn insert(kind: BackendKind, rows: usize) -> String {
    let mut sql = String::with_capacity(128 + rows * 32);
    let pg = is_pg(kind);
    sql.push_str(
        "INSERT INTO sqlx_atomic_outbox \
         (delivery_id, name, job_key, payload, next_attempt_at, created_at) VALUES ",
    );
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..ROW_PARAMS {
            if col > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if pg {
                sql.push('$');
                sql.push_str(&n.to_string());
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

fn is_pg(kind: BackendKind) -> bool {
    #[cfg(feature = "postgres")]
    if matches!(kind, BackendKind::Postgres) {
        return true;
    }
    let _ = kind;
    false
}

/// The columns a relay reads of a job.
pub(crate) const COLUMNS: &str = "id, delivery_id, name, job_key, payload, attempts";

/// [`COLUMNS`] of the table aliased `o`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const O_COLUMNS: &str = "o.id, o.delivery_id, o.name, o.job_key, o.payload, o.attempts";

/// The condition of a job due for delivery at `now` (the first parameter), whose key has no
/// earlier job still pending: jobs of one key go out one at a time, in order.
pub(crate) const DUE: &str = "o.state = 0 AND o.next_attempt_at <= {now} \
     AND (o.job_key IS NULL OR NOT EXISTS (SELECT 1 FROM sqlx_atomic_outbox p \
     WHERE p.job_key = o.job_key AND p.id < o.id AND p.state = 0))";

/// The placeholder of parameter `n` (1-based).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn param(kind: BackendKind, n: usize) -> String {
    if is_pg(kind) {
        format!("${n}")
    } else {
        "?".to_owned()
    }
}
