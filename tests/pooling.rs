//! Transaction-pooling mode behind a real pgbouncer in `pool_mode = transaction` with a small
//! server pool (`.ci/pgbouncer` starts one; `SQLX_ATOMIC_TEST_PGBOUNCER_URL` points at it).
//!
//! Aliases: `pooled` is in the mode (from the URL parameter), `named` goes through the same
//! pgbouncer without it, `direct` is the PostgreSQL server itself, for reading what was kept.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use common::RT;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx_atomic::{Atomic, Database, Databases, Error, ErrorKind, PoolConfig, Scope};

fn pgbouncer_url() -> String {
    std::env::var("SQLX_ATOMIC_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/test".into())
}

/// Installs the aliases once; `false` (after saying so loudly) when pgbouncer or PostgreSQL does
/// not answer, a failure under `CI=true`.
fn installed() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    *UP.get_or_init(|| {
        RT.block_on(async {
            let url = pgbouncer_url();
            let options = PgConnectOptions::from_str(&url)
                .expect("pgbouncer url")
                .extra_float_digits(None);
            let probe = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                use sqlx::ConnectOptions;
                options.connect().await.map(drop)
            })
            .await;
            let why = match probe {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".to_owned()),
            };
            let direct = common::server_url(common::Backend::Postgres).await;
            if let Some(why) = why.or_else(|| direct.is_none().then(|| "no PostgreSQL".into())) {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true and pgbouncer at {url} does not answer: {why}");
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** sqlx-atomic tests: SKIPPING pgbouncer ({url}: {why}; start it with \
                     .ci/pgbouncer start) ***\n"
                );
                return false;
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            Databases::new()
                .add(
                    "pooled",
                    Database::connect_lazy_with(
                        &format!("{url}{sep}atomic_pooling=transaction"),
                        PoolConfig::new().max_connections(8),
                    )
                    .unwrap(),
                )
                .add(
                    "named",
                    Database::from_pool(
                        PgPoolOptions::new()
                            .max_connections(8)
                            .connect_lazy_with(options),
                    ),
                )
                .add(
                    "unset",
                    Database::connect_lazy_with(&url, PoolConfig::new().max_connections(1))
                        .unwrap(),
                )
                .add(
                    "direct",
                    common::server_db(common::Backend::Postgres, &direct.unwrap(), 4),
                )
                .install()
                .unwrap();
            true
        })
    })
}

fn pooled() -> sqlx_atomic::Handle<sqlx::Postgres> {
    sqlx_atomic::postgres("pooled")
}

/// A table of its own for one test, made and dropped on the server directly.
async fn table(name: &str) -> String {
    let table = format!("pooling_{name}_{}", std::process::id());
    let direct = sqlx_atomic::pool::<sqlx::Postgres>("direct").unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (v BIGINT PRIMARY KEY)"
    )))
    .execute(&direct)
    .await
    .unwrap();
    table
}

async fn kept(table: &str) -> BTreeSet<i64> {
    let direct = sqlx_atomic::pool::<sqlx::Postgres>("direct").unwrap();
    let rows: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT v FROM {table}")))
        .fetch_all(&direct)
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&direct)
        .await
        .unwrap();
    rows.into_iter().collect()
}

macro_rules! pooled_test {
    ($name:ident, $body:block) => {
        #[test]
        fn $name() {
            if !installed() {
                return;
            }
            RT.block_on(async move { tokio::spawn(async move $body).await.unwrap() });
        }
    };
}

