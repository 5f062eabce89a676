//! Backend-specific behaviour: PostgreSQL's aborted transactions and failing COMMIT, MariaDB's
//! implicit commit on DDL and its server-side statement counters, SQLite's BUSY.

mod common;

use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Error, ErrorKind, Scope, on_commit};

#[test]
fn postgres_rule_7_2_silent_rollback_is_an_error_and_runs_no_hook() {
    rule_7_2_silent_rollback_is_an_error_and_runs_no_hook(Backend::Postgres);
}

#[test]
fn pgbouncer_rule_7_2_silent_rollback_is_an_error_and_runs_no_hook() {
    rule_7_2_silent_rollback_is_an_error_and_runs_no_hook(Backend::PgBouncer);
}

fn rule_7_2_silent_rollback_is_an_error_and_runs_no_hook(b: Backend) {
    common::run(b, |fx: Fx| async move {
        let alias = fx.alias;
        let db = sqlx_atomic::postgres(alias);
        let ins = |v: &str| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
        let r = Atomic::new()
            .using(alias)
            .run(async {
                sqlx::query(ins("1")).execute(&db).await?;
                on_commit(fx.hook("never")).using(alias).await?;
                // A failing statement in a savepoint-less block: PostgreSQL aborts the transaction.
                let _ = Atomic::new()
                    .using(alias)
                    .savepoint(false)
                    .run(async {
                        sqlx::query(ins("NULL"))
                            .execute(&db)
                            .await
                            .map_err(Error::from)
                    })
                    .await;
                // The user clears the flag (2.3): COMMIT would be answered with ROLLBACK.
                sqlx_atomic::using(alias).set_rollback(false)?;
                Ok::<_, Error>(())
            })
            .await;
        let e = r.unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Aborted), "{e}");
        assert!(fx.ran().is_empty());
        assert_eq!(fx.committed().await, Vec::<i64>::new());
    });
}

#[test]
fn postgres_rule_1_7_failing_commit_rolls_back_and_runs_no_hook() {
    rule_1_7_failing_commit_rolls_back_and_runs_no_hook(Backend::Postgres);
}

#[test]
fn pgbouncer_rule_1_7_failing_commit_rolls_back_and_runs_no_hook() {
    rule_1_7_failing_commit_rolls_back_and_runs_no_hook(Backend::PgBouncer);
}

fn rule_1_7_failing_commit_rolls_back_and_runs_no_hook(b: Backend) {
    common::run(b, |fx: Fx| async move {
        let alias = fx.alias;
        let tables = fx.deferred_fk().await;
        let c = tables.1.clone();
        let db = sqlx_atomic::postgres(alias);
        let r = Atomic::new()
            .using(alias)
            .run(async {
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {c} VALUES (42)")))
                    .execute(&db)
                    .await?;
                on_commit(fx.hook("never")).using(alias).await?;
                Ok::<_, Error>(())
            })
            .await;
        let e = r.unwrap_err();
        assert!(e.is_database(), "{e}");
        assert!(fx.ran().is_empty());
        // The next transaction works.
        Atomic::new()
            .using(alias)
            .run(async {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (v) VALUES (1)",
                    fx.table
                )))
                .execute(&db)
                .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert_eq!(fx.committed().await, [1]);
        fx.drop_deferred(tables).await;
    });
}

#[test]
fn mysql_ddl_commits_implicitly_and_the_block_still_ends_cleanly() {
    common::run(Backend::MySql, |fx: Fx| async move {
        let db = sqlx_atomic::mysql("my");
        let extra = format!("{}_ddl", fx.table);
        let r = Atomic::new()
            .using("my")
            .run(async {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (v) VALUES (1)",
                    fx.table
                )))
                .execute(&db)
                .await?;
                // MariaDB commits the open transaction before DDL: row 1 is committed here.
                sqlx::query(AssertSqlSafe(format!("CREATE TABLE {extra} (x INT)")))
                    .execute(&db)
                    .await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (v) VALUES (2)",
                    fx.table
                )))
                .execute(&db)
                .await?;
                Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
            })
            .await;
        assert!(r.is_err());
        // Row 1 survived the rollback (implicit commit); row 2 ran in autocommit after the DDL.
        let rows = fx.committed().await;
        assert!(rows.contains(&1), "{rows:?}");
        fx.raw(&format!("DROP TABLE {extra}")).await;
    });
}

/// The server's own per-session counters (MariaDB `Com_*`), read on the single connection of the
/// `my_count` alias.
async fn com_counts() -> Vec<(String, i64)> {
    let pool = sqlx_atomic::pool::<sqlx::MySql>("my_count").unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME IN ('COM_BEGIN','COM_COMMIT','COM_ROLLBACK','COM_SAVEPOINT',\
         'COM_RELEASE_SAVEPOINT','COM_ROLLBACK_TO_SAVEPOINT','COM_INSERT') ORDER BY VARIABLE_NAME",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(k, v)| (k.to_lowercase(), v.parse().unwrap()))
        .collect()
}

fn delta(a: &[(String, i64)], b: &[(String, i64)]) -> Vec<(String, i64)> {
    a.iter()
        .zip(b)
        .filter(|(x, y)| y.1 != x.1)
        .map(|(x, y)| (x.0.clone(), y.1 - x.1))
        .collect()
}

