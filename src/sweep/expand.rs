//! Grid expansion: axes (`KEY=V1,V2,...` flags or a sweep file's `[grid]` table) over a base
//! config, their product as named cells, each cell's settings checked before anything runs.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::train::TrainConfig;

/// One axis of the grid: a config key and the values it takes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The config key (a top-level key or a key of the `[dl]` table, without `dl.`).
    pub key: String,
    /// Its values, typed as JSON (numbers, strings, booleans, null for "unset").
    pub values: Vec<Value>,
}

/// One cell of the grid: its name (also its directory) and the settings it trains with.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// `key=value` of each axis, joined by commas, e.g. `method=ce,seed=0`.
    pub name: String,
    /// The value of each axis, as text.
    pub axes: Vec<(String, String)>,
    /// The full settings.
    pub config: TrainConfig,
}

/// The settings as JSON, the form keys are set in.
pub(crate) fn to_json(cfg: &TrainConfig) -> Value {
    // Through text, so that an f32 such as 3e-3 reads 0.003, not its f64 widening.
    serde_json::from_str(&serde_json::to_string(cfg).expect("config serialises")).expect("JSON")
}

/// The top-level keys and the `[dl]` keys of [`TrainConfig`].
fn known_keys() -> (Vec<String>, Vec<String>) {
    let v = to_json(&TrainConfig::default());
    let obj = v.as_object().expect("an object");
    let top = obj.keys().filter(|k| *k != "dl").cloned().collect();
    let dl = obj["dl"]
        .as_object()
        .expect("a table")
        .keys()
        .cloned()
        .collect();
    (top, dl)
}

/// Where `key` lives: `Some(false)` top level, `Some(true)` in `[dl]`, `None` unknown.
fn key_place(key: &str) -> Option<bool> {
    let (top, dl) = known_keys();
    if top.iter().any(|k| k == key) {
        Some(false)
    } else if dl.iter().any(|k| k == key) {
        Some(true)
    } else {
        None
    }
}

/// Sets `key` in the JSON form of a config.
fn set_key(cfg: &mut Value, key: &str, value: Value) {
    let obj = cfg.as_object_mut().expect("an object");
    match key_place(key) {
        Some(true) => {
            obj.get_mut("dl")
                .and_then(Value::as_object_mut)
                .expect("a dl table")
                .insert(key.into(), value);
        }
        _ => {
            obj.insert(key.into(), value);
        }
    }
}

/// A value typed as a user would mean it: a number, boolean or `null` if it reads as one,
/// else a string (method names, model names, paths).
fn typed(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
        _ => Value::String(text.into()),
    }
}

/// The key with a `dl.` prefix removed, checked against the config's keys.
fn checked_key(key: &str, flag: &str) -> Result<String> {
    let key = key.trim();
    let key = key.strip_prefix("dl.").unwrap_or(key).to_string();
    if key_place(&key).is_none() {
        let (top, dl) = known_keys();
        return Err(Error::Config(format!(
            "{flag}: unknown config key '{key}' (keys: {}; [dl]: {})",
            top.join(", "),
            dl.join(", ")
        )));
    }
    Ok(key)
}

/// Parses a `--grid KEY=V1,V2,...` flag.
pub fn parse_axis(spec: &str) -> Result<Axis> {
    let Some((key, values)) = spec.split_once('=') else {
        return Err(Error::Config(format!(
            "--grid {spec}: expected KEY=V1,V2,... (e.g. --grid seed=0,1,2)"
        )));
    };
    let key = checked_key(key, &format!("--grid {spec}"))?;
    let values: Vec<Value> = values.split(',').map(|v| typed(v.trim())).collect();
    if values.iter().any(|v| v.as_str() == Some("")) {
        return Err(Error::Config(format!(
            "--grid {spec}: empty value (values are separated by single commas)"
        )));
    }
    Ok(Axis { key, values })
}

