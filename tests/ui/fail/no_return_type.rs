use sqlx_atomic::atomic;

#[atomic]
async fn returns_unit() {}

#[atomic(using = "default")]
async fn with_arguments(user: i64, name: &str) {
    let _ = (user, name);
}

fn main() {}
