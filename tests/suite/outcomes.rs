// Included once per backend by tests/behaviour.rs after suite/rules.rs, whose helpers it uses:
// truthful outcomes (a block never returns Ok for work that was not kept) and the transaction
// options of an outermost block.
use sqlx_atomic::{Isolation, LockMode};

t!(rule_11_1_an_ignored_error_fails_the_outermost_block, |fx| {
    let r = atomic()
        .run(async {
            ins(&fx, 1).await?;
            on_commit(fx.hook("h")).await?;
            let ignored = bad(&fx).await;
            assert!(ignored.is_err());
            Ok::<_, Error>(())
        })
        .await;
    let e = r.expect_err("rolled back: the block must not return Ok");
    assert!(matches!(e.kind(), ErrorKind::RolledBack(_)), "{e}");
    assert_eq!(e.alias(), Some(B.alias()));
    assert!(e.code().is_some(), "the first error's code is reachable: {e}");
    assert!(e.to_string().contains("rolled back, not committed"), "{e}");
    // What `unwrap()` prints is the message, alias included.
    assert_eq!(format!("{e:?}"), e.to_string());
    assert!(format!("{e:#?}").contains("RolledBack"), "{e:#?}");
    assert!(!e.is_retryable(), "a NOT NULL violation is no conflict");
    assert_eq!(fx.committed().await, Vec::<i64>::new());
    assert!(fx.ran().is_empty(), "no hook for rolled-back work");
});

t!(rule_11_1_a_refused_query_is_the_librarys_error_inside_sqlx_error, |fx| {
    let r = atomic()
        .run(async {
            assert!(bad(&fx).await.is_err());
            // The doomed block refuses the next query; it reaches sqlx code as an `sqlx::Error`.
            let refused: sqlx::Error = sqlx::query("SELECT 1").execute(db()).await.unwrap_err();
            let text = refused.to_string();
            assert!(!text.contains("configuration"), "{text}");
            assert!(text.contains(&format!("database `{}`", B.alias())), "{text}");
            let ours = Error::downcast_ref(&refused).expect("the library's error, by downcast");
            assert!(matches!(ours.kind(), ErrorKind::Doomed), "{ours}");
            assert_eq!(refused.as_database_error().map(|e| e.message()), Some(&*ours.to_string()));
            assert!(matches!(Error::from(refused).kind(), ErrorKind::Doomed));
            Ok::<_, Error>(())
        })
        .await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::RolledBack(_)));
});

