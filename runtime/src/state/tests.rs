//! The state machine alone: the statement sequences of docs/semantics.md §9.5 and the odd paths.

use super::*;
use crate::classify::Effect;

/// The cause of a failed statement with SQLSTATE-like `code`, as the executor records it.
fn cause(code: &str) -> Cause {
    Cause::for_tests(code, None)
}

/// Drives the state machine like the runtime does, recording the statements it would send.
struct Sim {
    st: TxState<&'static str>,
    log: Vec<String>,
    next: u64,
    ran: Vec<&'static str>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            st: TxState::new(true, false),
            log: Vec::new(),
            next: 0,
            ran: Vec::new(),
        }
    }

    fn send(&mut self, c: Control) {
        self.log.push(
            crate::backend::ControlText {
                stmt: c,
                begin: None,
            }
            .to_string(),
        );
    }

    fn q(&mut self) {
        match self.st.before_query().expect("query refused") {
            Route::Pool => {}
            Route::Conn(plan) => plan.into_iter().for_each(|c| self.send(c)),
        }
        self.log.push("Q".into());
    }

    fn hook(&mut self, h: &'static str) {
        if let HookDisposition::RunNow(h) = self.st.on_commit(h).unwrap() {
            self.ran.push(h)
        }
    }

    /// Runs a block; `body` returns whether it succeeded.
    fn block(&mut self, savepoint: bool, body: impl FnOnce(&mut Sim) -> bool) -> bool {
        self.next += 1;
        let id = self.next;
        let opts = BlockOpts {
            savepoint,
            durable: false,
            test: false,
            ..BlockOpts::default()
        };
        self.st.enter(id, opts).unwrap();
        let ok = body(self);
        let plan = self
            .st
            .exit(id, if ok { Outcome::Ok } else { Outcome::Failed })
            .unwrap();
        for c in plan.stmts {
            self.send(c)
        }
        self.ran.extend(plan.hooks);
        ok
    }

    fn count(&self) -> usize {
        self.log.len()
    }
}

fn atomic(s: &mut Sim, body: impl FnOnce(&mut Sim) -> bool) -> bool {
    s.block(true, body)
}

/// The 14 programs of docs/semantics.md §9.5; returns each program's statement count.
fn programs() -> Vec<(usize, Vec<String>)> {
    type P = fn(&mut Sim);
    let ps: Vec<P> = vec![
        |s| {
            atomic(s, |s| {
                s.q();
                true
            });
        },
        |s| {
            atomic(s, |_| true);
        },
        |s| {
            atomic(s, |s| {
                s.q();
                s.q();
                s.q();
                true
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                atomic(s, |s| {
                    s.q();
                    true
                })
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                atomic(s, |_| true)
            });
        },
        |s| {
            atomic(s, |s| {
                atomic(s, |s| {
                    atomic(s, |s| {
                        s.q();
                        true
                    })
                })
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                let _ = atomic(s, |s| {
                    s.q();
                    false
                });
                true
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                s.block(false, |s| {
                    s.q();
                    true
                })
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                let _ = s.block(false, |s| {
                    s.q();
                    false
                });
                true
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                false
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                s.hook("outer");
                atomic(s, |s| {
                    s.q();
                    s.hook("inner");
                    true
                })
            });
        },
        |s| {
            atomic(s, |s| {
                for _ in 0..5 {
                    atomic(s, |s| {
                        s.q();
                        true
                    });
                }
                true
            });
        },
        |s| {
            atomic(s, |s| {
                s.q();
                true
            });
        },
        |s| s.q(),
    ];
    ps.into_iter()
        .map(|p| {
            let mut s = Sim::new();
            p(&mut s);
            (s.count(), s.log)
        })
        .collect()
}

#[test]
fn rule_9_5_django_programs_cost_59_statements() {
    let counts: Vec<usize> = programs().iter().map(|(c, _)| *c).collect();
    assert_eq!(counts, vec![3, 0, 5, 5, 3, 5, 6, 4, 4, 3, 5, 12, 3, 1]);
    assert_eq!(counts.iter().sum::<usize>(), 59);
}

#[test]
fn rule_9_1_sequences() {
    let p = programs();
    assert_eq!(
        p[3].1,
        ["BEGIN", "Q", "SAVEPOINT sqlx_atomic_sp1", "Q", "COMMIT"]
    );
    assert_eq!(
        p[6].1,
        [
            "BEGIN",
            "Q",
            "SAVEPOINT sqlx_atomic_sp1",
            "Q",
            "ROLLBACK TO SAVEPOINT sqlx_atomic_sp1",
            "COMMIT"
        ]
    );
    assert_eq!(p[8].1, ["BEGIN", "Q", "Q", "ROLLBACK"]);
}

