#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

//! Methods and generic functions; their futures stay `Send` when their bodies are.

use std::fmt::Display;

use sqlx_atomic::non_atomic_requests;

pub struct Handlers {
    hits: u32,
}

impl Handlers {
    #[non_atomic_requests]
    pub async fn by_ref(&self) -> u32 {
        self.hits
    }

    #[non_atomic_requests(using = "reports")]
    pub async fn by_mut_ref(&mut self) -> &mut Self {
        self.hits += 1;
        self
    }

    #[non_atomic_requests]
    pub async fn by_value(mut self) -> Self {
        self.hits = 0;
        self
    }

    #[non_atomic_requests]
    pub async fn associated() -> Self {
        Handlers { hits: 0 }
    }

    #[non_atomic_requests]
    pub async fn generic<T: Display + Send>(&self, value: T) -> String {
        format!("{value} after {}", self.hits)
    }
}

trait Handler {
    async fn handle(&self) -> String;
}

impl Handler for Handlers {
    #[non_atomic_requests]
    async fn handle(&self) -> String {
        self.generic(self.by_ref().await).await
    }
}

pub struct Wrapper<T>(T);

impl<T: Clone + Send + Sync> Wrapper<T> {
    #[non_atomic_requests]
    pub async fn get(&self) -> T {
        self.0.clone()
    }
}

#[non_atomic_requests]
pub async fn generic_free<T, U>(items: Vec<T>, extra: U) -> Vec<String>
where
    T: Display + Send,
    U: Into<String> + Send,
{
    let mut out: Vec<String> = items.iter().map(T::to_string).collect();
    out.push(extra.into());
    out
}

fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

async fn caller() -> String {
    let mut handlers = Handlers::associated().await;
    handlers.by_mut_ref().await;
    let first = assert_send(handlers.generic(1u8)).await;
    let second = assert_send(handlers.handle()).await;
    let wrapped = assert_send(Wrapper(7u64).get()).await;
    let all = assert_send(generic_free(vec![wrapped], first)).await;
    let handlers = assert_send(handlers.by_value()).await;
    format!("{all:?} {second} {}", handlers.hits)
}

fn main() {
    let _ = assert_send(caller());
}
