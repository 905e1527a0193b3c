//! XML answers as JSON step output: an element with element children becomes an object
//! keyed by local names (repeated names become arrays), a leaf becomes its text, and
//! attributes appear as `@name`.

use roxmltree::Node;
use serde_json::{Map, Value};

pub(crate) fn to_json(node: Node<'_, '_>) -> Value {
    let elements: Vec<Node<'_, '_>> = node.children().filter(Node::is_element).collect();
    let mut map = Map::new();
    for a in node.attributes() {
        map.insert(
            format!("@{}", a.name()),
            Value::String(a.value().to_owned()),
        );
    }
    if elements.is_empty() {
        let text: String = node
            .children()
            .filter(Node::is_text)
            .filter_map(|t| t.text())
            .collect();
        let text = text.trim().to_owned();
        if map.is_empty() {
            return Value::String(text);
        }
        if !text.is_empty() {
            map.insert("#text".into(), Value::String(text));
        }
        return Value::Object(map);
    }
    for child in elements {
        let key = child.tag_name().name().to_owned();
        let value = to_json(child);
        match map.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_become_objects_leaves_text_and_repeats_arrays() {
        let doc = roxmltree::Document::parse(
            r#"<r xmlns:m="urn:x"><m:a id="1">x &amp; y</m:a><b>1</b><b>2</b><c><d/></c></r>"#,
        )
        .unwrap();
        assert_eq!(
            to_json(doc.root_element()),
            json!({"a": {"@id": "1", "#text": "x & y"}, "b": ["1", "2"], "c": {"d": ""}})
        );
    }
}
