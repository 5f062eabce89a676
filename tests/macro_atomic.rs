//! `#[atomic]` on real functions and methods, against SQLite: the attribute expands to the block
//! runner and behaves exactly like it.

mod common;

use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Error, ErrorKind, atomic, on_commit};

#[derive(Debug)]
enum AppError {
    Db(Error),
    Rejected,
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Db(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e.into())
    }
}

async fn insert(fx: &Fx, alias: &'static str, v: i64) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (v) VALUES ({v})",
        fx.table
    )))
    .execute(sqlx_atomic::sqlite(alias))
    .await
    .map(drop)
}

#[atomic(using = "sqlite")]
async fn place_order(fx: &Fx, v: i64, reject_inner: bool) -> Result<i64, AppError> {
    insert(fx, "sqlite", v).await?;
    on_commit(fx.hook("outer")).using("sqlite").await?;
    let _ = add_gift(fx, v + 1, reject_inner).await;
    Ok(v)
}

#[atomic(using = "sqlite")]
async fn add_gift(fx: &Fx, v: i64, reject: bool) -> Result<(), AppError> {
    insert(fx, "sqlite", v).await?;
    on_commit(fx.hook("gift")).using("sqlite").await?;
    if reject {
        return Err(AppError::Rejected);
    }
    Ok(())
}

#[atomic(using = "sqlite", savepoint = false)]
async fn no_savepoint(fx: &Fx, v: i64) -> Result<(), AppError> {
    insert(fx, "sqlite", v).await?;
    Err(AppError::Rejected)
}

#[atomic(using = "sqlite", durable = true)]
async fn durable(fx: &Fx, v: i64) -> Result<(), AppError> {
    insert(fx, "sqlite", v).await?;
    Ok(())
}

struct Repo {
    fx: Fx,
    calls: u32,
}

impl Repo {
    #[atomic(using = "sqlite")]
    async fn add(&self, v: i64) -> Result<(), Error> {
        insert(&self.fx, "sqlite", v).await?;
        Ok(())
    }

    #[atomic(using = "sqlite")]
    async fn add_mut(&mut self, v: i64) -> Result<u32, Error> {
        self.calls += 1;
        insert(&self.fx, "sqlite", v).await?;
        Ok(self.calls)
    }

    #[atomic(using = "sqlite")]
    async fn consume(self, v: i64) -> Result<u32, Error> {
        insert(&self.fx, "sqlite", v).await?;
        Ok(self.calls)
    }
}

trait Store {
    async fn put(&self, v: i64) -> Result<(), Error>;
}

impl Store for Repo {
    #[atomic(using = "sqlite")]
    async fn put(&self, v: i64) -> Result<(), Error> {
        insert(&self.fx, "sqlite", v).await?;
        Ok(())
    }
}

#[atomic(using = "sqlite", retry = 3)]
async fn retried(fx: &Fx, v: i64) -> Result<i64, AppError> {
    insert(fx, "sqlite", v).await?;
    Ok(v)
}

#[atomic(using = "sqlite", timeout = "50ms")]
async fn too_slow(fx: &Fx) -> Result<(), AppError> {
    insert(fx, "sqlite", 1).await?;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    Ok(())
}

#[atomic(using = "sqlite", timeout = "1s")]
async fn one_second(fx: &Fx, v: i64) -> Result<(), AppError> {
    insert(fx, "sqlite", v).await?;
    Ok(())
}

impl Repo {
    // Each attempt borrows `self`, `label` and `tag` again.
    #[atomic(using = "sqlite", retry = 2)]
    async fn add_retried(&mut self, label: &str, tag: String, v: i64) -> Result<u32, Error> {
        self.calls += 1;
        insert(
            &self.fx,
            "sqlite",
            v + label.len() as i64 + tag.len() as i64,
        )
        .await?;
        Ok(self.calls)
    }
}

#[atomic(using = "sqlite")]
async fn generic<'a, T>(fx: &'a Fx, items: &'a [T]) -> Result<usize, Error>
where
    T: Into<i64> + Copy + Sync,
{
    for &i in items {
        insert(fx, "sqlite", i.into()).await?;
    }
    Ok(items.len())
}

