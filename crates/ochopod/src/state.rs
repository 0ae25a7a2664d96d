//! `state_dir`: the pod's key and first seq, kept so a container restarted on the same volume
//! comes back as the same member.

use std::path::Path;

const FILE: &str = "ochopod-state.json";

/// Reads `(key, seq)` from `dir`, if a previous run left them there.
pub(crate) fn load(dir: &Path) -> Result<Option<(String, Option<u64>)>, String> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not valid JSON ({e}): fix or delete it (the pod then joins as a new member)",
            path.display()
        )
    })?;
    let key = v
        .get("key")
        .and_then(|k| k.as_str())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("{} has no `key`: fix or delete it", path.display()))?;
    Ok(Some((
        key.to_string(),
        v.get("seq").and_then(|s| s.as_u64()),
    )))
}

/// Keeps `key` and `seq` in `dir` (written atomically).
pub(crate) fn save(dir: &Path, key: &str, seq: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::json!({ "key": key, "seq": seq }).to_string(),
    )?;
    std::fs::rename(tmp, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), "abc", 7).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(("abc".into(), Some(7))));
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("fix or delete"));
    }
}
