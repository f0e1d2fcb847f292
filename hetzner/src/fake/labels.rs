//! Hetzner's label selector language, as its API description documents it:
//! `k==v`, `k=v`, `k!=v`, `k`, `!k`, `k in (v1,v2)`, `k notin (v1,v2)`, joined by commas
//! (all must hold).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector; the error says which expression is wrong.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for expression in split_top_level(text)? {
            let expression = expression.trim();
            if expression.is_empty() {
                return Err(format!("empty expression in label selector {text:?}"));
            }
            requirements.push(parse_expression(expression)?);
        }
        Ok(Selector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
        })
    }
}

fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ')' in label selector {text:?}"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed '(' in label selector {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_expression(expression: &str) -> Result<Requirement, String> {
    if let Some(key) = expression.strip_prefix('!') {
        return Ok(Requirement::NotExists(checked_key(key.trim(), expression)?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, list)) = expression.split_once(operator) {
            let key = checked_key(key.trim(), expression)?;
            let list = list.trim();
            let inner = list
                .strip_prefix('(')
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| format!("expected (v1,v2,...) after `{}` in {expression:?}", operator.trim()))?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
            return Ok(if negated {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            });
        }
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = expression.split_once(operator) {
            let key = checked_key(key.trim(), expression)?;
            let value = value.trim().to_owned();
            return Ok(if negated {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            });
        }
    }
    Ok(Requirement::Exists(checked_key(expression, expression)?))
}

fn checked_key(key: &str, expression: &str) -> Result<String, String> {
    let valid = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?} in {expression:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_documented_examples_select_what_the_documentation_says() {
        let prod_backend = labels(&[("env", "production"), ("type", "backend")]);
        let prod_db = labels(&[("env", "production"), ("type", "database")]);
        let staging = labels(&[("env", "staging")]);
        let bare = labels(&[]);

        let selector = Selector::parse("env=production,type!=database").unwrap();
        assert!(selector.matches(&prod_backend));
        assert!(!selector.matches(&prod_db));
        assert!(!selector.matches(&staging));

        let selector = Selector::parse("env in (testing,staging)").unwrap();
        assert!(selector.matches(&staging));
        assert!(!selector.matches(&prod_backend));
        assert!(!selector.matches(&bare));

        let selector = Selector::parse("!type").unwrap();
        assert!(selector.matches(&staging));
        assert!(!selector.matches(&prod_db));

        let selector = Selector::parse("env notin (production), env").unwrap();
        assert!(selector.matches(&staging));
        assert!(!selector.matches(&prod_db));
        assert!(!selector.matches(&bare));

        let selector = Selector::parse("payperplay/platform==pp,type").unwrap();
        assert!(selector.matches(&labels(&[("payperplay/platform", "pp"), ("type", "")])));
    }

    #[test]
    fn a_malformed_selector_is_an_error_naming_it() {
        assert!(Selector::parse("env in (a,b").unwrap_err().contains("unclosed"));
        assert!(
            Selector::parse("env in a,b")
                .unwrap_err()
                .contains("expected (v1,v2,...)")
        );
        assert!(Selector::parse("a,,b").unwrap_err().contains("empty expression"));
        assert!(Selector::parse("bad key=1").unwrap_err().contains("invalid label key"));
    }
}