pooled_test!(
    blocks_and_autocommit_statements_keep_every_promise_behind_the_pooler,
    {
        // 16 tasks share 8 client connections and 4 server connections. Each block inserts its
        // value and registers a hook; one block in four fails on purpose. Between blocks, statements
        // with bind parameters run outside any block. What must hold: no error but the planned ones,
        // every block that returned Ok is in the table and ran its hook, and nothing else is.
        let table = Arc::new(table("promises").await);
        let hooks = Arc::new(Mutex::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        for task in 0..16i64 {
            let (table, hooks) = (table.clone(), hooks.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = BTreeSet::new();
                for i in 0..20i64 {
                    let v = task * 1000 + i;
                    let hooks = hooks.clone();
                    let r = Atomic::new()
                        .using("pooled")
                        .run(async {
                            sqlx::query(AssertSqlSafe(format!(
                                "INSERT INTO {table} (v) VALUES ($1)"
                            )))
                            .bind(v)
                            .execute(pooled())
                            .await?;
                            sqlx_atomic::using("pooled")
                                .on_commit(move || {
                                    hooks.lock().unwrap().insert(v);
                                })
                                .await?;
                            let seen: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                                "SELECT v FROM {table} WHERE v = $1"
                            )))
                            .bind(v)
                            .fetch_one(pooled())
                            .await?;
                            assert_eq!(seen, v, "the block reads its own row");
                            if i % 4 == 3 {
                                return Err(Error::from(sqlx::Error::RowNotFound));
                            }
                            Ok(())
                        })
                        .await;
                    match r {
                        Ok(()) => {
                            ok.insert(v);
                        }
                        Err(e)
                            if i % 4 == 3
                                && matches!(e.as_sqlx(), Some(sqlx::Error::RowNotFound)) => {}
                        Err(e) => panic!("block {v}: {e}"),
                    }
                    // Outside any block: a statement with parameters, in a transaction of its own.
                    let n: i64 = sqlx::query_scalar("SELECT $1::BIGINT + $2::BIGINT")
                        .bind(v)
                        .bind(1i64)
                        .fetch_one(pooled())
                        .await
                        .unwrap();
                    assert_eq!(n, v + 1, "the statement's own parameters");
                }
                ok
            }));
        }
        let mut ok = BTreeSet::new();
        for t in tasks {
            ok.extend(t.await.unwrap());
        }
        assert_eq!(ok.len(), 16 * 15);
        assert_eq!(
            *hooks.lock().unwrap(),
            ok,
            "hooks ran for exactly the committed blocks"
        );
        assert_eq!(kept(&table).await, ok, "exactly the committed blocks' rows");
    }
);

