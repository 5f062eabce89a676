use sqlx_atomic::non_atomic_requests;

// The path is checked by rustc, which reports it at the string.
#[non_atomic_requests(crate = "no_such_crate", using = "a")]
async fn unresolved() -> u8 {
    1
}

fn main() {
    let _ = unresolved();
}
