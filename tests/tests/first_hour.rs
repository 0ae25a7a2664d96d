//! The mistakes of a newcomer's first hour, each met by one clear line: a spec whose template is
//! missing, an empty `--zk`, an unknown cluster, a typo found while `--set` is in use, a
//! ZooKeeper address nobody listens on; and the flags whose help must say what they do
//! (`info --json`, `render --out`, `run --port`).

use ochopod_e2e::tools::{ochopod_cli, Output};
use ochopod_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const CLI: Duration = Duration::from_secs(60);

/// Fails with `code` and exactly one line on stderr mentioning every one of `mentions`.
fn one_line_failure(out: &Output, code: i32, mentions: &[&str]) -> String {
    assert_eq!(out.code(), Some(code), "{out:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line, got {err:?}");
    assert!(err.starts_with("ochopod: "), "{err:?}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
    err.to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// A spec whose template file is missing, or does not parse, stops `ochopod run` at start-up
/// (exit 2, one line naming the file) instead of starting a pod that goes dead.
#[test]
fn run_checks_its_templates_at_start_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let mut spec = PodSpec::new("first", "tpl", &nowhere)?;
    spec.command("sleep 600");
    let text = spec.to_toml() + "\n[[templates]]\nsource = \"missing.j2\"\ntarget = \"out.txt\"\n";
    let path = write(dir.path(), "pod.toml", &text)?;
    let out = ochopod_cli(&["run", "--spec", &path], &[], CLI)?;
    one_line_failure(&out, 2, &["missing.j2", "cannot read"]);

    write(
        dir.path(),
        "missing.j2",
        "{% for x in cluster.pods %}{{ x }\n",
    )?;
    let out = ochopod_cli(&["run", "--spec", &path], &[], CLI)?;
    one_line_failure(&out, 2, &["missing.j2", "syntax"]);
    Ok(())
}

/// `ochopod ls` says why a pod is dead: its last failure, shortened, in STATUS (and whole in
/// `--json`'s `last_failure` through `info`).
#[test]
fn ls_shows_why_a_pod_is_dead() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let mut spec = PodSpec::new("first", "dead", &zk.connect_string())?;
    // Parses (start-up passes), but renders nothing: the configuration fails, the pod is dead.
    spec.command("sleep 600")
        .template("bad.j2", "{{ cluster.nope }}\n", "bad.txt");
    let agent = Agent::spawn(&spec)?;
    agent.wait_info(Duration::from_secs(60), "the pod to go dead", |i| {
        i.process == "dead"
    })?;
    let out = ochopod_cli(
        &["ls", "first.dead", "--zk", &zk.connect_string()],
        &[],
        CLI,
    )?
    .ok()?;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("first.dead"))
        .unwrap_or_else(|| panic!("no row: {}", out.stdout));
    assert!(row.contains("dead"), "{row}");
    assert!(
        row.contains("template bad.j2"),
        "STATUS says why: {row}\n{}",
        out.stdout
    );
    assert!(row.chars().count() < 200, "shortened: {row}");
    Ok(())
}

/// An empty `--zk` is an error, never a silent 127.0.0.1:2181.
#[test]
fn an_empty_zk_flag_is_an_error() -> anyhow::Result<()> {
    for args in [
        vec!["ls", "--zk", ""],
        vec!["hash", "a.b", "--zk", ""],
        vec!["run", "--spec", "nowhere.toml", "--zk", ""],
    ] {
        let out = ochopod_cli(&args, &[], CLI)?;
        one_line_failure(&out, 2, &["--zk is empty"]);
    }
    Ok(())
}

/// `ochopod hash` of a cluster ZooKeeper does not know fails with one line.
#[test]
fn hash_of_an_unknown_cluster_is_an_error() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let out = ochopod_cli(
        &["hash", "nope.nope", "--zk", &zk.connect_string()],
        &[],
        CLI,
    )?;
    one_line_failure(&out, 2, &["no cluster \"nope.nope\""]);
    assert!(out.stdout.is_empty(), "{out:?}");
    Ok(())
}

/// With `--set`, an error of the file names the file's own line; an error a `--set` brought
/// names that `--set`.
#[test]
fn spec_errors_with_set_name_the_right_line_or_the_set() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut text = String::from("[pod]\nnamespace = \"first\"\ncluster = \"set\"\n");
    for i in 0..20 {
        text.push_str(&format!("# filler {i}\n"));
    }
    text.push_str("[process]\ncomand = \"sleep 600\"\n");
    let typo_line = text.lines().count();
    let path = write(dir.path(), "pod.toml", &text)?;
    let args = |extra: &[&'static str]| {
        let mut all: Vec<String> = vec!["run".into(), "--spec".into(), path.clone()];
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ochopod_cli(&refs, &[], CLI)
    };
    let alone = run(args(&[]))?;
    one_line_failure(&alone, 2, &[&format!("line {typo_line}"), "comand"]);
    let with_set = run(args(&["--set", "model.damper=1", "--set", "pod.port=9999"]))?;
    let err = one_line_failure(&with_set, 2, &[&format!("line {typo_line}"), "comand"]);
    assert!(!err.contains("--set"), "the typo is the file's: {err}");

    // Fixed in the file; now the --set brings the error.
    let fixed = text.replace("comand", "command");
    write(dir.path(), "pod.toml", &fixed)?;
    let out = run(args(&[
        "--set",
        "model.damper=1",
        "--set",
        "process.grace=-1",
    ]))?;
    one_line_failure(&out, 2, &["--set \"process.grace=-1\"", "grace"]);
    let out = run(args(&["--set", "process.comand=x"]))?;
    one_line_failure(&out, 2, &["--set \"process.comand=x\"", "comand"]);
    Ok(())
}

