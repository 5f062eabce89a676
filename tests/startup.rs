//! Start-up checks and pool time-outs that say why: a database that cannot be reached is named
//! with its cause within seconds, never with its password.

mod common;

use std::time::{Duration, Instant};

use common::RT;
use sqlx_atomic::{Database, Databases, ErrorKind, PoolConfig};

/// `default` answers (SQLite in memory); `down` is a PostgreSQL URL with a password on a port
/// where nothing listens, with a short acquire timeout.
fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        RT.block_on(async {
            Databases::new()
                .add(
                    "default",
                    Database::connect_lazy("sqlite::memory:").unwrap(),
                )
                .add(
                    "down",
                    Database::connect_lazy_with(
                        "postgres://app:s3cret-pw@127.0.0.1:1/app",
                        PoolConfig::new().acquire_timeout(Duration::from_millis(300)),
                    )
                    .unwrap(),
                )
                .install()
                .unwrap();
        });
    });
}

#[test]
fn check_databases_names_the_alias_the_host_and_the_cause_at_once() {
    install();
    RT.block_on(async {
        let t = Instant::now();
        let e = sqlx_atomic::check_databases(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(e.alias(), Some("down"));
        assert!(matches!(e.kind(), ErrorKind::Unreachable { .. }), "{e}");
        let text = format!("{e} {e:?}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    });
}

#[test]
fn a_blocks_pool_time_out_says_why_a_connection_could_not_be_opened() {
    install();
    RT.block_on(async {
        // In a block: the block takes its connection from the pool.
        let e = sqlx_atomic::Atomic::new()
            .using("down")
            .run(async {
                sqlx::query("SELECT 1")
                    .execute(sqlx_atomic::postgres("down"))
                    .await?;
                Ok::<_, sqlx_atomic::Error>(())
            })
            .await
            .unwrap_err();
        assert_refused_pool_time_out(&e);
    });
}

#[test]
fn a_statements_pool_time_out_outside_any_block_says_why_too() {
    install();
    RT.block_on(async {
        let t = Instant::now();
        let e = sqlx::query("SELECT 1")
            .execute(sqlx_atomic::postgres("down"))
            .await
            .unwrap_err();
        // The acquire timeout (300 ms) and the probe, never sqlx's bare 30 s `PoolTimedOut`.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let e = sqlx_atomic::Error::from(e);
        assert_refused_pool_time_out(&e);
    });
}

/// A pool time-out of `down` that names the alias and the refused connection, never the password.
fn assert_refused_pool_time_out(e: &sqlx_atomic::Error) {
    assert_eq!(e.alias(), Some("down"));
    match e.kind() {
        ErrorKind::PoolTimedOut { cause: Some(cause) } => {
            assert!(cause.to_lowercase().contains("refused"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{e} {e:?}").contains("s3cret-pw"));
}
