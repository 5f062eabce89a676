//! Which statements may go to a read replica: read off the SQL text, conservatively (a statement
//! that is not recognised as a read goes to the primary).

/// Whether `sql` only reads, as far as its text shows: one statement that begins with `SELECT`,
/// `VALUES`, `TABLE`, `SHOW` or `WITH` (a parenthesis may come first), and that names no
/// data-modifying statement (`INSERT`, `UPDATE`, `DELETE`, `MERGE`: a `WITH` may hold one), no
/// `INTO` (`SELECT … INTO` creates a table), no row lock (`FOR UPDATE`, `FOR SHARE`, their `NO KEY`
/// and `KEY` forms), and none of the functions in [`NOT_READS`] (sequences, advisory locks,
/// `pg_notify`, transaction ids, the WAL…). Words in string literals, dollar-quoted bodies and
/// comments do not count; quoted identifiers do. A function of the user's that writes is not seen:
/// the replica refuses it (SQLSTATE 25006), loudly.
pub(crate) fn is_read(sql: &str) -> bool {
    let mut tokens = Tokens { rest: sql };
    let first = loop {
        match tokens.next() {
            Some(Token::Open) => continue,
            Some(Token::Word(w)) => break w,
            _ => return false,
        }
    };
    if !["SELECT", "VALUES", "TABLE", "SHOW", "WITH"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
    {
        return false;
    }
    while let Some(token) = tokens.next() {
        match token {
            Token::Word(w) | Token::Quoted(w) => {
                if WRITES.iter().any(|k| w.eq_ignore_ascii_case(k)) || not_a_read_function(w) {
                    return false;
                }
            }
            // Another statement after this one: the whole text goes to the primary.
            Token::End => return tokens.next().is_none(),
            Token::Open | Token::Other => {}
            // Unterminated: not something to guess about.
            Token::Bad => return false,
        }
    }
    true
}

/// Words that make a statement that begins like a read write or lock.
const WRITES: [&str; 6] = ["INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "SHARE"];

/// Functions (names, or name prefixes ending in `_`) that a replica refuses or that change state
/// on the server: a statement calling one goes to the primary.
pub(crate) const NOT_READS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "pg_advisory_",
    "pg_try_advisory_",
    "pg_notify",
    "txid_current",
    "pg_current_",
    "pg_switch_wal",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_wal_replay_",
    "pg_promote",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_stat_reset",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_open",
    "lo_put",
    "lo_from_bytea",
    "dblink",
];

fn not_a_read_function(word: &str) -> bool {
    NOT_READS.iter().any(|f| {
        if f.ends_with('_') || *f == "txid_current" || *f == "dblink" {
            word.len() >= f.len() && word[..f.len()].eq_ignore_ascii_case(f)
        } else {
            word.eq_ignore_ascii_case(f)
        }
    })
}

/// A token of SQL text, as far as the classification needs one.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A keyword or an unquoted identifier.
    Word(&'a str),
    /// A quoted identifier's text.
    Quoted(&'a str),
    /// `(`.
    Open,
    /// `;`.
    End,
    /// Anything else (operators, numbers, literals, parameters).
    Other,
    /// A literal, quoted identifier or comment that does not end.
    Bad,
}

struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let s = self.rest.trim_start();
            self.rest = s;
            let mut chars = s.chars();
            let c = chars.next()?;
            if s.starts_with("--") {
                self.rest = s.find('\n').map_or("", |i| &s[i + 1..]);
                continue;
            }
            if s.starts_with("/*") {
                match skip_block_comment(s) {
                    Some(rest) => self.rest = rest,
                    None => {
                        self.rest = "";
                        return Some(Token::Bad);
                    }
                }
                continue;
            }
            let (token, len) = match c {
                '(' => (Token::Open, 1),
                ';' => (Token::End, 1),
                '\'' => match quoted_len(s, '\'', false) {
                    Some(len) => (Token::Other, len),
                    None => (Token::Bad, s.len()),
                },
                '"' => match quoted_len(s, '"', false) {
                    Some(len) => (Token::Quoted(&s[1..len - 1]), len),
                    None => (Token::Bad, s.len()),
                },
                'E' | 'e' if s[1..].starts_with('\'') => match quoted_len(&s[1..], '\'', true) {
                    Some(len) => (Token::Other, 1 + len),
                    None => (Token::Bad, s.len()),
                },
                '$' => match dollar_quote_len(s) {
                    Some(Some(len)) => (Token::Other, len),
                    Some(None) => (Token::Bad, s.len()),
                    // A parameter (`$1`) or a lone `$`.
                    None => (Token::Other, 1 + word_len(&s[1..])),
                },
                c if c.is_alphabetic() || c == '_' => {
                    let len = word_len(s);
                    (Token::Word(&s[..len]), len)
                }
                c => (Token::Other, c.len_utf8()),
            };
            self.rest = &s[len.min(s.len())..];
            return Some(token);
        }
    }
}

