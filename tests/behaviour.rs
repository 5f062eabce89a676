//! The behavioural suite of docs/semantics.md, written once (tests/suite/rules.rs and
//! tests/suite/outcomes.rs) and run on SQLite, PostgreSQL and MariaDB, and again on PostgreSQL
//! through pgbouncer in transaction pooling mode and on a node of a MariaDB Galera cluster. Each
//! test names the rule it pins.

mod common;
#[path = "suite/django_programs.rs"]
mod django_programs;

macro_rules! backend_suite {
    ($module:ident, $db:ty, $backend:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use crate::common::{Backend, Fx};
            type DB = $db;
            const B: Backend = $backend;
            include!("suite/rules.rs");
            include!("suite/outcomes.rs");
        }
    };
}

backend_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite);
backend_suite!(postgres, sqlx::Postgres, Backend::Postgres);
backend_suite!(mysql, sqlx::MySql, Backend::MySql);
backend_suite!(pgbouncer, sqlx::Postgres, Backend::PgBouncer);
backend_suite!(galera, sqlx::MySql, Backend::Galera);
