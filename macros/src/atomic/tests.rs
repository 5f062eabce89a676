//! Tests of `#[atomic]`'s checks and expansion.

use super::*;

fn expand(args: TokenStream, item: TokenStream) -> String {
    atomic(args, item).to_string()
}

#[test]
fn wraps_the_body_and_keeps_the_signature() {
    let out = expand(
        quote!(using = "x", savepoint = false),
        quote! {
            /// Docs.
            #[inline]
            pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<U, E>
            where
                T: Sync,
            {
                #![allow(unused)]
                body(a)?;
                Ok(u)
            }
        },
    );
    let expected = quote! {
        /// Docs.
        #[inline]
        pub async fn f<'a, T: Send>(&mut self, a: &'a T) -> Result<U, E>
        where
            T: Sync,
        {
            #![allow(unused)]
            ::sqlx_atomic::atomic_fn_returns_result::<Result<U, E> >();
            ::sqlx_atomic::__private::Atomic::new()
                .using("x")
                .savepoint(false)
                .run(async move {
                    if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                        ::core::option::Option::None::<Result<U, E> >
                    {
                        return __sqlx_atomic_ret;
                    }
                    #[allow(clippy::diverging_sub_expression)]
                    let __sqlx_atomic_ret: Result<U, E> = {
                        #[allow(clippy::redundant_locals, clippy::shadow_same)]
                        let a = a;
                        body(a)?;
                        Ok(u)
                    };
                    #[allow(unreachable_code)]
                    __sqlx_atomic_ret
                })
                .await
        }
    };
    assert_eq!(out, expected.to_string());
}

#[test]
fn arguments_become_locals_of_the_body_with_their_mut() {
    let out = expand(
        quote!(),
        quote! {
            async fn f(mut a: String, (b, mut c): (u8, u8), ref d: u8, _: u8) -> Result<(), E> {
                body()
            }
        },
    );
    // The signature loses the `mut`s it gives to the locals; `ref d` stays as written.
    let signature =
        quote!(async fn f(a: String, (b, c): (u8, u8), ref d: u8, _: u8) -> Result<(), E>);
    assert!(out.starts_with(&signature.to_string()), "{out}");
    let allow = quote!(#[allow(clippy::redundant_locals, clippy::shadow_same)]);
    let locals = quote! {
        #allow let mut a = a;
        #allow let b = b;
        #allow let mut c = c;
        #allow let d = d;
        body()
    };
    assert!(out.contains(&locals.to_string()), "{out}");
}

#[test]
fn retry_leaves_the_arguments_borrowed() {
    let out = expand(
        quote!(retry = 2),
        quote! {
            async fn f(mut a: String) -> Result<(), E> {
                body(&mut a)
            }
        },
    );
    assert!(
        out.starts_with(&quote!(async fn f(mut a: String)).to_string()),
        "{out}"
    );
    assert!(!out.contains("redundant_locals"), "{out}");
}

#[test]
fn only_given_arguments_become_builder_calls() {
    let out = expand(
        quote!(),
        quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        ),
    );
    assert!(
        out.contains(":: sqlx_atomic :: __private :: Atomic :: new () . run ("),
        "{out}"
    );
    let out = expand(
        quote!(durable = true, crate = "my::sa"),
        quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        ),
    );
    assert!(
        out.contains("my :: sa :: __private :: Atomic :: new () . durable (true) . run ("),
        "{out}"
    );
    assert!(
        out.contains("my :: sa :: atomic_fn_returns_result"),
        "{out}"
    );
}

