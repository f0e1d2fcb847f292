//! Loading a scenario: the TOML text parsed (with `extends`: a scenario starts from
//! another file, tables merged key by key), validated, its trace loaded; every error
//! names the file, the line and the field.

use std::path::{Path, PathBuf};

use super::{Scenario, ScenarioError, ScenarioWarning, WorkloadKind};

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.into(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parse and validate scenario text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let located = Locator::new(text);
        let syntax = |e: toml::de::Error| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = located.line_column(offset);
            ScenarioError::Invalid {
                file: file.into(),
                line,
                column,
                field: located.path_at(offset).unwrap_or_else(|| "(document)".to_string()),
                message: e.message().trim().to_string(),
            }
        };
        let table: toml::Table = toml::from_str(text).map_err(&syntax)?;
        if table.contains_key("extends") {
            return Scenario::parse_extended(table, text, file);
        }
        let mut scenario: Scenario = toml::from_str(text).map_err(&syntax)?;
        scenario.validate().map_err(|(field, message)| {
            let offset = located.offset_of(&field).unwrap_or(0);
            let (line, column) = located.line_column(offset);
            ScenarioError::Invalid {
                file: file.into(),
                line,
                column,
                field,
                message,
            }
        })?;
        let sources = [(file.to_path_buf(), text.to_string())];
        scenario.warnings = scenario
            .lint(&table)
            .into_iter()
            .map(|(field, message)| Scenario::warning_in(&sources, field, message))
            .collect();
        scenario.load_trace(file)
    }

    /// A scenario that `extends` another: merge the chain of files, then deserialize,
    /// and point errors at whichever file sets the offending field.
    fn parse_extended(table: toml::Table, text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let mut sources = vec![(file.to_path_buf(), text.to_string())];
        let own = table.clone();
        let mut merged = table;
        let mut seen = vec![file.to_path_buf()];
        while let Some(parent) = merged.remove("extends") {
            let (child_file, _) = sources.last().expect("at least this file");
            let Some(relative) = parent.as_str() else {
                return Err(Scenario::error_in(&sources, "extends", "must be a file name".into()));
            };
            let path = child_file.parent().unwrap_or(Path::new(".")).join(relative);
            if seen.contains(&path) {
                return Err(Scenario::error_in(
                    &sources,
                    "extends",
                    format!("{} extends itself", path.display()),
                ));
            }
            seen.push(path.clone());
            let parent_text = std::fs::read_to_string(&path).map_err(|source| ScenarioError::Io {
                file: path.clone(),
                source,
            })?;
            let located = Locator::new(&parent_text);
            let mut parent_table: toml::Table = toml::from_str(&parent_text).map_err(|e| {
                let (line, column) = located.line_column(e.span().map_or(0, |s| s.start));
                ScenarioError::Invalid {
                    file: path.clone(),
                    line,
                    column,
                    field: "(document)".into(),
                    message: e.message().trim().to_string(),
                }
            })?;
            // Expectations belong to the file that states them: a scenario that extends
            // another describes another situation.
            parent_table.remove("expect");
            merge(&mut parent_table, merged);
            merged = parent_table;
            sources.push((path, parent_text));
        }
        let mut scenario: Scenario = serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            // `a.b[0].c` as the other errors write it: `a.b.0.c`.
            let field = e.path().to_string().replace('[', ".").replace(']', "");
            let message = e.inner().message().trim().to_string();
            Scenario::error_in(&sources, &field, message)
        })?;
        scenario
            .validate()
            .map_err(|(field, message)| Scenario::error_in(&sources, &field, message))?;
        scenario.warnings = scenario
            .lint(&own)
            .into_iter()
            .map(|(field, message)| Scenario::warning_in(&sources, field, message))
            .collect();
        scenario.load_trace(file)
    }

    /// A warning at `field`, located like an error.
    fn warning_in(sources: &[(PathBuf, String)], field: String, message: String) -> ScenarioWarning {
        match Scenario::error_in(sources, &field, message) {
            ScenarioError::Invalid {
                file,
                line,
                field,
                message,
                ..
            } => ScenarioWarning {
                file,
                line,
                field,
                message,
            },
            ScenarioError::Io { .. } | ScenarioError::Trace(_) => unreachable!("error_in makes Invalid"),
        }
    }

    /// An error at `field`, located in the first of `sources` (child first) that sets it.
    fn error_in(sources: &[(PathBuf, String)], field: &str, message: String) -> ScenarioError {
        for (file, text) in sources {
            let located = Locator::new(text);
            if let Some(offset) = located.offset_of(field) {
                let (line, column) = located.line_column(offset);
                return ScenarioError::Invalid {
                    file: file.clone(),
                    line,
                    column,
                    field: field.to_string(),
                    message,
                };
            }
        }
        ScenarioError::Invalid {
            file: sources[0].0.clone(),
            line: 1,
            column: 1,
            field: field.to_string(),
            message,
        }
    }

    fn load_trace(self, file: &Path) -> Result<Scenario, ScenarioError> {
        let scenario = self;
        if scenario.workload.kind == WorkloadKind::Trace {
            let relative = scenario.workload.path.clone().expect("validated");
            let path = match file.parent() {
                Some(dir) if relative.is_relative() => dir.join(&relative),
                _ => relative,
            };
            let trace = crate::trace::Trace::load(&path)?;
            return scenario.with_trace(trace);
        }
        Ok(scenario)
    }

    /// Replace the workload with a loaded trace.
    pub fn with_trace(mut self, trace: std::sync::Arc<crate::trace::Trace>) -> Result<Scenario, ScenarioError> {
        self.workload.kind = WorkloadKind::Trace;
        self.workload.path = Some(trace.file.clone());
        self.check_trace(&trace)?;
        self.trace = Some(trace);
        Ok(self)
    }

    fn check_trace(&self, trace: &crate::trace::Trace) -> Result<(), ScenarioError> {
        use crate::workload::WorkEvent;
        let bad = |message: String| {
            ScenarioError::Trace(crate::trace::TraceError::Invalid {
                file: trace.file.clone(),
                line: 0,
                message,
            })
        };
        let servers = trace.setup.iter().chain(trace.events.iter().map(|(_, e)| e));
        for event in servers {
            if let WorkEvent::CreateServer { ram_mib, .. } = event
                && !self.core.tiers_mib.contains(ram_mib)
            {
                return Err(bad(format!(
                    "ram_gb: {} GB is not one of the scenario's core.tiers_gb",
                    ram_mib / 1024
                )));
            }
        }
        Ok(())
    }
}

