//! The options of `#[task(...)]`: parsed and validated at expansion.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, MetaNameValue, Token};

/// What `#[task(...)]` accepts, for error messages.
pub const ALLOWED: &str =
    "`name = \"...\"`, `retries = N`, `timeout = \"30s\"`, `retry_delay = \"2s\"`";

/// Validated options.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// The task's stable name.
    pub name: Option<String>,
    /// Retries after a failed attempt.
    pub retries: Option<u32>,
    /// Attempt timeout in seconds.
    pub timeout: Option<f64>,
    /// First retry delay in seconds.
    pub retry_delay: Option<f64>,
}

struct Raw(Punctuated<MetaNameValue, Token![,]>);

impl Parse for Raw {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(Raw)
    }
}

/// Parses the attribute's tokens.
pub fn parse(attr: TokenStream) -> syn::Result<Options> {
    let raw = Raw::parse.parse2(attr.clone()).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("malformed #[task] options: expected `key = value` pairs separated by commas; the options are {ALLOWED}"),
        )
    })?;
    let mut out = Options::default();
    for nv in raw.0 {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let span = key_span(&nv);
        let lit = match &nv.value {
            Expr::Lit(ExprLit { lit, .. }) => lit.clone(),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("the value of `{key}` must be a literal"),
                ))
            }
        };
        let seen = match key.as_str() {
            "name" => out.name.replace(name(&lit)?).is_some(),
            "retries" => out.retries.replace(retries(&lit)?).is_some(),
            "timeout" => out.timeout.replace(duration("timeout", &lit)?).is_some(),
            "retry_delay" => out
                .retry_delay
                .replace(duration("retry_delay", &lit)?)
                .is_some(),
            _ => {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "unknown #[task] option `{}`; the options are {ALLOWED}",
                        path_text(&nv)
                    ),
                ))
            }
        };
        if seen {
            return Err(syn::Error::new(
                span,
                format!("the option `{key}` is given twice"),
            ));
        }
    }
    Ok(out)
}

fn key_span(nv: &MetaNameValue) -> Span {
    nv.path
        .segments
        .first()
        .map(|s| s.ident.span())
        .unwrap_or_else(Span::call_site)
}

fn path_text(nv: &MetaNameValue) -> String {
    nv.path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

fn name(lit: &Lit) -> syn::Result<String> {
    let Lit::Str(s) = lit else {
        return Err(syn::Error::new_spanned(
            lit,
            "`name` takes a string, e.g. `name = \"square\"`",
        ));
    };
    let v = s.value();
    if v.is_empty() || v.chars().any(|c| c.is_whitespace()) {
        return Err(syn::Error::new_spanned(
            lit,
            "a task name must be non-empty and have no whitespace",
        ));
    }
    if v.starts_with("orch.") {
        return Err(syn::Error::new_spanned(
            lit,
            "task names starting with `orch.` are reserved for orch's built-in tasks",
        ));
    }
    Ok(v)
}

fn retries(lit: &Lit) -> syn::Result<u32> {
    match lit {
        Lit::Int(i) => i.base10_parse::<u32>().map_err(|_| {
            syn::Error::new_spanned(lit, "`retries` takes a whole number from 0 to 4294967295")
        }),
        _ => Err(syn::Error::new_spanned(
            lit,
            "`retries` takes a whole number, e.g. `retries = 3`",
        )),
    }
}

fn duration(key: &str, lit: &Lit) -> syn::Result<f64> {
    let bad = || {
        syn::Error::new_spanned(
            lit,
            format!("`{key}` takes a duration string: a number and a unit (`ms`, `s`, `m`, `h`), e.g. `{key} = \"30s\"`"),
        )
    };
    let Lit::Str(s) = lit else { return Err(bad()) };
    parse_duration(&s.value()).ok_or_else(bad)
}

/// Seconds in `"500ms"`, `"30s"`, `"1.5m"`, `"2h"`.
pub fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = n * factor;
    (secs.is_finite() && secs > 0.0).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn options_parse() {
        let o = parse(quote!(
            name = "sq",
            retries = 2,
            timeout = "1.5m",
            retry_delay = "500ms"
        ))
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("sq"));
        assert_eq!(o.retries, Some(2));
        assert_eq!(o.timeout, Some(90.0));
        assert_eq!(o.retry_delay, Some(0.5));
        assert_eq!(parse(quote!()).unwrap(), Options::default());
    }

    #[test]
    fn bad_options_say_what_is_allowed() {
        let e = parse(quote!(retry = 2)).unwrap_err().to_string();
        assert!(
            e.contains("unknown #[task] option `retry`") && e.contains("retries = N"),
            "{e}"
        );
        let e = parse(quote!(retries = "two")).unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        let e = parse(quote!(timeout = "soon")).unwrap_err().to_string();
        assert!(e.contains("duration"), "{e}");
        let e = parse(quote!(retries)).unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = parse(quote!(name = "orch.map")).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        let e = parse(quote!(retries = 1, retries = 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30.0));
        assert_eq!(parse_duration("2h"), Some(7200.0));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("3 days"), None);
    }
}
