//! Compose's variable interpolation in values: `$VAR`, `${VAR}`, `${VAR:-default}` (unset
//! or empty), `${VAR-default}` (unset), `${VAR:+alt}`/`${VAR+alt}`, `${VAR:?why}`/
//! `${VAR?why}` (an error), and `$$` for a literal `$`. Defaults may hold variables too.
//! A variable that is unset and has no default is an error naming it (docker compose
//! warns and puts in nothing; here nothing is guessed).

use std::collections::{BTreeMap, BTreeSet};

/// The values a compose file is interpolated with, and which of them are secrets.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub values: &'a BTreeMap<String, String>,
    /// Names whose values are secret: a value using one may only be an env var's, which
    /// is then stored sealed.
    pub secret: &'a BTreeSet<String>,
}

/// A value after interpolation, and the secret variables it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    pub secrets: BTreeSet<String>,
}

/// Interpolates `s`; the error says what is wrong, the caller adds where.
pub fn interpolate(s: &str, vars: Vars<'_>) -> Result<Interpolated, String> {
    let mut out = Interpolated {
        text: String::with_capacity(s.len()),
        secrets: BTreeSet::new(),
    };
    expand(s, vars, &mut out)?;
    Ok(out)
}

/// Every variable name `s` refers to (what the CLI looks up in its environment).
pub fn referenced(s: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let body = rest.strip_prefix('{').unwrap_or(rest);
        let len = name_len(body);
        if len > 0 {
            names.insert(body[..len].to_owned());
        }
    }
    names
}

fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

fn expand(s: &str, vars: Vars<'_>, out: &mut Interpolated) -> Result<(), String> {
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.text.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let close =
                matching_brace(after).ok_or_else(|| format!("`${{{after}` has no closing `}}`"))?;
            braced(&after[..close], vars, out)?;
            rest = &after[close + 1..];
        } else {
            let len = name_len(rest);
            if len == 0 {
                return Err(format!(
                    "a lone `$` before `{}`; write `$$` for a literal `$`",
                    rest.chars().take(10).collect::<String>()
                ));
            }
            let name = &rest[..len];
            let value = lookup(name, vars, out).ok_or_else(|| unset(name))?;
            out.text.push_str(&value);
            rest = &rest[len..];
        }
    }
    out.text.push_str(rest);
    Ok(())
}

fn unset(name: &str) -> String {
    format!("variable `{name}` is not set (set it, or give a default: `${{{name}:-value}}`)")
}

fn lookup(name: &str, vars: Vars<'_>, out: &mut Interpolated) -> Option<String> {
    let value = vars.values.get(name)?;
    if vars.secret.contains(name) {
        out.secrets.insert(name.to_owned());
    }
    Some(value.clone())
}

/// The index of the `}` closing an opened `${`, nested ones counted.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// What is between `${` and `}`.
fn braced(inner: &str, vars: Vars<'_>, out: &mut Interpolated) -> Result<(), String> {
    let len = name_len(inner);
    if len == 0 {
        return Err(format!(
            "`${{{inner}}}` does not start with a variable name"
        ));
    }
    let name = &inner[..len];
    let op = &inner[len..];
    let value = vars.values.get(name);
    let empty = value.is_none_or(|v| v.is_empty());
    let (kind, arg) = ["?", ":?", "-", ":-", "+", ":+"]
        .iter()
        .filter_map(|k| op.strip_prefix(k).map(|arg| (*k, arg)))
        .max_by_key(|(k, _)| k.len())
        .unwrap_or(("", op));
    match kind {
        "" if !arg.is_empty() => Err(format!(
            "`${{{inner}}}`: after the name comes `}}`, `:-`, `-`, `:+`, `+`, `:?` or `?`"
        )),
        "" => {
            let v = lookup(name, vars, out).ok_or_else(|| unset(name))?;
            out.text.push_str(&v);
            Ok(())
        }
        ":-" | "-" => {
            let use_default = if kind == ":-" { empty } else { value.is_none() };
            if use_default {
                expand(arg, vars, out)
            } else {
                let v = lookup(name, vars, out).unwrap_or_default();
                out.text.push_str(&v);
                Ok(())
            }
        }
        ":+" | "+" => {
            let use_alt = if kind == ":+" {
                !empty
            } else {
                value.is_some()
            };
            if use_alt {
                expand(arg, vars, out)
            } else {
                Ok(())
            }
        }
        _ => {
            let missing = if kind == ":?" { empty } else { value.is_none() };
            if missing {
                let why = if arg.is_empty() {
                    "is required".to_owned()
                } else {
                    arg.to_owned()
                };
                Err(format!("variable `{name}`: {why}"))
            } else {
                let v = lookup(name, vars, out).unwrap_or_default();
                out.text.push_str(&v);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str, pairs: &[(&str, &str)], secret: &[&str]) -> Result<Interpolated, String> {
        let values = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let secret = secret.iter().map(|s| (*s).to_owned()).collect();
        interpolate(
            s,
            Vars {
                values: &values,
                secret: &secret,
            },
        )
    }

    fn text(s: &str, pairs: &[(&str, &str)]) -> String {
        run(s, pairs, &[]).unwrap().text
    }

    #[test]
    fn every_form_expands_as_compose_does() {
        let v = [("TAG", "1.4"), ("EMPTY", "")];
        assert_eq!(text("app:${TAG}", &v), "app:1.4");
        assert_eq!(text("app:$TAG-x", &v), "app:1.4-x");
        assert_eq!(text("${NOPE:-latest}", &v), "latest");
        assert_eq!(text("${EMPTY:-d}", &v), "d");
        assert_eq!(text("${EMPTY-d}", &v), "");
        assert_eq!(text("${NOPE-d}", &v), "d");
        assert_eq!(text("${TAG:+set}", &v), "set");
        assert_eq!(text("${NOPE:+set}", &v), "");
        assert_eq!(text("${NOPE:-${TAG}}", &v), "1.4");
        assert_eq!(text("cost $$5 ${TAG}", &v), "cost $5 1.4");
        assert_eq!(text("no vars", &v), "no vars");
    }

    #[test]
    fn errors_name_the_variable() {
        let e = run("${NOPE}", &[], &[]).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        let e = run("${PW:?give a password}", &[], &[]).unwrap_err();
        assert!(e.contains("`PW`: give a password"), "{e}");
        assert!(run("${TAG", &[], &[]).unwrap_err().contains("closing"));
        assert!(run("$ 5", &[], &[]).unwrap_err().contains("$$"));
        assert!(
            run("${1X}", &[], &[])
                .unwrap_err()
                .contains("variable name")
        );
        assert!(
            run("${X/a/b}", &[("X", "a")], &[])
                .unwrap_err()
                .contains(":-")
        );
    }

    #[test]
    fn secret_variables_are_tracked() {
        let r = run("user=${U} pass=${PW}", &[("U", "u"), ("PW", "p")], &["PW"]).unwrap();
        assert_eq!(r.text, "user=u pass=p");
        assert_eq!(r.secrets, BTreeSet::from(["PW".to_owned()]));
        let r = run("${U}", &[("U", "u"), ("PW", "p")], &["PW"]).unwrap();
        assert!(r.secrets.is_empty());
    }

    #[test]
    fn referenced_names_skip_escapes() {
        let names = referenced("a ${TAG:-x} $HOME $$NOT ${B}");
        assert_eq!(
            names,
            BTreeSet::from(["B".to_owned(), "HOME".to_owned(), "TAG".to_owned()])
        );
    }
}
