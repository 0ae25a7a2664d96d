//! The reaper with real processes. `waitpid(-1)` is process-global: every test that spawns a
//! process lives in this one binary, and nothing here waits for a child through std or tokio.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use ochopod_supervisor::{
    group_alive, signal_group, CommandSpec, Error, ExitStatus, OutputMode, PodLog, Reaper, Signal,
    CAPTURE_CAP, POD_LOG_CAP,
};

const LONG: Duration = Duration::from_secs(30);

fn reaper() -> Reaper {
    Reaper::install().expect("the reaper installs")
}

fn path_env() -> BTreeMap<String, String> {
    BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())])
}

fn sh(line: &str) -> CommandSpec {
    CommandSpec::shell(line).env(path_env())
}

/// Polls `cond` until it holds, failing with `what` after a generous deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (state, ppid) of a process, `None` once it is gone (reaped).
/// The process lines of `log` as `pid N : line`, without their `asctime - INFO - ` stamp.
fn process_lines(log: &PodLog) -> Vec<String> {
    log.lines()
        .iter()
        .filter_map(|l| l.split_once(" - INFO - ").map(|(_, rest)| rest.to_string()))
        .collect()
}

fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(stat(*pid), Some(('Z', ppid)) if ppid == me))
        .collect()
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_and_shell_commands_get_their_cwd_and_exactly_their_env() {
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let real_dir = dir.path().canonicalize().unwrap();

    let argv = CommandSpec::argv(["sh", "-c", r#"pwd; printf '%s\n' "$GREETING" "[$HOME]""#])
        .cwd(dir.path())
        .env(path_env())
        .var("GREETING", "hello pod 'one'");
    let out = reaper.run(&argv, None, LONG).await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("{}\nhello pod 'one'\n[]\n", real_dir.display()),
        "cwd, our variable, and nothing inherited from the agent (HOME)"
    );

    let printenv = CommandSpec::argv(["printenv"])
        .env(path_env())
        .var("A", "1");
    let out = reaper.run(&printenv, None, LONG).await.unwrap();
    let vars: BTreeSet<&str> = out.stdout.lines().collect();
    assert_eq!(vars, BTreeSet::from(["A=1", "PATH=/usr/bin:/bin"]));

    let shell = sh("echo \"$X\" > out.txt; exit 7")
        .cwd(dir.path())
        .var("X", "written");
    let out = reaper.run(&shell, None, LONG).await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(7));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "written\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_clear_errors() {
    let reaper = reaper();
    let err = reaper
        .spawn(&CommandSpec::argv(["/no/such/program", "x"]))
        .unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/no/such/program x"), "{err}");

    let err = reaper.spawn(&sh("true").cwd("/no/such/dir")).unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");

    let err = reaper
        .spawn(&CommandSpec::argv(Vec::<String>::new()))
        .unwrap_err();
    assert!(matches!(err, Error::EmptyArgv), "{err:?}");

    let own_group = nix::unistd::getpgrp().as_raw() as u32;
    for pgid in [0, 1, own_group, u32::MAX] {
        let err = signal_group(pgid, Signal::SIGTERM).unwrap_err();
        assert!(matches!(err, Error::InvalidGroup { .. }), "{pgid}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_are_reported() {
    let reaper = reaper();
    let cases = [
        ("exit 0", ExitStatus::Code(0)),
        ("exit 3", ExitStatus::Code(3)),
        ("exit 255", ExitStatus::Code(255)),
        (
            "kill -TERM $$",
            ExitStatus::Signaled(Signal::SIGTERM as i32),
        ),
        (
            "kill -KILL $$",
            ExitStatus::Signaled(Signal::SIGKILL as i32),
        ),
        // A real-time signal: nix's waitpid would lose this status.
        ("kill -40 $$", ExitStatus::Signaled(40)),
    ];
    for (line, want) in cases {
        let out = reaper.run(&sh(line), None, LONG).await.unwrap();
        assert_eq!(out.status, want, "{line}");
        let mut child = reaper.spawn(&sh(line)).unwrap();
        assert_eq!(child.wait().await, want, "{line} (spawned)");
        assert_eq!(child.wait().await, want, "wait again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_arrives_before_its_waiter_is_kept() {
    let reaper = reaper();
    let mut early = reaper.spawn(&sh("exit 5")).unwrap();
    eventually("the early child is reaped", || early.try_status().is_some()).await;
    assert!(gone(early.pid()), "reaped, not a zombie");
    assert_eq!(early.wait().await, ExitStatus::Code(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_group_reaches_the_shell_and_its_background_grandchild() {
    let reaper = reaper();
    let log = PodLog::new();
    let spec = sh("sleep 60 & echo \"bg $!\"; wait").output(OutputMode::Pipe(log.clone()));
    let mut child = reaper.spawn(&spec).unwrap();
    let prefix = format!("pid {} : bg ", child.pid());
    let mut grandchild = 0;
    eventually("the shell prints its background pid", || {
        grandchild = process_lines(&log)
            .iter()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or(0);
        grandchild != 0
    })
    .await;
    assert!(stat(grandchild).is_some(), "the grandchild runs");
    assert!(group_alive(child.pid()), "the group has members");
    assert!(
        !group_alive(1) && !group_alive(0),
        "init's and ours read as empty"
    );

    child.signal_group(Signal::SIGTERM).unwrap();
    assert_eq!(
        child.wait().await,
        ExitStatus::Signaled(Signal::SIGTERM as i32)
    );
    eventually("the grandchild is killed and reaped", || gone(grandchild)).await;
    eventually("the group is empty", || !group_alive(child.pid())).await;
    // The group is empty now: signalling it again is not an error.
    child.signal_group(Signal::SIGKILL).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_survives_it_and_dies_of_sigkill() {
    let reaper = reaper();
    let log = PodLog::new();
    let spec = sh("trap '' TERM; echo ready; exec sleep 60").output(OutputMode::Pipe(log.clone()));
    let mut child = reaper.spawn(&spec).unwrap();
    let ready = format!("pid {} : ready", child.pid());
    eventually("the trap is set", || process_lines(&log).contains(&ready)).await;

    child.signal_group(Signal::SIGTERM).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), child.wait()).await;
    assert!(waited.is_err(), "SIGTERM is ignored: {waited:?}");
    assert_eq!(child.try_status(), None);

    child.signal_group(Signal::SIGKILL).unwrap();
    assert_eq!(
        child.wait().await,
        ExitStatus::Signaled(Signal::SIGKILL as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_while_concurrent_hooks_get_their_own_codes() {
    let reaper = reaper();
    let me = std::process::id();

    // An orphan that stays: it is reparented to us (the subreaper), then reaped when it dies.
    let out = reaper
        .run(&sh("sleep 60 & echo $!; exit 0"), None, LONG)
        .await
        .unwrap();
    assert!(out.status.success());
    let orphan: u32 = out.stdout.trim().parse().unwrap();
    eventually(
        "the orphan is reparented to us",
        || matches!(stat(orphan), Some((_, ppid)) if ppid == me),
    )
    .await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan as i32), Signal::SIGKILL).unwrap();
    eventually("the killed orphan is reaped", || gone(orphan)).await;

    // Many hooks at once, each leaving a short-lived orphan behind.
    let mut hooks = tokio::task::JoinSet::new();
    for code in 0..48 {
        let reaper = reaper.clone();
        hooks.spawn(async move {
            let line = format!("sleep 0.0{} & echo $!; exit {code}", code % 10);
            let out = reaper.run(&sh(&line), None, LONG).await.unwrap();
            (code, out)
        });
    }
    let mut orphans = Vec::new();
    while let Some(joined) = hooks.join_next().await {
        let (code, out) = joined.unwrap();
        assert_eq!(out.status, ExitStatus::Code(code), "{out:?}");
        orphans.push(out.stdout.trim().parse::<u32>().unwrap());
    }
    assert_eq!(orphans.len(), 48);
    eventually("every orphan is reaped", || {
        orphans.iter().all(|p| gone(*p))
    })
    .await;
    eventually("no zombie of ours is left", || our_zombies().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hook_times_out_and_its_group_is_killed() {
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let line = format!("sleep 60 & echo $$ $! > {}; sleep 61", pids.display());
    let err = reaper
        .run(&sh(&line), None, Duration::from_millis(1500))
        .await
        .unwrap_err();
    match &err {
        Error::Timeout { command, after } => {
            assert_eq!(command, &line);
            assert_eq!(*after, Duration::from_millis(1500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("sleep 61"), "{err}");
    let text = std::fs::read_to_string(&pids).expect("the hook wrote its pids");
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    eventually("the hook and its background child are gone", || {
        pids.iter().all(|p| gone(*p))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_lands_in_the_pod_log_which_stays_under_32k() {
    let reaper = reaper();
    let log = PodLog::new();
    let spec =
        sh("i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done; echo oops >&2")
            .output(OutputMode::Pipe(log.clone()));
    let mut child = reaper.spawn(&spec).unwrap();
    let pid = child.pid();
    let last = format!("pid {pid} : line 2999");
    let err = format!("pid {pid} : oops");
    eventually("both streams are in the log", || {
        assert!(log.len_bytes() <= POD_LOG_CAP);
        assert!(log.text().len() <= POD_LOG_CAP);
        let lines = process_lines(&log);
        lines.contains(&last) && lines.contains(&err)
    })
    .await;
    assert!(child.wait().await.success());
    let lines = process_lines(&log);
    assert!(
        !lines.contains(&format!("pid {pid} : line 0")),
        "the oldest lines were dropped"
    );
    assert!(log.len_bytes() > POD_LOG_CAP / 2, "the ring is kept full");

    // run() captures and also tees into the log when the spec pipes.
    let tee = PodLog::new();
    let out = reaper
        .run(
            &sh("echo to-stdout; echo to-stderr >&2; exit 2").output(OutputMode::Pipe(tee.clone())),
            None,
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(2));
    assert_eq!(out.stdout, "to-stdout\n");
    assert_eq!(out.stderr, "to-stderr\n");
    let mut teed: Vec<String> = process_lines(&tee)
        .iter()
        .map(|l| l.split_once(" : ").unwrap().1.to_string())
        .collect();
    teed.sort();
    assert_eq!(teed, ["to-stderr", "to-stdout"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_read_stdin_and_big_outputs_are_capped() {
    let reaper = reaper();
    let out = reaper.run(&sh("cat"), None, LONG).await.unwrap();
    assert_eq!(out.stdout, "", "no stdin given: /dev/null");
    let view = br#"{"pods": {"a": 1}}"#.to_vec();
    let out = reaper
        .run(&sh("cat"), Some(view.clone()), LONG)
        .await
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), view.as_slice());

    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = reaper
        .run(&sh("cat"), Some(big.clone()), LONG)
        .await
        .unwrap();
    assert_eq!(out.stdout.as_bytes(), big.as_slice());

    let out = reaper.run(&sh("exit 0"), Some(big), LONG).await.unwrap();
    assert!(
        out.status.success(),
        "a hook that ignores its stdin is fine"
    );

    let out = reaper
        .run(&sh("head -c 3000000 /dev/zero | tr '\\0' z"), None, LONG)
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), CAPTURE_CAP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_do_not_inherit_the_agents_descriptors() {
    let reaper = reaper();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tokio_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Another child's pipes are open in the agent too.
    let log = PodLog::new();
    let mut other = reaper
        .spawn(&sh("exec sleep 60").output(OutputMode::Pipe(log)))
        .unwrap();

    let link = |path: String| {
        std::fs::read_link(path)
            .ok()
            .map(|p| p.display().to_string())
    };
    let fds_of = |pid: u32| -> BTreeMap<u32, String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| {
                let fd: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                Some((fd, link(format!("/proc/{pid}/fd/{fd}"))?))
            })
            .collect()
    };
    use std::os::fd::AsRawFd;
    let ours = fds_of(std::process::id());
    let listener_links = [
        ours[&(std_listener.as_raw_fd() as u32)].clone(),
        ours[&(tokio_listener.as_raw_fd() as u32)].clone(),
    ];
    assert!(listener_links.iter().all(|l| l.starts_with("socket:")));

    let sleep = CommandSpec::argv(["sleep", "60"]).env(path_env());
    for output in [
        OutputMode::Null,
        OutputMode::Inherit,
        OutputMode::Pipe(PodLog::new()),
    ] {
        let mut child = reaper.spawn(&sleep.clone().output(output.clone())).unwrap();
        // Right after exec the dynamic loader may hold a library open for a moment; a leaked
        // descriptor would stay for good.
        let mut theirs = BTreeMap::new();
        eventually("the child has nothing but stdio open", || {
            theirs = fds_of(child.pid());
            theirs.keys().copied().eq([0, 1, 2])
        })
        .await;
        for link in &listener_links {
            assert!(
                !theirs.values().any(|l| l == link),
                "{output:?}: the child sees our socket {link}: {theirs:?}"
            );
        }
        child.signal_group(Signal::SIGKILL).unwrap();
        assert_eq!(
            child.wait().await,
            ExitStatus::Signaled(Signal::SIGKILL as i32)
        );
    }
    other.signal_group(Signal::SIGKILL).unwrap();
    assert_eq!(
        other.wait().await,
        ExitStatus::Signaled(Signal::SIGKILL as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_hook_kills_its_group() {
    let reaper = reaper();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let line = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let spec = sh(&line);
    let run = reaper.run(&spec, None, LONG);
    let mut pid = 0;
    tokio::select! {
        result = run => panic!("the hook cannot end by itself: {result:?}"),
        _ = eventually("the hook starts", || {
            pid = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
            pid != 0
        }) => {}
    }
    // The run future is dropped here.
    eventually("the abandoned hook is killed and reaped", || gone(pid)).await;
}
