//! The quickstart: `#[atomic]` functions, a nested one that becomes a savepoint, on_commit hooks,
//! and rolled-back work, on SQLite in memory. No set-up needed.
//!
//! Run with `cargo run --example quickstart`.

use std::fmt;
use std::sync::{Arc, Mutex};

use sqlx_atomic::{Atomic, Database, Databases, atomic, on_commit, sqlite};

/// The application's error. An `#[atomic]` function returns `Result<T, E>` with
/// `E: From<sqlx_atomic::Error>`, so that the block can report its own failures (a COMMIT that
/// failed, say) in the function's error type.
#[derive(Debug)]
enum AppError {
    Db(sqlx_atomic::Error),
    OutOfStock(String),
    PaymentDeclined,
}

impl From<sqlx_atomic::Error> for AppError {
    fn from(e: sqlx_atomic::Error) -> Self {
        AppError::Db(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Db(e.into())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Db(e) => write!(f, "{e}"),
            AppError::OutOfStock(item) => write!(f, "'{item}' is out of stock"),
            AppError::PaymentDeclined => write!(f, "the payment was declined"),
        }
    }
}

/// What the on_commit hooks "send": in a real application, emails or jobs for a worker.
type Outbox = Arc<Mutex<Vec<String>>>;

fn sent_so_far(outbox: &Outbox) -> Vec<String> {
    outbox.lock().unwrap().clone()
}

/// The outer function: called outside any block, it is the outermost block, a transaction.
/// `Ok` commits, `Err` (or a panic, or the future being dropped) rolls back.
#[atomic]
async fn place_order(item: &str, gift: &str, outbox: &Outbox) -> Result<i64, AppError> {
    let id: i64 = sqlx::query_scalar("INSERT INTO orders (item) VALUES (?) RETURNING id")
        .bind(item)
        .fetch_one(sqlite("default"))
        .await?;
    // Registered now, run only after the COMMIT succeeds.
    let sent = outbox.clone();
    let email = format!("email: order {id} ({item}) confirmed");
    on_commit(move || sent.lock().unwrap().push(email)).await?;
    println!(
        "   inserted order {id} ('{item}'), registered its email; sent so far: {:?}",
        sent_so_far(outbox)
    );

    // A nested #[atomic] function runs in a savepoint: its failure undoes only its own work,
    // and this function decides what to do about it.
    if let Err(e) = add_gift(id, gift, outbox).await {
        println!("   gift rolled back to its savepoint ({e}); its hook is dropped");
    }

    if item == "piano" {
        // Everything above, gift included, is rolled back, and no hook runs.
        return Err(AppError::PaymentDeclined);
    }
    Ok(id)
}

/// Called inside `place_order`, this block is nested: a SAVEPOINT, not a new transaction.
#[atomic]
async fn add_gift(order: i64, gift: &str, outbox: &Outbox) -> Result<(), AppError> {
    sqlx::query("INSERT INTO gifts (order_id, item) VALUES (?, ?)")
        .bind(order)
        .bind(gift)
        .execute(sqlite("default"))
        .await?;
    let sent = outbox.clone();
    let note = format!("warehouse: wrap '{gift}' for order {order}");
    on_commit(move || sent.lock().unwrap().push(note)).await?;
    if gift == "umbrella" {
        return Err(AppError::OutOfStock(gift.into()));
    }
    println!("   added gift '{gift}' in a savepoint");
    Ok(())
}

async fn rows(table: &str) -> Result<Vec<String>, sqlx::Error> {
    let sql = match table {
        "orders" => "SELECT item FROM orders ORDER BY id",
        _ => "SELECT item FROM gifts ORDER BY order_id",
    };
    sqlx::query_scalar(sql).fetch_all(sqlite("default")).await
}

#[tokio::main]
async fn main() -> Result<(), AppError> {
    // One in-memory database shared by every pooled connection.
    Databases::new()
        .add(
            "default",
            Database::connect_lazy("sqlite:file:quickstart?mode=memory&cache=shared")?,
        )
        .install()?;
    // Outside any block, a query runs on the pool in autocommit.
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        .execute(sqlite("default"))
        .await?;
    sqlx::query("CREATE TABLE gifts (order_id INTEGER NOT NULL, item TEXT NOT NULL)")
        .execute(sqlite("default"))
        .await?;
    let outbox = Outbox::default();

    println!("1. place_order('book', gift 'card'): BEGIN, INSERT, SAVEPOINT, INSERT, COMMIT");
    place_order("book", "card", &outbox).await?;
    println!(
        "   committed; the hooks ran after the COMMIT, in order: {:?}",
        sent_so_far(&outbox)
    );
    assert_eq!(outbox.lock().unwrap().len(), 2);

    outbox.lock().unwrap().clear();
    println!("2. place_order('lamp', gift 'umbrella'): the nested block fails");
    place_order("lamp", "umbrella", &outbox).await?;
    println!(
        "   the order committed without its gift; hooks that ran: {:?}",
        sent_so_far(&outbox)
    );
    assert_eq!(sent_so_far(&outbox), ["email: order 2 (lamp) confirmed"]);

    outbox.lock().unwrap().clear();
    println!("3. place_order('piano', gift 'card'): the outer block fails");
    let failed = place_order("piano", "card", &outbox).await;
    println!(
        "   {}: rolled back, order and gift; hooks that ran: {:?}",
        failed.unwrap_err(),
        sent_so_far(&outbox)
    );
    assert!(outbox.lock().unwrap().is_empty());

    println!("4. the function form, the same without the attribute: Atomic::new().run(..)");
    let id = Atomic::new()
        .run(async {
            let id: i64 =
                sqlx::query_scalar("INSERT INTO orders (item) VALUES ('pen') RETURNING id")
                    .fetch_one(sqlite("default"))
                    .await?;
            Ok::<_, AppError>(id)
        })
        .await?;
    println!("   order {id} committed");

    let orders = rows("orders").await?;
    let gifts = rows("gifts").await?;
    println!("5. in the database: orders {orders:?}, gifts {gifts:?}");
    assert_eq!(orders, ["book", "lamp", "pen"]);
    assert_eq!(gifts, ["card"]);
    Ok(())
}
