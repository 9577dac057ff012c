//! `--set section.key=value` overrides of a configuration's TOML tree, and the keys older
//! configurations spelled differently (read with a one-line deprecation warning).

use crate::error::RunError;

/// Applies one `a.b.c=value` override to a TOML tree. The key must already exist, so a typo is
/// an error naming it; the value is parsed as TOML (`0.5`, `[0.25, 1.0]`, `true`, `"x"`) and
/// falls back to a bare string.
pub fn apply_override(root: &mut toml::Value, item: &str) -> Result<(), RunError> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| RunError::config(item, format!("--set {item}: expected key=value, e.g. --set optim.lr=0.5")))?;
    let key = key.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| RunError::config(key, format!("--set {key}: {} is not a section", parts[..i].join("."))))?;
        if i + 1 == parts.len() {
            if !table.contains_key(*part) && !optional_key(&parts) {
                return Err(RunError::config(
                    key,
                    format!("--set {key}: unknown config key; see the config file for the available keys"),
                ));
            }
            table.insert(part.to_string(), parsed);
            return Ok(());
        }
        // the section of an optional key may be absent from the file too (e.g. [remote])
        if !table.contains_key(*part) && optional_key(&parts) {
            table.insert(part.to_string(), toml::Value::Table(toml::Table::new()));
        }
        node = table.get_mut(*part).ok_or_else(|| {
            RunError::config(key, format!("--set {key}: unknown config section {}", parts[..=i].join(".")))
        })?;
    }
    Ok(())
}

/// Keys that may be absent from a config file but can be set (serde defaults).
fn optional_key(parts: &[&str]) -> bool {
    matches!(
        parts,
        [
            "method",
            "train_widths"
                | "random_widths"
                | "loss_weights"
                | "ema_final"
                | "distill_target"
                | "narrow_warmup_epochs"
                | "narrow_predictor"
                | "width_gradients"
        ] | ["heads", "bn"]
            | ["optim", "lars_eta"]
            | ["train", "skip_nonfinite_steps" | "sync_bn" | "tf32" | "dist_timeout_sec"]
            | ["remote", "read_ahead" | "read_ahead_bytes" | "max_retries" | "max_retry_secs"]
            | [
                "monitor",
                "train_shards"
                    | "test_shards"
                    | "every_steps"
                    | "bank_images"
                    | "test_images"
                    | "interference_every_steps"
            ]
    )
}

/// Keys of older configurations that moved, as (old dotted key, new dotted key).
pub const RENAMED_KEYS: [(&str, &str); 4] = [
    ("loader.remote_read_ahead", "remote.read_ahead"),
    ("loader.remote_read_ahead_bytes", "remote.read_ahead_bytes"),
    ("loader.remote_max_retries", "remote.max_retries"),
    ("loader.remote_max_retry_secs", "remote.max_retry_secs"),
];

/// Moves every renamed key of `root` ([`RENAMED_KEYS`]) to its new place, warning once per key
/// (`origin` names the file). A new key given too keeps its value and the old one is dropped.
/// Returns the old keys found.
pub fn migrate_renamed_keys(root: &mut toml::Value, origin: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for (old, new) in RENAMED_KEYS {
        let (old_section, old_key) = old.split_once('.').expect("dotted");
        let Some(value) = root.get_mut(old_section).and_then(|s| s.as_table_mut()).and_then(|t| t.remove(old_key))
        else {
            continue;
        };
        tracing::warn!("config {origin}: {old} is deprecated; it is read as {new} (rename it in the file)");
        found.push(old);
        let (new_section, new_key) = new.split_once('.').expect("dotted");
        if let Some(table) = root.as_table_mut() {
            let section = table.entry(new_section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(t) = section.as_table_mut() {
                t.entry(new_key).or_insert(value);
            }
        }
    }
    found
}