#[test]
fn rule_1_2_macro_nested_failure_keeps_outer() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        assert_eq!(place_order(&fx, 10, true).await.unwrap(), 10);
        assert_eq!(fx.committed().await, [10]);
        assert_eq!(fx.ran(), ["outer"]);
        place_order(&fx, 20, false).await.unwrap();
        assert_eq!(fx.committed().await, [10, 20, 21]);
        assert_eq!(fx.ran(), ["outer", "outer", "gift"]);
    });
}

#[test]
fn rule_1_4_macro_savepoint_false_dooms_outer() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        #[atomic(using = "sqlite")]
        async fn outer(fx: &Fx) -> Result<(), AppError> {
            insert(fx, "sqlite", 1).await?;
            let _ = no_savepoint(fx, 2).await;
            Ok(())
        }
        outer(&fx).await.unwrap();
        assert_eq!(fx.committed().await, Vec::<i64>::new());
    });
}

#[test]
fn rule_1_8_macro_durable() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        durable(&fx, 1).await.unwrap();
        #[atomic(using = "sqlite")]
        async fn wraps(fx: &Fx) -> Result<(), AppError> {
            durable(fx, 2).await
        }
        match wraps(&fx).await {
            Err(AppError::Db(e)) => assert!(e.to_string().contains("durable"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.committed().await, [1]);
    });
}

#[test]
fn rule_6_1_macro_methods_generics_and_traits() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        let mut repo = Repo {
            fx: fx.clone(),
            calls: 0,
        };
        repo.add(1).await.unwrap();
        assert_eq!(repo.add_mut(2).await.unwrap(), 1);
        repo.put(3).await.unwrap();
        assert_eq!(generic(&fx, &[4i32, 5]).await.unwrap(), 2);
        assert_eq!(repo.consume(6).await.unwrap(), 1);
        assert_eq!(fx.committed().await, [1, 2, 3, 4, 5, 6]);
    });
}

#[test]
fn rule_7_4_macro_future_is_send() {
    fn assert_send<T: Send>(_: T) {}
    common::run(Backend::Sqlite, |fx: Fx| async move {
        assert_send(place_order(&fx, 1, false));
        // Usable in a spawned task.
        let f2 = fx.clone();
        tokio::spawn(async move { place_order(&f2, 1, false).await.map(drop) })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fx.committed().await, [1, 2]);
    });
}

#[test]
fn rule_11_3_macro_retried_body_borrows_its_arguments() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        let mut repo = Repo {
            fx: fx.clone(),
            calls: 0,
        };
        let tag = String::from("ab");
        assert_eq!(repo.add_retried("x", tag.clone(), 10).await.unwrap(), 1);
        assert_eq!(retried(&fx, 20).await.unwrap(), 20);
        assert_eq!(fx.committed().await, [13, 20]);
    });
}

#[test]
fn rule_11_3_macro_retry_nested_is_an_error() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        #[atomic(using = "sqlite")]
        async fn outer(fx: &Fx) -> Result<i64, AppError> {
            insert(fx, "sqlite", 1).await?;
            retried(fx, 2).await
        }
        match outer(&fx).await {
            Err(AppError::Db(e)) => assert!(matches!(e.kind(), ErrorKind::RetryNested), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.committed().await, Vec::<i64>::new());
    });
}

#[test]
fn rule_11_4_macro_timeout_and_nested_options() {
    common::run(Backend::Sqlite, |fx: Fx| async move {
        match too_slow(&fx).await {
            Err(AppError::Db(e)) => assert!(
                matches!(e.kind(), ErrorKind::TimedOut(t) if *t == std::time::Duration::from_millis(50)),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        // A nested block may repeat the outermost block's timeout or leave it out, but not give
        // another one.
        #[atomic(using = "sqlite", timeout = "1000ms")]
        async fn same(fx: &Fx) -> Result<(), AppError> {
            one_second(fx, 2).await?;
            add_gift(fx, 3, false).await
        }
        same(&fx).await.unwrap();
        #[atomic(using = "sqlite", timeout = "2s")]
        async fn other(fx: &Fx) -> Result<(), AppError> {
            one_second(fx, 4).await
        }
        match other(&fx).await {
            Err(AppError::Db(e)) => {
                assert!(
                    matches!(e.kind(), ErrorKind::OptionMismatch("timeout")),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.committed().await, [2, 3]);
    });
}
