//! Starting a task after the commit: the way out of a block for background work, which
//! `tokio::spawn` inside a block is not.

use crate::on_commit::{OnCommit, on_commit};

/// Spawns `future` as a tokio task once the outermost transaction of the alias commits; never if
/// it rolls back (docs/semantics.md §5.9). Outside any block the task starts at once.
///
/// This is [`on_commit`] with a hook that calls `tokio::spawn`, so it takes the same options
/// (`.using("alias")`, `.name("...")`) and must be awaited to register. Use it for work that
/// must see the block's data, or must not happen if the block rolls back: sending an email about
/// an order, enqueuing a job that reads the order's row.
///
/// A plain `tokio::spawn` inside a block starts the task at once, outside the transaction:
/// tokio does not pass task-locals to the tasks it spawns, so the task has no block. It runs
/// before the COMMIT, cannot see the block's uncommitted rows, and its own writes commit on their
/// own even if the block rolls back. The library cannot see a task being spawned, so it cannot
/// warn about it.
///
/// The task's result is dropped; the task is not awaited before the block returns. Like every
/// hook, it is at most once: if the process stops after the COMMIT and before the task runs, the
/// task never runs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// use sqlx_atomic::{Atomic, spawn_on_commit};
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// Atomic::new()
///     .run(async move {
///         // Not started yet: the block has not committed.
///         spawn_on_commit(async move {
///             let _ = tx.send("the order is committed");
///         })
///         .name("notify")
///         .await?;
///         Ok::<_, sqlx_atomic::Error>(())
///     })
///     .await?;
/// assert_eq!(rx.await.unwrap(), "the order is committed");
/// # Ok(()) }
/// ```
pub fn spawn_on_commit<F>(future: F) -> OnCommit
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    on_commit(move || {
        drop(tokio::spawn(future));
    })
}
