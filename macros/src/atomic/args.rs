//! The arguments of `#[atomic(..)]`: which names it knows, and the values of the ones only it
//! takes (one alias, the isolation level, the lock mode, the timeout, the retries).

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{Expr, Lit, LitBool, LitStr, Path};

use crate::parse::{
    EMPTY_ALIAS, Errors, Grammar, boolean, choice, crate_path_value, duplicate_argument,
    parse_arguments, ungroup,
};

/// The arguments of one `#[atomic(..)]`, validated. `None` means "not given": the expansion only
/// calls the builder methods of the arguments that were written.
#[derive(Default)]
pub(crate) struct AtomicArgs {
    /// `using = "alias"`.
    pub(crate) using: Option<LitStr>,
    /// `savepoint = true | false`.
    pub(crate) savepoint: Option<LitBool>,
    /// `durable = true | false`.
    pub(crate) durable: Option<LitBool>,
    /// `isolation = ".."`: the variant of `Isolation` it names.
    pub(crate) isolation: Option<&'static str>,
    /// `read_only = true | false`.
    pub(crate) read_only: Option<LitBool>,
    /// `lock = ".."`: the variant of `LockMode` it names.
    pub(crate) lock: Option<&'static str>,
    /// `timeout = ".."`, in milliseconds.
    pub(crate) timeout: Option<u64>,
    /// `retry = ..`: the argument of `.retry(..)`, either a count as a `u32` literal or the
    /// expression as written.
    pub(crate) retry: Option<Expr>,
    /// `crate = "path"`, already parsed as a path.
    pub(crate) krate: Option<Path>,
}

/// Parses the attribute's argument tokens, reporting every mistake at once.
pub(crate) fn parse(args: TokenStream) -> syn::Result<AtomicArgs> {
    Parser::parse2(AtomicArgs::parse, args)
}

/// The arguments `#[atomic]` knows.
#[derive(Clone, Copy)]
enum Name {
    Using,
    Savepoint,
    Durable,
    Isolation,
    ReadOnly,
    Lock,
    Timeout,
    Retry,
    Crate,
}

const ATOMIC: Grammar<Name> = Grammar {
    attr: "#[atomic]",
    expected: "`using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, \
               `retry` or `crate`",
    name: |name| {
        Some(match name {
            "using" => Name::Using,
            "savepoint" => Name::Savepoint,
            "durable" => Name::Durable,
            "isolation" => Name::Isolation,
            "read_only" => Name::ReadOnly,
            "lock" => Name::Lock,
            "timeout" => Name::Timeout,
            "retry" => Name::Retry,
            "crate" => Name::Crate,
            _ => return None,
        })
    },
    example: |name| match name {
        Name::Using => "using = \"default\"",
        Name::Savepoint => "savepoint = false",
        Name::Durable => "durable = true",
        Name::Isolation => "isolation = \"serializable\"",
        Name::ReadOnly => "read_only = true",
        Name::Lock => "lock = \"immediate\"",
        Name::Timeout => "timeout = \"5s\"",
        Name::Retry => "retry = 3",
        Name::Crate => "crate = \"::sqlx_atomic\"",
    },
};

/// The isolation levels `isolation` accepts, as written and as variants of `Isolation`.
const ISOLATION_LEVELS: &[(&str, &str)] = &[
    ("read_uncommitted", "ReadUncommitted"),
    ("read_committed", "ReadCommitted"),
    ("repeatable_read", "RepeatableRead"),
    ("serializable", "Serializable"),
];

/// SQLite's `BEGIN` modes, which `lock` accepts, as written and as variants of `LockMode`.
const LOCK_MODES: &[(&str, &str)] = &[
    ("deferred", "Deferred"),
    ("immediate", "Immediate"),
    ("exclusive", "Exclusive"),
];

