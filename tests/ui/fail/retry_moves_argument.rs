// Each attempt runs the body again with the same arguments, so a body that consumes a by-value
// argument cannot be retried as written.
use sqlx_atomic::{Error, atomic};

fn consume(_: String) {}

#[atomic(retry = 3)]
async fn moves_its_argument(name: String) -> Result<(), Error> {
    consume(name);
    Ok(())
}

fn main() {}