/// Reads a sweep file: a training config (keys as in `--config` files), optionally
/// `base = "FILE.toml"` (a recipe it starts from, relative to this file) and a `[grid]` table
/// of arrays (the axes). A plain training config is a sweep file with no axes.
pub fn load_sweep_file(path: &Path) -> Result<(TrainConfig, Vec<Axis>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| crate::error::toml_err(path, &text, "bad sweep file", &e))?;
    let bad = |msg: String| Error::Format {
        path: path.into(),
        msg,
    };
    let mut axes = Vec::new();
    if let Some(grid) = table.remove("grid") {
        let toml::Value::Table(grid) = grid else {
            return Err(bad("'grid' must be a table of arrays ([grid])".into()));
        };
        for (key, values) in grid {
            let key = checked_key(&key, &format!("{} [grid]", path.display()))?;
            let toml::Value::Array(values) = values else {
                return Err(bad(format!("[grid] {key} must be an array of values")));
            };
            let values = values
                .into_iter()
                .map(|v| serde_json::to_value(v).expect("TOML values are JSON values"))
                .collect();
            axes.push(Axis { key, values });
        }
    }
    let base = match table.remove("base") {
        Some(toml::Value::String(file)) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            TrainConfig::from_file(&dir.join(file))?
        }
        Some(_) => return Err(bad("'base' must be a file name (a string)".into())),
        None => TrainConfig::default(),
    };
    let mut cfg = to_json(&base);
    for (key, value) in table {
        let value = serde_json::to_value(value).expect("TOML values are JSON values");
        match (key.as_str(), value) {
            ("dl", Value::Object(inner)) => {
                for (k, v) in inner {
                    set_key(&mut cfg, &k, v);
                }
            }
            (_, v) => {
                cfg.as_object_mut().expect("an object").insert(key, v);
            }
        }
    }
    let cfg = serde_json::from_value(cfg).map_err(|e| bad(format!("bad settings: {e}")))?;
    Ok((cfg, axes))
}

/// The text a cell's name shows for a setting: strings bare, `/` made `_` so that a model
/// path still names one directory.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.replace(['/', '\\'], "_"),
        Value::Null => "none".into(),
        v => v.to_string(),
    }
}

/// The value `key` has in `cfg`, as JSON.
fn value_of(cfg: &Value, key: &str) -> Value {
    match key_place(key) {
        Some(true) => cfg["dl"][key].clone(),
        _ => cfg[key].clone(),
    }
}

/// The product of the axes over `base`, the last axis varying fastest. Refuses a key given
/// twice, a value that is not a valid setting (naming the key and the value), two values that
/// mean the same, and a cell whose settings do not validate (naming the cell).
pub fn expand(base: &TrainConfig, axes: &[Axis]) -> Result<Vec<Cell>> {
    let base_json = to_json(base);
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key == a.key) {
            return Err(Error::Config(format!("--grid {}: key given twice", a.key)));
        }
        if a.values.is_empty() {
            return Err(Error::Config(format!("--grid {}: no values", a.key)));
        }
        // Each value on its own first, so that a bad one is named with its key.
        let mut seen: Vec<(String, &Value)> = Vec::new();
        for v in &a.values {
            let mut cfg = base_json.clone();
            set_key(&mut cfg, &a.key, v.clone());
            let typed: TrainConfig = serde_json::from_value(cfg)
                .map_err(|e| Error::Config(format!("--grid {}={}: {e}", a.key, label(v))))?;
            let canonical = label(&value_of(&to_json(&typed), &a.key));
            if let Some((_, first)) = seen.iter().find(|(c, _)| *c == canonical) {
                return Err(Error::Config(format!(
                    "--grid {}: values {} and {} are the same setting",
                    a.key,
                    label(first),
                    label(v)
                )));
            }
            seen.push((canonical, v));
        }
    }
    let total: usize = axes.iter().map(|a| a.values.len()).product();
    let mut cells = Vec::with_capacity(total);
    for index in 0..total {
        // Mixed-radix digits of `index`, the last axis the least significant.
        let mut rest = index;
        let mut picks = vec![0; axes.len()];
        for (i, a) in axes.iter().enumerate().rev() {
            picks[i] = rest % a.values.len();
            rest /= a.values.len();
        }
        let mut cfg = base_json.clone();
        for (a, &p) in axes.iter().zip(&picks) {
            set_key(&mut cfg, &a.key, a.values[p].clone());
        }
        let config: TrainConfig = serde_json::from_value(cfg).expect("each value was checked");
        let resolved = to_json(&config);
        let named: Vec<(String, String)> = axes
            .iter()
            .map(|a| (a.key.clone(), label(&value_of(&resolved, &a.key))))
            .collect();
        let name = if named.is_empty() {
            "base".to_string()
        } else {
            named
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        config.validate().map_err(|e| {
            // The check's own message, without a second "invalid setting:".
            let msg = match e {
                Error::Config(m) => m,
                e => e.to_string(),
            };
            Error::Config(format!("cell {name}: {msg}"))
        })?;
        cells.push(Cell {
            name,
            axes: named,
            config,
        });
    }
    Ok(cells)
}

