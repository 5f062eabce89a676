//! Tests that really commit, and the database left as the test found it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use sqlx::{AssertSqlSafe, Row};

use crate::backend::{AnyConn, BackendKind, dispatch};
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::registry::{AliasEntry, lookup};

/// Runs `body` for real, outside any test transaction, and then puts the named tables of
/// `alias` back as they were before it, like Django's `TransactionTestCase`.
///
/// Before the body, the full contents of each table in `tables` are copied into a scratch table
/// of the library's own (`sqlx_atomic_snapshot_<process>_<n>_<i>_<table>`, unique to the call,
/// in the table's schema). The body then runs as code runs in production: its blocks commit,
/// their on_commit hooks run, and other connections, tasks and workers see what it wrote. After
/// it, in one transaction on a connection of the alias's pool, each table's rows are deleted in
/// the reverse of the order given and the copies inserted back in the order given (so a parent
/// table named before its children satisfies their foreign keys), auto-increment counters are
/// set back (see below), and the scratch tables are dropped. That happens however the body ends:
/// with `Ok`, with `Err`, or with a panic, which is resumed once the tables are restored.
///
/// Returns the body's output, or an error naming the alias when: a name in `tables` is not a
/// plain identifier (`orders`, or `schema.orders`: ASCII letters, digits and `_`, not starting
/// with a digit; names are quoted for the backend, never pasted into SQL), is named twice, or is
/// not a table of the database; the call is made inside an atomic block of the alias
/// ([`ErrorKind::InsideBlock`]), such as a [`rollback_after`](crate::testing::rollback_after)
/// test transaction, whose locks the snapshot and restore would wait for; or the snapshot or the
/// restore fails. When the restore fails, its transaction is rolled back and the scratch tables
/// are kept, so the rows as they were can still be recovered by hand: the error names them.
/// The snapshot and the restore use the alias's pool directly, never the task's ambient
/// connection, so no block of the caller takes part in them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite:file:restore_doc?mode=memory&cache=shared")?).install()?;
/// use sqlx_atomic::{Atomic, on_commit, sqlite, testing};
/// use std::sync::atomic::{AtomicBool, Ordering};
/// let db = sqlite("default");
/// sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
///     .execute(&db)
///     .await?;
/// sqlx::query("INSERT INTO orders (item) VALUES ('book')").execute(&db).await?;
///
/// static CONFIRMED: AtomicBool = AtomicBool::new(false);
/// let out = testing::restore_after("default", ["orders"], async {
///     Atomic::new()
///         .run(async {
///             sqlx::query("INSERT INTO orders (item) VALUES ('pen')").execute(&db).await?;
///             sqlx::query("DELETE FROM orders WHERE item = 'book'").execute(&db).await?;
///             on_commit(|| CONFIRMED.store(true, Ordering::SeqCst)).await
///         })
///         .await?;
///     // Committed for real: the hook ran, and any connection sees the pen.
///     assert!(CONFIRMED.load(Ordering::SeqCst));
///     let pool = sqlx_atomic::pool::<sqlx::Sqlite>("default")?;
///     let items: Vec<String> = sqlx::query_scalar("SELECT item FROM orders").fetch_all(&pool).await?;
///     assert_eq!(items, ["pen"]);
///     Ok::<_, sqlx_atomic::Error>("done")
/// })
/// .await??;
/// assert_eq!(out, "done");
///
/// // The table is as it was: the book is back, the pen is gone.
/// let items: Vec<String> = sqlx::query_scalar("SELECT item FROM orders").fetch_all(&db).await?;
/// assert_eq!(items, ["book"]);
///
/// // Names are checked, never pasted into SQL.
/// let err = testing::restore_after("default", ["orders; DROP TABLE orders"], async {})
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("not a plain table name"), "{err}");
/// # Ok(()) }
/// ```
///
/// # Prefer `rollback_after`
///
/// [`rollback_after`](crate::testing::rollback_after) (and `#[sqlx_atomic::test]`) should be the
/// default: its rollback undoes everything the body did in the database, costs nothing, and lets
/// tests run in parallel on shared tables. Use `restore_after` only for what a rolled-back
/// transaction cannot show: on_commit hooks feeding a queue that a worker drains, code that opens
/// its own transactions or `durable` blocks that must really commit, work done on other tasks or
/// other connections that must see the body's rows.
///
/// # What it costs
///
/// Every named table is copied twice, in full: into the snapshot before the body and back from it
/// after. It is meant for small test tables, not for a database loaded with fixtures.
///
/// # What it does not undo
///
/// - Tables that are not named. Name every table the body writes, parents before children. A
///   table that is not named but references a named one with `ON DELETE CASCADE` loses its rows
///   referencing the named table when the restore deletes them; one with a plain foreign key
///   makes the restore fail (and roll back) while it references rows the restore deletes.
/// - Counters other than the tables' own: a PostgreSQL sequence that no column of a named table
///   owns (`serial` and identity columns' sequences are set back), and on MySQL/MariaDB, where
///   the counter is read from `information_schema.TABLES`, MySQL 8's cached copy of it
///   (`information_schema_stats_expiry`) may be stale. SQLite's `AUTOINCREMENT` counters
///   (`sqlite_sequence`) and MySQL/MariaDB's `AUTO_INCREMENT` are set back.
/// - Schema changes: tables, columns or indexes the body creates, alters or drops. A named table
///   must keep its columns for its rows to be put back.
/// - Effects outside the database: a message sent to Redis or a queue service, a file written,
///   an HTTP call made.
/// - Triggers: the restore's deletes and inserts fire the named tables' triggers, and what those
///   write elsewhere stays.
/// - Rows written to the named tables by other tests that commit at the same time: the restore
///   puts back the snapshot, dropping their rows, and their restore may put back the body's.
///   Tests using `restore_after` should use tables of their own, or run one after the other.
/// - On MySQL/MariaDB, a table whose rows reference rows of the same table: InnoDB checks
///   foreign keys row by row, so deleting or inserting its rows in one statement may fail.
///
/// If the future is dropped before it finishes (a timeout around it, say), the restore is started
/// on a task of the current tokio runtime, when there is one, and nobody waits for it: a test
/// that must see the tables restored awaits the call to its end.
pub async fn restore_after<I, S, F>(alias: &str, tables: I, body: F) -> Result<F::Output, Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
    F: Future,
{
    let entry = lookup(alias)?;
    refuse_inside_block(entry)?;
    let dialect = Dialect::of(entry.kind);
    let mut parsed: Vec<Table> = Vec::new();
    for raw in tables {
        let table = Table::parse(entry, dialect, raw.as_ref())?;
        if parsed.iter().any(|t| t.same_as(&table)) {
            return Err(invalid(entry, format!("`{}` is named twice", table.shown)));
        }
        parsed.push(table);
    }
    let snapshot = take_snapshot(entry, dialect, parsed).await?;
    let mut pending = Pending(Some(snapshot));
    let out = AssertUnwindSafe(body).catch_unwind().await;
    let restored = match pending.0.take() {
        Some(snapshot) => snapshot.restore().await,
        None => Ok(()),
    };
    match (out, restored) {
        (Ok(out), Ok(())) => Ok(out),
        (Ok(_), Err(e)) => Err(e),
        (Err(panic), restored) => {
            if let Err(e) = restored {
                // The panic is what the test reports; the failed restore must not go unseen.
                eprintln!("sqlx_atomic::testing::restore_after, after the body panicked: {e}");
            }
            std::panic::resume_unwind(panic)
        }
    }
}

