//! Run configuration: a TOML file plus `--set section.key=value` overrides, in two parts:
//!
//! * the [`Recipe`] ([`recipe`]): everything that determines the trained weights;
//! * the [`Runtime`] ([`runtime`]): threads, logging, checkpoints, remote reads, evaluation.
//!
//! The file keeps its sections (`[model]`, `[train]`, `[loader]`, ...); the two types decide
//! which key is which (`[train]` and `[loader]` hold keys of both). A resumed run keeps its own
//! recipe and takes the runtime settings asked for ([`RunConfig::for_resume`]): what may change
//! follows from the types, not from a list. Unknown keys are a one-line error naming them; keys
//! of older files that moved are read with a deprecation warning ([`overrides::RENAMED_KEYS`]).
//! The resolved configuration is written into the run directory and is what `dspnet-eval`
//! reads back.

pub mod overrides;
pub mod recipe;
pub mod runtime;

pub use overrides::apply_override;
pub use recipe::{
    DistillTarget, HeadBn, HeadsConfig, Method, MethodConfig, NarrowPredictor, OptimConfig, OptimizerKind, Recipe,
    TrainConfig, WidthGradients,
};
pub use runtime::{EvalConfig, MonitorConfig, Runtime, TrainRuntime};

use crate::error::RunError;
use std::collections::BTreeSet;
use std::path::Path;

/// The whole run configuration (one TOML file; see `configs/`): the recipe and the runtime
/// settings. It dereferences to its [`Recipe`], so `cfg.model`, `cfg.train.epochs` read the
/// recipe; runtime settings are `cfg.runtime.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub recipe: Recipe,
    pub runtime: Runtime,
}

impl std::ops::Deref for RunConfig {
    type Target = Recipe;
    fn deref(&self) -> &Recipe {
        &self.recipe
    }
}

