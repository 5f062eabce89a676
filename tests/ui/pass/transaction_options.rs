#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use std::time::Duration;

use sqlx_atomic::{Error, Retry, atomic};

#[atomic(
    using = "reports",
    savepoint = true,
    durable = true,
    isolation = "serializable",
    read_only = true,
    lock = "immediate",
    timeout = "500ms",
    retry = 3,
    crate = "::sqlx_atomic",
)]
pub async fn every_argument() -> Result<(), Error> {
    Ok(())
}

#[atomic(isolation = "read_uncommitted", lock = "deferred", timeout = "5s")]
pub async fn read_uncommitted() -> Result<(), Error> {
    Ok(())
}

#[atomic(isolation = "read_committed", lock = "exclusive", timeout = "2m")]
pub async fn read_committed() -> Result<(), Error> {
    Ok(())
}

#[atomic(isolation = "repeatable_read", read_only = false)]
pub async fn repeatable_read() -> Result<(), Error> {
    Ok(())
}

#[atomic(retry = Retry::new(5).backoff(Duration::from_millis(1), Duration::from_millis(50)))]
pub async fn custom_policy() -> Result<(), Error> {
    Ok(())
}

#[atomic(retry = policy)]
pub async fn policy_from_an_argument(policy: Retry) -> Result<u32, Error> {
    Ok(policy.retries())
}

#[atomic(retry = 1)]
pub async fn returns_early(flag: bool) -> Result<i32, Error> {
    if flag {
        return Ok(1);
    }
    Ok(2)
}

pub struct Counter {
    hits: u32,
    names: Vec<String>,
}

impl Counter {
    // `&mut self` and `&str` are borrowed anew by each attempt.
    #[atomic(retry = 3, isolation = "repeatable_read")]
    pub async fn record(&mut self, name: &str) -> Result<u32, Error> {
        self.hits += 1;
        self.names.push(name.to_owned());
        Ok(self.hits)
    }

    // By-value arguments the body only borrows.
    #[atomic(retry = 2)]
    pub async fn measure(&self, name: String, tags: Vec<String>) -> Result<usize, Error> {
        Ok(name.len() + tags.len() + self.names.len())
    }

    // A by-value argument the body consumes, cloned first.
    #[atomic(retry = 2)]
    pub async fn keep(&mut self, name: String) -> Result<(), Error> {
        let name = name.clone();
        self.names.push(name);
        Ok(())
    }

    #[atomic(retry = 1)]
    pub async fn echo<'a>(&self, name: &'a str) -> Result<&'a str, Error> {
        Ok(name)
    }

    #[atomic(retry = self.hits.max(1))]
    pub async fn retries_from_self(&self) -> Result<u32, Error> {
        Ok(self.hits)
    }
}

fn assert_send<T: Send>(_: T) {}

async fn caller() -> Result<(), Error> {
    let mut counter = Counter {
        hits: 0,
        names: Vec::new(),
    };
    let name = String::from("a");
    assert_send(counter.record(&name));
    assert_send(every_argument());
    counter.record(&name).await?;
    counter.measure(name.clone(), Vec::new()).await?;
    counter.keep(name).await?;
    Ok(())
}

fn main() {}