/// The snapshot of a call whose body has not finished: restored in the background if the call's
/// future is dropped.
struct Pending(Option<Snapshot>);

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(snapshot) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = snapshot.restore().await {
                        eprintln!(
                            "sqlx_atomic::testing::restore_after, after its future was dropped: {e}"
                        );
                    }
                });
            }
            Err(_) => eprintln!(
                "sqlx_atomic::testing::restore_after: its future was dropped outside a tokio \
                 runtime, so the tables of `{}` were not restored; their rows as they were are \
                 kept in {}",
                snapshot.entry.name,
                snapshot.scratch_list()
            ),
        }
    }
}

/// The error of a refused call or a failed snapshot or restore, naming the alias.
fn invalid(entry: &AliasEntry, message: String) -> Error {
    Error::at(
        &entry.name,
        ErrorKind::Sqlx(sqlx::Error::InvalidArgument(format!(
            "testing::restore_after: {message}"
        ))),
    )
}

/// Refuses a call inside a block (or a manual transaction) of the alias: the body's own
/// transactions, and the snapshot and restore, would wait for the locks that transaction holds
/// until the call returns, which it never would.
fn refuse_inside_block(entry: &'static Arc<AliasEntry>) -> Result<(), Error> {
    let inside = Frame::with_current(|frame| {
        frame.innermost(entry.index).is_some()
            || frame.ctx().existing_alias(entry.index).is_some_and(|actx| {
                let st = actx.state();
                st.in_block() || st.in_transaction()
            })
    });
    if inside == Some(true) {
        return Err(Error::at(
            &entry.name,
            ErrorKind::InsideBlock("testing::restore_after"),
        ));
    }
    Ok(())
}

