use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests]
fn handler() -> String {
    String::new()
}

pub struct Handlers;

impl Handlers {
    #[non_atomic_requests(using = "reports")]
    pub fn method(&self) -> u8 {
        1
    }
}

#[non_atomic_requests]
const fn constant() -> u8 {
    1
}

fn main() {
    // The functions are still emitted, unchanged: no error below.
    let _: String = handler();
    let _: u8 = Handlers.method() + constant();
}