/// The length of the word at the start of `s` (letters, digits, `_`, `$`).
fn word_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len())
}

/// The length of the literal or quoted identifier at the start of `s`, quotes included; a doubled
/// quote is an escaped quote, and with `backslash` (an `E'…'` literal) so is `\'`; `None` when it
/// does not end.
fn quoted_len(s: &str, quote: char, backslash: bool) -> Option<usize> {
    let bytes = s.as_bytes();
    let q = quote as u8;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == q && bytes.get(i + 1) == Some(&q) => i += 2,
            b if b == q => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The length of the dollar-quoted string at the start of `s` (`$tag$…$tag$`), if it is one
/// (`Some(None)`: one that does not end).
fn dollar_quote_len(s: &str) -> Option<Option<usize>> {
    let rest = &s[1..];
    let tag_len = rest.find('$')?;
    let tag = &rest[..tag_len];
    let valid = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if !valid {
        return None;
    }
    let delimiter = &s[..tag_len + 2];
    let body = &s[delimiter.len()..];
    Some(
        body.find(delimiter)
            .map(|end| delimiter.len() + end + delimiter.len()),
    )
}

/// The text after the (possibly nested) block comment at the start of `s`; `None` when it does
/// not end.
fn skip_block_comment(s: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(&s[i..]);
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_recognised() {
        for sql in [
            "SELECT 1",
            "  select * from t where id = $1",
            "(SELECT 1) UNION (SELECT 2)",
            "-- a comment\nSELECT 1;",
            "/* a /* nested */ comment */ SELECT pg_is_in_recovery()",
            "VALUES (1), (2)",
            "TABLE t",
            "SHOW search_path",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT updated_at, insert_count FROM t",
            "SELECT 'update' AS word, $$ DELETE $$ AS body, $f$INSERT$f$",
            "SELECT E'it\\'s an update' FROM t",
            "SELECT 'it''s an INTO' FROM t -- FOR UPDATE",
            "SELECT * FROM t WHERE note = 'x;y'",
            "SELECT count(*) FILTER (WHERE shared) FROM t",
            "SELECT pg_last_wal_replay_lsn()",
        ] {
            assert!(is_read(sql), "{sql}");
        }
    }

    #[test]
    fn anything_else_goes_to_the_primary() {
        for sql in [
            "",
            "   ",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET v = 1",
            "DELETE FROM t",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING",
            "EXPLAIN ANALYZE DELETE FROM t",
            "CREATE TABLE t (v int)",
            "SET search_path = x",
            "COPY t TO STDOUT",
            "CALL p()",
            "DO $$ BEGIN END $$",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "with u as (update t set v = 1 returning v) select v from u",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR KEY SHARE",
            "SELECT * INTO copy FROM t",
            "SELECT nextval('s')",
            "SELECT pg_catalog.NEXTVAL('s')",
            "SELECT \"nextval\"('s')",
            "SELECT setval('s', 1), currval('s'), lastval()",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_xact_lock(1)",
            "SELECT pg_notify('c', 'x')",
            "SELECT txid_current()",
            "SELECT pg_current_xact_id()",
            "SELECT pg_current_wal_lsn()",
            "SELECT pg_wal_replay_pause()",
            "SELECT lo_create(0)",
            "SELECT dblink_exec('x', 'DELETE FROM t')",
            "SELECT 1; DELETE FROM t",
            "SELECT 1; SELECT 2",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT $$ unterminated",
            "SELECT 1 /* unterminated",
        ] {
            assert!(!is_read(sql), "{sql}");
        }
    }
}
