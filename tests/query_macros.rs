//! The compile-time checked `query!` family works unchanged through the ambient handle, inside
//! and outside atomic blocks.

mod common;

use common::{Backend, Fx};
use sqlx_atomic::{Atomic, Error};

#[test]
fn query_macros_work_through_the_handle() {
    common::run(Backend::Sqlite, |_fx: Fx| async move {
        let db = sqlx_atomic::sqlite("sqlite");
        let outside = sqlx::query_scalar!(r#"SELECT 40 + ? AS "x!: i64""#, 2i64)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(outside, 42);
        let (row, n) = Atomic::new()
            .using("sqlite")
            .run(async {
                let row = sqlx::query!(r#"SELECT 1 AS "a!: i64", 'x' AS "b!: String""#)
                    .fetch_one(&db)
                    .await?;
                let n = sqlx::query_as!(Pair, r#"SELECT 2 AS "a!: i64", 'y' AS "b!: String""#)
                    .fetch_all(&db)
                    .await?;
                sqlx::query!("SELECT 1 AS one").fetch_optional(&db).await?;
                Ok::<_, Error>(((row.a, row.b), n))
            })
            .await
            .unwrap();
        assert_eq!(row, (1, "x".to_string()));
        assert_eq!(
            n,
            [Pair {
                a: 2,
                b: "y".into()
            }]
        );
    });
}

#[derive(Debug, PartialEq)]
struct Pair {
    a: i64,
    b: String,
}
