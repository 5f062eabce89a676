//! No credential ever appears in a `Debug`/`Display` output, an error or a tracing line; savepoint
//! names are generated; every crate forbids unsafe code. Its own test binary: it installs its
//! own databases (with a password in the URL) and a global tracing subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use sqlx_atomic::{Atomic, Database, Databases, Error, Scope, on_commit};

const SECRET: &str = "s3cretpw";

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

#[test]
fn no_credential_in_any_output() {
    let sink = Sink::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(sink.clone())
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut shown: Vec<String> = Vec::new();
    rt.block_on(async {
        let pg_url = std::env::var("SQLX_ATOMIC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        // Trust authentication ignores the password, so the URL still connects.
        let pg_url = pg_url.replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
        assert!(pg_url.contains(SECRET));
        let pg = Database::connect_lazy(&pg_url).unwrap();
        shown.push(format!("{pg:?}"));
        let bad = Database::connect_lazy(&format!("postgres://u:{SECRET}@host:notaport/db"));
        shown.push(format!("{}", bad.as_ref().unwrap_err()));
        shown.push(format!("{:?}", bad.unwrap_err()));
        let unknown = Database::connect_lazy(&format!("oracle://u:{SECRET}@host/db"));
        shown.push(format!("{}", unknown.unwrap_err()));
        let dbs = Databases::new()
            .add(
                "default",
                Database::connect_lazy("sqlite::memory:").unwrap(),
            )
            .add("pg", pg);
        shown.push(format!("{dbs:?}"));
        dbs.install().unwrap();

        let db = sqlx_atomic::postgres("pg");
        let (r, log) = Scope::new()
            .record_statements()
            .run(Atomic::new().using("pg").run(async {
                sqlx::query("SELECT 1").execute(&db).await?;
                Atomic::new()
                    .using("pg")
                    .run(async {
                        on_commit(|| ()).using("pg").await?;
                        let e = sqlx::query("SELECT * FROM no_such_table")
                            .execute(&db)
                            .await;
                        e.map(drop).map_err(Error::from)
                    })
                    .await
                    .err();
                let doomed = sqlx::query("SELECT 1").execute(&db).await;
                Ok::<_, Error>(doomed.err().map(|e| (format!("{e}"), format!("{e:?}"))))
            }))
            .await;
        match r {
            Ok(Some((a, b))) => shown.extend([a, b]),
            Ok(None) => {}
            Err(e) => shown.extend([format!("{e}"), format!("{e:?}")]),
        }
        // Savepoint names come from the library, never from user text.
        for s in &log {
            if s.sql.starts_with("SAVEPOINT") || s.sql.starts_with("ROLLBACK TO") {
                assert!(
                    s.sql.ends_with(|c: char| c.is_ascii_digit())
                        && s.sql.contains("sqlx_atomic_sp"),
                    "{s:?}"
                );
            }
        }
        let e = Atomic::new()
            .using("nope")
            .run(async { Ok::<_, Error>(()) })
            .await
            .unwrap_err();
        shown.extend([format!("{e}"), format!("{e:?}")]);
    });
    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("sqlx_atomic"),
        "tracing captured nothing: {logs}"
    );
    // With DEBUG on, statements are logged inside the block's span, which names alias and depth.
    assert!(
        logs.contains("atomic{alias=") && logs.contains("depth=1"),
        "no `atomic` span with alias and depth in the tracing lines: {logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "a tracing line shows the password:\n{logs}"
    );
    for s in &shown {
        assert!(!s.contains(SECRET), "output shows the password: {s}");
    }
}

#[test]
fn every_crate_forbids_unsafe_code() {
    let root = env!("CARGO_MANIFEST_DIR");
    for lib in ["src/lib.rs", "runtime/src/lib.rs", "macros/src/lib.rs"] {
        let text = std::fs::read_to_string(format!("{root}/{lib}")).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{lib} does not forbid unsafe code"
        );
    }
}
