//! Detection and segmentation transfer of every width (issue 7; the DSPNet paper, Wang et al.,
//! arXiv 2207.06075, Sec. 4.3, fine-tunes its sub-networks as detection/segmentation
//! backbones): for each width, [`export_loaded`] writes `RUN/export/<width_tag>`, the Python tool
//! `python -m dspnet_export.transfer {detect,segment}` (tools/python/dspnet_export) fine-tunes a
//! torchvision Faster R-CNN with FPN / an FCN-style FPN head on it and scores it (COCO box mAP /
//! mIoU), and the result is merged into `RUN/results.json` as an [`EvalRecord`] like the
//! kNN/linear ones, with `metric`/`metrics`/`counts`/`losses`/`record` as extra fields.
//! `dspnet-eval --protocol detection,segmentation` runs [`Transfer`].
//!
//! The Python interpreter is the project's venv found next to the running binary
//! ([`PythonTool::find`]); its packages are checked before any work ([`PythonTool::check`]).

use crate::error::{EvalError, Result};
use crate::protocol::{EvalContext, EvalProtocol, Protocol};
use dspnet_deploy::{export_loaded, load_run};
use dspnet_model::width_tag;
use dspnet_run::layout::{EXPORT_DIR, TRANSFER_DIR};
use dspnet_run::EvalRecord;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Sub-command of `python -m dspnet_export.transfer` for a transfer protocol.
fn task(p: Protocol) -> &'static str {
    match p {
        Protocol::Segmentation => "segment",
        _ => "detect",
    }
}

/// What `top1` holds for a transfer protocol (in percent).
fn metric(p: Protocol) -> &'static str {
    match p {
        Protocol::Segmentation => "mIoU, percent",
        _ => "box mAP@[.5:.95] (COCOeval), percent",
    }
}

/// The venv's Python and the checkout's `dspnet_export` sources to put on `PYTHONPATH`.
#[derive(Clone, Debug)]
pub struct PythonTool {
    /// Interpreter (`.venv/bin/python`).
    pub python: PathBuf,
    /// `tools/python/dspnet_export` of the checkout the binary was built from, when present
    /// (prepended to `PYTHONPATH` so its `dspnet_export` is the one imported).
    pub package_dir: Option<PathBuf>,
}

impl PythonTool {
    /// `DSPNET_PYTHON` if set; else `.venv/bin/python` in the nearest folder above the running
    /// binary that has one (`target/release/dspnet-eval` -> the checkout's `.venv`); else
    /// `$VIRTUAL_ENV/bin/python`.
    ///
    /// # Errors
    /// [`EvalError::Transfer`] when none exists (says to run `bash tools/setup.sh`).
    pub fn find() -> Result<Self> {
        let exe = std::env::current_exe().ok();
        let package_dir = exe.as_ref().and_then(|e| {
            e.ancestors()
                .map(|a| a.join("tools/python/dspnet_export"))
                .find(|d| d.join("dspnet_export/transfer/__init__.py").is_file())
        });
        if let Some(p) = std::env::var_os("DSPNET_PYTHON") {
            return Ok(Self { python: PathBuf::from(p), package_dir });
        }
        if let Some(py) =
            exe.as_ref().and_then(|e| e.ancestors().map(|a| a.join(".venv/bin/python")).find(|p| p.exists()))
        {
            return Ok(Self { python: py, package_dir });
        }
        if let Some(py) =
            std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin/python")).filter(|p| p.exists())
        {
            return Ok(Self { python: py, package_dir });
        }
        Err(EvalError::transfer_usage(
            "no Python venv for the transfer protocols (.venv/bin/python next to this binary, $VIRTUAL_ENV or $DSPNET_PYTHON); run bash tools/setup.sh",
        ))
    }

    /// A command running `python -m dspnet_export.transfer` with `PYTHONPATH` set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.python);
        if let Some(dir) = &self.package_dir {
            let mut path = std::ffi::OsString::from(dir.as_os_str());
            if let Some(old) = std::env::var_os("PYTHONPATH") {
                path.push(":");
                path.push(old);
            }
            c.env("PYTHONPATH", path);
        }
        c
    }

    /// Checks that torch, torchvision, timm, safetensors, yaml, pycocotools and
    /// `dspnet_export.transfer` import.
    ///
    /// # Errors
    /// [`EvalError::Transfer`] naming the missing package and the fix (`bash tools/setup.sh`).
    pub fn check(&self) -> Result<()> {
        let probe = "import importlib.util as u, sys\n\
                     m = [n for n in ('torch', 'torchvision', 'timm', 'safetensors', 'yaml', 'pycocotools', 'dspnet_export') if u.find_spec(n) is None]\n\
                     m = m or [n for n in ('dspnet_export.transfer',) if u.find_spec(n) is None]\n\
                     print(' '.join(m))";
        let out = self.command().args(["-c", probe]).output().map_err(|e| {
            EvalError::transfer_usage(format!("cannot run {} ({e}); run bash tools/setup.sh", self.python.display()))
        })?;
        let missing = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !missing.is_empty() {
            let what =
                if missing.is_empty() { "a working interpreter".to_string() } else { missing.replace(' ', ", ") };
            return Err(EvalError::transfer_usage(format!(
                "{} lacks {what} (needed by the detection/segmentation protocols); run bash tools/setup.sh",
                self.python.display()
            )));
        }
        Ok(())
    }
}