/// The SQL spelling of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(all(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    fn of(kind: BackendKind) -> Self {
        match kind {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            BackendKind::MySql => Dialect::MySql,
        }
    }

    /// An identifier, quoted: any text, the quote character doubled.
    fn ident(self, name: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            Dialect::Sqlite | Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// A string literal: the quote doubled, and on MySQL/MariaDB the backslash too (it escapes
    /// there, unless `NO_BACKSLASH_ESCAPES` is set; the names given here never contain one).
    fn literal(self, text: &str) -> String {
        let text = text.replace('\'', "''");
        match self {
            Dialect::MySql => format!("'{}'", text.replace('\\', "\\\\")),
            Dialect::Sqlite | Dialect::Postgres => format!("'{text}'"),
        }
    }

    fn begin(self) -> &'static str {
        match self {
            // Takes the write lock at once, so that the transaction never has to upgrade a read
            // lock that another writer's holds (SQLITE_BUSY_SNAPSHOT).
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres | Dialect::MySql => "BEGIN",
        }
    }
}

/// A table named by the caller, checked.
#[derive(Debug)]
struct Table {
    /// The schema, when given; SQLite's is `main` when not.
    schema: Option<String>,
    name: String,
    /// As the caller wrote it.
    shown: String,
    /// `"schema"."name"`, quoted.
    quoted: String,
}

impl Table {
    fn parse(entry: &AliasEntry, dialect: Dialect, raw: &str) -> Result<Table, Error> {
        let plain = |s: &str| {
            let mut bytes = s.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let (schema, name) = match raw.split_once('.') {
            None if plain(raw) => (None, raw),
            Some((schema, name)) if plain(schema) && plain(name) => (Some(schema), name),
            _ => {
                return Err(invalid(
                    entry,
                    format!(
                        "{raw:?} is not a plain table name (ASCII letters, digits and `_`, not \
                         starting with a digit, optionally qualified as `schema.table`); table \
                         names are quoted, never pasted into SQL"
                    ),
                ));
            }
        };
        let schema = match (schema, dialect) {
            (None, Dialect::Sqlite) => Some("main"),
            (schema, _) => schema,
        };
        let quoted = match schema {
            Some(s) => format!("{}.{}", dialect.ident(s), dialect.ident(name)),
            None => dialect.ident(name),
        };
        Ok(Table {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            shown: raw.to_owned(),
            quoted,
        })
    }

    /// Whether both name one table (ignoring case, as SQLite and MySQL on some systems do).
    fn same_as(&self, other: &Table) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        eq(&self.name, &other.name)
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }

    /// A name in the table's schema, quoted.
    fn sibling(&self, dialect: Dialect, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", dialect.ident(s), dialect.ident(name)),
            None => dialect.ident(name),
        }
    }
}

/// One table's copy, and what else is set back with it.
#[derive(Debug)]
struct TableCopy {
    table: Table,
    /// The scratch table, quoted.
    scratch: String,
    /// Its columns other than generated ones, quoted and separated by commas.
    columns: String,
    counter: Counter,
}

/// An auto-increment counter as it was before the body.
#[derive(Debug)]
enum Counter {
    None,
    /// SQLite `AUTOINCREMENT`: the table's row of `sqlite_sequence`, if the schema has that table
    /// (`Some(None)`: it had no row).
    Sqlite(Option<Option<(String, i64)>>),
    /// PostgreSQL: each sequence the table's columns own, by oid: its last value (`None`: not
    /// called yet) and its start.
    Postgres(Vec<(u32, Option<i64>, i64)>),
    /// MySQL/MariaDB: the table's next `AUTO_INCREMENT` value.
    MySql(Option<u64>),
}

/// The copies of one call.
struct Snapshot {
    entry: &'static Arc<AliasEntry>,
    dialect: Dialect,
    copies: Vec<TableCopy>,
}

/// Distinguishes the scratch tables of the calls of one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The identifiers of every backend are at most this long (PostgreSQL's 63 bytes).
const MAX_IDENT: usize = 63;

async fn take_snapshot(
    entry: &'static Arc<AliasEntry>,
    dialect: Dialect,
    tables: Vec<Table>,
) -> Result<Snapshot, Error> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut copies = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let prefix = format!("sqlx_atomic_snapshot_{}_{n}_{i}_", std::process::id());
        let room = MAX_IDENT.saturating_sub(prefix.len()).min(table.name.len());
        let scratch = table.sibling(dialect, &format!("{prefix}{}", &table.name[..room]));
        copies.push(TableCopy {
            table,
            scratch,
            columns: String::new(),
            counter: Counter::None,
        });
    }
    let mut snapshot = Snapshot {
        entry,
        dialect,
        copies,
    };
    let mut conn = Conn::new(
        entry
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| snapshot.failed("taking a connection for the snapshot", e))?,
    );
    // SQLite and PostgreSQL copy in one transaction, which leaves nothing behind if a copy fails;
    // on MySQL/MariaDB each CREATE commits by itself, and the copies made are dropped instead.
    let transactional = dialect != Dialect::MySql;
    if transactional {
        conn.open = true;
        exec(&mut conn, dialect.begin().to_owned())
            .await
            .map_err(|e| snapshot.failed("starting the snapshot", e))?;
    }
    let mut made = 0;
    let result = async {
        for copy in &mut snapshot.copies {
            copy.columns = columns(&mut conn, dialect, &copy.table)
                .await
                .map_err(|e| (copy.table.shown.clone(), e))?
                .ok_or_else(|| (copy.table.shown.clone(), None))?;
            copy.counter = counter(&mut conn, dialect, &copy.table)
                .await
                .map_err(|e| (copy.table.shown.clone(), Some(e)))?;
            let create = match dialect {
                // Never logged: the copy is scratch, dropped after the restore.
                Dialect::Postgres => "CREATE UNLOGGED TABLE",
                Dialect::Sqlite | Dialect::MySql => "CREATE TABLE",
            };
            // A table of this name is left over from an earlier process with the same id that
            // ended before restoring: no live call uses it.
            let sql = format!(
                "DROP TABLE IF EXISTS {scratch}; {create} {scratch} AS SELECT {columns} FROM {table}",
                scratch = copy.scratch,
                columns = copy.columns,
                table = copy.table.quoted,
            );
            exec(&mut conn, sql)
                .await
                .map_err(|e| (copy.table.shown.clone(), Some(e)))?;
            made += 1;
        }
        Ok::<(), (String, Option<sqlx::Error>)>(())
    }
    .await;
    match result {
        Ok(()) => {
            if transactional {
                exec(&mut conn, "COMMIT".to_owned())
                    .await
                    .map_err(|e| snapshot.failed("committing the snapshot", e))?;
                conn.open = false;
            }
            Ok(snapshot)
        }
        Err((table, cause)) => {
            if transactional {
                end_failed(&mut conn).await;
            } else {
                for copy in &snapshot.copies[..made] {
                    let _ = exec(&mut conn, format!("DROP TABLE IF EXISTS {}", copy.scratch)).await;
                }
            }
            Err(invalid(
                entry,
                match cause {
                    None => format!(
                        "`{table}` is not a table of this database (there is no such table, or it \
                         is a view)"
                    ),
                    Some(e) => format!("cannot copy `{table}` before the body: {e}"),
                },
            ))
        }
    }
}