#[test]
fn each_option_becomes_its_builder_call() {
    for (args, call) in [
        (
            quote!(isolation = "read_uncommitted"),
            quote!(.isolation(::sqlx_atomic::Isolation::ReadUncommitted)),
        ),
        (
            quote!(isolation = "read_committed"),
            quote!(.isolation(::sqlx_atomic::Isolation::ReadCommitted)),
        ),
        (
            quote!(isolation = "repeatable_read"),
            quote!(.isolation(::sqlx_atomic::Isolation::RepeatableRead)),
        ),
        (
            quote!(isolation = "serializable"),
            quote!(.isolation(::sqlx_atomic::Isolation::Serializable)),
        ),
        (quote!(read_only = true), quote!(.read_only(true))),
        (quote!(read_only = false), quote!(.read_only(false))),
        (
            quote!(lock = "deferred"),
            quote!(.lock(::sqlx_atomic::LockMode::Deferred)),
        ),
        (
            quote!(lock = "immediate"),
            quote!(.lock(::sqlx_atomic::LockMode::Immediate)),
        ),
        (
            quote!(lock = "exclusive"),
            quote!(.lock(::sqlx_atomic::LockMode::Exclusive)),
        ),
        (
            quote!(timeout = "500ms"),
            quote!(.timeout(::core::time::Duration::from_millis(500))),
        ),
        (
            quote!(timeout = "5s"),
            quote!(.timeout(::core::time::Duration::from_millis(5000))),
        ),
        (
            quote!(timeout = "2m"),
            quote!(.timeout(::core::time::Duration::from_millis(120000))),
        ),
    ] {
        let out = expand(
            args.clone(),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        let expected = quote!(::sqlx_atomic::__private::Atomic::new() #call .run);
        assert!(
            out.contains(&format!("{expected} (async move {{")),
            "{args}: {out}"
        );
    }
}

#[test]
fn options_follow_the_crate_path_and_keep_their_order() {
    let out = expand(
        quote!(
            timeout = "1s",
            lock = "immediate",
            read_only = false,
            isolation = "serializable",
            durable = true,
            savepoint = true,
            using = "x",
            crate = "my::sa",
        ),
        quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        ),
    );
    let expected = quote!(
        my::sa::__private::Atomic::new()
            .using("x")
            .savepoint(true)
            .durable(true)
            .isolation(my::sa::Isolation::Serializable)
            .read_only(false)
            .lock(my::sa::LockMode::Immediate)
            .timeout(::core::time::Duration::from_millis(1000))
            .run
    );
    assert!(out.contains(&format!("{expected} (async move {{")), "{out}");
}

#[test]
fn retry_runs_a_borrowing_body_in_a_loop() {
    let out = expand(
        quote!(retry = 3, isolation = "serializable", using = "x"),
        quote! {
            pub async fn f(&mut self, name: &str, n: String) -> Result<U, E> {
                #![allow(unused)]
                body(self, name, &n)?;
                Ok(u)
            }
        },
    );
    let expected = quote! {
        pub async fn f(&mut self, name: &str, n: String) -> Result<U, E> {
            #![allow(unused)]
            ::sqlx_atomic::atomic_fn_returns_result::<Result<U, E> >();
            let mut __sqlx_atomic_attempts = ::sqlx_atomic::__private::Atomic::new()
                .using("x")
                .isolation(::sqlx_atomic::Isolation::Serializable)
                .retry(3u32)
                .__attempts();
            loop {
                if let ::core::ops::ControlFlow::Break(__sqlx_atomic_out) = __sqlx_atomic_attempts
                    .attempt(async {
                        if let ::core::option::Option::Some(__sqlx_atomic_ret) =
                            ::core::option::Option::None::<Result<U, E> >
                        {
                            return __sqlx_atomic_ret;
                        }
                        #[allow(clippy::diverging_sub_expression)]
                        let __sqlx_atomic_ret: Result<U, E> = {
                            body(self, name, &n)?;
                            Ok(u)
                        };
                        #[allow(unreachable_code)]
                        __sqlx_atomic_ret
                    })
                    .await
                {
                    break __sqlx_atomic_out;
                }
            }
        }
    };
    assert_eq!(out, expected.to_string());
    assert!(out.contains("__attempts ()"), "{out}");
    assert!(out.contains("loop"), "{out}");
    assert!(!out.contains("async move"), "{out}");
    assert!(!out.contains(". run ("), "{out}");
}

#[test]
fn retry_passes_an_expression_through() {
    let out = expand(
        quote!(retry = Retry::new(5).backoff(a, b), savepoint = true),
        quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        ),
    );
    let expected = quote!(
        ::sqlx_atomic::__private::Atomic::new()
            .savepoint(true)
            .retry(Retry::new(5).backoff(a, b))
            .__attempts();
    );
    assert!(out.contains(&expected.to_string()), "{out}");
}

#[test]
fn retry_keeps_the_inferred_impl_trait_anchor() {
    let out = expand(
        quote!(retry = 1),
        quote!(
            async fn f() -> Result<impl Display, E> {
                Ok(1)
            }
        ),
    );
    assert!(!out.contains("atomic_fn_returns_result"), "{out}");
    assert!(
        out.contains(
            "async { if let :: core :: option :: Option :: Some (__sqlx_atomic_ret) = \
             :: core :: option :: Option :: None :: < Result < _ , E > >"
        ),
        "{out}"
    );
    assert!(
        out.contains("let __sqlx_atomic_ret : Result < _ , E >"),
        "{out}"
    );
}

#[test]
fn reports_option_errors_with_the_function_unchanged() {
    let item = quote!(
        async fn f() -> Result<(), E> {
            Ok(())
        }
    );
    for (args, message) in [
        (
            quote!(isolation = "snapshot"),
            "unknown isolation level \"snapshot\"; expected \"read_uncommitted\", \
             \"read_committed\", \"repeatable_read\" or \"serializable\"",
        ),
        (
            quote!(lock = "shared"),
            "unknown lock mode \"shared\"; expected \"deferred\", \"immediate\" or \
             \"exclusive\"",
        ),
        (quote!(timeout = "5h"), args::TIMEOUT_FORM),
        (quote!(timeout = "0s"), args::TIMEOUT_ZERO),
        (quote!(retry = 0), args::RETRY_ZERO),
        (
            quote!(retry = 2, savepoint = false),
            args::RETRY_WITH_SAVEPOINT_FALSE,
        ),
        (
            quote!(read_only = 1),
            "expected `true` or `false` for `read_only`",
        ),
    ] {
        assert_eq!(rejected(args.clone(), item.clone()), [message], "{args}");
    }
}

