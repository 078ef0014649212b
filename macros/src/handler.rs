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
    takes_context: bool,
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
        return Err(syn::Error::new(abi.span(), "a handler cannot have an `extern` ABI"));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), "a handler cannot be variadic"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a handler cannot be generic: each handler handles one concrete message type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    if is_method {
        inputs.next();
    } else if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new(
            receiver.span(),
            "a method handler belongs in an `impl` block marked `#[handler]`",
        ));
    }
    let typed: Vec<_> = inputs.collect();
    let arity_error = || {
        let span = if typed.is_empty() { sig.paren_token.span.join() } else { sig.inputs.span() };
        syn::Error::new(
            span,
            "a handler takes the message by value and, optionally, `ctx: &Context`: `(msg: M, ctx: &Context)`",
        )
    };
    if typed.is_empty() || typed.len() > 2 {
        return Err(arity_error());
    }
    let message = match typed[0] {
        FnArg::Typed(arg) => &*arg.ty,
        FnArg::Receiver(receiver) => return Err(syn::Error::new(receiver.span(), "unexpected `self`")),
    };
    if let Type::Reference(reference) = message {
        return Err(syn::Error::new(
            reference.and_token.span(),
            "take the message by value: the handler owns it (remove the `&`)",
        ));
    }
    let takes_context = match typed.get(1) {
        None => false,
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(reference) if reference.mutability.is_none() => true,
            other => {
                return Err(syn::Error::new(other.span(), "the second argument must be `&Context`"));
            }
        },
        Some(FnArg::Receiver(receiver)) => return Err(syn::Error::new(receiver.span(), "unexpected `self`")),
    };
    let result = match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => &**ty,
        ReturnType::Type(_, ty) => {
            return Err(syn::Error::new(ty.span(), "a handler returns `Result<Output, E>`"));
        }
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.paren_token.span.close(),
                "a handler returns `Result<Output, E>`; add `-> Result<(), E>` for a handler with no output",
            ));
        }
    };
    Ok(HandlerSig { message, result, takes_context })
}

/// `Result<..>`, `std::io::Result<..>`, `anyhow::Result<..>`: any path whose
/// last segment is `Result`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn handles_impl(
    krate: &TokenStream,
    state: &TokenStream,
    sig: &HandlerSig<'_>,
    call: TokenStream,
) -> TokenStream {
    let message = sig.message;
    let result = sig.result;
    let ctx_use = if sig.takes_context { quote!() } else { quote!(let _ = ctx;) };
    let trait_path = quote_spanned!(message.span()=> #krate::Handles<#message>);
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
    let message = sig.message;
    let call = if sig.takes_context { quote!(#fn_name(message, ctx)) } else { quote!(#fn_name(message)) };
    let state = quote!(#actor);
    let handles = handles_impl(&krate, &state, &sig, call);
    let submit = (!args.manual).then(|| submit(&krate, &name, &state));
    let doc = format!("The handler actor of [`{fn_name}`], made by `#[handler]`; register it by hand with `.handler({actor})`.");
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
                routes.handle::<#message>();
            }
        }

        #submit
    })
}

fn expand_impl(args: &HandlerArgs, block: &syn::ItemImpl) -> syn::Result<TokenStream> {
    if let Some((path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "`#[handler]` goes on an inherent `impl` block (`impl MyActor { ... }`), not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new(block.generics.span(), "a handler actor cannot be generic"));
    }
    let state_ident = match &*block.self_ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone())
            .ok_or_else(|| syn::Error::new(path.span(), "expected a type name"))?,
        other => return Err(syn::Error::new(other.span(), "`#[handler]` needs a named struct or enum as `Self`")),
    };
    let krate = hexeract_path();
    let self_ty = &block.self_ty;
    let state = quote!(#self_ty);
    let mut handles = Vec::new();
    let mut routes = Vec::new();
    let mut seen: Vec<(String, Span)> = Vec::new();
    for item in &block.items {
        let method = match item {
            ImplItem::Fn(method) => method,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a `#[handler]` impl holds only handler methods; move other items to a separate `impl` block",
                ));
            }
        };
        match method.sig.receiver() {
            Some(receiver) if matches!(receiver.kind, ReceiverKind::Reference(..)) => {}
            Some(receiver) => {
                return Err(syn::Error::new(
                    receiver.span(),
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
            let mut error = syn::Error::new(message.span(), "this message type is already handled in this block");
            error.combine(syn::Error::new(*first, "first handled here"));
            return Err(error);
        }
        seen.push((key, message.span()));
        let method_name = &method.sig.ident;
        let call = if sig.takes_context {
            quote!(#self_ty::#method_name(self, message, ctx))
        } else {
            quote!(#self_ty::#method_name(self, message))
        };
        handles.push(handles_impl(&krate, &state, &sig, call));
        routes.push(quote!(routes.handle::<#message>();));
    }
    if routes.is_empty() {
        return Err(syn::Error::new(block.self_ty.span(), "a `#[handler]` impl needs at least one handler method"));
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
