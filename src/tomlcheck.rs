//! Checking the hand-written TOML files, the daemon config and the policies, so that every
//! problem is reported at once, each on its line: [`Problem`], the line of every key
//! ([`key_lines`]), and a [`Checker`] with the typed readers both files use (a value of the
//! wrong type is a problem, not a stop).
//!
//! Both files are read by hand rather than through serde's derives because serde stops at the
//! first error and knows no line numbers for values set by environment variables.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

/// One problem in one configuration or policy file, rendered as `file:line: message`, or
/// `file: message` when no line applies (line 0: the file could not be read, or the problem
/// comes from an environment variable or a missing section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// `section.key`, or `key` at the top level.
pub fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// 1-based line number of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

/// The line of every key of a TOML document by dotted path (`server.listen`,
/// `catalog.properties.s3.endpoint`; a section's path is its header's line); empty when `text`
/// is not TOML.
pub fn key_lines(text: &str) -> HashMap<String, usize> {
    fn walk(text: &str, prefix: &str, t: &toml::de::DeTable<'_>, out: &mut HashMap<String, usize>) {
        for (k, v) in t.iter() {
            let path = join(prefix, k.get_ref());
            out.insert(path.clone(), line_of(text, k.span().start));
            if let toml::de::DeValue::Table(inner) = v.get_ref() {
                walk(text, &path, inner, out);
            }
        }
    }
    let mut out = HashMap::new();
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        walk(text, "", doc.get_ref(), &mut out);
    }
    out
}

/// Folds a multi-line library message (a TOML or cron parser's caret diagram) into one line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects the problems of one file, each on the line of the key it is about, or attributed to
/// the environment variable that set the value.
#[derive(Debug)]
pub struct Checker {
    pub file: String,
    lines: HashMap<String, usize>,
    /// The line of a path the file does not have (a default, a missing key).
    fallback_line: usize,
    /// The environment variable that set each dotted key path (or created each section).
    from_env: HashMap<String, String>,
    pub problems: Vec<Problem>,
}

impl Checker {
    pub fn new(file: String, lines: HashMap<String, usize>, fallback_line: usize) -> Self {
        Checker {
            file,
            lines,
            fallback_line,
            from_env: HashMap::new(),
            problems: Vec::new(),
        }
    }

    /// Records that environment variable `var` set the value at `path`.
    pub fn set_from_env(&mut self, path: String, var: String) {
        self.from_env.insert(path, var);
    }

    /// The line of `path` in the file, or the fallback.
    pub fn line(&self, path: &str) -> usize {
        self.lines.get(path).copied().unwrap_or(self.fallback_line)
    }

    /// A problem with the value at `path`: on its line, or naming the variable that set it.
    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        let message = message.into();
        let problem = match self.from_env.get(path) {
            Some(var) => Problem {
                file: self.file.clone(),
                line: 0,
                message: format!("environment variable {var}: {message}"),
            },
            None => Problem {
                file: self.file.clone(),
                line: self.line(path),
                message,
            },
        };
        self.problems.push(problem);
    }

    /// A problem on a given line of the file.
    pub fn problem_at(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            message: message.into(),
        });
    }

    /// A missing required key (or section), on the line of its section's header when there is
    /// one in the file.
    pub fn missing(&mut self, section: &str, what: &str) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: self.lines.get(section).copied().unwrap_or(0),
            message: format!("missing {what}"),
        });
    }

    /// A problem with environment variable `var` itself (not with a value it set).
    pub fn env_problem(&mut self, var: &str, message: &str) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: 0,
            message: format!("environment variable {var}: {message}"),
        });
    }

    pub fn unknown_keys(&mut self, section: &str, t: &toml::Table, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                let path = join(section, k);
                self.err(
                    &path,
                    format!(
                        "unknown key '{path}' (expected one of: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// The table at `path` (a dotted path whose last part is a key of `parent`), if present and a
    /// table.
    pub fn section<'t>(&mut self, parent: &'t toml::Table, path: &str) -> Option<&'t toml::Table> {
        let key = path.rsplit('.').next().unwrap_or(path);
        match parent.get(key)? {
            toml::Value::Table(t) => Some(t),
            other => {
                self.err(
                    path,
                    format!(
                        "'{path}' must be a table ([{path}]), not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    pub fn string(&mut self, section: &str, t: &toml::Table, key: &str) -> Option<String> {
        let path = join(section, key);
        match t.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    &path,
                    format!("'{path}' must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, section: &str, t: &toml::Table, key: &str, default: bool) -> bool {
        let path = join(section, key);
        match t.get(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.err(
                    &path,
                    format!("'{path}' must be true or false, not {}", other.type_str()),
                );
                default
            }
        }
    }

    /// An integer of at least `min`.
    pub fn uint(&mut self, section: &str, t: &toml::Table, key: &str, min: u64) -> Option<u64> {
        let path = join(section, key);
        match t.get(key)? {
            toml::Value::Integer(n) if *n >= min as i64 => Some(*n as u64),
            toml::Value::Integer(n) if min == 0 => {
                self.err(&path, format!("'{path}' must be zero or more, not {n}"));
                None
            }
            toml::Value::Integer(n) => {
                self.err(&path, format!("'{path}' must be at least {min}, not {n}"));
                None
            }
            other => {
                self.err(
                    &path,
                    format!("'{path}' must be an integer, not {}", other.type_str()),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_land_on_their_lines_or_name_the_variable() {
        let text = "a = 1\n[s]\nb = \"x\"\nc = -1\n";
        let doc: toml::Table = toml::from_str(text).unwrap();
        let mut ck = Checker::new("f.toml".into(), key_lines(text), 0);
        ck.set_from_env("s.c".into(), "ICEMAINT__S__C".into());
        let s = ck.section(&doc, "s").unwrap();
        assert_eq!(ck.uint("s", s, "b", 0), None);
        assert_eq!(ck.uint("s", s, "c", 0), None);
        assert!(ck.bool("s", s, "missing", true));
        ck.unknown_keys("", &doc, &["s"]);
        ck.missing("s", "key 's.d'");
        let lines: Vec<String> = ck.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "f.toml:3: 's.b' must be an integer, not string",
                "f.toml: environment variable ICEMAINT__S__C: 's.c' must be zero or more, not -1",
                "f.toml:1: unknown key 'a' (expected one of: s)",
                "f.toml:2: missing key 's.d'",
            ]
        );
        assert_eq!(line_of("x\ny\n", 2), 2);
    }
}