/// `ochopod run` against an address where nothing listens says "refused" at its first
/// attempt, as `ochopod ls` does, rather than "timeout" after the connection timeout.
#[test]
fn run_says_connection_refused_at_once() -> anyhow::Result<()> {
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let mut spec = PodSpec::new("first", "nozk", &nowhere)?;
    spec.command("sleep 600");
    let agent = Agent::spawn(&spec)?;
    let first = wait_until(Duration::from_secs(60), "a ZooKeeper warning", || {
        let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("cannot reach ZooKeeper"))
            .map(str::to_string)
            .ok_or(log)
    })?;
    let error = first.split_once("error=").map(|(_, e)| e).unwrap_or("");
    assert!(
        error.to_lowercase().contains("refused"),
        "the first warning says the connection was refused: {first}"
    );
    let ls = ochopod_cli(&["ls", "--zk", &nowhere], &[], CLI)?;
    one_line_failure(&ls, 1, &["refused"]);
    Ok(())
}

/// `info` prints a table unless `--json`; `render --out` writes the files there and names each
/// one, as its help says; `run --port` is the port inside the container.
#[test]
fn flags_do_what_their_help_says() -> anyhow::Result<()> {
    let zk = ZkServer::start()?;
    let z = zk.connect_string();
    let mut spec = PodSpec::new("first", "flags", &z)?;
    spec.command("sleep 600").template(
        "members.j2",
        "{% for k, p in cluster.pods|items %}{{ p.ip }}\n{% endfor %}",
        "members.txt",
    );
    let agent = Agent::spawn(&spec)?;
    let info = agent.wait_info(Duration::from_secs(60), "the pod to run", |i| {
        i.process == "running"
    })?;
    let key = info.key.clone();

    let json = ochopod_cli(&["info", &key[..8], "--zk", &z, "--json"], &[], CLI)?.ok()?;
    let v: Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(v["key"], key.as_str());
    let table = ochopod_cli(&["info", &key[..8], "--zk", &z], &[], CLI)?.ok()?;
    assert!(
        serde_json::from_str::<Value>(&table.stdout).is_err(),
        "a table, not JSON: {}",
        table.stdout
    );
    let key_line = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("key"))
        .unwrap_or_else(|| panic!("a `key` line: {}", table.stdout));
    assert!(key_line.ends_with(&key), "{key_line}");
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["process", "running"]),
        "{}",
        table.stdout
    );

    // render --out: the file lands there and one line names it; its contents are not printed.
    let work = tempfile::tempdir()?;
    let view = work.path().join("view.json");
    let vp = view.to_str().expect("utf-8");
    ochopod_cli(&["info", &key[..8], "--zk", &z, "--view", vp], &[], CLI)?.ok()?;
    let out_dir = work.path().join("out");
    let od = out_dir.to_str().expect("utf-8");
    let spec_path = agent.spec_path().to_str().expect("utf-8").to_string();
    let rendered = ochopod_cli(
        &["render", "--spec", &spec_path, "--view", vp, "--out", od],
        &[],
        CLI,
    )?
    .ok()?;
    let written = std::fs::read_to_string(out_dir.join("members.txt"))?;
    assert_eq!(written, "127.0.0.1\n");
    assert_eq!(rendered.stdout.lines().count(), 1, "{}", rendered.stdout);
    assert!(rendered
        .stdout
        .contains(&out_dir.join("members.txt").display().to_string()));
    let help = ochopod_cli(&["render", "--help"], &[], CLI)?.ok()?.stdout;
    let out_help = help
        .split("--out")
        .nth(1)
        .unwrap_or_else(|| panic!("--out in {help}"));
    assert!(
        out_help.contains("contents are not printed") && !out_help.contains("and print them"),
        "{help}"
    );
    let help = ochopod_cli(&["run", "--help"], &[], CLI)?.ok()?.stdout;
    let port_help = help
        .split("--port")
        .nth(1)
        .unwrap_or_else(|| panic!("--port in {help}"));
    assert!(port_help.contains("inside the container"), "{help}");
    Ok(())
}
