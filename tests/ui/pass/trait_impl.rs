#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::{Error, atomic};

#[allow(async_fn_in_trait)]
pub trait Orders {
    fn place(&self, user: i64) -> impl std::future::Future<Output = Result<i64, Error>> + Send;

    async fn cancel(&mut self, id: i64) -> Result<(), Error>;

    /// A default body can be atomic too.
    #[atomic(using = "default")]
    async fn count(&self) -> Result<usize, Error> {
        Ok(0)
    }
}

pub struct SqlOrders;

impl Orders for SqlOrders {
    #[atomic]
    async fn place(&self, user: i64) -> Result<i64, Error> {
        Ok(user)
    }

    #[atomic(savepoint = false)]
    async fn cancel(&mut self, id: i64) -> Result<(), Error> {
        let _ = id;
        Ok(())
    }
}

#[allow(dead_code)]
async fn caller(orders: &mut impl Orders) -> Result<usize, Error> {
    let id = orders.place(1).await?;
    orders.cancel(id).await?;
    orders.count().await
}

fn main() {}
