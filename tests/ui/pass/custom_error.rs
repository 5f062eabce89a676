#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::atomic;

#[derive(Debug)]
pub enum AppError {
    Db(sqlx_atomic::Error),
    NotFound(i64),
}

impl From<sqlx_atomic::Error> for AppError {
    fn from(error: sqlx_atomic::Error) -> Self {
        AppError::Db(error)
    }
}

fn lookup(id: i64) -> Result<i64, sqlx_atomic::Error> {
    Ok(id)
}

#[atomic]
pub async fn find(id: i64) -> Result<i64, AppError> {
    let found = lookup(id)?;
    if found == 0 {
        return Err(AppError::NotFound(id));
    }
    Ok(found)
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

fn main() {}
