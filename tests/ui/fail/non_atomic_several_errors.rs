use sqlx_atomic::non_atomic_requests;

// Every mistake is reported at once, each at its own tokens.
#[non_atomic_requests(foo = 1, using = [], using = "", using = ALIAS, using = "a", using = ["a"])]
fn handler() -> u8 {
    1
}

fn main() {
    let _: u8 = handler();
}
