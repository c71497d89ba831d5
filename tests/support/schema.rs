//! Checks a JSON value against the part of JSON Schema that `asyncapi.json` uses: `type` (one or a
//! list), `required`, `properties`, `enum`, `const`, `allOf`, local `$ref`s and the `uuid` and
//! `date-time` formats. Unknown keywords fail the check, so the document cannot drift past it.

use serde_json::Value;

/// Every way `value` breaks `schema`, with the path to the offending part; empty when it conforms.
pub fn violations(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    check(document, schema, value, "$", &mut found);
    found
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn check(document: &Value, schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        found.push(format!("{path}: the schema is not an object"));
        return;
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "$ref" => {
                let pointer = rule.as_str().and_then(|r| r.strip_prefix('#')).unwrap_or_default();
                match document.pointer(pointer) {
                    Some(target) => check(document, target, value, path, found),
                    None => found.push(format!("{path}: unresolved $ref {rule}")),
                }
            }
            "allOf" => {
                for part in rule.as_array().into_iter().flatten() {
                    check(document, part, value, path, found);
                }
            }
            "type" => {
                let names: Vec<&str> = match rule {
                    Value::String(name) => vec![name.as_str()],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if !names.iter().any(|name| type_matches(name, value)) {
                    found.push(format!("{path}: {value} is not of type {rule}"));
                }
            }
            "required" => {
                for name in rule.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if value.get(name).is_none() {
                        found.push(format!("{path}: required property {name} is missing"));
                    }
                }
            }
            "properties" => {
                for (name, property) in rule.as_object().into_iter().flatten() {
                    if let Some(inner) = value.get(name) {
                        check(document, property, inner, &format!("{path}.{name}"), found);
                    }
                }
            }
            "enum" => {
                if !rule.as_array().is_some_and(|allowed| allowed.contains(value)) {
                    found.push(format!("{path}: {value} is not one of {rule}"));
                }
            }
            "const" => {
                if rule != value {
                    found.push(format!("{path}: {value} is not {rule}"));
                }
            }
            "format" => {
                let Some(text) = value.as_str() else { continue };
                let valid = match rule.as_str() {
                    Some("uuid") => uuid::Uuid::parse_str(text).is_ok(),
                    Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    _ => false,
                };
                if !valid {
                    found.push(format!("{path}: {text:?} is not a {rule}"));
                }
            }
            "description" | "title" | "examples" => {}
            other => found.push(format!("{path}: the checker does not know the keyword {other}")),
        }
    }
}
