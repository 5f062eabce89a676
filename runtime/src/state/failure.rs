//! What a failed statement does to the state: the block it ran in is doomed, and depending on
//! what the server did, the transaction is aborted, gone or lost.

use super::{Server, TxState};
use crate::classify::{Cause, Effect};

impl<H> TxState<H> {
    /// A query failed (3.2): the enclosing block is doomed. `effect`: what the failure did on
    /// the server (`None`: the query was refused before it was sent).
    #[cold]
    pub(crate) fn query_failed(&mut self, cause: Cause, effect: Option<Effect>) {
        if self.in_block() {
            self.needs_rollback = true;
            self.doom.get_or_insert_with(|| cause.clone());
        }
        match effect {
            None => {}
            Some(Effect::Statement) if self.tracks_abort && self.server == Server::Open => {
                self.server = Server::Aborted;
            }
            Some(Effect::Statement) => {}
            Some(Effect::Transaction) => self.transaction_gone(cause),
            Some(Effect::Connection) => {
                if self.in_transaction() {
                    self.fatal.get_or_insert(cause);
                }
                self.connection_lost();
            }
        }
    }

    /// An owed control statement failed: unless the server says it rolled the transaction back,
    /// the connection's state is unknown and the transaction can only be rolled back whole.
    #[cold]
    pub(crate) fn control_failed(&mut self, cause: Cause, effect: Effect) {
        if self.in_block() {
            self.needs_rollback = true;
        }
        match effect {
            Effect::Transaction => self.transaction_gone(cause),
            Effect::Statement | Effect::Connection => {
                if self.server != Server::Lost {
                    self.server = Server::Broken;
                }
                self.fatal.get_or_insert(cause);
            }
        }
    }

    /// The server rolled the whole transaction back (a deadlock on MySQL/MariaDB, a Galera
    /// certification failure): its savepoints are gone, so none is rolled back to or released,
    /// and every open block fails with `cause`.
    fn transaction_gone(&mut self, cause: Cause) {
        if !self.in_transaction() {
            return;
        }
        self.fatal.get_or_insert(cause);
        if matches!(self.server, Server::Open | Server::Aborted) {
            self.server = Server::Gone;
        }
        self.server_sps.clear();
        self.owed_sps.clear();
        self.owed_rollback_to = None;
    }

    /// The connection was closed under an open transaction (a statement cancelled in flight).
    pub(crate) fn connection_lost(&mut self) {
        if self.in_transaction() {
            self.server = Server::Lost;
            if self.in_block() {
                self.needs_rollback = true;
            }
            self.server_sps.clear();
            self.owed_sps.clear();
            self.owed_rollback_to = None;
        }
    }
}
