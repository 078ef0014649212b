//! `#[handler(...)]` options.
//!
//! Options are `key = value` pairs or bare flags, and unknown ones are
//! errors. New options (the bus's `queue`, `topic`, `retry(...)`) are new
//! keys, so adding them never changes the meaning of existing code.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::quote;
use syn::{LitInt, LitStr};

const KNOWN: &str = "`workers = N`, `capacity = N`, `timeout = \"2s\"`, `name = \"...\"`, `queue = \"...\"`, `manual`";

#[derive(Default)]
pub(crate) struct HandlerArgs {
    pub(crate) workers: Option<usize>,
    pub(crate) capacity: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) name: Option<String>,
    pub(crate) manual: bool,
    /// The bus queue the handler consumes its messages from.
    pub(crate) queue: Option<String>,
}

impl HandlerArgs {
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut parsed = HandlerArgs::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("workers") {
                parsed.workers = Some(positive(&meta.value()?.parse::<LitInt>()?, "workers")?);
            } else if meta.path.is_ident("capacity") {
                parsed.capacity = Some(positive(&meta.value()?.parse::<LitInt>()?, "capacity")?);
            } else if meta.path.is_ident("timeout") {
                let lit: LitStr = meta.value()?.parse()?;
                parsed.timeout = Some(parse_duration(&lit)?);
            } else if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() || lit.value().contains('/') {
                    return Err(syn::Error::new(lit.span(), "a handler name must be non-empty and contain no `/`"));
                }
                parsed.name = Some(lit.value());
            } else if meta.path.is_ident("queue") {
                let lit: LitStr = meta.value()?.parse()?;
                let queue = lit.value();
                let valid = !queue.is_empty()
                    && queue.len() <= 200
                    && queue.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
                if !valid {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a queue name is 1 to 200 characters of ASCII letters, digits, `.`, `_`, `-` or `:`",
                    ));
                }
                parsed.queue = Some(queue);
            } else if meta.path.is_ident("manual") {
                parsed.manual = true;
            } else {
                return Err(meta.error(format!("unknown `#[handler]` option; expected {KNOWN}")));
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, args)?;
        Ok(parsed)
    }

    /// The statement that declares the handler's route for `message`:
    /// through the mediator only, or also from its bus queue.
    pub(crate) fn route_stmt(&self, message: &syn::Type) -> TokenStream {
        match &self.queue {
            Some(queue) => quote!(routes.subscribe::<#message>(#queue);),
            None => quote!(routes.handle::<#message>();),
        }
    }

    /// `HandlerOptions::new().workers(..)...` for the generated `options()`.
    pub(crate) fn options_expr(&self, krate: &TokenStream) -> TokenStream {
        let mut expr = quote!(#krate::HandlerOptions::new());
        if let Some(workers) = self.workers {
            expr = quote!(#expr.workers(#workers));
        }
        if let Some(capacity) = self.capacity {
            expr = quote!(#expr.capacity(#capacity));
        }
        if let Some(timeout) = self.timeout {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            expr = quote!(#expr.timeout(::core::time::Duration::from_nanos(#nanos)));
        }
        expr
    }
}

fn positive(lit: &LitInt, what: &str) -> syn::Result<usize> {
    let value: usize = lit.base10_parse()?;
    if value == 0 {
        return Err(syn::Error::new(lit.span(), format!("`{what}` must be at least 1")));
    }
    Ok(value)
}

/// `"500ms"`, `"2s"`, `"1m"`, `"1h"`: a whole number and a unit.
fn parse_duration(lit: &LitStr) -> syn::Result<Duration> {
    let text = lit.value();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let invalid = || syn::Error::new(lit.span(), "expected a duration such as \"500ms\", \"2s\", \"1m\" or \"1h\"");
    let amount: u64 = digits.trim().parse().map_err(|_| invalid())?;
    let duration = match unit {
        "ms" => Duration::from_millis(amount),
        "s" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        _ => return Err(invalid()),
    };
    if duration.is_zero() {
        return Err(syn::Error::new(lit.span(), "a timeout must be greater than zero"));
    }
    Ok(duration)
}
