//! Config text → raw `(key, value, line)` entries; no knowledge of what keys mean.

use std::path::Path;

use super::ConfigError;
use crate::limits::MAX_CONFIG_LINE;

/// One `key = value` line, comments and surrounding blanks removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub value: &'a str,
    /// 1-based line number.
    pub line: usize,
}

/// Splits config text into entries. Errors: a line without `=`, an empty
/// key or value, an overlong line, control characters.
pub fn lex<'a>(text: &'a str, source: &Path) -> Result<Vec<Entry<'a>>, ConfigError> {
    let mut entries = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let err = |msg: String| ConfigError::new(source, Some(line), msg);
        // Files edited on Windows end lines with CRLF.
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.len() > MAX_CONFIG_LINE {
            return Err(err(format!("line is longer than {MAX_CONFIG_LINE} bytes")));
        }
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(c) = content.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(err(format!(
                "control character \"{}\" is not allowed",
                c.escape_default()
            )));
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(err(format!(
                "expected 'key = value', found '{}'",
                shorten(content)
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(err("missing key before '='".to_owned()));
        }
        if key.contains(char::is_whitespace) {
            return Err(err(format!(
                "'{}' is not a key: keys are single words like max_sessions",
                shorten(key)
            )));
        }
        if value.is_empty() {
            return Err(err(format!("missing value for '{key}'")));
        }
        entries.push(Entry { key, value, line });
    }
    Ok(entries)
}

/// Cuts a `#` comment: at the start of the line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut prev_blank = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_blank {
            return line.get(..i).unwrap_or("");
        }
        prev_blank = c == ' ' || c == '\t';
    }
    line
}

/// Quotes at most 60 characters of a bad line back to the admin.
pub(super) fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or("")),
        None => s.to_owned(),
    }
}
