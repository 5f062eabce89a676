//! The read replicas of an installed alias, and what is known of each: its pool, how far it has
//! replayed, whether it is left out for now (docs/semantics.md §12.4). Checking a configuration
//! of replicas. No I/O: `replica` routes and waits.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::backend::AnyPool;
#[cfg(feature = "postgres")]
use crate::backend::BackendKind;
use crate::position::Positions;

/// How long a replica read waits, by default, for a replica to replay what the task needs (or to
/// give a connection) before it goes to the primary.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_millis(100);
/// How long a replica that gave no connection is left out before a read tries it again (a probe
/// in the background may bring it back sooner).
pub(crate) const DOWN_RETRY: Duration = Duration::from_secs(5);
/// How long a replica that did not replay a position within the bound is left out of the reads
/// that need a position it has not been seen to reach.
pub(crate) const LAG_RETRY: Duration = Duration::from_secs(1);
/// What the checks of [`invalid`] need to know of a database.
pub(crate) struct Facts<'a> {
    pub(crate) pool: &'a AnyPool,
    pub(crate) display: &'a str,
    pub(crate) transaction_pooling: bool,
    pub(crate) has_replicas: bool,
}

/// Why a database (`primary`) and its `replicas` cannot be installed as configured, if they
/// cannot.
pub(crate) fn invalid(primary: Facts<'_>, replicas: &[Facts<'_>]) -> Option<String> {
    if replicas.is_empty() {
        return None;
    }
    let postgres = |pool: &AnyPool| {
        #[cfg(feature = "postgres")]
        return pool.kind() == BackendKind::Postgres;
        #[cfg(not(feature = "postgres"))]
        return {
            let _ = pool;
            false
        };
    };
    if !postgres(primary.pool) {
        return Some(format!(
            "read replicas are a PostgreSQL feature, but this database is {}",
            primary.pool.kind().name()
        ));
    }
    if primary.transaction_pooling {
        return Some(
            "read replicas cannot be combined with transaction pooling on the same alias".into(),
        );
    }
    for replica in replicas {
        let why = if !postgres(replica.pool) {
            format!(
                "is {}, not PostgreSQL like its primary",
                replica.pool.kind().name()
            )
        } else if replica.transaction_pooling {
            "is in transaction-pooling mode, which a replica does not support".into()
        } else if replica.has_replicas {
            "has read replicas of its own".into()
        } else {
            continue;
        };
        return Some(format!(
            "the read replica {} {why}",
            describe(replica.pool, replica.display)
        ));
    }
    None
}

/// A replica's name in logs and errors: where it is, never its password (`display`: the
/// database's own, for a backend whose connect options are not read here).
pub(crate) fn describe(pool: &AnyPool, display: &str) -> String {
    match pool {
        #[cfg(feature = "postgres")]
        AnyPool::Postgres(pool) => {
            let o = pool.connect_options();
            format!(
                "postgres://{}@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            )
        }
        #[allow(unreachable_patterns)]
        _ => display.to_owned(),
    }
}

/// The replicas of one installed alias.
pub(crate) struct ReplicaSet {
    pub(crate) replicas: Box<[Replica]>,
    /// The bound on waiting for a replica.
    pub(crate) wait: Duration,
    /// The round-robin counter.
    pub(crate) next: AtomicUsize,
    /// The positions of the tasks that wrote on the alias.
    pub(crate) positions: Positions,
}

/// One replica and what is known of it.
pub(crate) struct Replica {
    pub(crate) pool: AnyPool,
    pub(crate) display: String,
    /// The highest replay position read from it.
    pub(crate) replayed: AtomicU64,
    /// Until when (`now_ms`) it is left out because it gave no connection.
    pub(crate) down_until: AtomicU64,
    /// Until when it is left out of reads that need a position beyond `replayed`.
    pub(crate) lagging_until: AtomicU64,
    /// A WARN was logged for its being down, and not yet the line that says it is back.
    pub(crate) down_logged: AtomicBool,
    /// A background probe is trying to connect to it.
    pub(crate) probing: AtomicBool,
}

impl ReplicaSet {
    /// The set of `replicas` (their pools and displays), if there are any; `wait`: the bound
    /// configured, if one was.
    pub(crate) fn build<'a>(
        replicas: impl Iterator<Item = (&'a AnyPool, &'a str)>,
        wait: Option<Duration>,
    ) -> Option<Box<ReplicaSet>> {
        let replicas: Box<[Replica]> = replicas
            .map(|(pool, display)| Replica {
                pool: pool.clone(),
                display: describe(pool, display),
                replayed: AtomicU64::new(0),
                down_until: AtomicU64::new(0),
                lagging_until: AtomicU64::new(0),
                down_logged: AtomicBool::new(false),
                probing: AtomicBool::new(false),
            })
            .collect();
        if replicas.is_empty() {
            return None;
        }
        Some(Box::new(ReplicaSet {
            replicas,
            wait: wait.unwrap_or(DEFAULT_WAIT),
            next: AtomicUsize::new(0),
            positions: Positions::default(),
        }))
    }

    /// Records `lsn` as the current task's position.
    pub(crate) fn record(&self, lsn: u64) {
        self.positions.record(lsn, || {
            self.replicas
                .iter()
                .map(|r| r.replayed.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        });
    }
}

/// Milliseconds since the first call, plus one (0 means "never").
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}