#[test]
fn methods_inside_impl_blocks_parse() {
    // What the attribute receives for a method: an fn with a receiver and no `pub`.
    for item in [
        quote!(
            async fn m(&self) -> Result<(), E> {
                Ok(())
            }
        ),
        quote!(
            async fn m(&mut self) -> Result<(), E> {
                Ok(())
            }
        ),
        quote!(
            async fn m(self) -> Result<(), E> {
                Ok(())
            }
        ),
        quote!(
            async fn m(mut self: Box<Self>) -> Result<(), E> {
                Ok(())
            }
        ),
        quote!(
            pub(crate) async fn m(self, x: impl Into<u8>) -> io::Result<()> {
                Ok(())
            }
        ),
    ] {
        let out = expand(quote!(), item.clone());
        assert!(!out.contains("compile_error"), "{item}: {out}");
        assert!(out.contains("__sqlx_atomic_ret"), "{item}: {out}");
    }
}

#[test]
fn impl_trait_in_the_result_is_inferred() {
    let out = expand(
        quote!(),
        quote!(
            async fn f() -> Result<impl Display, E> {
                Ok(1)
            }
        ),
    );
    assert!(!out.contains("atomic_fn_returns_result"), "{out}");
    assert!(
        out.contains("let __sqlx_atomic_ret : Result < _ , E >"),
        "{out}"
    );
}

fn rejected(args: TokenStream, item: TokenStream) -> Vec<String> {
    crate::test_util::rejected(atomic, args, item)
}

#[test]
fn rejects_what_is_not_an_async_fn_returning_result() {
    let cases = [
        (
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
            NOT_ASYNC_FN,
        ),
        (
            quote!(
                struct S;
            ),
            NOT_ASYNC_FN,
        ),
        (
            quote!(
                const C: u8 = 1;
            ),
            NOT_ASYNC_FN,
        ),
        (
            quote!(
                mod m {}
            ),
            NOT_ASYNC_FN,
        ),
        (quote!(impl S {}), NOT_ASYNC_FN),
        (
            quote!(
                async fn f() {}
            ),
            BAD_RETURN_TYPE,
        ),
        (
            quote!(
                async fn f() -> Option<i32> {
                    None
                }
            ),
            BAD_RETURN_TYPE,
        ),
        (
            quote!(
                async fn f() -> () {}
            ),
            BAD_RETURN_TYPE,
        ),
        (
            quote!(
                async fn f() -> impl Future<Output = Result<(), E>> {
                    x
                }
            ),
            BAD_RETURN_TYPE,
        ),
        (
            quote!(
                async fn f() -> <T as Tr>::Result {
                    x
                }
            ),
            BAD_RETURN_TYPE,
        ),
        (
            quote!(
                async fn f() -> &Result<(), E> {
                    x
                }
            ),
            BAD_RETURN_TYPE,
        ),
    ];
    for (item, message) in cases {
        assert_eq!(rejected(quote!(), item.clone()), [message], "{item}");
    }
}

#[test]
fn reports_argument_and_function_errors_together() {
    let messages = rejected(
        quote!(foo = 1, using = ""),
        quote!(
            const fn f() -> u8 {
                1
            }
        ),
    );
    assert_eq!(
        messages,
        [
            "unknown argument `foo` to #[atomic]; expected `using`, `savepoint`, `durable`, `isolation`, `read_only`, `lock`, `timeout`, `retry` or `crate`",
            "the database alias cannot be empty",
            "#[atomic] cannot be applied to a `const fn`",
            NOT_ASYNC_FN,
            BAD_RETURN_TYPE,
        ]
    );
}

#[test]
fn trait_declarations_need_a_body() {
    let messages = rejected(
        quote!(),
        quote!(
            async fn f(&self) -> Result<(), E>;
        ),
    );
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].starts_with("#[atomic] needs a function body"),
        "{}",
        messages[0]
    );
}

#[test]
fn accepted_result_paths() {
    for ty in [
        quote!(Result<T, E>),
        quote!(std::result::Result<T, E>),
        quote!(::core::result::Result<T, E>),
        quote!(anyhow::Result<T>),
        quote!(io::Result<()>),
        quote!((Result<T, E>)),
    ] {
        let ty: Type = syn::parse2(ty.clone()).unwrap();
        assert!(result_ident(&ty).is_some(), "{}", ty.to_token_stream());
    }
}