#[test]
fn rule_9_4_siblings_release_in_batches() {
    let mut s = Sim::new();
    atomic(&mut s, |s| {
        for _ in 0..1000 {
            atomic(s, |s| {
                s.q();
                true
            });
        }
        true
    });
    let releases = s.log.iter().filter(|l| l.starts_with("RELEASE")).count();
    assert_eq!(releases, 30);
    assert_eq!(s.count(), 1 + 2000 + 30 + 1);
}

#[test]
fn rule_9_4_never_releases_below_an_open_block() {
    let mut s = Sim::new();
    atomic(&mut s, |s| {
        atomic(s, |s| {
            s.q();
            for _ in 0..100 {
                atomic(s, |s| {
                    s.q();
                    true
                });
            }
            true
        })
    });
    // sp1 belongs to the open middle block: no RELEASE may name it.
    assert!(
        !s.log
            .iter()
            .any(|l| l == "RELEASE SAVEPOINT sqlx_atomic_sp1")
    );
}

#[test]
fn rule_5_4_rollback_discards_hooks_of_savepoint() {
    let mut s = Sim::new();
    atomic(&mut s, |s| {
        s.hook("a");
        let _ = atomic(s, |s| {
            s.hook("b");
            atomic(s, |s| {
                s.hook("c");
                true
            });
            false
        });
        s.hook("d");
        true
    });
    assert_eq!(s.ran, ["a", "d"]);
}

#[test]
fn rule_5_2_hook_outside_block_runs_now() {
    let mut s = Sim::new();
    s.hook("now");
    assert_eq!(s.ran, ["now"]);
}

#[test]
fn rule_1_8_durable_nested_is_refused() {
    let mut st: TxState<()> = TxState::new(true, false);
    let d = BlockOpts {
        savepoint: true,
        durable: true,
        test: false,
        ..BlockOpts::default()
    };
    st.enter(1, d).unwrap();
    assert!(matches!(st.enter(2, d), Err(ErrorKind::DurableNested)));
    // Inside a test helper's block, durable blocks are allowed.
    let mut st: TxState<()> = TxState::new(true, false);
    st.enter(
        1,
        BlockOpts {
            savepoint: true,
            durable: false,
            test: true,
            ..BlockOpts::default()
        },
    )
    .unwrap();
    st.enter(2, d).unwrap();
}

#[test]
fn rule_7_2_aborted_transaction_is_not_committed() {
    let mut st: TxState<&str> = TxState::new(true, true);
    let o = BlockOpts {
        savepoint: false,
        durable: false,
        test: false,
        ..BlockOpts::default()
    };
    st.enter(1, o).unwrap();
    st.before_query().unwrap();
    st.on_commit("h").unwrap();
    st.enter(2, o).unwrap();
    st.before_query().unwrap();
    st.query_failed(cause("42P01"), Some(Effect::Statement));
    st.exit(2, Outcome::Failed).unwrap();
    st.set_rollback(false).unwrap(); // 2.3: the user's responsibility
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(matches!(plan.error, Some(ErrorKind::Aborted)));
    assert!(plan.hooks.is_empty());
}

#[test]
fn rule_7_1_cancelled_nested_owes_rollback_to() {
    let mut s = Sim::new();
    atomic(&mut s, |s| {
        s.q();
        s.next += 1;
        let id = s.next;
        s.st.enter(
            id,
            BlockOpts {
                savepoint: true,
                durable: false,
                test: false,
                ..BlockOpts::default()
            },
        )
        .unwrap();
        s.q();
        // dropped: the runner reports a failure without sending anything
        let plan = s.st.exit(id, Outcome::Failed).unwrap();
        assert!(plan.stmts.is_empty());
        s.q();
        true
    });
    assert_eq!(s.log, SAVEPOINT_ROLLED_BACK_THEN_COMMIT);
}

#[test]
fn rule_3_1_doomed_block_refuses_queries() {
    let mut st: TxState<()> = TxState::new(true, false);
    let o = BlockOpts {
        savepoint: true,
        durable: false,
        test: false,
        ..BlockOpts::default()
    };
    st.enter(1, o).unwrap();
    st.set_rollback(true).unwrap();
    assert!(matches!(st.before_query(), Err(ErrorKind::Doomed)));
}

