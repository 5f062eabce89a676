use sqlx_atomic::atomic;

#[atomic(foo = 1, using = "", savepoint = "no", durable = true, durable = false)]
fn everything_wrong() -> Option<i32> {
    Some(1)
}

fn main() {
    let _ = everything_wrong();
}