/// What the transfer protocols run (widths and inits come from the evaluation context).
#[derive(Clone, Debug)]
pub struct TransferRequest {
    /// [`Protocol::Detection`] and/or [`Protocol::Segmentation`], run in this order.
    pub protocols: Vec<Protocol>,
    /// Dataset folder: COCO128 layout (`images/`, `object_detection/`,
    /// `semantic_segmentation/`) or standard COCO (`train2017/`, `val2017/`,
    /// `annotations/instances_{train,val}2017.json`).
    pub coco: PathBuf,
    /// `cpu` (minutes per run on 2 cores for COCO128) or `full` (1x-style schedule).
    pub preset: String,
    /// Seed of the Python tool (data order, flips, head initialisation).
    pub seed: u64,
    /// Extra arguments passed verbatim to the Python tool (e.g. `--max-train-images=2`).
    pub extra_args: Vec<String>,
}

impl TransferRequest {
    /// Checks the dataset folder and the preset.
    ///
    /// # Errors
    /// [`EvalError::Option`] naming `--coco` or `--transfer-preset` and the fix.
    pub fn validate(&self) -> Result<()> {
        if !self.coco.is_dir() {
            return Err(EvalError::option("--coco", format!(
                "--coco {}: no such folder; pass a COCO128-layout folder (e.g. ../shared/data/coco128) or a COCO folder with annotations/",
                self.coco.display()
            )));
        }
        if self.preset != "cpu" && self.preset != "full" {
            return Err(EvalError::option(
                "--transfer-preset",
                format!("--transfer-preset {}: use cpu or full", self.preset),
            ));
        }
        Ok(())
    }
}

/// The transfer protocols behind the evaluation interface: for every width, the export, then
/// every (protocol, init) fine-tuned and scored by the Python tool. The tool's full records
/// (with the loss of every step) stay in `RUN/transfer/<protocol>-<width_tag>-<init>.json`, the
/// exports in `RUN/export/<width_tag>`.
pub struct Transfer {
    pub request: TransferRequest,
    pub python: PythonTool,
}

impl EvalProtocol for Transfer {
    /// Errors: widths timm cannot build (deploy's error); [`EvalError::Transfer`] for bad input
    /// the Python tool reports (its one line, `usage`), a tool that fails otherwise (with the
    /// last line of its stderr) or a headline metric that is undefined.
    fn evaluate(&mut self, cx: &EvalContext) -> Result<Vec<EvalRecord>> {
        let (req, python) = (&self.request, &self.python);
        let run = load_run(cx.run_dir)?;
        for &w in cx.widths {
            dspnet_deploy::export::timm_arch(&run.config.model, w)?;
        }
        let export_root = run.run_dir.join(EXPORT_DIR);
        let out_root = run.run_dir.join(TRANSFER_DIR);
        std::fs::create_dir_all(&out_root).map_err(|e| EvalError::io(&out_root, e))?;
        let mut records = Vec::new();
        for &w in cx.widths {
            let summary = export_loaded(&run, w, &export_root, false)?;
            for &p in &req.protocols {
                for &init in cx.inits {
                    let init = init.name();
                    let out = out_root.join(format!("{}-{}-{init}.json", p.name(), width_tag(w)));
                    tracing::info!(width = w, protocol = p.name(), init, "transfer: fine-tuning and evaluating");
                    let py = run_tool(python, p, &summary.dir, init == "random", req, &out)?;
                    let rec = results_record(&py, p, w, summary.params, summary.macs, &out)?;
                    tracing::info!(width = w, protocol = p.name(), init, score = rec.top1, "result");
                    records.push(rec);
                }
            }
        }
        Ok(records)
    }
}