#[test]
fn rule_4_4_manual_savepoints() {
    let mut s = Sim::new();
    atomic(&mut s, |s| {
        s.q();
        let sp = s.st.savepoint().unwrap();
        s.hook("x");
        s.q();
        s.st.savepoint_rollback(sp).unwrap();
        assert!(s.st.savepoint_rollback(sp).is_err());
        true
    });
    assert!(s.ran.is_empty());
    assert_eq!(s.st.savepoint(), None);
}

#[test]
fn rule_7_2_failed_control_statement_then_cleared_flag_is_not_success() {
    // PostgreSQL refuses the SAVEPOINT of an aborted transaction; the user cleared the flag.
    let mut st: TxState<&str> = TxState::new(true, true);
    let o = BlockOpts {
        savepoint: true,
        durable: false,
        test: false,
        ..BlockOpts::default()
    };
    st.enter(1, o).unwrap();
    st.before_query().unwrap();
    st.query_failed(cause("42P01"), Some(Effect::Statement));
    st.set_rollback(false).unwrap();
    st.enter(2, o).unwrap();
    st.before_query().unwrap(); // owes SAVEPOINT: the server refuses it
    st.control_failed(cause("25P02"), Effect::Statement);
    st.set_rollback(false).unwrap();
    // Every open block fails with the refused statement's error, even with the flag cleared.
    let inner = st.exit(2, Outcome::Ok).unwrap();
    assert!(matches!(&inner.error, Some(ErrorKind::RolledBack(c)) if c.code() == Some("25P02")));
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(matches!(&plan.error, Some(ErrorKind::RolledBack(c)) if c.code() == Some("25P02")));
    assert!(plan.hooks.is_empty());
    assert!(plan.close_connection, "the connection's state is unknown");
}

/// A transaction that queried, whose nested block queried and was rolled back to its savepoint,
/// and that then queried again and committed.
const SAVEPOINT_ROLLED_BACK_THEN_COMMIT: [&str; 7] = [
    "BEGIN",
    "Q",
    "SAVEPOINT sqlx_atomic_sp1",
    "Q",
    "ROLLBACK TO SAVEPOINT sqlx_atomic_sp1",
    "Q",
    "COMMIT",
];

/// A nested block of `s` entered by hand, so a test can fail statements inside it.
fn enter_nested(s: &mut Sim) -> u64 {
    s.next += 1;
    s.st.enter(s.next, BlockOpts::default()).unwrap();
    s.next
}

#[test]
fn rule_11_1_an_ignored_error_fails_the_outermost_block() {
    let mut st: TxState<&str> = TxState::new(true, false);
    st.enter(1, BlockOpts::default()).unwrap();
    st.before_query().unwrap();
    st.on_commit("h").unwrap();
    st.query_failed(cause("23505"), Some(Effect::Statement));
    // The body ignored the error and returned Ok.
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(matches!(&plan.error, Some(ErrorKind::RolledBack(c)) if c.code() == Some("23505")));
    assert!(plan.hooks.is_empty() && !plan.commits);
    assert!(plan.conflict.is_none(), "a key violation is not a conflict");
}

#[test]
fn rule_11_1_set_rollback_true_keeps_the_bodys_ok() {
    let mut st: TxState<&str> = TxState::new(true, false);
    st.enter(1, BlockOpts::default()).unwrap();
    st.before_query().unwrap();
    st.query_failed(cause("23505"), Some(Effect::Statement));
    st.set_rollback(true).unwrap();
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(plan.error.is_none());
}

#[test]
fn rule_11_1_a_savepoint_rolled_back_for_an_error_reports_it() {
    let mut s = Sim::new();
    let mut inner_error = None;
    atomic(&mut s, |s| {
        s.q();
        let id = enter_nested(s);
        s.q();
        s.st.query_failed(cause("23505"), Some(Effect::Statement));
        let plan = s.st.exit(id, Outcome::Ok).unwrap();
        plan.stmts.into_iter().for_each(|c| s.send(c));
        inner_error = plan.error;
        // The enclosing block goes on: the savepoint undid the failure.
        s.q();
        true
    });
    assert!(matches!(&inner_error, Some(ErrorKind::RolledBack(c)) if c.code() == Some("23505")));
    assert_eq!(s.log, SAVEPOINT_ROLLED_BACK_THEN_COMMIT);
}

