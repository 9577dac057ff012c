//! Labels of the ILSVRC2012 validation images, from whichever file the user has:
//! * the devkit `ILSVRC2012_devkit_t12.tar.gz` (or the same tar uncompressed):
//!   `data/ILSVRC2012_validation_ground_truth.txt` holds one 1-based ILSVRC2012_ID per image in
//!   file order (line k labels `ILSVRC2012_val_000000k`), and `data/meta.mat`'s `synsets` struct
//!   maps the IDs of its leaf synsets (`num_children == 0`) to WNIDs, as torchvision reads it;
//! * Kaggle's `LOC_val_solution.csv`: a header `ImageId,PredictionString`, then rows whose
//!   prediction string starts with the WNID (`ILSVRC2012_val_00008726,n02119789 255 142 ...`);
//! * a plain list: lines `filename wnid` (`ILSVRC2012_val_00000001.JPEG n01751748`).
//!
//! Blank lines and lines starting with `#` are ignored in the two text formats.
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::matv5::read_mat;
use crate::{PipelineError, Result};

/// Largest label file, or devkit member, read (64 MiB; `LOC_val_solution.csv` is 2.5 MB).
const MAX_LABEL_BYTES: u64 = 64 << 20;
const GROUND_TRUTH: &str = "ILSVRC2012_validation_ground_truth.txt";

/// The WNID of each validation image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValLabels {
    /// WNID by image file stem (`ILSVRC2012_val_00000001`).
    pub wnids: HashMap<String, String>,
    /// The classes, sorted (torchvision's ImageFolder order): the devkit's leaf synsets, or the
    /// WNIDs a text file names.
    pub classes: Vec<String>,
    /// The format read: `"devkit"`, `"LOC_val_solution.csv"` or `"filename wnid list"`.
    pub format: &'static str,
}

impl ValLabels {
    /// Class index of an image (by file stem): the position of its WNID in [`ValLabels::classes`].
    pub fn class_of(&self, stem: &str) -> Option<usize> {
        let wnid = self.wnids.get(stem)?;
        self.classes.binary_search(wnid).ok()
    }
}

/// True for a WordNet ID: `n` and 8 digits.
pub fn is_wnid(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The file name of `path` without folders and without its last extension.
pub(crate) fn stem_of(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    }
}

/// Reads validation labels from `path`, recognising the format by content ([module docs](self)).
///
/// Errors: [`PipelineError::Read`] when the file cannot be read; [`PipelineError::BadLabels`]
/// naming the file (and line) for a devkit without `meta.mat` or the ground truth, an ID or
/// WNID that does not fit, or the same image labelled twice differently.
pub fn read_val_labels(path: &Path) -> Result<ValLabels> {
    let mut head = [0u8; 265];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| PipelineError::read(path, e))?;
    let head = &head[..n];
    let bad = |reason: String| PipelineError::BadLabels { path: path.to_path_buf(), reason };
    if head.starts_with(&[0x1F, 0x8B]) || head.get(257..262) == Some(b"ustar") {
        return devkit(path, head.starts_with(&[0x1F, 0x8B]));
    }
    let text = read_capped(File::open(path).map_err(|e| PipelineError::read(path, e))?, path)?;
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text, a devkit .tar.gz or a .tar".into()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let csv = lines.clone().next().is_some_and(|(_, l)| l.trim().eq_ignore_ascii_case("ImageId,PredictionString"));
    let mut wnids = HashMap::new();
    if csv {
        lines.next();
    }
    for (i, line) in lines {
        let at = |reason: String| bad(format!("line {}: {reason}", i + 1));
        let (name, wnid) = if csv {
            let (id, pred) = line.split_once(',').ok_or_else(|| at("expected ImageId,PredictionString".into()))?;
            (id.trim(), pred.split_whitespace().next().unwrap_or(""))
        } else {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if tokens.len() != 2 {
                return Err(at(format!("expected `filename wnid`, found {} fields", tokens.len())));
            }
            (tokens[0], tokens[1])
        };
        if !is_wnid(wnid) {
            return Err(at(format!("{wnid:?} is not a WNID (n and 8 digits)")));
        }
        insert(&mut wnids, stem_of(name), wnid).map_err(at)?;
    }
    let format = if csv { "LOC_val_solution.csv" } else { "filename wnid list" };
    finish(path, wnids, None, format)
}