impl Parse for AtomicArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = AtomicArgs::default();
        // Kept even when its value is wrong, so that a conflict with `savepoint` is still reported.
        let mut retry_ident = None;
        let parsed = parse_arguments(input, &ATOMIC, |name, ident, value, errors| {
            let already_given = match name {
                Name::Using => args.using.is_some(),
                Name::Savepoint => args.savepoint.is_some(),
                Name::Durable => args.durable.is_some(),
                Name::Isolation => args.isolation.is_some(),
                Name::ReadOnly => args.read_only.is_some(),
                Name::Lock => args.lock.is_some(),
                Name::Timeout => args.timeout.is_some(),
                Name::Retry => retry_ident.is_some(),
                Name::Crate => args.krate.is_some(),
            };
            if already_given {
                errors.push(duplicate_argument(&ident));
                return;
            }
            let result = match name {
                Name::Using => alias(value).map(|lit| args.using = Some(lit)),
                Name::Savepoint => {
                    boolean(value, "savepoint").map(|lit| args.savepoint = Some(lit))
                }
                Name::Durable => boolean(value, "durable").map(|lit| args.durable = Some(lit)),
                Name::Isolation => choice(value, "isolation", "isolation level", ISOLATION_LEVELS)
                    .map(|variant| args.isolation = Some(variant)),
                Name::ReadOnly => boolean(value, "read_only").map(|lit| args.read_only = Some(lit)),
                Name::Lock => choice(value, "lock", "lock mode", LOCK_MODES)
                    .map(|variant| args.lock = Some(variant)),
                Name::Timeout => timeout(value).map(|millis| args.timeout = Some(millis)),
                Name::Retry => {
                    retry_ident = Some(ident);
                    retry(value).map(|retry| args.retry = Some(retry))
                }
                Name::Crate => crate_path_value(value).map(|path| args.krate = Some(path)),
            };
            if let Err(error) = result {
                errors.push(error);
            }
        });
        let mut errors = Errors::default();
        if let Err(error) = parsed {
            errors.push(error);
        }
        if let (Some(ident), Some(savepoint)) = (&retry_ident, &args.savepoint)
            && !savepoint.value
        {
            errors.push(syn::Error::new(ident.span(), RETRY_WITH_SAVEPOINT_FALSE));
        }
        errors.into_result()?;
        Ok(args)
    }
}

/// `using = "alias"`: one alias, a non-empty string literal.
fn alias(value: Expr) -> syn::Result<LitStr> {
    match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            if lit.value().is_empty() {
                Err(syn::Error::new(lit.span(), EMPTY_ALIAS))
            } else {
                Ok(lit)
            }
        }
        Expr::Lit(other) => Err(syn::Error::new_spanned(
            other,
            "expected a string literal naming a database alias, e.g. using = \"default\"",
        )),
        other => Err(syn::Error::new_spanned(
            other,
            "`using` takes a string literal naming the alias, e.g. using = \"reports\"; aliases \
             are resolved by name at run time, so for one held in a constant or computed, use the \
             function form: `Atomic::new().using(alias).run(async move { .. }).await`",
        )),
    }
}

pub(crate) const TIMEOUT_FORM: &str = "expected a duration such as \"500ms\", \"5s\" or \"2m\": \
                                       a string literal holding a positive integer followed by \
                                       `ms`, `s` or `m`";
pub(crate) const TIMEOUT_ZERO: &str = "the timeout must be longer than zero; expected a duration \
                                       such as \"500ms\", \"5s\" or \"2m\"";
const TIMEOUT_TOO_LONG: &str = "the timeout is too long to count in milliseconds; expected a \
                                duration such as \"500ms\", \"5s\" or \"2m\"";

/// `timeout = "5s"`, in milliseconds. The duration is computed here, so a malformed, zero or
/// overflowing one is a compile error at the literal rather than a panic at run time.
fn timeout(value: Expr) -> syn::Result<u64> {
    let lit = match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        other => return Err(syn::Error::new_spanned(other, TIMEOUT_FORM)),
    };
    let text = lit.value();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return Err(syn::Error::new(lit.span(), TIMEOUT_FORM)),
    };
    if number.is_empty() {
        return Err(syn::Error::new(lit.span(), TIMEOUT_FORM));
    }
    // `number` is a non-empty run of ASCII digits, so the parse can only fail by overflowing.
    let millis = number
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(millis_per_unit))
        .ok_or_else(|| syn::Error::new(lit.span(), TIMEOUT_TOO_LONG))?;
    if millis == 0 {
        return Err(syn::Error::new(lit.span(), TIMEOUT_ZERO));
    }
    Ok(millis)
}