#[test]
fn mysql_rule_9_lazy_statements_as_the_server_counts_them() {
    common::run(Backend::MySql, |fx: Fx| async move {
        let db = sqlx_atomic::mysql("my_count");
        let a = || Atomic::new().using("my_count");
        let ins = || {
            let sql = format!("INSERT INTO {} (v) VALUES (1)", fx.table);
            let db = db.clone();
            async move {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(db)
                    .await
                    .map(drop)
                    .map_err(Error::from)
            }
        };
        // An empty outer block with empty nested blocks: nothing reaches the server.
        let before = com_counts().await;
        a().run(async { a().run(async { Ok::<_, Error>(()) }).await })
            .await
            .unwrap();
        assert_eq!(delta(&before, &com_counts().await), vec![]);
        // P4: BEGIN, INSERT, SAVEPOINT, INSERT, COMMIT (RELEASE is owed and dropped at COMMIT).
        let before = com_counts().await;
        let (r, log) = Scope::new()
            .record_statements()
            .run(a().run(async {
                ins().await?;
                a().run(ins()).await
            }))
            .await;
        r.unwrap();
        let d = delta(&before, &com_counts().await);
        assert_eq!(
            d,
            vec![
                ("com_begin".to_string(), 1),
                ("com_commit".to_string(), 1),
                ("com_insert".to_string(), 2),
                ("com_savepoint".to_string(), 1)
            ]
        );
        assert_eq!(log.len(), 5, "the library's own record agrees: {log:?}");
        // P7: a failing nested block costs SAVEPOINT + ROLLBACK TO, no RELEASE.
        let before = com_counts().await;
        a().run(async {
            ins().await?;
            let _ = a()
                .run(async {
                    ins().await?;
                    Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
                })
                .await;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        let d = delta(&before, &com_counts().await);
        assert_eq!(
            d,
            vec![
                ("com_begin".to_string(), 1),
                ("com_commit".to_string(), 1),
                ("com_insert".to_string(), 2),
                ("com_rollback_to_savepoint".to_string(), 1),
                ("com_savepoint".to_string(), 1)
            ]
        );
        fx.assert_pool_clean("my_count").await;
    });
}

#[test]
fn sqlite_busy_is_a_clean_database_error() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        let db = sqlx_atomic::sqlite("sqlite_busy");
        let sql = format!("INSERT INTO {} (v) VALUES (1)", fx.table);
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = {
            let (db, sql) = (db.clone(), sql.clone());
            tokio::spawn(Atomic::new().using("sqlite_busy").run(async move {
                sqlx::query(AssertSqlSafe(sql)).execute(&db).await?;
                let _ = locked_tx.send(());
                let _ = release_rx.await;
                Ok::<_, Error>(())
            }))
        };
        locked_rx.await.unwrap();
        let hooks = fx.clone();
        let r = Atomic::new()
            .using("sqlite_busy")
            .run(async {
                on_commit(hooks.hook("never")).using("sqlite_busy").await?;
                sqlx::query(AssertSqlSafe(sql.clone())).execute(&db).await?;
                Ok::<_, Error>(())
            })
            .await;
        let e = r.unwrap_err();
        let code = e
            .as_sqlx()
            .and_then(|s| s.as_database_error())
            .and_then(|d| d.code());
        assert_eq!(code.as_deref(), Some("5"), "SQLITE_BUSY expected, got {e}");
        assert!(fx.ran().is_empty());
        release_tx.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert_eq!(fx.committed().await, [1]);
        fx.assert_pool_clean("sqlite_busy").await;
    });
}

#[test]
fn credentials_never_printed() {
    common::RT.block_on(async {
        let url = "postgres://alice:hunter2secret@127.0.0.1:1/x?password=hunter3";
        let db = sqlx_atomic::Database::connect_lazy(url).unwrap();
        let shown = format!("{db:?}");
        assert!(
            !shown.contains("hunter2secret") && !shown.contains("hunter3"),
            "{shown}"
        );
        let bad = sqlx_atomic::Database::connect_lazy("postgres://bob:topsecret@host:notaport/db");
        let e = bad.unwrap_err();
        for s in [format!("{e}"), format!("{e:?}")] {
            assert!(!s.contains("topsecret"), "{s}");
        }
    });
}

#[test]
fn postgres_rule_1_7_a_failed_manual_commit_is_rolled_back() {
    rule_1_7_a_failed_manual_commit_is_rolled_back(Backend::Postgres);
}

#[test]
fn pgbouncer_rule_1_7_a_failed_manual_commit_is_rolled_back() {
    rule_1_7_a_failed_manual_commit_is_rolled_back(Backend::PgBouncer);
}

fn rule_1_7_a_failed_manual_commit_is_rolled_back(b: Backend) {
    common::run(b, |fx: Fx| async move {
        let alias = fx.alias;
        let tables = fx.deferred_fk().await;
        let c = tables.1.clone();
        let db = sqlx_atomic::postgres(alias);
        let (r, log) = sqlx_atomic::Scope::new()
            .record_statements()
            .run(async {
                let pg = sqlx_atomic::using(alias);
                pg.set_autocommit(false)?;
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {c} VALUES (42)")))
                    .execute(&db)
                    .await?;
                let e = pg.commit().await.unwrap_err();
                assert!(e.is_database(), "{e}");
                pg.set_autocommit(true)?;
                Ok::<_, Error>(())
            })
            .await;
        r.unwrap();
        let sql: Vec<&str> = log.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "BEGIN",
                &format!("INSERT INTO {c} VALUES (42)"),
                "COMMIT",
                "ROLLBACK"
            ]
        );
        fx.drop_deferred(tables).await;
    });
}