/// Merge `child` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, child: toml::Table) {
    for (key, value) in child {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(c)) => merge(b, c),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Maps byte offsets to lines and dotted field paths, using toml_edit's spans.
struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    /// The deepest key whose entry contains `offset`.
    fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        descend_table(doc.as_table(), offset, &mut path);
        (!path.is_empty()).then(|| path.join("."))
    }

    /// Where the entry for a dotted path (array elements by index) starts.
    fn offset_of(&self, dotted: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let parts: Vec<&str> = dotted.split('.').collect();
        find_in_table(doc.as_table(), &parts)
    }
}

fn find_in_table(table: &dyn toml_edit::TableLike, parts: &[&str]) -> Option<usize> {
    let (first, rest) = parts.split_first()?;
    let (key, item) = table.get_key_value(first)?;
    let here = key.span().map(|s| s.start);
    if rest.is_empty() {
        return here;
    }
    let deeper = match item {
        toml_edit::Item::ArrayOfTables(array) => {
            let table = array.get(rest[0].parse().ok()?)?;
            find_in_table(table, &rest[1..]).or(table.span().map(|s| s.start))
        }
        toml_edit::Item::Value(toml_edit::Value::Array(array)) => rest[0]
            .parse::<usize>()
            .ok()
            .and_then(|i| array.get(i))
            .and_then(|v| v.span())
            .map(|s| s.start),
        other => other.as_table_like().and_then(|t| find_in_table(t, rest)),
    };
    deeper.or(here)
}

fn descend_table(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(|k| k.span());
        let contains =
            |span: &Option<std::ops::Range<usize>>| span.as_ref().is_some_and(|s| s.start <= offset && offset <= s.end);
        let item_span = match item {
            toml_edit::Item::Value(v) => v.span(),
            toml_edit::Item::Table(t) => t.span(),
            _ => None,
        };
        let in_value = contains(&item_span) || contains(&key_span);
        match item {
            toml_edit::Item::ArrayOfTables(array) => {
                for (i, t) in array.iter().enumerate() {
                    if contains(&t.span()) {
                        path.push(key.to_string());
                        path.push(i.to_string());
                        descend_table(t, offset, path);
                        return;
                    }
                }
            }
            toml_edit::Item::Table(t) => {
                // A [table] header's span covers only the header; its entries are
                // elsewhere in the file, so look inside regardless.
                let depth = path.len();
                path.push(key.to_string());
                descend_table(t, offset, path);
                if path.len() > depth + 1 || contains(&key_span) {
                    return;
                }
                path.truncate(depth);
            }
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) if in_value => {
                path.push(key.to_string());
                descend_table(t, offset, path);
                return;
            }
            _ if in_value => {
                path.push(key.to_string());
                return;
            }
            _ => {}
        }
    }
}