fn insert(wnids: &mut HashMap<String, String>, stem: &str, wnid: &str) -> std::result::Result<(), String> {
    match wnids.get(stem) {
        Some(old) if old != wnid => Err(format!("{stem} labelled {old} before and {wnid} here")),
        _ => {
            wnids.insert(stem.to_string(), wnid.to_string());
            Ok(())
        }
    }
}

fn finish(
    path: &Path,
    wnids: HashMap<String, String>,
    classes: Option<Vec<String>>,
    format: &'static str,
) -> Result<ValLabels> {
    if wnids.is_empty() {
        return Err(PipelineError::BadLabels { path: path.to_path_buf(), reason: "labels no image".into() });
    }
    let classes = classes.unwrap_or_else(|| wnids.values().cloned().collect::<BTreeSet<_>>().into_iter().collect());
    Ok(ValLabels { wnids, classes, format })
}

fn read_capped(r: impl Read, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(MAX_LABEL_BYTES + 1).read_to_end(&mut out).map_err(|e| PipelineError::read(path, e))?;
    if out.len() as u64 > MAX_LABEL_BYTES {
        return Err(PipelineError::BadLabels {
            path: path.to_path_buf(),
            reason: format!("larger than {} MiB: not a label file", MAX_LABEL_BYTES >> 20),
        });
    }
    Ok(out)
}