/// The settings that differ between two configs, as `key (was: A, now: B)`.
pub fn differences(old: &TrainConfig, new: &TrainConfig) -> Vec<String> {
    let (old, new) = (to_json(old), to_json(new));
    let (top, dl) = known_keys();
    top.iter()
        .chain(&dl)
        .filter_map(|k| {
            let (a, b) = (value_of(&old, k), value_of(&new, k));
            (a != b).then(|| format!("{k} (was: {}, now: {})", label(&a), label(&b)))
        })
        .collect()
}

/// The settings that vary between configs, as flat (key, text) pairs: every key, `[dl]`
/// flattened, in a fixed order.
pub fn flat_settings(cfg: &TrainConfig) -> Vec<(String, String)> {
    let json = to_json(cfg);
    let (top, dl) = known_keys();
    top.iter()
        .chain(&dl)
        .map(|k| (k.clone(), label(&value_of(&json, k))))
        .collect()
}

/// Whether `key` is a key of the `[dl]` table.
pub fn is_dl_key(key: &str) -> bool {
    key_place(key) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Method;

    #[test]
    fn the_product_runs_the_last_axis_fastest_with_canonical_names() {
        let axes = [
            parse_axis("method=ce,bs").unwrap(),
            parse_axis("imbalance=10,100.0").unwrap(),
            parse_axis("seed=0,1").unwrap(),
        ];
        let cells = expand(&TrainConfig::default(), &axes).unwrap();
        assert_eq!(cells.len(), 8);
        assert_eq!(cells[0].name, "method=ce,imbalance=10.0,seed=0");
        assert_eq!(cells[1].name, "method=ce,imbalance=10.0,seed=1");
        assert_eq!(cells[7].name, "method=bs,imbalance=100.0,seed=1");
        assert_eq!(cells[5].config.method, Method::Bs);
        assert_eq!(cells[5].config.imbalance, 10.0);
        assert_eq!(cells[5].config.seed, 1);
        // Everything else is the base.
        let base = TrainConfig::default();
        assert_eq!(cells[3].config.lr, base.lr);
        assert_eq!(cells[3].config.epochs, base.epochs);
    }

    #[test]
    fn dl_keys_are_set_in_the_dl_table() {
        let axes = [
            parse_axis("method=dl").unwrap(),
            parse_axis("dl.bins=20,50").unwrap(),
            parse_axis("meta_lr=0.001").unwrap(),
        ];
        let base = TrainConfig {
            epochs: 10,
            ..TrainConfig::default()
        };
        let cells = expand(&base, &axes).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[1].config.dl.bins, Some(50));
        assert_eq!(cells[1].config.dl.meta_lr, 1e-3);
        assert_eq!(cells[1].name, "method=dl,bins=50,meta_lr=0.001");
    }

    #[test]
    fn bad_axes_are_refused_naming_the_key() {
        let e = |spec: &str| parse_axis(spec).unwrap_err().to_string();
        assert!(e("seed").contains("KEY=V1,V2"));
        assert!(e("nosie=0.1").contains("unknown config key 'nosie'"));
        assert!(e("seed=0,,1").contains("empty value"));
        let ex = |specs: &[&str]| {
            let axes: Vec<Axis> = specs.iter().map(|s| parse_axis(s).unwrap()).collect();
            expand(&TrainConfig::default(), &axes)
                .unwrap_err()
                .to_string()
        };
        let m = ex(&["method=ce,xx"]);
        assert!(
            m.contains("--grid method=xx") && m.contains("unknown method"),
            "{m}"
        );
        let m = ex(&["epochs=two"]);
        assert!(m.contains("--grid epochs=two"), "{m}");
        assert!(ex(&["seed=0", "seed=1"]).contains("seed: key given twice"));
        assert!(ex(&["imbalance=10,10.0"]).contains("are the same setting"));
        let m = ex(&["method=ce,dl", "bins=50"]);
        assert!(
            m.contains("cell method=ce,bins=50") && m.contains("--method dl"),
            "{m}"
        );
        for m in [ex(&["noise=1.5"]), ex(&["epochs=0"])] {
            assert_eq!(m.lines().count(), 1, "{m}");
        }
    }

    #[test]
    fn differences_name_each_changed_key() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.epochs = 9;
        b.dl.bins = Some(20);
        assert_eq!(
            differences(&a, &b),
            vec!["epochs (was: 4, now: 9)", "bins (was: none, now: 20)"]
        );
    }
}
