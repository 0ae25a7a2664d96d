//! The `/exec` request: its Rust shape and its JSON wire format.
//!
//! Wire format (request body of `POST /exec`):
//!
//! ```json
//! {"tool": "backup", "args": ["--full"], "files": {"dump.sql": "<base64>"}}
//! ```
//!
//! `args` and `files` may be omitted; unknown keys are refused. File contents are standard
//! base64 (with padding). File names are plain names: not empty, at most 255 bytes, no `/`,
//! no `\`, no `..`, no NUL.
//!
//! The 1.x form (what Ochopod 1.x pods accept and its tooling sends): no JSON body, but an
//! `X-Shell: TOOL ARG ARG` header split on single spaces (as 1.x does, so two spaces make an
//! empty argument), and files as a `multipart/form-data` upload, one part per file, saved under
//! its field name. 1.x tooling names a file by its command-line token, often a path: the file
//! is saved under the path's last component, and an argument equal to a field name is rewritten
//! to that saved name so the tool finds the file in its folder. A field whose last component is
//! not a plain file name is refused, so no upload leaves the tool's folder.

use crate::multipart;
use crate::Error;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tool run asked by `POST /exec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The tool's name (a `[tools.NAME]` of the spec).
    pub tool: String,
    /// Arguments appended to the tool's command.
    pub args: Vec<String>,
    /// Uploaded files, by plain file name (validated, see [`ExecRequest::validate`]).
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecWire {
    tool: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

const MAX_NAME: usize = 255;

/// Checks that `name` is a plain file name that cannot escape the folder it is written to.
pub(crate) fn check_file_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME {
        "is longer than 255 bytes"
    } else if name.contains("..") {
        "contains `..`"
    } else if name.contains('/') || name.contains('\\') {
        "contains a path separator"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name == "." {
        "is `.`"
    } else {
        return Ok(());
    };
    Err(format!(
        "file name {name:?} {why}: send plain file names (e.g. `data.json`)"
    ))
}

impl ExecRequest {
    /// Checks what the server would refuse: an empty tool name or a file name that is not a
    /// plain name.
    pub fn validate(&self) -> Result<(), Error> {
        if self.tool.trim().is_empty() {
            return Err(Error::Exec(
                "`tool` is empty: name one of the pod's [tools.NAME]".to_string(),
            ));
        }
        for name in self.files.keys() {
            check_file_name(name).map_err(Error::Exec)?;
        }
        Ok(())
    }

    /// Parses and validates the JSON body of `POST /exec`.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, String> {
        let wire: ExecWire = serde_json::from_slice(body).map_err(|e| {
            format!(
                "malformed exec body: {e}; expected {{\"tool\": NAME, \"args\": [..], \"files\": {{NAME: BASE64}}}}"
            )
        })?;
        let mut files = BTreeMap::new();
        for (name, data) in wire.files {
            check_file_name(&name)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.as_bytes())
                .map_err(|e| format!("file {name:?} is not valid base64: {e}"))?;
            files.insert(name, bytes);
        }
        let req = ExecRequest {
            tool: wire.tool,
            args: wire.args,
            files,
        };
        req.validate().map_err(|e| match e {
            Error::Exec(msg) => msg,
            other => other.to_string(),
        })?;
        Ok(req)
    }

    /// Builds the request of the 1.x form: the `X-Shell` line, the request's content type and
    /// its body (empty, or a multipart form of uploads).
    pub(crate) fn from_shell(
        line: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, String> {
        let mut tokens = line.split(' ').map(str::to_string);
        let tool = tokens.next().unwrap_or_default();
        let mut args: Vec<String> = tokens.collect();
        let mut files = BTreeMap::new();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let boundary = multipart::boundary(content_type.unwrap_or(""))?;
            let mut renamed = BTreeMap::new();
            for part in multipart::parse(body, &boundary)? {
                // Form fields without a file name are not uploads (1.x ignores them too).
                if part.filename.is_none() {
                    continue;
                }
                let saved = upload_name(&part.name)?;
                if files.insert(saved.clone(), part.data).is_some() {
                    return Err(format!(
                        "two uploads would be saved as {saved:?}: give the files distinct names"
                    ));
                }
                renamed.insert(part.name, saved);
            }
            for arg in &mut args {
                if let Some(saved) = renamed.get(arg.as_str()) {
                    arg.clone_from(saved);
                }
            }
        }
        Ok(ExecRequest { tool, args, files })
    }

    /// Serializes the request into the JSON body of `POST /exec`.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let wire = ExecWire {
            tool: self.tool.clone(),
            args: self.args.clone(),
            files: self
                .files
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
        };
        // Strings and maps of strings always serialize.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// The name an upload is saved under: the last component of its field name, which must be a
/// plain file name.
fn upload_name(field: &str) -> Result<String, String> {
    let base = field.rsplit(['/', '\\']).next().unwrap_or("");
    check_file_name(base).map_err(|why| format!("upload field {field:?}: {why}"))?;
    Ok(base.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain() {
        for good in ["a", "data.json", "x y", ".hidden", "a.b.c"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "separator"),
            ("a\\b", "separator"),
            ("..", "`..`"),
            ("a..b", "`..`"),
            ("a\0", "NUL"),
            (".", "`.`"),
        ] {
            let err = check_file_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(check_file_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn wire_round_trip() {
        let mut req = ExecRequest {
            tool: "backup".into(),
            args: vec!["--full".into()],
            ..Default::default()
        };
        req.files.insert("bin".into(), vec![0, 255, 10, 13]);
        let back = ExecRequest::from_json(&req.to_json()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn the_1x_form_splits_on_single_spaces_and_keeps_basenames() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"/home/me/conf.yml\"; \
            filename=\"/home/me/conf.yml\"\r\n\r\nport: 1\r\n--B\r\nContent-Disposition: \
            form-data; name=\"note\"\r\n\r\nnot a file\r\n--B--\r\n";
        let req = ExecRequest::from_shell(
            "deploy  --to /home/me/conf.yml",
            Some("multipart/form-data; boundary=B"),
            body,
        )
        .unwrap();
        assert_eq!(req.tool, "deploy");
        assert_eq!(req.args, vec!["", "--to", "conf.yml"]);
        assert_eq!(req.files.len(), 1);
        assert_eq!(req.files["conf.yml"], b"port: 1");
        let bare = ExecRequest::from_shell("t", None, b"").unwrap();
        assert_eq!((bare.tool.as_str(), bare.args.len()), ("t", 0));
    }

    #[test]
    fn the_1x_form_refuses_escapes_and_clashes() {
        let one = |name: &str| {
            format!(
                "--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n\r\nd\r\n"
            )
        };
        let ct = Some("multipart/form-data; boundary=B");
        for (name, why) in [
            ("a/..", "`..`"),
            ("dir/", "empty"),
            ("..", "`..`"),
            (".", "`.`"),
        ] {
            let body = format!("{}--B--", one(name));
            let err = ExecRequest::from_shell("t", ct, body.as_bytes()).unwrap_err();
            assert!(
                err.contains(why) && err.contains("upload field"),
                "{name}: {err}"
            );
        }
        let body = format!("{}{}--B--", one("a/x"), one("b/x"));
        let err = ExecRequest::from_shell("t", ct, body.as_bytes()).unwrap_err();
        assert!(err.contains("two uploads"), "{err}");
        let err = ExecRequest::from_shell("t", Some("application/json"), b"{}").unwrap_err();
        assert!(err.contains("multipart/form-data"), "{err}");
    }

    #[test]
    fn bad_bodies_are_named() {
        for (body, why) in [
            (r#"{"tool":"t","files":{"a":"!!"}}"#, "not valid base64"),
            (r#"{"tool":"t","files":{"../x":""}}"#, "`..`"),
            (r#"{"tool":""}"#, "`tool` is empty"),
            (r#"{"tool":"t","extra":1}"#, "unknown field"),
            (r#"{"args":[]}"#, "missing field `tool`"),
            ("[", "malformed exec body"),
        ] {
            let err = ExecRequest::from_json(body.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
    }
}
