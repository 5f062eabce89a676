#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::{Error, atomic};

pub struct Repo {
    count: u32,
}

impl Repo {
    #[atomic]
    pub async fn by_ref(&self) -> Result<u32, Error> {
        Ok(self.count)
    }

    #[atomic(using = "default")]
    pub async fn by_mut_ref(&mut self, by: u32) -> Result<&mut Self, Error> {
        self.count += by;
        Ok(self)
    }

    #[atomic(savepoint = false)]
    pub async fn by_value(self) -> Result<Self, Error> {
        Ok(self)
    }

    #[atomic]
    pub async fn by_mut_value(mut self) -> Result<Self, Error> {
        self.count = 0;
        Ok(self)
    }

    #[atomic]
    pub async fn typed_self(self: &Self) -> Result<u32, Error> {
        Ok(self.count)
    }

    #[atomic]
    pub async fn associated() -> Result<Self, Error> {
        Ok(Repo { count: 0 })
    }

    #[atomic]
    async fn private_calls_others(&mut self) -> Result<u32, Error> {
        self.by_mut_ref(1).await?;
        let n = self.by_ref().await?;
        Ok(n + self.typed_self().await?)
    }
}

#[allow(dead_code)]
async fn caller() -> Result<u32, Error> {
    let mut repo = Repo::associated().await?;
    repo.private_calls_others().await?;
    let repo = repo.by_value().await?.by_mut_value().await?;
    repo.by_ref().await
}

fn main() {}
