//! `#[sqlx_atomic::test]` without a `setup`: the databases come from `DATABASE_URL` (alias
//! `"default"`) and `DATABASE_URL_<ALIAS>`, installed before the first test body runs.
//!
//! The registry is process-wide and installed once, so each check runs this test binary again as a
//! child process, with an environment of its own, running only the `#[ignore]`d `child_*` tests
//! named; the check reads the child's outcome and output. PostgreSQL and MariaDB are found as in
//! the other suites (tests/common: skipped loudly when they do not answer, fatal under CI=true).

mod common;

use std::process::{Command, Output};

use common::Backend;
use sqlx_atomic::{Database, Databases, Handle, installed_aliases, testing, using};

/// Runs the `#[ignore]`d tests `names` of this binary in a child process whose `DATABASE_URL*`
/// variables are exactly `vars`.
fn child(names: &[&str], vars: &[(&str, String)], threads: usize) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(names)
        .args(["--exact", "--ignored", "--nocapture"])
        .arg(format!("--test-threads={threads}"));
    for (name, _) in std::env::vars() {
        if name.starts_with("DATABASE_URL") {
            command.env_remove(name);
        }
    }
    command.envs(vars.iter().map(|(name, value)| (name, value)));
    command.output().expect("run the test binary")
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that the child ran exactly `passed` tests, all passing.
fn assert_passed(output: &Output, passed: usize) {
    let all = text(output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains(&format!("test result: ok. {passed} passed; 0 failed")),
        "{all}"
    );
}

/// A SQLite URL of a file of this process.
fn sqlite_url(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sqlx-atomic-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

#[test]
fn databases_of_the_environment_are_installed_before_the_body() {
    let vars = [
        ("DATABASE_URL", sqlite_url("default.db")),
        ("DATABASE_URL_REPORTS", sqlite_url("reports.db")),
    ];
    // Two tests at once: both find no databases, one installs, neither fails.
    let output = child(&["child_default", "child_reports_and_default"], &vars, 2);
    assert_passed(&output, 2);
}

#[test]
fn server_databases_of_the_environment() {
    let mut vars = vec![("DATABASE_URL", sqlite_url("default.db"))];
    let mut names = Vec::new();
    for (b, var, name) in [
        (Backend::Postgres, "DATABASE_URL_PG", "child_postgres"),
        (Backend::MySql, "DATABASE_URL_MY", "child_mysql"),
    ] {
        if let Some(url) = common::RT.block_on(common::server_url(b)) {
            vars.push((var, url));
            names.push(name);
        }
    }
    if names.is_empty() {
        return;
    }
    let output = child(&names, &vars, 2);
    assert_passed(&output, names.len());
}

/// Several threads installing at once: one installs, none fails. Each attempt needs a process of
/// its own (the registry is installed once) and loses the race only sometimes, hence 10 of them.
#[test]
fn many_tests_installing_at_once_all_succeed() {
    let vars = [("DATABASE_URL", sqlite_url("default.db"))];
    for _ in 0..10 {
        let output = child(&["child_ensure_installed_race"], &vars, 1);
        assert_passed(&output, 1);
    }
}

#[test]
fn without_databases_the_test_fails_saying_what_to_set() {
    let output = child(&["child_default"], &[], 1);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains(
            "#[sqlx_atomic::test]: no databases are installed. Set DATABASE_URL (the alias \
             \"default\") and DATABASE_URL_<ALIAS> for other aliases, or install them in code in \
             a setup function given to the attribute: #[sqlx_atomic::test(setup = \
             path::to::setup)]"
        ),
        "{all}"
    );
}

#[test]
fn an_alias_missing_from_the_environment_is_named() {
    let vars = [("DATABASE_URL", sqlite_url("default.db"))];
    let output = child(&["child_reports_and_default"], &vars, 1);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains(
            "#[sqlx_atomic::test]: the database alias `reports` is not installed (installed: \
             default). Set DATABASE_URL_REPORTS before the first test runs"
        ),
        "{all}"
    );
}

