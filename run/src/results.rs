//! `results.json`: one [`EvalRecord`] per width, protocol and init, written by every evaluation
//! protocol through [`merge`] (the file's one writer) and read by deployment, selection and
//! comparisons through [`read`].

use crate::error::{Result, RunError};
use crate::layout::RESULTS;
use dspnet_model::slimmable::WIDTH_TOLERANCE;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One evaluation result (one element of `results.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Width multiplier.
    pub width: f64,
    /// Parameters of the standalone sub-network (backbone only).
    pub params: i64,
    /// Multiply-accumulates of one forward pass at the training resolution (the file calls
    /// them `flops`, as the field's tables do).
    #[serde(rename = "flops")]
    pub macs: u64,
    /// "knn", "linear", "semi-<subset>" (e.g. "semi-1%"), "detection", "segmentation", ...
    pub protocol: String,
    /// The protocol's headline metric in percent (top-1 accuracy; box mAP for detection, mIoU
    /// for segmentation).
    pub top1: f64,
    /// "pretrained" (the run's weights) or "random" (same architecture and seed, random init).
    pub init: String,
    /// Protocol settings (k, temperature, epochs, lr, ...), recorded with every result.
    pub settings: serde_json::Value,
    /// Further fields a protocol records (transfer: `metric`, `metrics`, `counts`, `losses`,
    /// `record`); kept as they are through [`merge`].
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl EvalRecord {
    /// True when both records are about the same width (within the model's tolerance),
    /// protocol and init: a newer one replaces an older one.
    pub fn same_slot(&self, other: &EvalRecord) -> bool {
        self.protocol == other.protocol
            && self.init == other.init
            && (self.width - other.width).abs() <= WIDTH_TOLERANCE
    }
}

/// The records of `run_dir/results.json`, in file order; empty when the run was not evaluated.
///
/// Errors: [`RunError::Records`] when the file exists but is not a dspnet results file;
/// unreadable file (with the path).
pub fn read(run_dir: &Path) -> Result<Vec<EvalRecord>> {
    let path = run_dir.join(RESULTS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| RunError::Records {
        message: format!("{} is not a dspnet-eval results file ({e}); delete it or rerun dspnet-eval", path.display()),
        path,
    })
}

/// Adds `records` to `run_dir/results.json` (created when missing): an existing record of the
/// same width, protocol and init ([`EvalRecord::same_slot`]) is replaced, every other record
/// kept in its place, and the new ones follow. Written atomically. Returns every record now in
/// the file.
///
/// Errors: as [`read`]; the write's, with the path.
pub fn merge(run_dir: &Path, records: &[EvalRecord]) -> Result<Vec<EvalRecord>> {
    let mut all = read(run_dir)?;
    all.retain(|old| !records.iter().any(|new| new.same_slot(old)));
    all.extend(records.iter().cloned());
    let bytes = serde_json::to_vec_pretty(&all).expect("records serialise");
    dspnet_core::fs::write_atomic(&run_dir.join(RESULTS), &bytes)?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(width: f64, protocol: &str, init: &str, top1: f64) -> EvalRecord {
        EvalRecord {
            width,
            params: 10,
            macs: 20,
            protocol: protocol.into(),
            top1,
            init: init.into(),
            settings: json!({}),
            extra: Default::default(),
        }
    }

    #[test]
    fn merge_replaces_the_same_slot_and_keeps_the_rest_with_their_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        // a transfer record with fields beyond EvalRecord's, written by an earlier evaluation
        let det = json!([{"width": 0.5, "params": 1, "flops": 2, "protocol": "detection", "top1": 0.5,
                          "init": "pretrained", "settings": {"epochs": 1}, "metric": "box mAP", "metrics": {"map": 0.005}}]);
        std::fs::write(dir.path().join(RESULTS), serde_json::to_vec(&det).unwrap()).unwrap();
        merge(dir.path(), &[rec(0.5, "knn", "pretrained", 40.0), rec(0.5, "knn", "random", 30.0)]).unwrap();
        // knn again: the pretrained 0.5 record is replaced in place of nothing else
        let all = merge(dir.path(), &[rec(0.5 + 1e-12, "knn", "pretrained", 41.0)]).unwrap();
        let got: Vec<(&str, &str, f64)> = all.iter().map(|r| (r.protocol.as_str(), r.init.as_str(), r.top1)).collect();
        assert_eq!(got, vec![("detection", "pretrained", 0.5), ("knn", "random", 30.0), ("knn", "pretrained", 41.0)]);
        // the file holds the transfer fields and calls the MACs "flops"
        let text = std::fs::read_to_string(dir.path().join(RESULTS)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["metrics"]["map"], 0.005);
        assert_eq!(v[0]["metric"], "box mAP");
        assert_eq!(v[1]["flops"], 20);
        assert!(v[1].get("macs").is_none() && v[1].get("extra").is_none(), "{text}");
    }

    #[test]
    fn a_foreign_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESULTS), b"{\"not\": \"a list\"}").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("results.json") && e.contains("rerun dspnet-eval") && !e.contains('\n'), "{e}");
        assert!(merge(dir.path(), &[]).is_err());
    }
}
