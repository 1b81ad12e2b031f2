//! What `#[task]` needs to know of the function, or why it cannot be a
//! task.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type};

/// A function that can be a task.
pub struct TaskFn {
    /// Whether the first argument is `&mut Context`.
    pub takes_context: bool,
    /// The data arguments: name and type.
    pub args: Vec<(syn::Ident, Type)>,
    /// The type of the output (the `T` of a `Result<T, E>`).
    pub output: Type,
    /// Whether the function returns a `Result`.
    pub returns_result: bool,
    /// Whether the function is `async`.
    pub is_async: bool,
}

/// Checks the function and reads its signature.
pub fn analyze(f: &ItemFn) -> syn::Result<TaskFn> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.params.span(),
            "#[task] functions cannot be generic: a task's input and output types must be concrete serde types, so that the orchestrator can check them and run the task by name",
        ));
    }
    if let Some(w) = &sig.generics.where_clause {
        return Err(syn::Error::new_spanned(
            w,
            "#[task] functions cannot have a `where` clause: a task's types must be concrete",
        ));
    }
    if let Some(u) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            u,
            "#[task] functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new_spanned(
            abi,
            "#[task] functions cannot have an `extern` ABI",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            v,
            "#[task] functions cannot be variadic",
        ));
    }
    let mut takes_context = false;
    let mut args = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        let typed = match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "#[task] functions cannot take `self`: a task is a free function (it runs in its own process, with no value to call it on); move it out of the `impl` block and pass what it needs as arguments",
                ))
            }
            FnArg::Typed(t) => t,
        };
        if is_context(&typed.ty) {
            if i != 0 {
                return Err(syn::Error::new_spanned(
                    &typed.ty,
                    "the task context must be the first argument: `ctx: &mut orch::Context`",
                ));
            }
            takes_context = true;
            continue;
        }
        let Pat::Ident(pi) = &*typed.pat else {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "#[task] arguments must be plain names (`x: u64`): each becomes a named input",
            ));
        };
        if let Some(by_ref) = &pi.by_ref {
            return Err(syn::Error::new_spanned(
                by_ref,
                "#[task] arguments must be plain names, not `ref` patterns",
            ));
        }
        check_owned(&typed.ty)?;
        args.push((pi.ident.clone(), (*typed.ty).clone()));
    }
    let (output, returns_result) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => {
            check_owned(ty)?;
            match result_ok_type(ty) {
                Some(ok) => (ok, true),
                None => ((**ty).clone(), false),
            }
        }
    };
    Ok(TaskFn {
        takes_context,
        args,
        output,
        returns_result,
        is_async: sig.asyncness.is_some(),
    })
}

/// `&mut Context` / `&mut orch::Context`.
fn is_context(ty: &Type) -> bool {
    let inner = match ty {
        Type::Reference(r) => &*r.elem,
        _ => return false,
    };
    matches!(inner, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

/// Arguments and outputs are deserialised from JSON: no borrowed types,
/// no `impl Trait`.
fn check_owned(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::Reference(r) => {
            let hint = match &*r.elem {
                Type::Path(p) if p.path.is_ident("str") => " (use `String` instead of `&str`)",
                Type::Slice(_) => " (use `Vec<T>` instead of `&[T]`)",
                _ => "",
            };
            Err(syn::Error::new_spanned(
                ty,
                format!("#[task] inputs and outputs must be owned values: they travel as JSON between processes{hint}"),
            ))
        }
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            "#[task] inputs and outputs cannot be `impl Trait`: a task's types must be concrete serde types",
        )),
        _ => Ok(()),
    }
}

/// The `T` of `Result<T, ..>` (by the last path segment's name, so type
/// aliases such as `orch::Result<T>` or `anyhow::Result<T>` count).
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn analyze_src(src: &str) -> syn::Result<TaskFn> {
        analyze(&syn::parse_str(src).unwrap())
    }

    #[test]
    fn signatures_are_read() {
        let t = analyze_src("async fn f(ctx: &mut orch::Context, a: u64, b: Vec<String>) -> Result<u8, E> { Ok(0) }").unwrap();
        assert!(t.takes_context && t.is_async && t.returns_result);
        assert_eq!(t.args.len(), 2);
        assert_eq!(t.output.to_token_stream().to_string(), "u8");
        let t = analyze_src("fn g() {}").unwrap();
        assert_eq!(t.output.to_token_stream().to_string(), "()");
        assert!(!t.returns_result && !t.takes_context);
    }

    #[test]
    fn what_cannot_be_a_task_says_why() {
        let e = |src: &str| analyze_src(src).err().unwrap().to_string();
        assert!(e("fn f(&self) {}").contains("cannot take `self`"));
        assert!(e("fn f<T>(x: T) {}").contains("cannot be generic"));
        assert!(e("fn f(x: &str) {}").contains("use `String`"));
        assert!(e("fn f(x: impl Into<u8>) {}").contains("impl Trait"));
        assert!(e("fn f((a, b): (u8, u8)) {}").contains("plain names"));
        assert!(e("fn f(x: u8, c: &mut Context) {}").contains("first argument"));
        assert!(e("unsafe fn f() {}").contains("unsafe"));
    }
}