#[test]
fn rule_11_2_a_whole_transaction_abort_fails_every_block_and_sends_no_savepoint_statement() {
    let mut s = Sim::new();
    let deadlock = || Cause::for_tests("40001", Some(crate::classify::Conflict::Deadlock));
    let (mut middle_error, mut inner_error) = (None, None);
    s.next += 1;
    let outer = s.next;
    s.st.enter(outer, BlockOpts::default()).unwrap();
    s.q();
    let middle = enter_nested(&mut s);
    s.q();
    let inner = enter_nested(&mut s);
    s.q();
    s.st.query_failed(deadlock(), Some(Effect::Transaction));
    for (id, slot) in [(inner, &mut inner_error), (middle, &mut middle_error)] {
        // Each body catches the error below it and returns Ok.
        let plan = s.st.exit(id, Outcome::Ok).unwrap();
        assert!(
            plan.stmts.is_empty(),
            "no ROLLBACK TO a savepoint the server dropped"
        );
        *slot = plan.error;
        assert!(matches!(s.st.before_query(), Err(ErrorKind::Doomed)));
    }
    let plan = s.st.exit(outer, Outcome::Ok).unwrap();
    for error in [&inner_error, &middle_error, &plan.error] {
        assert!(matches!(error, Some(ErrorKind::RolledBack(c)) if c.code() == Some("40001")));
    }
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(
        plan.conflict.is_some(),
        "a deadlock may succeed when run again"
    );
    assert!(
        !plan.close_connection,
        "the connection is sound after a deadlock"
    );
}

#[test]
fn rule_11_2_a_whole_transaction_abort_on_a_savepoint_statement() {
    // The lazily sent SAVEPOINT itself met the deadlock.
    let mut st: TxState<&str> = TxState::new(true, false);
    st.enter(1, BlockOpts::default()).unwrap();
    st.before_query().unwrap();
    st.enter(2, BlockOpts::default()).unwrap();
    st.before_query().unwrap();
    st.control_failed(cause("40001"), Effect::Transaction);
    let inner = st.exit(2, Outcome::Ok).unwrap();
    assert!(inner.stmts.is_empty());
    assert!(matches!(inner.error, Some(ErrorKind::RolledBack(_))));
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert!(matches!(plan.error, Some(ErrorKind::RolledBack(_))));
    assert!(!plan.commits && !plan.close_connection);
}

#[test]
fn rule_11_3_retry_needs_an_outermost_block() {
    let retry = BlockOpts {
        retry: true,
        ..BlockOpts::default()
    };
    let mut st: TxState<()> = TxState::new(true, false);
    st.enter(1, BlockOpts::default()).unwrap();
    assert!(matches!(st.enter(2, retry), Err(ErrorKind::RetryNested)));
    let mut st: TxState<()> = TxState::new(true, false);
    st.enter(1, retry).unwrap();
    let mut manual: TxState<()> = TxState::new(true, false);
    manual.set_autocommit(false).unwrap();
    assert!(matches!(
        manual.enter(1, retry),
        Err(ErrorKind::RetryNested)
    ));
}

#[test]
fn rule_11_4_options_belong_to_the_outermost_block() {
    use crate::options::{Isolation, TxnOpts};
    let serializable = BlockOpts {
        txn: TxnOpts {
            isolation: Some(Isolation::Serializable),
            ..TxnOpts::default()
        },
        ..BlockOpts::default()
    };
    let read_committed = BlockOpts {
        txn: TxnOpts {
            isolation: Some(Isolation::ReadCommitted),
            ..TxnOpts::default()
        },
        ..BlockOpts::default()
    };
    let mut st: TxState<()> = TxState::new(true, false);
    st.enter(1, serializable).unwrap();
    st.enter(2, serializable).unwrap();
    st.enter(3, BlockOpts::default()).unwrap();
    assert!(matches!(
        st.enter(4, read_committed),
        Err(ErrorKind::OptionMismatch("isolation"))
    ));
    match st.before_query().unwrap() {
        Route::Conn(stmts) => assert_eq!(stmts[0], Control::Begin(serializable.txn)),
        Route::Pool => panic!("a block's query goes to its connection"),
    }
    // Without options on the outermost block, a nested block cannot add them.
    let mut st: TxState<()> = TxState::new(true, false);
    st.enter(1, BlockOpts::default()).unwrap();
    assert!(st.enter(2, serializable).is_err());
    // In a test's transaction, the first block to give options sets them while BEGIN is owed.
    let mut st: TxState<()> = TxState::new(true, false);
    let test = BlockOpts {
        test: true,
        ..BlockOpts::default()
    };
    st.enter(1, test).unwrap();
    st.enter(2, serializable).unwrap();
    assert!(st.enter(3, read_committed).is_err());
}
