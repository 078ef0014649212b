//! `#[handler]` on an `async fn` or an `impl` block.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, Item, ReceiverKind, ReturnType, Signature, Type};

use crate::hexeract_path;
use crate::options::HandlerArgs;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = HandlerArgs::parse(args)?;
    match syn::parse2::<Item>(item)? {
        Item::Fn(function) => expand_fn(&args, &function),
        Item::Impl(block) => expand_impl(&args, &block),
        other => Err(syn::Error::new(
            other.span(),
            "`#[handler]` goes on an `async fn` or on an `impl` block of the actor's state",
        )),
    }
}

/// What a handler signature says, once checked.
struct HandlerSig<'a> {
    message: &'a Type,
    result: &'a Type,
    /// The `ctx` argument to pass, spanned on the user's `&Context` type so
    /// that a wrong reference type (`&String`) is reported there.
    context: Option<TokenStream>,
}

/// Checks everything but the receiver: async, not generic, the message by
/// value, an optional `&Context`, a `Result` return.
fn check_signature(sig: &Signature, is_method: bool) -> syn::Result<HandlerSig<'_>> {
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(sig.fn_token.span(), "`#[handler]` fns must be `async`"));
    }
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(constness.span(), "a handler cannot be `const`"));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new_spanned(abi, "a handler cannot have an `extern` ABI"));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), "a handler cannot be variadic"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a handler cannot be generic: each handler handles one concrete message type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    if is_method {
        inputs.next();
    } else if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            receiver,
            "a method handler belongs in an `impl` block marked `#[handler]`",
        ));
    }
    let typed: Vec<_> = inputs.collect();
    if typed.is_empty() {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            "a handler takes the message by value and, optionally, `ctx: &Context`: `(msg: M, ctx: &Context)`",
        ));
    }
    if typed.len() > 2 {
        let extra = &typed[2..];
        let these = if extra.len() == 1 { "this argument" } else { "these arguments" };
        return Err(syn::Error::new_spanned(
            quote!(#(#extra)*),
            format!(
                "a handler takes at most the message and `ctx: &Context`: `(msg: M, ctx: &Context)`; remove {these}"
            ),
        ));
    }
    let message = match typed[0] {
        FnArg::Typed(arg) => &*arg.ty,
        FnArg::Receiver(receiver) => return Err(syn::Error::new_spanned(receiver, "unexpected `self`")),
    };
    if let Type::Reference(reference) = message {
        return Err(syn::Error::new(
            reference.and_token.span(),
            "take the message by value: the handler owns it (remove the `&`)",
        ));
    }
    let context = match typed.get(1) {
        None => None,
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(reference) if reference.mutability.is_none() => {
                Some(quote_spanned!(reference.elem.span()=> ctx))
            }
            other => {
                return Err(syn::Error::new_spanned(other, "the second argument must be `&Context`"));
            }
        },
        Some(FnArg::Receiver(receiver)) => return Err(syn::Error::new_spanned(receiver, "unexpected `self`")),
    };
    let result = match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => &**ty,
        ReturnType::Type(_, ty) => {
            return Err(syn::Error::new_spanned(
                ty,
                "a handler returns `Result<Output, E>`, where `Output` is the message's `output`: \
                 change the return type to `Result<Output, E>` and return `Ok(value)`",
            ));
        }
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.paren_token.span.close(),
                "a handler returns `Result<Output, E>`; add `-> Result<(), E>` for a handler with no output",
            ));
        }
    };
    Ok(HandlerSig { message, result, context })
}

/// `Result<..>`, `std::io::Result<..>`, `anyhow::Result<..>`: any path whose
/// last segment is `Result`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn handles_impl(krate: &TokenStream, state: &TokenStream, sig: &HandlerSig<'_>, call: TokenStream) -> TokenStream {
    let message = sig.message;
    let result = sig.result;
    let ctx_use = if sig.context.is_some() { quote!() } else { quote!(let _ = ctx;) };
    // The whole trait path on the message type, so that "`M` is not a
    // Hexeract message" points at `M` rather than at `#[handler]`.
    let trait_path = respan(quote!(#krate::Handles), message.span());
    let trait_path = quote_spanned!(message.span()=> #trait_path<#message>);
    let result_ty = quote_spanned!(result.span()=> #result);
    quote! {
        impl #trait_path for #state {
            type Result = #result_ty;
            fn handle<'a>(
                &'a mut self,
                message: #message,
                ctx: &'a #krate::Context,
            ) -> impl ::core::future::Future<Output = Self::Result> + ::core::marker::Send + 'a {
                #ctx_use
                #call
            }
        }
    }
}

