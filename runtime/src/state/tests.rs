//! The state machine alone: the statement sequences of SEMANTICS 9.5 and the odd paths.

use super::*;

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
        self.log.push(crate::backend::control_text(c, None));
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

/// The 14 programs of django-statement-counts.md; returns each program's statement count.
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
    };
    st.enter(1, o).unwrap();
    st.before_query().unwrap();
    st.on_commit("h").unwrap();
    st.enter(2, o).unwrap();
    st.before_query().unwrap();
    st.query_failed(true);
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
    assert_eq!(
        s.log,
        [
            "BEGIN",
            "Q",
            "SAVEPOINT sqlx_atomic_sp1",
            "Q",
            "ROLLBACK TO SAVEPOINT sqlx_atomic_sp1",
            "Q",
            "COMMIT"
        ]
    );
}

#[test]
fn rule_3_1_doomed_block_refuses_queries() {
    let mut st: TxState<()> = TxState::new(true, false);
    let o = BlockOpts {
        savepoint: true,
        durable: false,
        test: false,
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
    };
    st.enter(1, o).unwrap();
    st.before_query().unwrap();
    st.query_failed(true);
    st.set_rollback(false).unwrap();
    st.enter(2, o).unwrap();
    st.before_query().unwrap(); // owes SAVEPOINT: the server refuses it
    st.control_failed();
    st.set_rollback(false).unwrap();
    assert!(st.exit(2, Outcome::Ok).unwrap().error.is_none());
    let plan = st.exit(1, Outcome::Ok).unwrap();
    assert_eq!(plan.stmts.as_slice(), [Control::Rollback]);
    assert!(matches!(plan.error, Some(ErrorKind::Aborted)));
    assert!(plan.hooks.is_empty());
}

#[test]
fn a_renewed_state_is_a_new_one() {
    let new = format!("{:?}", TxState::<&'static str>::new(true, false));
    let mut s = Sim::new();
    // A transaction that used every part of the state: savepoints kept and rolled back, a
    // failed query, a manual savepoint, hooks run and dropped.
    atomic(&mut s, |s| {
        s.q();
        s.hook("kept");
        atomic(s, |s| {
            s.q();
            s.hook("dropped");
            s.st.query_failed(true);
            false
        });
        let sp = s.st.savepoint().expect("in a transaction");
        s.q();
        s.st.savepoint_rollback(sp).unwrap();
        atomic(s, |s| {
            s.q();
            true
        });
        true
    });
    assert_eq!(s.ran, ["kept"]);
    assert!(s.st.renew(true), "idle after the outermost block");
    assert_eq!(format!("{:?}", s.st), new);
    // Not idle: inside a block, or with autocommit other than the alias's.
    s.st.enter(99, BlockOpts::default()).unwrap();
    assert!(!s.st.renew(true));
    let mut manual = TxState::<&'static str>::new(true, false);
    manual.set_autocommit(false).unwrap();
    assert!(!manual.renew(true));
}