/// The Python tool is sent SIGTERM when `dspnet-eval` dies (Linux `PR_SET_PDEATHSIG`): a
/// scheduler's SIGTERM or a kill of `dspnet-eval` stops the fine-tuning it started instead of
/// leaving it running. Elsewhere a no-op.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe, with a signal number and no pointers.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn run_tool(
    python: &PythonTool,
    p: Protocol,
    backbone: &Path,
    random: bool,
    req: &TransferRequest,
    out: &Path,
) -> Result<Value> {
    let mut cmd = python.command();
    cmd.args(["-m", "dspnet_export.transfer", task(p), "--backbone"])
        .arg(backbone)
        .arg("--coco")
        .arg(&req.coco)
        .args(["--preset", &req.preset, "--seed", &req.seed.to_string(), "--out"])
        .arg(out);
    if random {
        cmd.arg("--random");
    }
    cmd.args(&req.extra_args).stdout(Stdio::null()).stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let child = cmd.output().map_err(|e| {
        EvalError::transfer_usage(format!("cannot run {} ({e}); run bash tools/setup.sh", python.python.display()))
    })?;
    if !child.status.success() {
        let stderr = String::from_utf8_lossy(&child.stderr);
        let line = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("error: "))
            .map(|l| l.trim_start_matches("error: ").to_string())
            .unwrap_or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_string());
        let msg = format!("{} transfer of {}: {line}", p.name(), backbone.display());
        return Err(if child.status.code() == Some(2) {
            EvalError::transfer_usage(msg)
        } else {
            EvalError::transfer_failed(msg)
        });
    }
    let text = std::fs::read_to_string(out).map_err(|e| EvalError::io(out, e))?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::transfer_failed(format!("{}: not a transfer record ({e})", out.display())))
}

/// The `results.json` record of one transfer run: the kNN/linear fields (`width`, `params`,
/// `flops` of the backbone at the run's input size, `protocol`, `top1` = the headline metric in
/// percent, `init`, `settings`) plus `metric` (what `top1` is), `metrics` (all of them, in
/// [0, 1]), `counts` (detections and boxes; pixels and classes scored), `losses` (first/last/mean
/// of the last 10% of steps) and `record` (the Python tool's full record).
///
/// # Errors
/// [`EvalError::Transfer`] when the headline metric is missing or undefined (no ground truth).
pub fn results_record(
    py: &Value,
    p: Protocol,
    width: f64,
    params: i64,
    macs: u64,
    record_path: &Path,
) -> Result<EvalRecord> {
    let headline = py["headline"].as_str().unwrap_or("");
    let score = py["metrics"][headline].as_f64().ok_or_else(|| {
        EvalError::transfer_failed(format!(
            "{}: metric {headline:?} is undefined (no ground truth in the val split?); check the dataset",
            record_path.display()
        ))
    })?;
    let mut losses = py["losses"].clone();
    if let Some(o) = losses.as_object_mut() {
        o.remove("history");
    }
    let extra = json!({
        "metric": metric(p),
        "metrics": py["metrics"],
        "counts": py["counts"],
        "losses": losses,
        "record": record_path.display().to_string(),
    });
    Ok(EvalRecord {
        width,
        params,
        macs,
        protocol: p.name().into(),
        top1: score * 100.0,
        init: py["init"].as_str().unwrap_or("").to_string(),
        settings: py["settings"].clone(),
        extra: extra.as_object().cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dspnet_run::layout::RESULTS;

    fn py_record(init: &str, map: Option<f64>) -> Value {
        json!({"protocol": "detection", "init": init, "headline": "map",
               "metrics": {"map": map, "map_50": 0.5}, "losses": {"first": 4.0, "last": 2.0, "history": [4.0, 2.0]},
               "settings": {"epochs": 1}})
    }

    #[test]
    fn record_is_read_by_eval_record_and_replaces_its_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let knn = json!([{"width": 0.5, "params": 10, "flops": 20, "protocol": "knn", "top1": 40.0, "init": "pretrained", "settings": {}}]);
        std::fs::write(dir.path().join(RESULTS), serde_json::to_vec(&knn).unwrap()).unwrap();
        let p = Path::new("x.json");
        let first = results_record(&py_record("pretrained", Some(0.25)), Protocol::Detection, 0.5, 10, 20, p).unwrap();
        assert_eq!(first.top1, 25.0);
        assert!(first.extra["losses"].get("history").is_none());
        dspnet_run::results::merge(dir.path(), &[first]).unwrap();
        let second =
            results_record(&py_record("pretrained", Some(0.125)), Protocol::Detection, 0.5, 10, 20, p).unwrap();
        let random = results_record(&py_record("random", Some(0.0)), Protocol::Detection, 0.5, 10, 20, p).unwrap();
        dspnet_run::results::merge(dir.path(), &[second, random]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(RESULTS)).unwrap();
        let back: Vec<EvalRecord> = serde_json::from_str(&text).unwrap();
        let got: Vec<(&str, &str, f64)> = back.iter().map(|r| (r.protocol.as_str(), r.init.as_str(), r.top1)).collect();
        assert_eq!(
            got,
            vec![("knn", "pretrained", 40.0), ("detection", "pretrained", 12.5), ("detection", "random", 0.0)]
        );
    }

    #[test]
    fn undefined_headline_metric_is_an_error() {
        let e = results_record(&py_record("pretrained", None), Protocol::Detection, 0.5, 1, 1, Path::new("r.json"))
            .unwrap_err();
        assert!(e.to_string().contains("undefined"), "{e}");
    }
}
