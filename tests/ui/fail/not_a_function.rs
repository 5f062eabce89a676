use sqlx_atomic::atomic;

#[atomic]
pub struct Orders {
    id: i64,
}

#[atomic]
const LIMIT: usize = 10;

#[atomic(using = "default")]
mod queries {}

#[atomic]
impl Orders {
    fn id(&self) -> i64 {
        self.id
    }
}

fn main() {
    // The items are still emitted, so their users type-check: no error below.
    let orders = Orders { id: LIMIT as i64 };
    let _ = orders.id();
}
