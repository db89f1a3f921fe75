//! Writing values into PromQL: the escaping that every query, builtin or custom, uses.

/// `value` as the inside of a PromQL double-quoted string: backslashes, quotes and line
/// breaks escaped, so a label value can never end the string or change the selector.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a regular expression (RE2, as Prometheus reads them) that matches exactly it.
pub fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