/// A connection of the alias's pool, closed rather than given back while a transaction the
/// helper began on it may be open: the helper sends BEGIN and COMMIT as plain statements, which
/// sqlx does not track, so neither an error nor a dropped future may leave one open in the pool.
struct Conn {
    conn: AnyConn,
    /// A BEGIN was sent and no COMMIT or ROLLBACK has succeeded since.
    open: bool,
}

impl Conn {
    fn new(conn: AnyConn) -> Self {
        Conn { conn, open: false }
    }
}

impl std::ops::Deref for Conn {
    type Target = AnyConn;
    fn deref(&self) -> &AnyConn {
        &self.conn
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConn {
        &mut self.conn
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// Rolls back the transaction of a failed step; if that fails too, the connection is closed
/// when dropped.
async fn end_failed(conn: &mut Conn) {
    if exec(conn, "ROLLBACK".to_owned()).await.is_ok() {
        conn.open = false;
    }
}

/// The table's columns other than generated ones (which cannot be inserted), quoted, in order;
/// `None` when it is not a table of the database.
async fn columns(
    conn: &mut AnyConn,
    dialect: Dialect,
    table: &Table,
) -> Result<Option<String>, Option<sqlx::Error>> {
    let name = dialect.literal(&table.name);
    let sql = match dialect {
        Dialect::Sqlite => {
            let schema = table.schema.as_deref().unwrap_or("main");
            format!(
                "SELECT x.name FROM pragma_table_xinfo({name}, {schema_lit}) AS x \
                 WHERE x.hidden = 0 AND EXISTS (SELECT 1 FROM {schema}.sqlite_master \
                 WHERE type = 'table' AND name = {name} COLLATE NOCASE) ORDER BY x.cid",
                schema_lit = dialect.literal(schema),
                schema = dialect.ident(schema),
            )
        }
        Dialect::Postgres => format!(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             WHERE a.attrelid = to_regclass('{regclass}') AND c.relkind IN ('r', 'p') \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
            // Checked identifiers, quoted: no quote of either kind can occur in them.
            regclass = table.quoted,
        ),
        Dialect::MySql => format!(
            "SELECT c.COLUMN_NAME FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t \
             ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = {schema} AND c.TABLE_NAME = {name} \
             AND t.TABLE_TYPE = 'BASE TABLE' AND COALESCE(c.GENERATION_EXPRESSION, '') = '' \
             ORDER BY c.ORDINAL_POSITION",
            schema = mysql_schema(dialect, table),
        ),
    };
    let rows = strings(conn, sql, 1).await.map_err(Some)?;
    let names: Vec<String> = rows
        .into_iter()
        .filter_map(|mut row| row.pop().flatten())
        .map(|c| dialect.ident(&c))
        .collect();
    Ok((!names.is_empty()).then(|| names.join(", ")))
}

/// The table's schema as a MySQL expression: the one given, or the connection's database.
fn mysql_schema(dialect: Dialect, table: &Table) -> String {
    match &table.schema {
        Some(s) => dialect.literal(s),
        None => "DATABASE()".to_owned(),
    }
}

/// The table's auto-increment counter as it is now.
async fn counter(
    conn: &mut AnyConn,
    dialect: Dialect,
    table: &Table,
) -> Result<Counter, sqlx::Error> {
    let name = dialect.literal(&table.name);
    match dialect {
        Dialect::Sqlite => {
            let schema = dialect.ident(table.schema.as_deref().unwrap_or("main"));
            let has_sequence = strings(
                conn,
                format!(
                    "SELECT name FROM {schema}.sqlite_master \
                     WHERE type = 'table' AND name = 'sqlite_sequence'"
                ),
                1,
            )
            .await?;
            if has_sequence.is_empty() {
                return Ok(Counter::Sqlite(None));
            }
            let rows = strings(
                conn,
                format!(
                    "SELECT name, CAST(seq AS TEXT) FROM {schema}.sqlite_sequence \
                     WHERE name = {name} COLLATE NOCASE"
                ),
                2,
            )
            .await?;
            let row = rows.into_iter().next().and_then(|r| match &r[..] {
                [Some(name), Some(seq)] => Some((name.clone(), seq.parse().ok()?)),
                _ => None,
            });
            Ok(Counter::Sqlite(Some(row)))
        }
        Dialect::Postgres => {
            let rows = strings(
                conn,
                format!(
                    "SELECT d.objid::text, pg_sequence_last_value(d.objid)::text, s.seqstart::text \
                     FROM pg_depend d JOIN pg_sequence s ON s.seqrelid = d.objid \
                     WHERE d.classid = 'pg_class'::regclass \
                     AND d.refclassid = 'pg_class'::regclass \
                     AND d.refobjid = to_regclass('{regclass}') AND d.deptype IN ('a', 'i') \
                     ORDER BY d.objid",
                    regclass = table.quoted,
                ),
                3,
            )
            .await?;
            let sequences = rows
                .into_iter()
                .filter_map(|r| match &r[..] {
                    [Some(oid), last, Some(start)] => Some((
                        oid.parse().ok()?,
                        last.as_deref().and_then(|v| v.parse().ok()),
                        start.parse().ok()?,
                    )),
                    _ => None,
                })
                .collect();
            Ok(Counter::Postgres(sequences))
        }
        Dialect::MySql => {
            let rows = strings(
                conn,
                format!(
                    "SELECT CAST(AUTO_INCREMENT AS CHAR) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = {schema} AND TABLE_NAME = {name}",
                    schema = mysql_schema(dialect, table),
                ),
                1,
            )
            .await?;
            let next = rows
                .into_iter()
                .next()
                .and_then(|mut r| r.pop().flatten())
                .and_then(|v| v.parse().ok());
            Ok(Counter::MySql(next))
        }
    }
}

impl Snapshot {
    /// The error of a failed snapshot or restore step.
    fn failed(&self, step: &str, e: sqlx::Error) -> Error {
        invalid(self.entry, format!("{step} failed: {e}"))
    }

    fn scratch_list(&self) -> String {
        let names: Vec<&str> = self.copies.iter().map(|c| c.scratch.as_str()).collect();
        names.join(", ")
    }

    /// Puts every table back, sets its counters back and drops the scratch tables.
    async fn restore(self) -> Result<(), Error> {
        let dialect = self.dialect;
        let kept = |e: sqlx::Error| {
            invalid(
                self.entry,
                format!(
                    "restoring the tables failed, so they hold what the body left in them; their \
                     rows as they were are kept in {}: {e}",
                    self.scratch_list()
                ),
            )
        };
        let mut conn = Conn::new(self.entry.db.pool.acquire().await.map_err(kept)?);
        let mut statements = vec![dialect.begin().to_owned()];
        for copy in self.copies.iter().rev() {
            statements.push(format!("DELETE FROM {}", copy.table.quoted));
        }
        for copy in &self.copies {
            let overriding = match dialect {
                // Identity columns declared GENERATED ALWAYS take the copied values too.
                Dialect::Postgres => " OVERRIDING SYSTEM VALUE",
                Dialect::Sqlite | Dialect::MySql => "",
            };
            statements.push(format!(
                "INSERT INTO {table} ({columns}){overriding} SELECT {columns} FROM {scratch}",
                table = copy.table.quoted,
                columns = copy.columns,
                scratch = copy.scratch,
            ));
            statements.extend(copy.counter_statements(dialect, true));
        }
        // Dropped in the same transaction where DDL is transactional: restored and dropped, or
        // neither.
        if dialect != Dialect::MySql {
            for copy in &self.copies {
                statements.push(format!("DROP TABLE {}", copy.scratch));
            }
        }
        conn.open = true;
        for sql in statements {
            if let Err(e) = exec(&mut conn, sql).await {
                end_failed(&mut conn).await;
                return Err(kept(e));
            }
        }
        exec(&mut conn, "COMMIT".to_owned()).await.map_err(kept)?;
        conn.open = false;
        if dialect == Dialect::MySql {
            // DDL, which commits by itself: after the rows are back.
            for copy in &self.copies {
                for sql in copy.counter_statements(dialect, false) {
                    exec(&mut conn, sql)
                        .await
                        .map_err(|e| self.failed("setting the auto-increment counter back", e))?;
                }
            }
            for copy in &self.copies {
                exec(&mut conn, format!("DROP TABLE IF EXISTS {}", copy.scratch))
                    .await
                    .map_err(|e| self.failed("dropping the snapshot", e))?;
            }
        }
        Ok(())
    }
}

impl TableCopy {
    /// The statements that set the table's counter back: those that run inside the restore's
    /// transaction (`in_transaction`), or the MySQL/MariaDB ones that run after it.
    fn counter_statements(&self, dialect: Dialect, in_transaction: bool) -> Vec<String> {
        match (&self.counter, in_transaction) {
            (Counter::Sqlite(Some(row)), true) => {
                let schema = dialect.ident(self.table.schema.as_deref().unwrap_or("main"));
                let name = dialect.literal(&self.table.name);
                let mut v = vec![format!(
                    "DELETE FROM {schema}.sqlite_sequence WHERE name = {name} COLLATE NOCASE"
                )];
                if let Some((stored, seq)) = row {
                    // The name as SQLite stored it, which its counter is found by.
                    v.push(format!(
                        "INSERT INTO {schema}.sqlite_sequence (name, seq) VALUES ({}, {seq})",
                        dialect.literal(stored)
                    ));
                }
                v
            }
            (Counter::Postgres(sequences), true) => sequences
                .iter()
                .map(|(oid, last, start)| match last {
                    Some(last) => format!("SELECT setval({oid}::oid::regclass, {last}, true)"),
                    None => format!("SELECT setval({oid}::oid::regclass, {start}, false)"),
                })
                .collect(),
            (Counter::MySql(Some(next)), false) => vec![format!(
                "ALTER TABLE {} AUTO_INCREMENT = {next}",
                self.table.quoted
            )],
            _ => Vec::new(),
        }
    }
}

/// Runs one text of statements on the connection, outside the library's bookkeeping.
async fn exec(conn: &mut AnyConn, sql: String) -> Result<(), sqlx::Error> {
    dispatch!(AnyConn, conn, c => sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut **c).await.map(drop))
}

/// The rows of a query, each as its first `width` columns read as text.
async fn strings(
    conn: &mut AnyConn,
    sql: String,
    width: usize,
) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
    dispatch!(AnyConn, conn, c => {
        let rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(&mut **c).await?;
        rows.iter()
            .map(|row| (0..width).map(|i| row.try_get::<Option<String>, usize>(i)).collect())
            .collect()
    })
}