pooled_test!(without_the_mode_the_poolers_errors_name_the_mode, {
    // sqlx names its prepared statements per client connection (`sqlx_s_1`, …) and the pooler
    // shares its 4 server connections between 8 client connections: names collide.
    let mut tasks = Vec::new();
    for task in 0..32i64 {
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..10i64 {
                let sql = format!("SELECT $1::BIGINT + {}", (task + i) % 3);
                if let Err(e) = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                    .bind(i)
                    .fetch_one(sqlx_atomic::postgres("named"))
                    .await
                {
                    errors.push(e);
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(
        !errors.is_empty(),
        "named statements collide behind the pooler"
    );
    for e in &errors {
        let text = e.to_string();
        if text.contains("sqlx_s_") {
            assert_eq!(sqlx_atomic::alias_of(e), Some("named"), "{text}");
            assert!(text.contains("atomic_pooling=transaction"), "{text}");
        }
    }
    // pgbouncer refuses sqlx's default startup parameters outright; the error says what to do.
    let e = sqlx::query("SELECT 1")
        .execute(sqlx_atomic::postgres("unset"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("extra_float_digits"), "{text}");
    assert!(text.contains("transaction-pooling mode"), "{text}");
});

pooled_test!(session_state_is_refused_and_says_what_to_use_instead, {
    for sql in [
        "SET statement_timeout = 1000",
        "LISTEN jobs",
        "SELECT pg_advisory_lock(42)",
        "CREATE TEMP TABLE scratch (v INT)",
    ] {
        let e = Error::from(
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(pooled())
                .await
                .unwrap_err(),
        );
        assert_eq!(e.alias(), Some("pooled"), "{e}");
        assert!(
            matches!(e.kind(), ErrorKind::SessionState { .. }),
            "{sql}: {e}"
        );
        assert!(e.to_string().contains("transaction-pooling mode"), "{e}");
    }
    // Their transaction-scoped forms work inside a block, and a refusal sends nothing, so the
    // block is not doomed by it.
    Atomic::new()
        .using("pooled")
        .run(async {
            assert!(
                sqlx::raw_sql("SET search_path = public")
                    .execute(pooled())
                    .await
                    .is_err()
            );
            sqlx::raw_sql("SET LOCAL statement_timeout = 1000")
                .execute(pooled())
                .await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(42i64)
                .execute(pooled())
                .await?;
            sqlx::raw_sql("CREATE TEMP TABLE scratch (v INT) ON COMMIT DROP")
                .execute(pooled())
                .await?;
            let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
                .fetch_one(pooled())
                .await?;
            assert_eq!(timeout, "1s");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
});

pooled_test!(statements_sent_in_the_mode_are_pinned, {
    // Outside a block, a statement with parameters runs in a transaction of its own; one without
    // is a single message and goes alone. Inside a block nothing changes.
    let (_, log) = Scope::new()
        .record_statements()
        .run(async {
            sqlx::query("SELECT $1::INT")
                .bind(1)
                .execute(pooled())
                .await
                .unwrap();
            sqlx::raw_sql("SELECT 1").execute(pooled()).await.unwrap();
            Atomic::new()
                .using("pooled")
                .run(async {
                    sqlx::query("SELECT $1::INT")
                        .bind(2)
                        .execute(pooled())
                        .await?;
                    Ok::<_, Error>(())
                })
                .await
                .unwrap();
        })
        .await;
    let sent: Vec<&str> = log.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(
        sent,
        [
            "BEGIN",
            "SELECT $1::INT",
            "COMMIT",
            "SELECT 1",
            "BEGIN",
            "SELECT $1::INT",
            "COMMIT"
        ]
    );
    // A failed statement's own transaction is rolled back.
    let (r, log) = Scope::new()
        .record_statements()
        .run(sqlx::query("SELECT $1::INT / 0").bind(1).execute(pooled()))
        .await;
    assert!(r.is_err());
    let sent: Vec<&str> = log.iter().map(|s| s.sql.as_str()).collect();
    assert_eq!(sent, ["BEGIN", "SELECT $1::INT / 0", "ROLLBACK"]);
});

pooled_test!(prepared_statements_and_streams_work_in_the_mode, {
    use futures::TryStreamExt;
    use sqlx::{Executor, Statement};
    let stmt = pooled()
        .prepare(sqlx::SqlStr::from_static("SELECT $1::BIGINT * 2"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16i64 {
        let stmt = stmt.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10i64 {
                let v = task * 100 + i;
                let doubled: i64 = stmt
                    .query_scalar()
                    .bind(v)
                    .fetch_one(pooled())
                    .await
                    .unwrap();
                assert_eq!(doubled, v * 2);
                let rows: Vec<i64> =
                    sqlx::query_scalar::<_, i64>("SELECT g FROM generate_series(1, $1::BIGINT) g")
                        .bind(i + 1)
                        .fetch(pooled())
                        .try_collect()
                        .await
                        .unwrap();
                assert_eq!(rows, (1..=i + 1).collect::<Vec<_>>());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
});

#[test]
fn session_sql_and_other_backends_are_refused_with_the_mode() {
    RT.block_on(async {
        let e = Databases::new()
            .add(
                "with_session",
                Database::connect_lazy_with(
                    "postgres://postgres@127.0.0.1:6432/test",
                    PoolConfig::new()
                        .transaction_pooling(true)
                        .session_sql("SET search_path = app"),
                )
                .unwrap(),
            )
            .install()
            .unwrap_err();
        assert_eq!(e.alias(), Some("with_session"));
        assert!(e.to_string().contains("session SQL cannot be used"), "{e}");
        let e = Databases::new()
            .add(
                "lite",
                Database::connect_lazy("sqlite::memory:?atomic_pooling=transaction").unwrap(),
            )
            .install()
            .unwrap_err();
        assert!(e.to_string().contains("PostgreSQL mode"), "{e}");
    });
}
