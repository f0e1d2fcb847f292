//! TOML path editing: a value written at a dotted path of a scenario's text with
//! toml_edit, keeping the file's comments, layout and the type it already has there (an
//! integer field stays an integer, a float a float, a string a string).

use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::ParamValue;

/// Why a value cannot be written at a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TomlPathError {
    #[error("{path} is a table; give a field inside it")]
    IsATable { path: String },
    #[error("{path} is a {kind}; give a field or index inside it")]
    IsACollection { path: String, kind: &'static str },
    #[error("{path} is a {kind}, not a table")]
    NotATable { path: String, kind: &'static str },
    #[error("{path} has {len} {what}; index them from 0")]
    NoSuchIndex {
        path: String,
        len: usize,
        /// "entries" (an array of tables) or "elements" (an array).
        what: &'static str,
    },
}

/// Write `value` at a dotted path (array elements by index), creating missing tables.
pub fn set_path(doc: &mut DocumentMut, path: &str, value: &ParamValue) -> Result<(), TomlPathError> {
    let segments: Vec<&str> = path.split('.').collect();
    set_in(doc.as_table_mut(), false, &segments, 0, value)
}

fn set_in(
    table: &mut dyn TableLike,
    inline: bool,
    segments: &[&str],
    depth: usize,
    value: &ParamValue,
) -> Result<(), TomlPathError> {
    let key = segments[depth];
    let here = || segments[..=depth].join(".");
    if depth + 1 == segments.len() {
        return match table.get_mut(key) {
            None | Some(Item::None) => {
                table.insert(key, Item::Value(toml_value(value, None)));
                Ok(())
            }
            Some(Item::Value(old)) => replace(old, value, &here()),
            Some(_) => Err(TomlPathError::IsATable { path: here() }),
        };
    }
    if table.get(key).is_none_or(|item| item.is_none()) {
        let item = if inline {
            Item::Value(Value::InlineTable(InlineTable::new()))
        } else {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        };
        table.insert(key, item);
    }
    let item = table.get_mut(key).expect("present");
    match item {
        Item::Table(t) => set_in(t, false, segments, depth + 1, value),
        Item::Value(Value::InlineTable(t)) => set_in(t, true, segments, depth + 1, value),
        Item::ArrayOfTables(array) => {
            let index = index_at(segments, depth, array.len(), "entries")?;
            let t = array.get_mut(index).expect("index_at checked the length");
            if depth + 2 == segments.len() {
                return Err(TomlPathError::IsATable {
                    path: format!("{}.{}", here(), segments[depth + 1]),
                });
            }
            set_in(t, false, segments, depth + 2, value)
        }
        Item::Value(Value::Array(array)) => {
            let index = index_at(segments, depth, array.len(), "elements")?;
            let element = array.get_mut(index).expect("index_at checked the length");
            let path = format!("{}.{}", here(), segments[depth + 1]);
            match element {
                _ if depth + 2 == segments.len() => replace(element, value, &path),
                Value::InlineTable(t) => set_in(t, true, segments, depth + 2, value),
                other => Err(TomlPathError::NotATable {
                    kind: other.type_name(),
                    path,
                }),
            }
        }
        Item::Value(other) => Err(TomlPathError::NotATable {
            path: here(),
            kind: other.type_name(),
        }),
        Item::None => unreachable!("inserted above"),
    }
}

/// The segment after `depth` as an index into the `len` entries (or elements) of the
/// array at `depth`.
fn index_at(segments: &[&str], depth: usize, len: usize, what: &'static str) -> Result<usize, TomlPathError> {
    segments[depth + 1]
        .parse::<usize>()
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| TomlPathError::NoSuchIndex {
            path: segments[..=depth].join("."),
            len,
            what,
        })
}

fn replace(old: &mut Value, value: &ParamValue, path: &str) -> Result<(), TomlPathError> {
    if matches!(old, Value::Array(_) | Value::InlineTable(_)) {
        return Err(TomlPathError::IsACollection {
            path: path.to_string(),
            kind: old.type_name(),
        });
    }
    let decor = old.decor().clone();
    *old = toml_value(value, Some(old));
    *old.decor_mut() = decor;
    Ok(())
}

/// The TOML value to write where the file has `old` (or nothing): keeps the file's
/// type when the value converts without loss.
fn toml_value(value: &ParamValue, old: Option<&Value>) -> Value {
    match (value, old) {
        (ParamValue::Float(f), Some(Value::Integer(_))) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Value::from(*f as i64)
        }
        (ParamValue::Int(i), Some(Value::Float(_))) => Value::from(*i as f64),
        (ParamValue::Int(_) | ParamValue::Float(_) | ParamValue::Bool(_), Some(Value::String(_))) => {
            Value::from(value.to_string())
        }
        (ParamValue::Int(i), _) => Value::from(*i),
        (ParamValue::Float(f), _) => Value::from(*f),
        (ParamValue::Bool(b), _) => Value::from(*b),
        (ParamValue::Str(s), _) => Value::from(s.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_the_type_the_file_has() {
        let mut doc: DocumentMut = "a = 1\nb = 2.5\nc = \"10m\" # note\n[t]\nx = { y = 1 }\n"
            .parse()
            .unwrap();
        set_path(&mut doc, "a", &ParamValue::Float(3.0)).unwrap();
        set_path(&mut doc, "b", &ParamValue::Int(4)).unwrap();
        set_path(&mut doc, "c", &ParamValue::Str("20m".into())).unwrap();
        set_path(&mut doc, "t.x.y", &ParamValue::Int(7)).unwrap();
        set_path(&mut doc, "t.new.z", &ParamValue::Bool(true)).unwrap();
        let text = doc.to_string();
        assert!(text.contains("a = 3\n"), "{text}");
        assert!(text.contains("b = 4.0\n"), "{text}");
        assert!(text.contains("c = \"20m\" # note"), "{text}");
        assert!(text.contains("x = { y = 7 }"), "{text}");
        assert!(text.contains("[t.new]\nz = true"), "{text}");
        assert!(
            set_path(&mut doc, "a.b", &ParamValue::Int(1))
                .unwrap_err()
                .to_string()
                .contains("a is a integer")
        );
        assert!(
            set_path(&mut doc, "t", &ParamValue::Int(1))
                .unwrap_err()
                .to_string()
                .contains("t is a table")
        );
    }
}
