//! Spark-compatible `rewrite_data_files` options: names, defaults and validation.
//! (Placeholder until the planner lands: accepts nothing but known names.)

use std::collections::{BTreeMap, HashMap};

/// A bad option: its key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for OptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "option '{}': {}", self.key, self.message)
    }
}

pub const KNOWN_OPTIONS: &[&str] = &["target-file-size-bytes", "min-input-files"];

/// Placeholder resolution.
pub fn resolve(
    options: &BTreeMap<String, String>,
    _table_properties: &HashMap<String, String>,
) -> Result<(), Vec<OptionError>> {
    let errors: Vec<OptionError> = options
        .iter()
        .filter_map(|(k, v)| {
            if !KNOWN_OPTIONS.contains(&k.as_str()) {
                Some(OptionError {
                    key: k.clone(),
                    message: "unknown option".into(),
                })
            } else if v.parse::<u64>().is_err() {
                Some(OptionError {
                    key: k.clone(),
                    message: format!("expected a positive integer, not '{v}'"),
                })
            } else {
                None
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
