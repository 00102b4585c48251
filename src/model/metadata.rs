//! Metadata: the caller's JSON object stored with an account, and its checks.

use serde_json::Value;

use crate::error::LedgerError;
use crate::limits::METADATA_BYTES_MAX;

/// Checks metadata before it is sent: a JSON object, at most [`METADATA_BYTES_MAX`] bytes as
/// compact JSON, with no NUL character in any key or string (`jsonb` refuses `\u0000`).
pub(crate) fn check_metadata(field: &'static str, metadata: &Value) -> Result<(), LedgerError> {
    let invalid = |reason: String| LedgerError::InvalidInput { field, reason };
    if !metadata.is_object() {
        return Err(invalid(format!("must be a JSON object, not {}", kind(metadata))));
    }
    if has_nul(metadata) {
        return Err(invalid("contains a NUL character".into()));
    }
    let bytes = serde_json::to_vec(metadata).map_err(|e| invalid(e.to_string()))?.len();
    if bytes > METADATA_BYTES_MAX {
        return Err(invalid(format!("{bytes} bytes of JSON, more than {METADATA_BYTES_MAX}")));
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether a NUL character appears in any string or key. Iterative: a deeply nested value
/// cannot exhaust the stack.
fn has_nul(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_bounded_objects_without_nul_pass() {
        assert!(check_metadata("metadata", &json!({})).is_ok());
        assert!(check_metadata("metadata", &json!({"a": [1, {"b": "c"}]})).is_ok());
        for bad in [json!(null), json!(1), json!("x"), json!([1]), json!(true)] {
            assert!(check_metadata("metadata", &bad).is_err(), "{bad}");
        }
        assert!(check_metadata("metadata", &json!({"a": {"b": ["x\u{0}"]}})).is_err());
        assert!(check_metadata("metadata", &json!({"k\u{0}": 1})).is_err());
        let at_limit = json!({ "k": "x".repeat(METADATA_BYTES_MAX - 8) });
        assert_eq!(serde_json::to_vec(&at_limit).map(|v| v.len()).ok(), Some(METADATA_BYTES_MAX));
        assert!(check_metadata("metadata", &at_limit).is_ok());
        let over = json!({ "k": "x".repeat(METADATA_BYTES_MAX - 7) });
        assert!(check_metadata("metadata", &over).is_err());
    }
}