impl std::ops::DerefMut for RunConfig {
    fn deref_mut(&mut self) -> &mut Recipe {
        &mut self.recipe
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits a configuration tree into the keys [`Runtime`] reads and the rest (the recipe's),
/// as the two types decide: `Runtime` is read from the whole tree with every key it ignores
/// recorded; the keys it did not ignore are removed from the recipe's tree.
fn split(value: &toml::Value, origin: &str) -> Result<(toml::Value, Runtime), RunError> {
    let mut ignored = BTreeSet::new();
    let runtime: Runtime = serde_ignored::deserialize(value.clone(), |path| {
        ignored.insert(path.to_string());
    })
    .map_err(|e: toml::de::Error| {
        RunError::config("config", format!("config {origin}: {}", one_line(&e.to_string())))
    })?;
    let mut recipe = value.clone();
    if let Some(root) = recipe.as_table_mut() {
        let sections: Vec<String> = root.keys().cloned().collect();
        for section in sections {
            if ignored.contains(&section) {
                continue; // a recipe section as a whole
            }
            let Some(table) = root.get_mut(&section).and_then(|v| v.as_table_mut()) else { continue };
            let read: Vec<String> =
                table.keys().filter(|k| !ignored.contains(&format!("{section}.{k}"))).cloned().collect();
            for k in read {
                table.remove(&k);
            }
            if table.is_empty() {
                root.remove(&section);
            }
        }
    }
    Ok((recipe, runtime))
}

/// `b`'s tables merged into `a`'s (keys of `b` appended section by section).
fn merge_tables(a: &mut toml::Value, b: toml::Value) {
    let (Some(a), toml::Value::Table(b)) = (a.as_table_mut(), b) else { return };
    for (k, v) in b {
        match (a.get_mut(&k), v) {
            (Some(toml::Value::Table(x)), toml::Value::Table(y)) => x.extend(y),
            (_, v) => {
                a.insert(k, v);
            }
        }
    }
}

impl RunConfig {
    /// Reads a TOML file and applies `key=value` overrides (`section.key=value`, the value parsed
    /// as TOML, falling back to a string), then validates.
    ///
    /// Errors: unreadable file, TOML syntax, unknown or mistyped key (named), invalid values.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::config("config", format!("cannot read config {}: {e}", path.display())))?;
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| {
            RunError::config(
                "config",
                format!("config {} is not valid TOML: {}", path.display(), one_line(&e.to_string())),
            )
        })?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let origin = if overrides.is_empty() {
            path.display().to_string()
        } else {
            format!("{} with the --set overrides", path.display())
        };
        Self::from_value(value, &origin)
    }

    /// Parses a configuration from TOML text (used for a run directory's resolved config).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, RunError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            RunError::config("config", format!("config {origin} is not valid TOML: {}", one_line(&e.to_string())))
        })?;
        Self::from_value(value, origin)
    }

    fn from_value(mut value: toml::Value, origin: &str) -> Result<Self, RunError> {
        overrides::migrate_renamed_keys(&mut value, origin);
        let (recipe, runtime) = split(&value, origin)?;
        let recipe: Recipe = recipe.try_into().map_err(|e: toml::de::Error| {
            RunError::config("config", format!("config {origin}: {}", one_line(&e.to_string())))
        })?;
        let cfg = RunConfig { recipe, runtime };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the recipe and the runtime settings; errors name the key and the fix.
    pub fn validate(&self) -> Result<(), RunError> {
        self.recipe.validate()?;
        self.runtime.validate()
    }

    /// The configuration as one TOML tree, in the file's layout (the runtime keys in their
    /// sections after the recipe's).
    pub fn to_value(&self) -> toml::Value {
        let mut v = toml::Value::try_from(&self.recipe).expect("a Recipe always serialises");
        merge_tables(&mut v, toml::Value::try_from(&self.runtime).expect("a Runtime always serialises"));
        v
    }

    /// Serialises the resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.to_value()).expect("a RunConfig always serialises")
    }

    /// The recipe alone as TOML (what a data-parallel run checks is the same on every rank).
    pub fn recipe_toml(&self) -> String {
        toml::to_string_pretty(&self.recipe).expect("a Recipe always serialises")
    }

    /// Dotted keys (`optim.lr`, `augment.view_a.flip_p`, ...) whose values differ between two
    /// configurations, sorted.
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
            match (a, b) {
                (toml::Value::Table(x), toml::Value::Table(y)) => {
                    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                    for k in keys {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        match (x.get(k), y.get(k)) {
                            (Some(u), Some(v)) => walk(&key, u, v, out),
                            _ => out.push(key),
                        }
                    }
                }
                _ if a != b => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let (a, b) = (self.to_value(), other.to_value());
        let mut out = Vec::new();
        walk("", &a, &b, &mut out);
        out
    }

    /// Dotted keys of the recipe (the weight-determining settings) that differ between two
    /// configurations, sorted; runtime settings are left out.
    pub fn recipe_differences(&self, other: &RunConfig) -> Vec<String> {
        self.differences(&RunConfig { recipe: other.recipe.clone(), runtime: self.runtime.clone() })
    }

    /// The configuration a resumed run continues with: the run's own recipe (`run`, from its
    /// `config.toml`) with the runtime settings of `requested` (from `--config`/`--set` on the
    /// resume command line): threads, logging, checkpoint frequency, remote reads, evaluation.
    ///
    /// Errors: the recipes differ; the message names the keys and both values of the first.
    pub fn for_resume(run: &RunConfig, requested: &RunConfig, run_config_path: &Path) -> Result<RunConfig, RunError> {
        let fixed = run.recipe_differences(requested);
        if let Some(first) = fixed.first() {
            let (a, b) = (run.to_value(), requested.to_value());
            let get = |v: &toml::Value| -> String {
                first.split('.').try_fold(v, |v, k| v.get(k)).map_or("(absent)".into(), |v| v.to_string())
            };
            return Err(RunError::config(
                first.to_string(),
                format!(
                    "--resume: the requested config differs from {} in {} ({first} = {} there, {} requested); a resumed run keeps its config: drop --config/--set, or start a new run with --out",
                    run_config_path.display(),
                    fixed.join(", "),
                    get(&a),
                    get(&b)
                ),
            ));
        }
        Ok(RunConfig { recipe: run.recipe.clone(), runtime: requested.runtime.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> toml::Value {
        toml::from_str("[optim]\nlr = 0.1\n[method]\nname = \"dspnet\"\n").unwrap()
    }

    #[test]
    fn override_sets_typed_values() {
        let mut v = base();
        apply_override(&mut v, "optim.lr=0.5").unwrap();
        apply_override(&mut v, "method.train_widths=[0.5, 1.0]").unwrap();
        assert_eq!(v["optim"]["lr"].as_float(), Some(0.5));
        let ws: Vec<f64> =
            v["method"]["train_widths"].as_array().unwrap().iter().map(|x| x.as_float().unwrap()).collect();
        assert_eq!(ws, vec![0.5, 1.0]);
    }

    #[test]
    fn override_unknown_key_is_an_error_naming_it() {
        let mut v = base();
        let e = apply_override(&mut v, "optim.lrr=0.5").unwrap_err().to_string();
        assert!(e.contains("optim.lrr"), "{e}");
        let e = apply_override(&mut v, "nosuch.lr=0.5").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
        let e = apply_override(&mut v, "optim.lr").unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
    }

    fn preset() -> RunConfig {
        RunConfig::from_toml_str(include_str!("../../../configs/cifar10-small.toml"), "preset").unwrap()
    }

    #[test]
    fn differences_name_the_dotted_keys() {
        let a = preset();
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.optim.lr = 0.5;
        b.augment.view_b.solarize_p = 0.0;
        b.method.random_widths = Some(1);
        assert_eq!(a.differences(&b), vec!["augment.view_b.solarize_p", "method.random_widths", "optim.lr"]);
    }

    #[test]
    fn resume_keeps_the_run_config_and_takes_only_harmless_changes() {
        let run = preset();
        let path = Path::new("RUN/config.toml");
        // the same config: fine
        let same = RunConfig::for_resume(&run, &run.clone(), path).unwrap();
        assert!(same.differences(&run).is_empty());
        // thread count, logging and eval settings may change and are taken
        let mut req = run.clone();
        req.runtime.train.threads = 7;
        req.runtime.eval.knn_k = 20;
        req.runtime.loader.workers = 5;
        let got = RunConfig::for_resume(&run, &req, path).unwrap();
        assert_eq!((got.runtime.train.threads, got.runtime.eval.knn_k, got.runtime.loader.workers), (7, 20, 5));
        assert_eq!(got.differences(&run), vec!["eval.knn_k", "loader.workers", "train.threads"]);
        // anything that changes the trained weights is an error naming key and values
        let mut req = run.clone();
        req.optim.lr = 0.5;
        req.loader.seed = 3;
        let e = RunConfig::for_resume(&run, &req, path).unwrap_err().to_string();
        assert!(e.contains("loader.seed, optim.lr") && e.contains("loader.seed = 0 there, 3 requested"), "{e}");
        assert!(e.contains("RUN/config.toml") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn skip_nonfinite_steps_defaults_off_and_can_be_set() {
        assert!(!preset().train.skip_nonfinite_steps);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let cfg = RunConfig::load(&path, &["train.skip_nonfinite_steps=true".into()]).unwrap();
        assert!(cfg.train.skip_nonfinite_steps);
    }

    #[test]
    fn every_shipped_preset_parses_and_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                // dspnet-compare's presets (compare-*.toml) add a [compare] section; the rest is
                // a run configuration like any other
                let mut v: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                v.as_table_mut().unwrap().remove("compare");
                let cfg = RunConfig::from_toml_str(&toml::to_string(&v).unwrap(), &path.display().to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(cfg.model.widths.last(), Some(&1.0), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped presets in {}", dir.display());
    }

    #[test]
    fn ablation_switches_default_to_todays_step_and_stay_out_of_the_serialised_config() {
        let cfg = preset();
        assert_eq!(cfg.method.distill_target, DistillTarget::Teacher);
        assert_eq!(cfg.method.narrow_predictor, NarrowPredictor::Shared);
        assert_eq!(cfg.method.narrow_warmup_epochs, 0.0);
        assert_eq!(cfg.method.width_gradients, WidthGradients::Sum);
        assert_eq!(cfg.heads.bn, HeadBn::Switchable);
        // a config written before the switches existed serialises to the same text
        let text = cfg.to_toml();
        for key in ["distill_target", "narrow_warmup_epochs", "narrow_predictor", "width_gradients", "\nbn ="] {
            assert!(!text.contains(key), "{key} in\n{text}");
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let sets: Vec<String> = [
            "method.distill_target=online",
            "method.narrow_warmup_epochs=0.5",
            "method.narrow_predictor=\"separate\"",
            "method.width_gradients=project",
            "heads.bn=shared",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let set = RunConfig::load(&path, &sets).unwrap();
        assert_eq!(
            (set.method.distill_target, set.method.narrow_warmup_epochs, set.method.narrow_predictor, set.heads.bn),
            (DistillTarget::Online, 0.5, NarrowPredictor::Separate, HeadBn::Shared)
        );
        assert_eq!(set.method.width_gradients, WidthGradients::Project);
        assert_eq!(
            cfg.differences(&set),
            vec![
                "heads.bn",
                "method.distill_target",
                "method.narrow_predictor",
                "method.narrow_warmup_epochs",
                "method.width_gradients"
            ]
        );
        // and they round-trip through the resolved config.toml
        let back = RunConfig::from_toml_str(&set.to_toml(), "back").unwrap();
        assert!(back.differences(&set).is_empty());
        assert!(set.to_toml().contains("distill_target = \"online\""));
    }

    #[test]
    fn ablation_switches_refuse_bad_values_in_one_line() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let epochs = preset().train.epochs;
        let cases = [
            (
                "method.distill_target=\"nope\"",
                "method.distill_target = \"nope\" is unknown; use \"teacher\" or \"online\"",
            ),
            (
                "method.narrow_predictor=both",
                "method.narrow_predictor = \"both\" is unknown; use \"shared\" or \"separate\"",
            ),
            ("heads.bn=\"group\"", "heads.bn = \"group\" is unknown; use \"switchable\" or \"shared\""),
            (
                "method.narrow_warmup_epochs=-0.5",
                "method.narrow_warmup_epochs = -0.5 must be a number in [0, train.epochs",
            ),
        ];
        for (set, needle) in cases {
            let e = RunConfig::load(&path, &[set.to_string()]).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{set}: {e}");
        }
        let e = RunConfig::load(&path, &[format!("method.narrow_warmup_epochs={epochs:?}")]).unwrap_err().to_string();
        assert!(e.contains("method.narrow_warmup_epochs") && e.contains("lower it"), "{e}");
        assert!(RunConfig::load(&path, &[format!("method.narrow_warmup_epochs={}", epochs - 0.5)]).is_ok());
        // online targets need the largest width among the trained ones
        let e =
            RunConfig::load(&path, &["method.distill_target=online".into(), "method.train_widths=[0.25, 0.5]".into()])
                .unwrap_err()
                .to_string();
        assert!(e.contains("method.distill_target = \"online\"") && e.contains("largest width 1"), "{e}");
    }

    #[test]
    fn the_types_split_the_file_into_recipe_and_runtime() {
        let cfg = preset();
        let text = cfg.to_toml();
        // the file keeps its sections, runtime keys inside [train] and [loader]
        let v: toml::Value = toml::from_str(&text).unwrap();
        for key in
            ["train.epochs", "train.threads", "train.log_every", "loader.batch_size", "loader.workers", "eval.knn_k"]
        {
            let (sec, k) = key.split_once('.').unwrap();
            assert!(v[sec].get(k).is_some(), "{key} missing from\n{text}");
        }
        // ... and every key lands in exactly one part
        let recipe = toml::Value::try_from(&cfg.recipe).unwrap();
        let runtime = toml::Value::try_from(&cfg.runtime).unwrap();
        assert!(recipe["train"].get("threads").is_none() && runtime["train"].get("threads").is_some());
        assert!(recipe["train"].get("seed").is_some() && runtime["train"].get("seed").is_none());
        assert!(recipe["loader"].get("workers").is_none() && runtime["loader"].get("workers").is_some());
        assert!(recipe["loader"].get("shuffle_buffer").is_some() && runtime["loader"].get("shuffle_buffer").is_none());
        assert!(recipe.get("eval").is_none() && recipe.get("remote").is_none());
        // it reads back to the same configuration
        assert_eq!(RunConfig::from_toml_str(&text, "back").unwrap(), cfg);
        // runtime settings are not the recipe's business
        let mut other = cfg.clone();
        other.runtime.train.threads = 3;
        other.runtime.eval.knn_k = 5;
        assert!(cfg.recipe_differences(&other).is_empty());
        assert_eq!(cfg.differences(&other), vec!["eval.knn_k", "train.threads"]);
        other.train.seed = 9;
        assert_eq!(cfg.recipe_differences(&other), vec!["train.seed"]);
    }

    #[test]
    fn unknown_keys_are_named_wherever_they_are() {
        let text = include_str!("../../../configs/cifar10-small.toml");
        for (section, key) in [("train", "threadz"), ("loader", "wokers"), ("eval", "knn"), ("model", "depht")] {
            let edited = text.replacen(&format!("[{section}]\n"), &format!("[{section}]\n{key} = 1\n"), 1);
            assert_ne!(edited, text, "[{section}] not in the preset");
            let e = RunConfig::from_toml_str(&edited, "edited").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("edited") && !e.contains('\n'), "{section}.{key}: {e}");
        }
        let e = RunConfig::from_toml_str(&format!("{text}\n[nosuch]\nx = 1\n"), "edited").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }

    #[test]
    fn renamed_remote_keys_of_older_files_are_still_read() {
        let text = include_str!("../../../configs/cifar10-small.toml");
        let old = text.replacen("[loader]\n", "[loader]\nremote_max_retries = 3\nremote_read_ahead = 5\n", 1);
        let cfg = RunConfig::from_toml_str(&old, "old").unwrap();
        assert_eq!((cfg.runtime.remote.max_retries, cfg.runtime.remote.read_ahead), (3, 5));
        // written back under their new names
        let text = cfg.to_toml();
        assert!(text.contains("[remote]") && !text.contains("remote_max_retries"), "{text}");
        // a file that has both: the new key wins
        let both = format!("{old}\n[remote]\nmax_retries = 7\n");
        assert_eq!(RunConfig::from_toml_str(&both, "both").unwrap().runtime.remote.max_retries, 7);
        let mut v: toml::Value = toml::from_str(&old).unwrap();
        assert_eq!(
            overrides::migrate_renamed_keys(&mut v, "old"),
            vec!["loader.remote_read_ahead", "loader.remote_max_retries"]
        );
    }

    #[test]
    fn byol_refuses_the_dspnet_switches_by_name() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let byol = ["method.name=byol".to_string(), "method.train_widths=[1.0]".to_string()];
        assert!(RunConfig::load(&path, &byol).is_ok());
        for set in [
            "method.random_widths=1",
            "method.distill_target=online",
            "method.narrow_warmup_epochs=0.5",
            "method.width_gradients=steps",
        ] {
            let sets: Vec<String> = byol.iter().cloned().chain([set.to_string()]).collect();
            let e = RunConfig::load(&path, &sets).unwrap_err().to_string();
            let key = set.split('=').next().unwrap();
            assert!(e.contains(key) && e.contains("byol") && !e.contains('\n'), "{set}: {e}");
        }
    }
}
