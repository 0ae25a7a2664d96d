//! The agent does not leak descriptors: after many hooks and piped children, its open
//! descriptors come back to where they were. A binary of its own, so no other test opens or
//! closes descriptors meanwhile; like `reaper.rs`, nothing here waits for a child through std
//! or tokio.

use std::collections::BTreeMap;
use std::time::Duration;

use ochopod_supervisor::{CommandSpec, ExitStatus, OutputMode, PodLog, Reaper};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_and_piped_children_leave_no_descriptor_behind() {
    let reaper = Reaper::install().unwrap();
    let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
    let hook = CommandSpec::shell("cat; echo err >&2; exit 1").env(env.clone());
    let timeout = Duration::from_secs(30);
    // Warm up: the runtimes' own descriptors (timers, signal pipes) are opened once.
    reaper
        .run(&hook, Some(b"x".to_vec()), timeout)
        .await
        .unwrap();
    let baseline = open_fds();

    for i in 0..40 {
        let out = reaper
            .run(&hook, Some(format!("hook {i}").into_bytes()), timeout)
            .await
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(1));
        assert_eq!(out.stdout, format!("hook {i}"));
    }
    let hung = CommandSpec::shell("exec sleep 60").env(env.clone());
    for _ in 0..5 {
        let err = reaper.run(&hung, None, Duration::from_millis(50)).await;
        assert!(err.is_err(), "{err:?}");
    }
    let log = PodLog::new();
    for i in 0..20 {
        let spec = CommandSpec::shell(format!("echo child {i}; echo err >&2"))
            .env(env.clone())
            .output(OutputMode::Pipe(log.clone()));
        let mut child = reaper.spawn(&spec).unwrap();
        assert!(child.wait().await.success());
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = open_fds();
        if now <= baseline {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "descriptors leak: {now} open, {baseline} before"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        log.lines().len(),
        40,
        "every piped line arrived: {:?}",
        log.lines()
    );
}
