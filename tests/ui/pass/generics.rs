#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use std::fmt::Display;

use sqlx_atomic::{Error, atomic};

#[atomic]
pub async fn with_lifetime<'a>(name: &'a str) -> Result<&'a str, Error> {
    Ok(name)
}

#[atomic]
pub async fn elided_lifetime(name: &str) -> Result<&str, Error> {
    Ok(name.trim())
}

#[atomic(using = "default")]
pub async fn generic<'a, T: Send + Clone, U>(item: &'a T, extra: U) -> Result<(T, U), Error>
where
    U: Display + Send + 'static,
    T: 'a,
{
    Ok((item.clone(), extra))
}

#[atomic]
pub async fn impl_trait_argument(
    items: impl IntoIterator<Item = u8>,
    show: impl Display,
) -> Result<String, Error> {
    Ok(format!("{show}: {}", items.into_iter().count()))
}

#[atomic]
pub async fn const_generic<const N: usize>(values: [u8; N]) -> Result<[u8; N], Error> {
    Ok(values)
}

#[atomic]
pub async fn impl_trait_in_result() -> Result<impl Display, Error> {
    Ok(7)
}

pub struct Store<T>(Vec<T>);

impl<T: Clone + Send + Sync> Store<T> {
    #[atomic]
    pub async fn first<'s>(&'s self) -> Result<Option<&'s T>, Error> {
        Ok(self.0.first())
    }

    #[atomic]
    pub async fn push_all<I>(&mut self, items: I) -> Result<usize, Error>
    where
        I: IntoIterator<Item = T> + Send,
    {
        self.0.extend(items);
        Ok(self.0.len())
    }
}

#[allow(dead_code)]
async fn caller() -> Result<(), Error> {
    with_lifetime("a").await?;
    elided_lifetime(" b ").await?;
    generic(&1u8, "x").await?;
    impl_trait_argument([1, 2], "n").await?;
    const_generic([1, 2, 3]).await?;
    let shown = impl_trait_in_result().await?.to_string();
    let mut store = Store(vec![shown]);
    store.push_all(["y".to_owned()]).await?;
    store.first().await?;
    Ok(())
}

fn main() {}
