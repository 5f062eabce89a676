//! Keeping passwords out of everything the library shows: a URL's display, and messages that may
//! quote it. A primary's URL may carry its replicas' URLs (`atomic_replica=`), whose passwords are
//! hidden too.

use crate::pool_config::percent_decode;

/// The password part of a URL, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then_some(pw)
}

/// Whether a query parameter's key holds a replica's URL.
fn is_replica_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("atomic_replica")
}

/// A URL with its password (and any `password=` query parameter) replaced by `***`, and so the
/// URLs of its `atomic_replica=` parameters.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = match password_of(url) {
        Some(pw) => url.replacen(&format!(":{pw}@"), ":***@", 1),
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                Some((k, v)) if is_replica_key(k) => match percent_decode(v) {
                    Some(replica) => format!("{k}={}", percent_encode(&redact_url(&replica))),
                    None => format!("{k}=***"),
                },
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// Removes every occurrence of the URL's secrets (its replicas' included) from a message.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    if let Some(pw) = password_of(url) {
        out = out.replace(pw, "***");
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for (_, value) in query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| is_replica_key(k))
    {
        if let Some(replica) = percent_decode(value) {
            out = scrub(&out, &replica);
            if let Some(pw) = password_of(&replica) {
                out = out.replace(&percent_encode(pw), "***");
            }
        }
    }
    out
}

/// `s` with everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let url = "postgres://bob:s3cr%40t@db.example:5432/app?sslmode=disable&password=other";
        let r = redact_url(url);
        assert!(!r.contains("s3cr"), "{r}");
        assert!(!r.contains("other"), "{r}");
        assert_eq!(
            r,
            "postgres://bob:***@db.example:5432/app?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(scrub("bad s3cr%40t here", url), "bad *** here");
    }

    #[test]
    fn redacts_the_passwords_of_replicas_in_the_url() {
        let replica = "postgres://ro:r3pl%2Bpw@replica:5433/app";
        let url = format!(
            "postgres://bob:pw1@db/app?atomic_replica={}&atomic_replica_wait=1s",
            percent_encode(replica)
        );
        let r = redact_url(&url);
        assert!(!r.contains("r3pl") && !r.contains("pw1"), "{r}");
        assert!(r.contains("replica%3A5433"), "{r}");
        assert!(r.ends_with("&atomic_replica_wait=1s"), "{r}");
        let message = format!("failed: {replica} (r3pl%2Bpw, r3pl%252Bpw) and {url}");
        let scrubbed = scrub(&message, &url);
        assert!(!scrubbed.contains("r3pl"), "{scrubbed}");
        assert!(!scrubbed.contains("pw1"), "{scrubbed}");
        assert_eq!(
            redact_url("postgres://h/db?atomic_replica=%zz"),
            "postgres://h/db?atomic_replica=***"
        );
    }
}