pub(crate) const RETRY_ZERO: &str = "`retry = 0` retries nothing; remove it or give at least 1";
const RETRY_NOT_A_COUNT: &str = "`retry` takes the number of retries after the first attempt, \
                                 from 1 to 4294967295 (e.g. `retry = 3`), or a `Retry` (e.g. \
                                 `retry = Retry::new(3)`)";
pub(crate) const RETRY_WITH_SAVEPOINT_FALSE: &str = "`retry` cannot be combined with \
                                                    `savepoint = false`: only an outermost \
                                                    block is retried, and `savepoint` has no \
                                                    effect on an outermost block, so \
                                                    `savepoint = false` says the block is \
                                                    expected to be nested; remove one of them";

/// `retry = ..`: an integer literal becomes the same count with the suffix `u32`, which
/// `Retry: From<u32>` converts; any other expression is passed through for the runtime's
/// `impl Into<Retry>` to check. A literal that cannot be a count is rejected here, where the
/// message can say what `retry` takes.
fn retry(value: Expr) -> syn::Result<Expr> {
    let value = ungroup(value);
    if let Expr::Unary(negation) = &value
        && matches!(negation.op, syn::UnOp::Neg(_))
        && matches!(ungroup((*negation.expr).clone()), Expr::Lit(_))
    {
        return Err(syn::Error::new_spanned(value, RETRY_NOT_A_COUNT));
    }
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit),
            attrs,
        }) => {
            if !matches!(lit.suffix(), "" | "u32") {
                return Err(syn::Error::new(lit.span(), RETRY_NOT_A_COUNT));
            }
            match lit.base10_parse::<u32>() {
                Ok(0) => Err(syn::Error::new(lit.span(), RETRY_ZERO)),
                Ok(count) => Ok(Expr::Lit(syn::ExprLit {
                    attrs,
                    lit: Lit::Int(syn::LitInt::new(&format!("{count}u32"), lit.span())),
                })),
                Err(_) => Err(syn::Error::new(lit.span(), RETRY_NOT_A_COUNT)),
            }
        }
        Expr::Lit(other) => Err(syn::Error::new_spanned(other, RETRY_NOT_A_COUNT)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn ok(args: TokenStream) -> AtomicArgs {
        crate::test_util::parsed(parse, args)
    }

    fn errors(args: TokenStream) -> Vec<String> {
        crate::test_util::errors(parse, args)
    }

    #[test]
    fn no_arguments() {
        let args = ok(quote!());
        assert!(args.using.is_none());
        assert!(args.savepoint.is_none());
        assert!(args.durable.is_none());
        assert!(args.isolation.is_none());
        assert!(args.read_only.is_none());
        assert!(args.lock.is_none());
        assert!(args.timeout.is_none());
        assert!(args.retry.is_none());
        assert!(args.krate.is_none());
    }

    #[test]
    fn every_argument_in_any_order() {
        let args = ok(quote!(
            durable = true,
            lock = "immediate",
            crate = "my::sa",
            timeout = "5s",
            savepoint = true,
            read_only = false,
            retry = 2,
            isolation = "serializable",
            using = "x",
        ));
        assert_eq!(args.using.unwrap().value(), "x");
        assert!(args.savepoint.unwrap().value);
        assert!(args.durable.unwrap().value);
        assert_eq!(args.isolation, Some("Serializable"));
        assert!(!args.read_only.unwrap().value);
        assert_eq!(args.lock, Some("Immediate"));
        assert_eq!(args.timeout, Some(5_000));
        let retry = args.retry.unwrap();
        assert_eq!(quote!(#retry).to_string(), "2u32");
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), quote!(my::sa).to_string());
    }

    #[test]
    fn isolation_levels() {
        for (text, variant) in [
            ("read_uncommitted", "ReadUncommitted"),
            ("read_committed", "ReadCommitted"),
            ("repeatable_read", "RepeatableRead"),
            ("serializable", "Serializable"),
        ] {
            assert_eq!(ok(quote!(isolation = #text)).isolation, Some(variant));
        }
        const LEVELS: &str =
            "\"read_uncommitted\", \"read_committed\", \"repeatable_read\" or \"serializable\"";
        for unknown in ["snapshot", "Serializable", "read committed", ""] {
            assert_eq!(
                errors(quote!(isolation = #unknown)),
                [format!(
                    "unknown isolation level {unknown:?}; expected {LEVELS}"
                )]
            );
        }
        for not_a_string in [
            quote!(isolation = serializable),
            quote!(isolation = Isolation::Serializable),
            quote!(isolation = 1),
        ] {
            assert_eq!(
                errors(not_a_string),
                [format!("expected {LEVELS} for `isolation`")]
            );
        }
    }

    #[test]
    fn lock_modes() {
        for (text, variant) in [
            ("deferred", "Deferred"),
            ("immediate", "Immediate"),
            ("exclusive", "Exclusive"),
        ] {
            assert_eq!(ok(quote!(lock = #text)).lock, Some(variant));
        }
        assert_eq!(
            errors(quote!(lock = "IMMEDIATE")),
            [
                "unknown lock mode \"IMMEDIATE\"; expected \"deferred\", \"immediate\" or \"exclusive\""
            ]
        );
        assert_eq!(
            errors(quote!(lock = true)),
            ["expected \"deferred\", \"immediate\" or \"exclusive\" for `lock`"]
        );
    }

    #[test]
    fn read_only_is_a_boolean() {
        assert!(ok(quote!(read_only = true)).read_only.unwrap().value);
        assert!(!ok(quote!(read_only = false)).read_only.unwrap().value);
        assert_eq!(
            errors(quote!(read_only = "yes")),
            ["expected `true` or `false` for `read_only`"]
        );
    }

    #[test]
    fn timeout_forms() {
        for (text, millis) in [
            ("500ms", 500),
            ("1ms", 1),
            ("5s", 5_000),
            ("2m", 120_000),
            ("007s", 7_000),
            ("18446744073709551615ms", u64::MAX),
            ("307445734561825m", 307_445_734_561_825 * 60_000),
        ] {
            assert_eq!(ok(quote!(timeout = #text)).timeout, Some(millis), "{text}");
        }
    }

    #[test]
    fn bad_timeouts() {
        for (malformed, message) in [
            (quote!(timeout = "5"), TIMEOUT_FORM),
            (quote!(timeout = "5h"), TIMEOUT_FORM),
            (quote!(timeout = "-1s"), TIMEOUT_FORM),
            (quote!(timeout = "ms"), TIMEOUT_FORM),
            (quote!(timeout = ""), TIMEOUT_FORM),
            (quote!(timeout = "5 s"), TIMEOUT_FORM),
            (quote!(timeout = "1.5s"), TIMEOUT_FORM),
            (quote!(timeout = "5S"), TIMEOUT_FORM),
            (quote!(timeout = "+5s"), TIMEOUT_FORM),
            (quote!(timeout = 5), TIMEOUT_FORM),
            (quote!(timeout = Duration::from_secs(5)), TIMEOUT_FORM),
            (quote!(timeout = "0s"), TIMEOUT_ZERO),
            (quote!(timeout = "0ms"), TIMEOUT_ZERO),
            (quote!(timeout = "000m"), TIMEOUT_ZERO),
            (quote!(timeout = "99999999999999999999ms"), TIMEOUT_TOO_LONG),
            (quote!(timeout = "18446744073709551616ms"), TIMEOUT_TOO_LONG),
            (quote!(timeout = "18446744073709552s"), TIMEOUT_TOO_LONG),
            (quote!(timeout = "307445734561826m"), TIMEOUT_TOO_LONG),
        ] {
            assert_eq!(errors(malformed.clone()), [message], "{malformed}");
        }
        assert_eq!(
            TIMEOUT_FORM,
            "expected a duration such as \"500ms\", \"5s\" or \"2m\": a string literal holding a \
             positive integer followed by `ms`, `s` or `m`"
        );
    }

    #[test]
    fn retry_counts_and_expressions() {
        for (count, expected) in [
            (quote!(1), "1u32"),
            (quote!(5), "5u32"),
            (quote!(5u32), "5u32"),
            (quote!(0x10), "16u32"),
            (quote!(1_000), "1000u32"),
            (quote!(4294967295), "4294967295u32"),
        ] {
            let retry = ok(quote!(retry = #count)).retry.unwrap();
            assert_eq!(quote!(#retry).to_string(), expected, "{count}");
        }
        for passed_through in [
            quote!(Retry::new(5).backoff(a, b)),
            quote!(RETRIES),
            quote!(self.retries),
            quote!(n + 1),
            quote!(-n),
        ] {
            let retry = ok(quote!(retry = #passed_through)).retry.unwrap();
            assert_eq!(
                quote!(#retry).to_string(),
                passed_through.to_string(),
                "{passed_through}"
            );
        }
    }

    #[test]
    fn bad_retries() {
        assert_eq!(errors(quote!(retry = 0)), [RETRY_ZERO]);
        assert_eq!(errors(quote!(retry = 0u32)), [RETRY_ZERO]);
        assert_eq!(
            RETRY_ZERO,
            "`retry = 0` retries nothing; remove it or give at least 1"
        );
        for not_a_count in [
            quote!(retry = -1),
            quote!(retry = -0),
            quote!(retry = 4294967296),
            quote!(retry = 5u8),
            quote!(retry = 5i64),
            quote!(retry = 1.5),
            quote!(retry = "3"),
            quote!(retry = true),
        ] {
            assert_eq!(
                errors(not_a_count.clone()),
                [RETRY_NOT_A_COUNT],
                "{not_a_count}"
            );
        }
    }

    #[test]
    fn retry_excludes_savepoint_false() {
        for args in [
            quote!(retry = 3, savepoint = false),
            quote!(savepoint = false, using = "a", retry = Retry::new(1)),
        ] {
            assert_eq!(errors(args.clone()), [RETRY_WITH_SAVEPOINT_FALSE], "{args}");
        }
        assert!(ok(quote!(retry = 3, savepoint = true)).retry.is_some());
        // Reported with the argument's own mistakes: `retry` was still written.
        assert_eq!(
            errors(quote!(retry = 0, savepoint = false, lock = "x")),
            [
                RETRY_ZERO,
                "unknown lock mode \"x\"; expected \"deferred\", \"immediate\" or \"exclusive\"",
                RETRY_WITH_SAVEPOINT_FALSE,
            ]
        );
        assert_eq!(
            RETRY_WITH_SAVEPOINT_FALSE,
            "`retry` cannot be combined with `savepoint = false`: only an outermost block is \
             retried, and `savepoint` has no effect on an outermost block, so `savepoint = false` \
             says the block is expected to be nested; remove one of them"
        );
    }

    #[test]
    fn duplicate_argument() {
        assert_eq!(
            errors(quote!(using = "a", savepoint = true, using = "b")),
            ["duplicate argument `using`"]
        );
        assert_eq!(
            errors(quote!(crate = "a", crate = "a")),
            ["duplicate argument `crate`"]
        );
        for name in ["isolation", "read_only", "lock", "timeout", "retry"] {
            let args = match name {
                "isolation" => quote!(isolation = "serializable", isolation = "read_committed"),
                "read_only" => quote!(read_only = true, read_only = true),
                "lock" => quote!(lock = "deferred", durable = true, lock = "immediate"),
                "timeout" => quote!(timeout = "1s", timeout = "1s"),
                _ => quote!(retry = 1, retry = Retry::new(2)),
            };
            assert_eq!(errors(args), [format!("duplicate argument `{name}`")]);
        }
    }

    #[test]
    fn wrong_value_types() {
        assert_eq!(
            errors(quote!(savepoint = "no")),
            ["expected `true` or `false` for `savepoint`"]
        );
        assert_eq!(
            errors(quote!(durable = 1)),
            ["expected `true` or `false` for `durable`"]
        );
        assert_eq!(
            errors(quote!(using = 3)),
            ["expected a string literal naming a database alias, e.g. using = \"default\""]
        );
        assert_eq!(
            errors(quote!(using = "")),
            ["the database alias cannot be empty"]
        );
        for non_literal in [
            quote!(using = ALIAS),
            quote!(using = some::path),
            quote!(using = f()),
        ] {
            let messages = errors(non_literal);
            assert_eq!(messages.len(), 1);
            assert!(
                messages[0].starts_with("`using` takes a string literal"),
                "{}",
                messages[0]
            );
            assert!(
                messages[0].contains("Atomic::new().using("),
                "{}",
                messages[0]
            );
        }
        for bad_crate in [
            quote!(crate = sqlx_atomic),
            quote!(crate = "not a path"),
            quote!(crate = ""),
        ] {
            let messages = errors(bad_crate);
            assert_eq!(messages.len(), 1);
            assert!(messages[0].starts_with("expected a string literal holding the path"));
        }
    }
}