t!(rule_11_5_a_statement_error_names_its_alias_and_keeps_the_servers_error, |fx| {
    use futures::TryStreamExt;
    let null = || AssertSqlSafe(format!("INSERT INTO {} (v) VALUES (NULL)", fx.table));
    // In autocommit, on the pool.
    let e = sqlx::query(null()).execute(db()).await.unwrap_err();
    check_statement_error(&e);
    // Inside a block, on the task's connection, and through a stream.
    atomic()
        .run(async {
            let e = sqlx::query(null()).execute(db()).await.unwrap_err();
            check_statement_error(&e);
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    atomic()
        .run(async {
            let e = sqlx::query(null()).fetch(db()).try_collect::<Vec<_>>().await.unwrap_err();
            check_statement_error(&e);
            // `?` into the library's error keeps the alias and the server's error.
            let ours = Error::from(e);
            assert_eq!(ours.alias(), Some(B.alias()));
            assert!(ours.code().is_some(), "{ours}");
            assert!(ours.as_sqlx().and_then(|e| e.as_database_error()).is_some());
            assert_eq!(sqlx_atomic::alias_of(&ours.into_sqlx()), Some(B.alias()));
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(fx.committed().await, Vec::<i64>::new());
});

/// A NOT NULL violation sent through the handle: it carries the alias, displays it, and is still
/// the server's error (its code, its kind, and a downcast to the backend's own type).
fn check_statement_error(e: &sqlx::Error) {
    assert_eq!(sqlx_atomic::alias_of(e), Some(B.alias()), "{e}");
    assert!(e.to_string().contains(&format!("database `{}`: ", B.alias())), "{e}");
    let db = e.as_database_error().expect("a database error");
    assert!(db.code().is_some(), "{e}");
    assert_eq!(db.kind(), sqlx::error::ErrorKind::NotNullViolation, "{e}");
    let downcast = match B {
        Backend::Sqlite => db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some(),
        Backend::Postgres | Backend::PgBouncer => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some(),
        Backend::MySql | Backend::Galera => db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some(),
    };
    assert!(downcast, "the backend's own error type is reachable: {e:?}");
}

t!(rule_11_1_set_rollback_true_keeps_the_bodys_ok, |fx| {
    let r = atomic()
        .run(async {
            ins(&fx, 1).await?;
            let _ = bad(&fx).await;
            sqlx_atomic::using(B.alias()).set_rollback(true)?;
            Ok::<_, Error>(7)
        })
        .await;
    assert_eq!(r.unwrap(), 7, "the caller asked for the rollback");
    assert_eq!(fx.committed().await, Vec::<i64>::new());
});

t!(rule_11_1_a_savepoint_rolled_back_for_an_ignored_error_reports_it, |fx| {
    atomic()
        .run(async {
            ins(&fx, 1).await?;
            let inner = atomic()
                .run(async {
                    ins(&fx, 2).await?;
                    let _ = bad(&fx).await;
                    Ok::<_, Error>(())
                })
                .await;
            let e = inner.expect_err("the savepoint was rolled back");
            assert!(matches!(e.kind(), ErrorKind::RolledBack(_)), "{e}");
            // The outer body recovers by catching it, and goes on.
            ins(&fx, 3).await
        })
        .await
        .unwrap();
    assert_eq!(fx.committed().await, [1, 3]);
});

t!(rule_11_1_a_nested_block_without_savepoint_dooms_the_outer_one, |fx| {
    let r = atomic()
        .run(async {
            ins(&fx, 1).await?;
            let _ = atomic()
                .savepoint(false)
                .run(async {
                    let _ = bad(&fx).await;
                    Ok::<_, Error>(())
                })
                .await;
            Ok::<_, Error>(())
        })
        .await;
    assert!(matches!(r.unwrap_err().kind(), ErrorKind::RolledBack(_)));
    assert_eq!(fx.committed().await, Vec::<i64>::new());
});

t!(rule_11_4_a_nested_block_must_agree_with_the_transaction, |fx| {
    let r = atomic()
        .isolation(Isolation::Serializable)
        .run(async {
            // Repeating the option, or leaving it out, agrees.
            atomic()
                .isolation(Isolation::Serializable)
                .run(async { ins(&fx, 1).await })
                .await?;
            atomic().run(async { ins(&fx, 2).await }).await?;
            let e = atomic()
                .isolation(Isolation::ReadCommitted)
                .run(async { ins(&fx, 3).await })
                .await
                .unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::OptionMismatch("isolation")), "{e}");
            Ok::<_, Error>(())
        })
        .await;
    r.unwrap();
    assert_eq!(fx.committed().await, [1, 2]);
});

t!(rule_11_3_retry_on_a_nested_block_is_refused_before_anything_is_sent, |fx| {
    let (r, log) = Scope::new()
        .record_statements()
        .run(atomic().run(async {
            let e = atomic()
                .retry(3)
                .run(|| async { ins(&fx, 1).await })
                .await
                .unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::RetryNested), "{e}");
            Ok::<_, Error>(())
        }))
        .await;
    r.unwrap();
    assert!(log.is_empty(), "{log:?}");
});

