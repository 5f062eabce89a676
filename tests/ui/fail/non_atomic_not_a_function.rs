use sqlx_atomic::non_atomic_requests;

#[non_atomic_requests]
pub struct Handlers {
    hits: u32,
}

#[non_atomic_requests]
const LIMIT: u32 = 10;

#[non_atomic_requests(using = "reports")]
mod handlers {}

#[non_atomic_requests]
impl Handlers {
    fn hits(&self) -> u32 {
        self.hits
    }
}

#[non_atomic_requests]
trait Handler {}

fn main() {
    // The items are still emitted: no error below.
    let handlers = Handlers { hits: LIMIT };
    let _ = handlers.hits();
}
