//! The dry run behind `ochopod plan`: the files a configuration would write, rendered into
//! memory and compared with what is on disk, and the line diff shown to the operator.

use crate::lifecycle::HookResult;
use ochopod_core::wire::{PlanDecision, Would};
use serde::Serialize;
use serde_json::{json, Value};

/// One file a configuration would write, compared with the file on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    /// The file written (as the pod resolves it).
    pub path: String,
    /// Whether its content would change (a missing file changes).
    pub changed: bool,
    /// The line diff from the file on disk to the new content (empty when unchanged).
    pub diff: String,
}

impl PlannedFile {
    /// Compares `new` with `old` (`None`: the file does not exist yet).
    pub fn compare(path: String, old: Option<&str>, new: &str) -> PlannedFile {
        let changed = old != Some(new);
        let diff = if changed {
            line_diff(old.unwrap_or(""), new)
        } else {
            String::new()
        };
        PlannedFile {
            path,
            changed,
            diff,
        }
    }
}

/// What a pod can tell of its next configuration without carrying it out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The files its configuration renders.
    pub files: Vec<PlannedFile>,
    /// Whether it has a reload hook to run when a file changes in place.
    pub reload_hook: bool,
}

/// The answer to `plan`: the pod machine's decision (`would`, `why`, `dependencies`) with the
/// files the lifecycle would render. A rendering that fails means the configuration would fail.
pub(crate) fn answer(decision: PlanDecision, plan: HookResult<Option<Plan>>) -> Value {
    let reload = decision.would == Would::Reload;
    let mut out = match serde_json::to_value(decision) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    match plan {
        Err(e) => {
            out.insert("would".into(), json!(Would::Fail));
            out.insert(
                "why".into(),
                json!(format!(
                    "the configuration would fail and the pod turn dead: {}",
                    e.0
                )),
            );
        }
        Ok(None) => {
            out.insert("files".into(), Value::Null);
        }
        Ok(Some(p)) => {
            let changed = p.files.iter().any(|f| f.changed);
            if reload {
                let why = match (changed, p.reload_hook) {
                    (false, _) => {
                        "not strict, same dependencies, no rendered file changes: the process \
                         keeps running and the reload hook does not run"
                    }
                    (true, true) => {
                        "not strict, same dependencies: files change and the reload hook runs; \
                         the process keeps running"
                    }
                    (true, false) => {
                        "not strict, same dependencies: files change and are re-rendered in \
                         place; there is no reload hook, so the process keeps running untold"
                    }
                };
                out.insert("why".into(), json!(why));
            }
            out.insert("reload_hook".into(), json!(p.reload_hook));
            out.insert("files".into(), json!(p.files));
        }
    }
    Value::Object(out)
}

/// Lines this far either side of a change are shown with it.
const CONTEXT: usize = 2;
/// Above this many line pairs, the diff is every old line removed and every new one added.
const MAX_CELLS: usize = 4_000_000;

/// A unified-style line diff: `@@ -a,n +b,m @@` hunks of ` `, `-` and `+` lines.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Edit script: (tag, old index, new index).
    let mut ops: Vec<(char, usize, usize)> = Vec::new();
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        ops.extend((0..a.len()).map(|i| ('-', i, 0)));
        ops.extend((0..b.len()).map(|j| ('+', a.len(), j)));
    } else {
        // Longest common subsequence, suffix table.
        let (n, m) = (a.len(), b.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if a[i] == b[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && a[i] == b[j] {
                ops.push((' ', i, j));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
                ops.push(('-', i, j));
                i += 1;
            } else {
                ops.push(('+', i, j));
                j += 1;
            }
        }
    }
    // Hunks: runs of changes with CONTEXT lines around them, merged when they touch.
    let changes: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changes.len() {
        let start = changes[k].saturating_sub(CONTEXT);
        let mut end = (changes[k] + CONTEXT + 1).min(ops.len());
        k += 1;
        while k < changes.len() && changes[k] <= end + CONTEXT {
            end = (changes[k] + CONTEXT + 1).min(ops.len());
            k += 1;
        }
        let hunk = &ops[start..end];
        let old_n = hunk.iter().filter(|o| o.0 != '+').count();
        let new_n = hunk.iter().filter(|o| o.0 != '-').count();
        let (old_at, new_at) = (hunk[0].1 + 1, hunk[0].2 + 1);
        out.push_str(&format!("@@ -{old_at},{old_n} +{new_at},{new_n} @@\n"));
        for (tag, i, j) in hunk {
            let line = if *tag == '+' { b[*j] } else { a[*i] };
            out.push(*tag);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_shows_with_its_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "a\nb\nc\nD\ne\nf\ng\n";
        assert_eq!(
            line_diff(old, new),
            "@@ -2,5 +2,5 @@\n b\n c\n-d\n+D\n e\n f\n"
        );
    }

    #[test]
    fn additions_removals_and_a_new_file() {
        assert_eq!(line_diff("", "x\ny\n"), "@@ -1,0 +1,2 @@\n+x\n+y\n");
        assert_eq!(line_diff("x\ny\n", "x\n"), "@@ -1,2 +1,1 @@\n x\n-y\n");
        assert_eq!(line_diff("same\n", "same\n"), "");
        let far = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let both = "one\n2\n3\n4\n5\n6\n7\n8\n9\nten\n";
        assert_eq!(line_diff(far, both).matches("@@ -").count(), 2, "two hunks");
    }

    #[test]
    fn the_answer_explains_a_reload_by_the_files_and_the_hook() {
        let decision = || PlanDecision {
            would: Would::Reload,
            why: "x".into(),
            dependencies: Default::default(),
        };
        let file = |changed: bool| PlannedFile {
            path: "a.cfg".into(),
            changed,
            diff: if changed {
                "@@ -1,1 +1,1 @@\n-a\n+b\n".into()
            } else {
                String::new()
            },
        };
        let plan = |changed, reload_hook| {
            Ok(Some(Plan {
                files: vec![file(changed)],
                reload_hook,
            }))
        };
        let why = |v: Value| v["why"].as_str().unwrap().to_string();
        assert!(why(answer(decision(), plan(false, false))).contains("no rendered file changes"));
        assert!(why(answer(decision(), plan(true, true))).contains("the reload hook runs"));
        assert!(why(answer(decision(), plan(true, false))).contains("no reload hook"));
        let a = answer(decision(), plan(true, false));
        assert_eq!(a["files"][0]["diff"], "@@ -1,1 +1,1 @@\n-a\n+b\n");
        let failed = answer(decision(), Err(crate::Failure("undefined `x`".into())));
        assert_eq!(failed["would"], "fail");
        assert!(why(failed).contains("undefined `x`"));
        // A restart stays a restart, with its files.
        let strict = PlanDecision {
            would: Would::Restart,
            why: "strict".into(),
            dependencies: Default::default(),
        };
        let restart = answer(strict, plan(true, false));
        assert_eq!(
            (restart["would"].clone(), why(restart)),
            (json!("restart"), "strict".into())
        );
    }

    #[test]
    fn compare_says_whether_the_file_changes() {
        let same = PlannedFile::compare("a".into(), Some("x\n"), "x\n");
        assert!(!same.changed && same.diff.is_empty());
        let missing = PlannedFile::compare("a".into(), None, "x\n");
        assert!(missing.changed);
        assert_eq!(missing.diff, "@@ -1,0 +1,1 @@\n+x\n");
    }
}