t!(rule_11_4_read_only, |fx| {
    let r = atomic()
        .read_only(true)
        .run(async { ins(&fx, 1).await })
        .await;
    let e = r.unwrap_err();
    match B {
        // SQLite has no read-only transactions: refused before anything is sent.
        crate::common::Backend::Sqlite => assert!(
            matches!(e.kind(), ErrorKind::Unsupported { option: "read_only", .. }),
            "{e}"
        ),
        // The server refuses the write: PostgreSQL 25006, MySQL/MariaDB 1792 (25006).
        _ => assert_eq!(e.code().as_deref(), Some("25006"), "{e}"),
    }
    assert_eq!(fx.committed().await, Vec::<i64>::new());
    // Reads work.
    if B != crate::common::Backend::Sqlite {
        let n = atomic()
            .read_only(true)
            .run(async { count_in_tx(&fx).await })
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
});

t!(rule_11_4_the_isolation_level_reaches_the_server, |fx| {
    match B {
        crate::common::Backend::Postgres | crate::common::Backend::PgBouncer => {
            for (level, expected) in [
                (Isolation::Serializable, "serializable"),
                (Isolation::RepeatableRead, "repeatable read"),
                (Isolation::ReadCommitted, "read committed"),
            ] {
                let seen: String = atomic()
                    .isolation(level)
                    .run(async {
                        Ok::<_, Error>(
                            sqlx::query_scalar("SHOW transaction_isolation")
                                .fetch_one(db())
                                .await?,
                        )
                    })
                    .await
                    .unwrap();
                assert_eq!(seen, expected, "{level:?}");
            }
        }
        // MariaDB shows no transaction's level in a variable; SERIALIZABLE is seen by what it
        // does: InnoDB makes the block's plain SELECT a locking read, so an INSERT from another
        // connection waits for it, and gives up after that connection's lock wait timeout.
        crate::common::Backend::MySql | crate::common::Backend::Galera => {
            for (level, blocks) in [
                (Isolation::Serializable, true),
                (Isolation::RepeatableRead, false),
            ] {
                let pool = sqlx_atomic::pool::<sqlx::MySql>(B.alias()).unwrap();
                let mut other = pool.acquire().await.unwrap();
                sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
                    .execute(&mut *other)
                    .await
                    .unwrap();
                let insert = format!("INSERT INTO {} (v) VALUES (9)", fx.table);
                let outcome = atomic()
                    .isolation(level)
                    .run(async {
                        count_in_tx(&fx).await?;
                        let r = sqlx::query(AssertSqlSafe(insert.clone()))
                            .execute(&mut *other)
                            .await;
                        Ok::<_, Error>(r.map(drop))
                    })
                    .await
                    .unwrap();
                sqlx::query("SET SESSION innodb_lock_wait_timeout = DEFAULT")
                    .execute(&mut *other)
                    .await
                    .unwrap();
                match outcome {
                    Err(e) if blocks => {
                        let number = e
                            .as_database_error()
                            .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
                            .map(|d| d.number());
                        assert_eq!(number, Some(1205), "{e}");
                    }
                    Ok(()) if !blocks => {}
                    other => panic!("{level:?}: {other:?}"),
                }
            }
        }
        // Every SQLite transaction is serializable: the option is accepted.
        crate::common::Backend::Sqlite => {
            atomic()
                .isolation(Isolation::ReadCommitted)
                .run(async { ins(&fx, 1).await })
                .await
                .unwrap();
            assert_eq!(fx.committed().await, [1]);
        }
    }
});

t!(rule_11_4_ride_with_the_begin_at_no_extra_statement, |fx| {
    let plain = Scope::new()
        .record_statements()
        .run(atomic().run(async { ins(&fx, 1).await }))
        .await
        .1;
    let level = if B == crate::common::Backend::Sqlite {
        None
    } else {
        Some(Isolation::Serializable)
    };
    let mut with = atomic();
    if let Some(level) = level {
        with = with.isolation(level).read_only(false);
    }
    let with = Scope::new()
        .record_statements()
        .run(with.run(async { ins(&fx, 2).await }))
        .await
        .1;
    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(with.len(), plain.len(), "{with:?}");
    let begin = &with[0].sql;
    match B {
        crate::common::Backend::Postgres | crate::common::Backend::PgBouncer => {
            assert_eq!(begin, "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE")
        }
        crate::common::Backend::MySql | crate::common::Backend::Galera => assert_eq!(
            begin,
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; START TRANSACTION READ WRITE"
        ),
        crate::common::Backend::Sqlite => {}
    }
    assert_eq!(fx.committed().await, [1, 2]);
});

t!(rule_11_4_lock_mode_is_sqlites, |fx| {
    let r = atomic()
        .lock(LockMode::Immediate)
        .run(async { ins(&fx, 1).await })
        .await;
    match B {
        // The suite's SQLite alias begins with its own `BEGIN IMMEDIATE`, which the option
        // would replace: refused (the lock mode itself is tested on a plain alias).
        crate::common::Backend::Sqlite => {
            assert!(matches!(r.unwrap_err().kind(), ErrorKind::InvalidConfig(_)))
        }
        _ => assert!(matches!(
            r.unwrap_err().kind(),
            ErrorKind::Unsupported { option: "lock", .. }
        )),
    }
    assert_eq!(fx.committed().await, Vec::<i64>::new());
});

t!(rule_11_4_timeout_cancels_the_block_and_rolls_back, |fx| {
    let limit = std::time::Duration::from_millis(200);
    let r = atomic()
        .timeout(limit)
        .run(async {
            ins(&fx, 1).await?;
            on_commit(fx.hook("h")).await?;
            // A body that never finishes on its own.
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        })
        .await;
    let e = r.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TimedOut(t) if *t == limit), "{e}");
    assert_eq!(fx.committed().await, Vec::<i64>::new());
    assert!(fx.ran().is_empty());
    // A block that ends in time commits as usual.
    atomic()
        .timeout(std::time::Duration::from_secs(30))
        .run(async { ins(&fx, 2).await })
        .await
        .unwrap();
    assert_eq!(fx.committed().await, [2]);
});