/// The devkit: `meta.mat` and the ground truth, wherever they sit in the archive.
fn devkit(path: &Path, gzip: bool) -> Result<ValLabels> {
    let bad = |reason: String| PipelineError::BadLabels { path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(|e| PipelineError::read(path, e))?;
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    let (mut meta, mut truth): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let entries = archive.entries().map_err(|e| bad(format!("unreadable archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("unreadable archive: {e}")))?;
        let name = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let slot = match name.rsplit('/').next() {
            Some("meta.mat") => &mut meta,
            Some(GROUND_TRUTH) => &mut truth,
            _ => continue,
        };
        *slot = Some(read_capped(entry, &PathBuf::from(&name)).map_err(|e| bad(format!("{name}: {e}")))?);
        if meta.is_some() && truth.is_some() {
            break;
        }
    }
    let meta =
        meta.ok_or_else(|| bad("no data/meta.mat in the archive: is this ILSVRC2012_devkit_t12.tar.gz?".into()))?;
    let truth = truth.ok_or_else(|| bad(format!("no data/{GROUND_TRUTH} in the archive")))?;

    let vars = read_mat(&meta).map_err(|e| bad(format!("meta.mat: {e}")))?;
    let synsets = vars
        .iter()
        .find(|(n, _)| n == "synsets")
        .map(|(_, v)| v)
        .ok_or_else(|| bad("meta.mat holds no variable `synsets`".into()))?;
    let mut leaf: HashMap<u32, String> = HashMap::new();
    for i in 0..synsets.len() {
        let field =
            |f: &str| synsets.field(i, f).ok_or_else(|| bad(format!("meta.mat: synsets({}) has no field {f}", i + 1)));
        let id = field("ILSVRC2012_ID")?.as_scalar();
        let wnid = field("WNID")?.as_string();
        let children = field("num_children")?.as_scalar();
        let (Some(id), Some(wnid), Some(children)) = (id, wnid, children) else {
            return Err(bad(format!("meta.mat: synsets({}) has a malformed ID, WNID or num_children", i + 1)));
        };
        if children == 0.0 {
            if !is_wnid(&wnid) || id < 1.0 || id.fract() != 0.0 {
                return Err(bad(format!("meta.mat: synsets({}) = ({id}, {wnid:?}) is not (ID, WNID)", i + 1)));
            }
            leaf.insert(id as u32, wnid);
        }
    }
    let truth = String::from_utf8(truth).map_err(|_| bad(format!("{GROUND_TRUTH} is not text")))?;
    let mut wnids = HashMap::new();
    for (k, (i, line)) in truth.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).enumerate() {
        let id: u32 =
            line.trim().parse().map_err(|_| bad(format!("{GROUND_TRUTH} line {}: {line:?} is not an ID", i + 1)))?;
        let wnid = leaf
            .get(&id)
            .ok_or_else(|| bad(format!("{GROUND_TRUTH} line {}: ID {id} is not a leaf synset of meta.mat", i + 1)))?;
        wnids.insert(format!("ILSVRC2012_val_{:08}", k + 1), wnid.clone());
    }
    let classes = leaf.into_values().collect::<BTreeSet<_>>().into_iter().collect();
    finish(path, wnids, Some(classes), "devkit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::matv5::tests::{meta_mat, Writer};

    fn tar_gz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn the_three_formats_give_the_same_labels() {
        let dir = tempfile::tempdir().unwrap();
        let meta = meta_mat(&Writer { be: false }, &["n00000003", "n00000001", "n00000002"], true);
        let devkit = tar_gz(&[
            ("ILSVRC2012_devkit_t12/readme.txt", b"x".to_vec()),
            ("ILSVRC2012_devkit_t12/data/meta.mat", meta),
            ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", b"2\n1\n3\n2\n".to_vec()),
        ]);
        std::fs::write(dir.path().join("devkit.tar.gz"), devkit).unwrap();
        std::fs::write(
            dir.path().join("LOC_val_solution.csv"),
            "ImageId,PredictionString\nILSVRC2012_val_00000003,n00000002 1 2 3 4 n00000002 5 6 7 8\n\
             ILSVRC2012_val_00000001,n00000001 0 0 9 9\nILSVRC2012_val_00000002,n00000003 1 1 2 2\n\
             ILSVRC2012_val_00000004,n00000001 3 3 4 4\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("val.txt"),
            "# file wnid\nILSVRC2012_val_00000001.JPEG n00000001\nval/ILSVRC2012_val_00000002.JPEG n00000003\n\n\
             ILSVRC2012_val_00000003.JPEG n00000002\nILSVRC2012_val_00000004 n00000001\n",
        )
        .unwrap();
        let got: Vec<ValLabels> = ["devkit.tar.gz", "LOC_val_solution.csv", "val.txt"]
            .iter()
            .map(|f| read_val_labels(&dir.path().join(f)).unwrap())
            .collect();
        assert_eq!(
            got.iter().map(|l| l.format).collect::<Vec<_>>(),
            ["devkit", "LOC_val_solution.csv", "filename wnid list"]
        );
        for l in &got {
            assert_eq!(l.classes, ["n00000001", "n00000002", "n00000003"]);
            assert_eq!(l.wnids, got[0].wnids);
            // ground truth IDs 2 1 3 2 → meta.mat's n00000001 (ID 2), n00000003 (ID 1), n00000002 (ID 3)
            let idx: Vec<usize> = (1..=4).map(|k| l.class_of(&format!("ILSVRC2012_val_{k:08}")).unwrap()).collect();
            assert_eq!(idx, [0, 2, 1, 0]);
        }
    }

    #[test]
    fn malformed_labels_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, content: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            let e = read_val_labels(&p).unwrap_err().to_string();
            assert!(e.contains(name) && !e.contains('\n'), "{e}");
            e
        };
        // caffe's val.txt has class numbers, not WNIDs
        let e = err("caffe.txt", b"ILSVRC2012_val_00000001.JPEG 65\n");
        assert!(e.contains("line 1") && e.contains("not a WNID"), "{e}");
        let e = err("three.txt", b"a.JPEG n00000001 extra\n");
        assert!(e.contains("found 3 fields"), "{e}");
        let e = err("twice.txt", b"a.JPEG n00000001\na.JPEG n00000002\n");
        assert!(e.contains("line 2") && e.contains("labelled n00000001 before"), "{e}");
        let e = err("empty.txt", b"# nothing\n");
        assert!(e.contains("labels no image"), "{e}");
        let e = err("nometa.tar.gz", &tar_gz(&[("x/data/ILSVRC2012_validation_ground_truth.txt", b"1\n".to_vec())]));
        assert!(e.contains("no data/meta.mat"), "{e}");
        let meta = meta_mat(&Writer { be: false }, &["n00000001"], false);
        let gt = tar_gz(&[("d/meta.mat", meta), ("d/ILSVRC2012_validation_ground_truth.txt", b"1\n1001\n".to_vec())]);
        let e = err("inner.tar.gz", &gt);
        assert!(e.contains("line 2: ID 1001 is not a leaf synset"), "{e}");
        let e = err("garbage.mat.tar.gz", &tar_gz(&[("meta.mat", vec![7u8; 300]), (GROUND_TRUTH, b"1\n".to_vec())]));
        assert!(e.contains("meta.mat: not a MAT-file v5"), "{e}");
    }
}