fn expand_fn(args: &HandlerArgs, function: &syn::ItemFn) -> syn::Result<TokenStream> {
    let sig = check_signature(&function.sig, false)?;
    let krate = hexeract_path();
    let fn_name = &function.sig.ident;
    let actor = format_ident!("{}Handler", camel_case(&fn_name.to_string()), span = fn_name.span());
    let vis = &function.vis;
    let name = args.name.clone().unwrap_or_else(|| fn_name.to_string().trim_start_matches("r#").to_owned());
    let options = args.options_expr(&krate);
    let route = args.route_stmt(sig.message);
    let call = match &sig.context {
        Some(ctx) => quote!(#fn_name(message, #ctx)),
        None => quote!(#fn_name(message)),
    };
    let state = quote!(#actor);
    let handles = handles_impl(&krate, &state, &sig, call);
    let submit = (!args.manual).then(|| submit(&krate, &name, &state));
    let doc = format!(
        "The handler actor of [`{fn_name}`], made by `#[handler]`; register it by hand with `.handler({actor})`."
    );
    Ok(quote! {
        #function

        #[doc = #doc]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #actor;

        #handles

        impl #krate::HandlerActor for #actor {
            const NAME: &'static str = #name;
            fn options() -> #krate::HandlerOptions {
                #options
            }
            fn routes(routes: &mut #krate::Routes<Self>) {
                #route
            }
        }

        #submit
    })
}

fn expand_impl(args: &HandlerArgs, block: &syn::ItemImpl) -> syn::Result<TokenStream> {
    if let Some((path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "`#[handler]` goes on an inherent `impl` block (`impl MyActor { ... }`), not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&block.generics, "a handler actor cannot be generic"));
    }
    let state_ident = match &*block.self_ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone())
            .ok_or_else(|| syn::Error::new_spanned(path, "expected a type name"))?,
        other => return Err(syn::Error::new_spanned(other, "`#[handler]` needs a named struct or enum as `Self`")),
    };
    let krate = hexeract_path();
    let self_ty = &block.self_ty;
    let state = quote!(#self_ty);
    let mut handles = Vec::new();
    let mut routes = Vec::new();
    let mut seen: Vec<(String, &Type)> = Vec::new();
    for item in &block.items {
        let method = match item {
            ImplItem::Fn(method) => method,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "a `#[handler]` impl holds only handler methods; move other items to a separate `impl` block",
                ));
            }
        };
        match method.sig.receiver() {
            Some(receiver) if matches!(receiver.kind, ReceiverKind::Reference(..)) => {}
            Some(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "a handler method takes `&mut self` (or `&self`): the actor keeps its state between messages",
                ));
            }
            None => {
                return Err(syn::Error::new(
                    method.sig.ident.span(),
                    "a handler method takes `&mut self` (or `&self`); move helper functions to a separate `impl` block",
                ));
            }
        }
        let sig = check_signature(&method.sig, true)?;
        let message = sig.message;
        let key = quote!(#message).to_string();
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            let mut error = syn::Error::new_spanned(message, "this message type is already handled in this block");
            error.combine(syn::Error::new_spanned(first, "first handled here"));
            return Err(error);
        }
        seen.push((key, message));
        let method_name = &method.sig.ident;
        // `Self` on the method's name, so errors in the call point there.
        let method = quote_spanned!(method_name.span()=> Self::#method_name);
        let call = match &sig.context {
            Some(ctx) => quote!(#method(self, message, #ctx)),
            None => quote!(#method(self, message)),
        };
        handles.push(handles_impl(&krate, &state, &sig, call));
        routes.push(args.route_stmt(message));
    }
    if routes.is_empty() {
        return Err(syn::Error::new_spanned(&block.self_ty, "a `#[handler]` impl needs at least one handler method"));
    }
    let name = args.name.clone().unwrap_or_else(|| snake_case(&state_ident.to_string()));
    let options = args.options_expr(&krate);
    let submit = (!args.manual).then(|| submit(&krate, &name, &state));
    Ok(quote! {
        #block

        #(#handles)*

        impl #krate::HandlerActor for #self_ty {
            const NAME: &'static str = #name;
            fn options() -> #krate::HandlerOptions {
                #options
            }
            fn routes(routes: &mut #krate::Routes<Self>) {
                #(#routes)*
            }
        }

        #submit
    })
}

fn submit(krate: &TokenStream, name: &str, state: &TokenStream) -> TokenStream {
    quote! {
        #krate::__private::inventory::submit! {
            #krate::__private::DiscoveredHandler {
                name: #name,
                module: ::core::module_path!(),
                register: #krate::__private::register_default::<#state>,
            }
        }
    }
}

/// `tokens` with every top-level token given `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

fn camel_case(snake: &str) -> String {
    snake
        .trim_start_matches("r#")
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
