//! What the driver tells icemaint: its stdout lines prefixed `ICEMAINT_SPARK ` carry one JSON
//! event each (`started` with the application id, `result` with `rewrite_data_files`' row,
//! `error` with Spark's error line); every other line is Spark's log. Pure parsing.

use serde::{Deserialize, Serialize};

/// The prefix of the driver's protocol lines.
pub const PREFIX: &str = "ICEMAINT_SPARK ";

/// One protocol line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Started { application_id: String },
    Result { row: ResultRow },
    Error { message: String },
}

/// `rewrite_data_files`' result row (Iceberg 1.10 column names; older versions lack the last
/// two, which then read as zero).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ResultRow {
    pub rewritten_data_files_count: u64,
    pub added_data_files_count: u64,
    pub rewritten_bytes_count: u64,
    #[serde(default)]
    pub failed_data_files_count: u64,
    #[serde(default)]
    pub removed_delete_files_count: u64,
}

/// The event on a driver's stdout line, or `None` for a log line. A protocol line that does
/// not parse is an error (a driver of another version).
pub fn parse_line(line: &str) -> Option<Result<Event, String>> {
    let json = line.strip_prefix(PREFIX)?;
    Some(serde_json::from_str(json).map_err(|e| format!("unreadable driver line '{line}': {e}")))
}

/// The line that best says why a run failed, from the last lines of its log: the last one
/// naming an exception or error, else the last non-empty one.
pub fn error_line(tail: &[String]) -> Option<String> {
    let named = |l: &&String| {
        l.contains("Exception")
            || l.contains("Error")
            || l.contains("ERROR")
            || l.contains("error:")
    };
    tail.iter()
        .rev()
        .find(named)
        .or_else(|| tail.iter().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_and_log_lines() {
        assert_eq!(parse_line("25/01/01 INFO SparkContext: Running"), None);
        assert_eq!(
            parse_line(r#"ICEMAINT_SPARK {"event":"started","application_id":"app-1"}"#),
            Some(Ok(Event::Started {
                application_id: "app-1".into()
            }))
        );
        let r = parse_line(
            r#"ICEMAINT_SPARK {"event":"result","row":{"rewritten_data_files_count":8,"added_data_files_count":2,"rewritten_bytes_count":900}}"#,
        );
        let Some(Ok(Event::Result { row })) = r else {
            panic!("{r:?}")
        };
        assert_eq!(row.added_data_files_count, 2);
        assert_eq!(row.failed_data_files_count, 0);
        assert!(matches!(parse_line("ICEMAINT_SPARK {oops"), Some(Err(_))));
    }

    #[test]
    fn the_error_line_names_the_exception() {
        let tail: Vec<String> = [
            "Traceback (most recent call last):",
            "pyspark.errors.exceptions.captured.IllegalArgumentException: Cannot find table",
            "  ",
            "25/01/01 INFO ShutdownHookManager: Deleting directory",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            error_line(&tail).unwrap(),
            "pyspark.errors.exceptions.captured.IllegalArgumentException: Cannot find table"
        );
        assert_eq!(error_line(&["a".into(), " ".into()]).unwrap(), "a");
        assert_eq!(error_line(&[]), None);
    }
}