#[test]
fn an_invalid_url_fails_the_test_with_the_alias() {
    let vars = [("DATABASE_URL", "nosuch://user:secret@host/db".to_owned())];
    let output = child(&["child_default"], &vars, 1);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains(
            "#[sqlx_atomic::test]: cannot install the databases named by the environment \
             (DATABASE_URL, DATABASE_URL_<ALIAS>): database `default`: invalid configuration"
        ),
        "{all}"
    );
    assert!(!all.contains("secret"), "{all}");
}

#[test]
fn a_setup_that_installs_in_code_wins_over_the_environment() {
    let vars = [("DATABASE_URL", sqlite_url("default.db"))];
    let output = child(&["child_setup_in_code"], &vars, 1);
    assert_passed(&output, 1);
}

// The children. `--include-ignored` runs them in this process too, where they fail unless the
// environment names their databases.

#[sqlx_atomic::test]
#[ignore = "run in a child process, with its own environment, by the tests above"]
async fn child_default() -> Result<(), sqlx_atomic::Error> {
    assert!(using("default").in_atomic_block()?);
    sqlx::query("SELECT 1")
        .execute(Handle::<sqlx::Sqlite>::new("default"))
        .await?;
    Ok(())
}

#[sqlx_atomic::test(using = ["reports", "default"])]
#[ignore = "run in a child process, with its own environment, by the tests above"]
async fn child_reports_and_default() -> Result<(), sqlx_atomic::Error> {
    assert_eq!(installed_aliases(), ["default", "reports"]);
    for alias in ["default", "reports"] {
        assert!(using(alias).in_atomic_block()?, "{alias}");
        sqlx::query("SELECT 1")
            .execute(Handle::<sqlx::Sqlite>::new(alias))
            .await?;
    }
    Ok(())
}

#[sqlx_atomic::test(using = "pg")]
#[ignore = "run in a child process, with its own environment, by the tests above"]
async fn child_postgres() -> Result<(), sqlx_atomic::Error> {
    assert!(using("pg").in_atomic_block()?);
    // A setting local to the transaction is still there at the next statement only inside one.
    let pg = || Handle::<sqlx::Postgres>::new("pg");
    sqlx::query("SELECT set_config('sqlx_atomic.probe', 'in the test transaction', true)")
        .execute(pg())
        .await?;
    let probe: String = sqlx::query_scalar("SELECT current_setting('sqlx_atomic.probe', true)")
        .fetch_one(pg())
        .await?;
    assert_eq!(probe, "in the test transaction");
    Ok(())
}

#[sqlx_atomic::test(using = "my")]
#[ignore = "run in a child process, with its own environment, by the tests above"]
async fn child_mysql() -> Result<(), sqlx_atomic::Error> {
    assert!(using("my").in_atomic_block()?);
    // The server says the connection is inside a transaction: the test's.
    let in_transaction: i64 = sqlx::query_scalar("SELECT CAST(@@in_transaction AS SIGNED)")
        .fetch_one(Handle::<sqlx::MySql>::new("my"))
        .await?;
    assert_eq!(in_transaction, 1);
    Ok(())
}

#[test]
#[ignore = "run in a child process, with its own environment, by the tests above"]
fn child_ensure_installed_race() {
    const THREADS: usize = 8;
    // The runtime first, so that the threads do not queue behind its creation.
    testing::block_on(async {});
    assert!(!sqlx_atomic::is_installed());
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let installs: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    testing::block_on(async { testing::ensure_installed() })
                })
            })
            .collect();
        for install in installs {
            install.join().unwrap().expect("every caller succeeds");
        }
    });
    assert_eq!(installed_aliases(), ["default"]);
}

async fn install_in_code() {
    Databases::new()
        .add(
            "code",
            Database::connect_lazy("sqlite::memory:").expect("sqlite url"),
        )
        .install()
        .expect("nothing is installed before the setup");
}

#[sqlx_atomic::test(using = "code", setup = install_in_code)]
#[ignore = "run in a child process, with its own environment, by the tests above"]
async fn child_setup_in_code() {
    // DATABASE_URL was set, but the setup installed first: the environment was not read.
    assert_eq!(installed_aliases(), ["code"]);
    assert!(using("code").in_atomic_block().unwrap());
}
