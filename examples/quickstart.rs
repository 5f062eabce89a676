//! The quickstart: nested savepoints and on_commit hooks on SQLite, no setup needed.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::{Arc, Mutex};

use sqlx_atomic::{Atomic, Database, Databases, Error, on_commit, sqlite};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // One shared in-memory database for every pooled connection.
    Databases::new()
        .add(
            "default",
            Database::connect_lazy("sqlite:file:quickstart?mode=memory&cache=shared")?,
        )
        .install()?;
    let db = sqlite("default");
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        .execute(&db)
        .await?;

    let sent = Arc::new(Mutex::new(Vec::<String>::new()));

    println!("1. outer block: BEGIN (sent lazily, with the first query)");
    let s = sent.clone();
    Atomic::new()
        .run(async {
            sqlx::query("INSERT INTO orders (item) VALUES ('book')")
                .execute(&db)
                .await?;
            let s1 = s.clone();
            on_commit(move || s1.lock().unwrap().push("email for 'book'".into())).await?;
            println!("2. inserted 'book' and registered its email hook (not run yet)");

            let inner: Result<(), Error> = Atomic::new()
                .run(async {
                    sqlx::query("INSERT INTO orders (item) VALUES ('lamp')")
                        .execute(&db)
                        .await?;
                    let s2 = s.clone();
                    on_commit(move || s2.lock().unwrap().push("email for 'lamp'".into())).await?;
                    println!("3. nested block (SAVEPOINT): inserted 'lamp', then it fails");
                    Err(Error::from(sqlx::Error::RowNotFound))
                })
                .await;
            println!(
                "4. nested block rolled back to its savepoint: {}; its hook is discarded",
                inner.unwrap_err()
            );
            println!(
                "   hooks run so far: {:?} (nothing runs before COMMIT)",
                s.lock().unwrap()
            );
            Ok::<_, Error>(())
        })
        .await?;
    println!(
        "5. outer block committed; hooks ran after COMMIT: {:?}",
        sent.lock().unwrap()
    );

    let items: Vec<String> = sqlx::query_scalar("SELECT item FROM orders ORDER BY id")
        .fetch_all(&db)
        .await?;
    println!("6. rows in the database: {items:?}");
    assert_eq!(items, ["book"]);
    assert_eq!(*sent.lock().unwrap(), ["email for 'book'"]);
    Ok(())
}
