//! Where in a document a JSON pointer points: the line an editor marks for a
//! validation error. Validation reports pointers (`/steps/0/task/connector`), and the
//! parsers keep no positions once a document is read, so the line is found again from
//! the text: keys by their name at the indentation the path has reached, sequence items
//! by their `- ` (YAML) or by counting the array's opening brackets and braces (JSON).
//! What cannot be followed further (a flow mapping `{ a: 1 }` on one line, say) stops at
//! the deepest line found, which is where that value is written.

/// The 1-based line `pointer` points at in `text`, or the deepest line on its way; `None`
/// only when not even its first segment is found.
pub fn line_of(text: &str, pointer: &str) -> Option<usize> {
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if segments.is_empty() {
        return Some(1);
    }
    let lines: Vec<&str> = text.lines().collect();
    let json = text.trim_start().starts_with('{');
    let mut found = None;
    // The lines of the current value, and the column its keys sit at (YAML) or must be
    // right of (JSON).
    let (mut from, mut to, mut column) = (0usize, lines.len(), 0usize);
    for seg in &segments {
        let hit = match seg.parse::<usize>() {
            Ok(i) if !json => yaml_item(&lines, from, to, column, i),
            Ok(i) => json_item(&lines, from, to, i),
            Err(_) => key(&lines, from, to, column, seg, json),
        };
        let Some((line, inner)) = hit else { break };
        found = Some(line + 1);
        from = line;
        column = inner;
        to = end_of(&lines, line, to, indent(lines[line]), json);
    }
    found
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The end (exclusive) of the value that starts on line `start` at `col`: the next line
/// indented no deeper, within `limit`.
fn end_of(lines: &[&str], start: usize, limit: usize, col: usize, json: bool) -> usize {
    if json {
        // A JSON value ends where the indentation comes back to its own level.
        for (i, l) in lines.iter().enumerate().take(limit).skip(start + 1) {
            if !blank(l) && indent(l) <= col {
                return i + 1;
            }
        }
        return limit;
    }
    for (i, l) in lines.iter().enumerate().take(limit).skip(start + 1) {
        if !blank(l) && indent(l) <= col && !l.trim_start().starts_with("- ") {
            return i;
        }
        if !blank(l) && indent(l) < col {
            return i;
        }
    }
    limit
}

/// The line holding `name:` (or `"name":`) as a key of the current mapping, and the
/// column of its value's keys.
fn key(
    lines: &[&str],
    from: usize,
    to: usize,
    column: usize,
    name: &str,
    json: bool,
) -> Option<(usize, usize)> {
    let plain = format!("{name}:");
    let quoted = format!("\"{name}\":");
    let single = format!("'{name}':");
    for (i, l) in lines.iter().enumerate().take(to).skip(from) {
        let t = l.trim_start();
        // A sequence item's first key shares the item's line: `- id: a`.
        let (t, col) = match t.strip_prefix("- ") {
            Some(rest) => (rest.trim_start(), l.len() - rest.trim_start().len()),
            None => (t, indent(l)),
        };
        if !json && col < column {
            continue;
        }
        if t.starts_with(&plain) || t.starts_with(&quoted) || t.starts_with(&single) {
            return Some((i, col + 1));
        }
    }
    None
}

/// The line where item `n` of the YAML sequence in `from..to` starts.
fn yaml_item(
    lines: &[&str],
    from: usize,
    to: usize,
    column: usize,
    n: usize,
) -> Option<(usize, usize)> {
    let mut dash_col = None;
    let mut count = 0;
    for (i, l) in lines.iter().enumerate().take(to).skip(from) {
        let t = l.trim_start();
        if !t.starts_with("- ") && t != "-" {
            continue;
        }
        let col = indent(l);
        // The sequence's own items: the first dash found sets their column; deeper
        // dashes belong to nested sequences.
        if col + 1 < column.saturating_sub(1) {
            continue;
        }
        match dash_col {
            None => dash_col = Some(col),
            Some(c) if col != c => continue,
            Some(_) => {}
        }
        if count == n {
            return Some((i, col + 2));
        }
        count += 1;
    }
    None
}

/// The line where element `n` of the JSON array opened in `from..to` starts: elements
/// are counted at the first indentation found inside the array.
fn json_item(lines: &[&str], from: usize, to: usize, n: usize) -> Option<(usize, usize)> {
    let mut col = None;
    let mut count = 0;
    for (i, l) in lines.iter().enumerate().take(to).skip(from + 1) {
        if blank(l) {
            continue;
        }
        let c = indent(l);
        let t = l.trim_start();
        if t.starts_with(']') || t.starts_with('}') {
            if col.is_none_or(|k| c < k) {
                break;
            }
            continue;
        }
        match col {
            None => col = Some(c),
            Some(k) if c != k => continue,
            Some(_) => {}
        }
        if count == n {
            return Some((i, c));
        }
        count += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
id: order
# a comment
steps:
  - id: fetch
    task:
      connector: http
      args: { url: \"https://x\" }
  - id: check
    choice:
      cases:
        - when: input.a > 1
          next: fetch
        - when: input.b
          next: nowhere
  - id: done
    task: { connector: nope }
";

    #[test]
    fn yaml_pointers_find_their_lines() {
        assert_eq!(line_of(YAML, ""), Some(1));
        assert_eq!(line_of(YAML, "/id"), Some(1));
        assert_eq!(line_of(YAML, "/steps"), Some(3));
        assert_eq!(line_of(YAML, "/steps/0"), Some(4));
        assert_eq!(line_of(YAML, "/steps/0/id"), Some(4));
        assert_eq!(line_of(YAML, "/steps/0/task/connector"), Some(6));
        assert_eq!(line_of(YAML, "/steps/1/choice/cases/1/next"), Some(14));
        // Inside a flow mapping: its line.
        assert_eq!(line_of(YAML, "/steps/2/task/connector"), Some(16));
        assert_eq!(line_of(YAML, "/steps/0/task/args/url"), Some(7));
        assert_eq!(line_of(YAML, "/nothing"), None);
    }

    #[test]
    fn yaml_sequences_at_their_keys_indentation_count_too() {
        let text = "id: x\nsteps:\n- id: a\n  wait: {}\n- id: b\n  fail: {}\n";
        assert_eq!(line_of(text, "/steps/1/fail"), Some(6));
        assert_eq!(line_of(text, "/steps/0/wait"), Some(4));
    }

    #[test]
    fn pretty_json_pointers_find_their_lines() {
        let doc = serde_json::json!({
            "id": "x",
            "steps": [
                {"id": "a", "task": {"connector": "http", "args": {"url": "u"}}},
                {"id": "b", "task": {"connector": "nope"}}
            ]
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let line = |n: usize| {
            text.lines()
                .nth(n - 1)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let at = line_of(&text, "/steps/1/task/connector").unwrap_or(0);
        assert_eq!(line(at), "\"connector\": \"nope\"");
        let at = line_of(&text, "/steps/0/task/args/url").unwrap_or(0);
        assert_eq!(line(at), "\"url\": \"u\"");
    }

    proptest::proptest! {
        #[test]
        fn any_text_and_pointer_give_a_line_inside_the_text_or_none(
            text in "[a-z: \\-\\n{}\\[\\]\"#]{0,200}",
            pointer in "(/[a-z0-9]{1,3}){0,5}",
        ) {
            if let Some(n) = line_of(&text, &pointer) {
                proptest::prop_assert!(n >= 1);
                proptest::prop_assert!(n <= text.lines().count().max(1));
            }
        }
    }
}
