#![deny(warnings)]
#![forbid(unsafe_code)]
// Pass cases are binaries: functions not reachable from `main` would be dead code.
#![allow(dead_code)]

use sqlx_atomic::atomic;

#[derive(Debug)]
pub enum AppError {
    Db(sqlx_atomic::Error),
    Negative(i64),
    Empty,
}

impl From<sqlx_atomic::Error> for AppError {
    fn from(error: sqlx_atomic::Error) -> Self {
        AppError::Db(error)
    }
}

fn query(value: i64) -> Result<i64, sqlx_atomic::Error> {
    Ok(value)
}

#[atomic]
pub async fn early_return(value: i64) -> Result<i64, AppError> {
    if value == 0 {
        return Ok(0);
    }
    let value = query(value)?;
    if value < 0 {
        return Err(AppError::Negative(value));
    }
    Ok(value * 2)
}

#[atomic]
pub async fn question_mark_only(a: i64, b: i64) -> Result<i64, AppError> {
    Ok(query(a)? + query(b)? + early_return(a).await?)
}

#[atomic]
pub async fn same_error_type(a: i64) -> Result<i64, sqlx_atomic::Error> {
    let doubled = query(a)? * 2;
    if doubled > 100 {
        return query(100);
    }
    query(doubled)
}

#[atomic]
pub async fn return_in_a_loop(items: Vec<i64>) -> Result<i64, AppError> {
    for item in items {
        if let Ok(value) = query(item) {
            return Ok(value);
        }
    }
    Err(AppError::Empty)
}

#[atomic]
pub async fn closure_with_its_own_return() -> Result<Vec<i64>, AppError> {
    let double = |x: i64| -> Option<i64> {
        if x > 10 {
            return None;
        }
        Some(x * 2)
    };
    Ok((0..3).filter_map(double).collect())
}

#[atomic]
pub async fn nested_async_block() -> Result<i64, AppError> {
    let inner = async {
        let value = query(1)?;
        Ok::<_, sqlx_atomic::Error>(value)
    };
    Ok(inner.await?)
}

fn main() {}
