//! JSON Patch building blocks: escaped pointers, `add` operations, appends that create
//! the array when absent, and label/annotation additions that create the map.

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation, RemoveOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A JSON Pointer from raw tokens; `Token::new` escapes `~` as `~0` and `/` as `~1`.
pub fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().map(|t| json_patch::jsonptr::Token::new(*t)))
}

pub(super) fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// Append items to an array, creating it when absent.
pub(super) fn append_all(
    ops: &mut Vec<PatchOperation>,
    tokens: &[&str],
    exists: bool,
    items: Vec<Value>,
) {
    if exists {
        for item in items {
            ops.push(add(&[tokens, &["-"]].concat(), item));
        }
    } else {
        ops.push(add(tokens, Value::Array(items)));
    }
}

/// Label/annotation additions that create the map when the pod has none.
pub(super) struct MetaOps {
    pub(super) ops: Vec<PatchOperation>,
    annotations: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    new_annotations: serde_json::Map<String, Value>,
    new_labels: serde_json::Map<String, Value>,
}

impl MetaOps {
    pub(super) fn new(pod: &Pod) -> Self {
        MetaOps {
            ops: Vec::new(),
            annotations: pod.metadata.annotations.clone(),
            labels: pod.metadata.labels.clone(),
            new_annotations: Default::default(),
            new_labels: Default::default(),
        }
    }

    pub(super) fn annotation(&mut self, key: &str, value: &str) {
        Self::set(
            &mut self.ops,
            &self.annotations,
            &mut self.new_annotations,
            "annotations",
            key,
            value,
        );
    }

    /// Remove an annotation when the pod has it (a stale skip reason).
    pub(super) fn remove_annotation(&mut self, key: &str) {
        if self
            .annotations
            .as_ref()
            .is_some_and(|m| m.contains_key(key))
        {
            self.ops.push(PatchOperation::Remove(RemoveOperation {
                path: pointer(&["metadata", "annotations", key]),
            }));
        }
    }

    pub(super) fn label(&mut self, key: &str, value: &str) {
        Self::set(
            &mut self.ops,
            &self.labels,
            &mut self.new_labels,
            "labels",
            key,
            value,
        );
    }

    fn set(
        ops: &mut Vec<PatchOperation>,
        existing: &Option<BTreeMap<String, String>>,
        fresh: &mut serde_json::Map<String, Value>,
        field: &str,
        key: &str,
        value: &str,
    ) {
        match existing {
            Some(m) if m.get(key).map(String::as_str) == Some(value) => {}
            Some(_) => ops.push(add(&["metadata", field, key], json!(value))),
            None => {
                // One `add` of the whole map; later keys update that op in place.
                fresh.insert(key.to_owned(), json!(value));
                let path = pointer(&["metadata", field]);
                let op = add(&["metadata", field], Value::Object(fresh.clone()));
                match ops.iter_mut().find(|o| o.path() == path.as_ptr()) {
                    Some(slot) => *slot = op,
                    None => ops.push(op),
                }
            }
        }
    }
}
