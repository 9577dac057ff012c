//! Repetitions of a comparison over seeds (`--seeds 0,1,2`) and where their sub-runs live.
//!
//! # Folder layout
//! Without `--seeds` the comparison runs once with the config's own seeds (`train.seed`,
//! `loader.seed` untouched) and its sub-runs sit in OUT itself (`OUT/dspnet`,
//! `OUT/byol-w0_25`, ...), as before seeds existed. With `--seeds`, seed `s` sets `train.seed`
//! and `loader.seed` of every sub-run of both sides (initial weights, the sandwich rule's draws
//! and the data order all follow it; the data subset, `compare.data.seed`, stays the same) and
//! its sub-runs sit in `OUT/seed{s}/` (`OUT/seed0/dspnet`, `OUT/seed0/byol-w0_25`, ...). A
//! sub-run's name is its folder relative to OUT.
//!
//! # Finding finished sub-runs
//! A finished sub-run of seed `s` is looked for in its own folder first and then in the other
//! layout's (`seed{s}/NAME` for a comparison without `--seeds`, `NAME` for one with them); the
//! recorded recipe (seeds included) decides whether it is the one asked for. So a comparison
//! started without `--seeds` (config seed 0) continues with `--resume --seeds 0,1` keeping its
//! runs as seed 0's, and `--baseline-from` reads either layout.

use crate::error::{CompareError, Result};
use dspnet_run::RunConfig;

/// One repetition of the comparison: the seed its sub-runs train with and the folder (relative
/// to OUT) that holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    /// The seed reported for this repetition (`train.seed` of its sub-runs).
    pub seed: u64,
    /// `Some("seed3")` with `--seeds`; `None`: OUT itself, configs left as they are.
    pub folder: Option<String>,
}

impl Repeat {
    /// The repetitions asked for: one per seed of `seeds` (in `OUT/seed{s}/`), or without seeds
    /// the one run of the config's own seeds (`base.train.seed` reported) in OUT.
    pub fn all(seeds: Option<&[u64]>, base: &RunConfig) -> Vec<Repeat> {
        match seeds {
            Some(s) => s.iter().map(|&seed| Repeat { seed, folder: Some(format!("seed{seed}")) }).collect(),
            None => vec![Repeat { seed: base.train.seed, folder: None }],
        }
    }

    /// The sub-run name (folder relative to OUT) of `base` (`dspnet`, `byol-w0_25`, ...).
    pub fn name(&self, base: &str) -> String {
        match &self.folder {
            Some(f) => format!("{f}/{base}"),
            None => base.to_string(),
        }
    }

    /// Where a finished `base` sub-run of this repetition may be (module docs): its own name,
    /// then the other layout's.
    pub fn candidates(&self, base: &str) -> Vec<String> {
        match &self.folder {
            Some(f) => vec![format!("{f}/{base}"), base.to_string()],
            None => vec![base.to_string(), format!("seed{}/{base}", self.seed)],
        }
    }

    /// `cfg` with this repetition's seed as `train.seed` and `loader.seed` (without `--seeds`:
    /// `cfg` unchanged).
    pub fn apply(&self, cfg: &RunConfig) -> RunConfig {
        let mut c = cfg.clone();
        if self.folder.is_some() {
            c.train.seed = self.seed;
            c.loader.seed = self.seed;
        }
        c
    }
}

/// The seeds to run: `cli` (`--seeds`) over `config` (`compare.seeds`; empty there: none),
/// sorted ascending; `None` when neither gives any (the config's own seeds, the layout without
/// seed folders).
///
/// Errors (one line, naming the option): an empty `--seeds`, a seed given twice.
pub fn choose(cli: Option<Vec<u64>>, config: &[u64]) -> Result<Option<Vec<u64>>> {
    let (mut seeds, flag) = match cli {
        Some(s) => (s, "--seeds"),
        None if config.is_empty() => return Ok(None),
        None => (config.to_vec(), "compare.seeds"),
    };
    if seeds.is_empty() {
        return Err(CompareError::option(flag, format!("{flag} is empty; give at least one seed, e.g. --seeds 0,1,2")));
    }
    seeds.sort_unstable();
    if let Some(w) = seeds.windows(2).find(|w| w[0] == w[1]) {
        return Err(CompareError::option(flag, format!("{flag}: seed {} is given twice; list each seed once", w[0])));
    }
    Ok(Some(seeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunConfig {
        let text = crate::plan::preset("cpu").unwrap().1;
        let mut c = crate::plan::Plan::parse(text, "cpu", &[], None, None, false).unwrap().base;
        c.train.seed = 7;
        c.loader.seed = 9;
        c
    }

    #[test]
    fn seeds_name_folders_and_set_both_seeds() {
        let b = base();
        let r = Repeat::all(Some(&[0, 3]), &b);
        assert_eq!(
            r.iter().map(|r| r.name("byol-w0_25")).collect::<Vec<_>>(),
            ["seed0/byol-w0_25", "seed3/byol-w0_25"]
        );
        let c = r[1].apply(&b);
        assert_eq!((c.train.seed, c.loader.seed), (3, 3));
        assert_eq!(b.recipe_differences(&c), vec!["loader.seed", "train.seed"]);
        assert_eq!(r[1].candidates("dspnet"), ["seed3/dspnet", "dspnet"]);
        // without --seeds: OUT itself, the config's seeds untouched, seed = train.seed
        let one = Repeat::all(None, &b);
        assert_eq!(one, vec![Repeat { seed: 7, folder: None }]);
        assert_eq!(one[0].name("dspnet"), "dspnet");
        assert_eq!(one[0].apply(&b).to_toml(), b.to_toml());
        assert_eq!(one[0].candidates("dspnet"), ["dspnet", "seed7/dspnet"]);
    }

    #[test]
    fn seed_lists_are_checked() {
        assert_eq!(choose(None, &[]).unwrap(), None);
        assert_eq!(choose(Some(vec![2, 0, 1]), &[5]).unwrap(), Some(vec![0, 1, 2]));
        assert_eq!(choose(None, &[5, 4]).unwrap(), Some(vec![4, 5]));
        let e = choose(Some(vec![1, 0, 1]), &[]).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--seeds"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("--seeds") && e.contains("seed 1 is given twice"), "{e}");
        let e = choose(None, &[3, 3]).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "compare.seeds"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("compare.seeds: seed 3"), "{e}");
        let e = choose(Some(vec![]), &[1]).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--seeds"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("--seeds is empty"), "{e}");
    }
}
