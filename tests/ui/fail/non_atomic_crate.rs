use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests(crate = sqlx_atomic)]
async fn not_a_string() -> u8 {
    1
}

#[non_atomic_requests(crate = "not a path")]
async fn not_a_path() -> u8 {
    2
}

#[non_atomic_requests(crate = "::sqlx_atomic", crate = "::sqlx_atomic")]
async fn duplicate() -> u8 {
    3
}

fn main() {
    let _ = (not_a_string(), not_a_path(), duplicate());
}

#[non_atomic_requests(crate = "(")]
async fn does_not_lex() -> u8 {
    4
}
