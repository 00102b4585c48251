//! Metadata: the caller's JSON object stored with an account or a money movement, and its
//! checks.

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

/// Checks a money movement's metadata (transfers, postings, holds, reversals): the rules of
/// [`check_metadata`], under the field name `metadata`. `None` passes.
pub(crate) fn check_movement_metadata(metadata: Option<&Value>) -> Result<(), LedgerError> {
    metadata.map_or(Ok(()), |m| check_metadata("metadata", m))
}

/// A money movement's metadata as the ledger stores and sends it: `None` for none and for the
/// empty object (the column is NULL then, and reads show `{}`), so that "none" and `{}` are one
/// value to the idempotency comparison and cost a plain movement nothing.
pub(crate) fn stored_metadata(metadata: Option<&Value>) -> Option<&Value> {
    metadata.filter(|m| !m.as_object().is_some_and(|o| o.is_empty()))
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

    #[test]
    fn a_movement_without_metadata_and_one_with_an_empty_object_store_the_same() {
        assert_eq!(stored_metadata(None), None);
        assert_eq!(stored_metadata(Some(&json!({}))), None);
        assert_eq!(stored_metadata(Some(&json!({"a": 1}))), Some(&json!({"a": 1})));
        assert!(check_movement_metadata(None).is_ok());
        assert!(check_movement_metadata(Some(&json!({"order": 7}))).is_ok());
        assert!(matches!(
            check_movement_metadata(Some(&json!([1]))),
            Err(LedgerError::InvalidInput { field: "metadata", .. })
        ));
    }
}
