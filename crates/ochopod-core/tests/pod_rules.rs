//! The pod's rules (`docs/protocol.md#the-pod`), one test each, on the simulator of `sim/`.

mod sim;

use ochopod_core::pod::{Hook, HookInput, PodAction, Process, StepResult};
use ochopod_core::settings::{GiveUp, ProcessSettings};
use ochopod_core::wire::{Dependencies, Epoch, Task};
use serde_json::json;
use sim::*;

fn no_deps() -> Dependencies {
    Dependencies::new()
}

fn deps(keys: &[&str]) -> Dependencies {
    let mut d = Dependencies::new();
    d.insert("db".into(), pods_in("prod", "db", keys));
    d
}

/// A pod that was configured and runs its process.
fn running(settings: ProcessSettings) -> PodSim {
    let mut s = PodSim::new(settings);
    let id = s.on(&[], &no_deps());
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.m.process(), Process::Running);
    assert!(s.m.ready());
    s.clear();
    s
}

fn view_body() -> serde_json::Value {
    body(&pods(&["pod-a", "pod-b"]), &no_deps())
}

#[test]
fn control_requests_answer_the_codes_of_the_design() {
    type Setup = fn(&mut PodSim) -> u64;
    let table: Vec<(&str, Setup, u16)> = vec![
        ("check passes", |s| s.control(Task::Check, view_body()), 200),
        (
            "check: can_configure fails",
            |s| {
                s.script(Hook::CanConfigure, vec![Err("zk not there".into())]);
                s.control(Task::Check, view_body())
            },
            406,
        ),
        (
            "on configures and starts",
            |s| s.on(&["pod-b"], &no_deps()),
            200,
        ),
        ("off", |s| s.control(Task::Off, json!(null)), 200),
        ("ok", |s| s.control(Task::Ok, view_body()), 200),
        (
            "ok: configured fails",
            |s| {
                s.script(Hook::Configured, vec![Err("boom".into())]);
                s.control(Task::Ok, view_body())
            },
            500,
        ),
        ("signal", |s| s.control(Task::Signal, json!({"x": 1})), 200),
        (
            "signal fails",
            |s| {
                s.script(Hook::Signal, vec![Err("no".into())]);
                s.control(Task::Signal, json!({}))
            },
            500,
        ),
        ("kill", |s| s.control(Task::Kill, json!(null)), 200),
        (
            "malformed body",
            |s| s.control(Task::Check, json!({"pods": 3})),
            400,
        ),
        (
            "a view without this pod",
            |s| s.control(Task::On, body(&pods(&["pod-b"]), &no_deps())),
            400,
        ),
        (
            "stale epoch",
            |s| {
                let e = |seq| Some(Epoch { czxid: 7, seq });
                let first = s.request(Task::Check, view_body(), e(5), None);
                s.settle();
                assert_eq!(s.code(first), 200);
                s.request(Task::Check, view_body(), e(4), None)
            },
            409,
        ),
        (
            "dead pod",
            |s| {
                s.control(Task::Kill, json!(null));
                s.settle();
                s.control(Task::Check, view_body())
            },
            410,
        ),
        (
            "deadline passed before start",
            |s| {
                let at = s.now;
                s.request(Task::Check, view_body(), None, Some(at))
            },
            408,
        ),
        (
            "a configure failure",
            |s| {
                s.configures
                    .push_back(Err("zoo.cfg.j2 line 3: undefined `cluster.foo`".into()));
                s.on(&[], &no_deps())
            },
            406,
        ),
    ];
    for (what, setup, code) in table {
        let mut s = PodSim::new(process());
        let id = setup(&mut s);
        s.settle();
        assert_eq!(s.code(id), code, "{what}");
        if code != 200 {
            let (_, body) = s.reply_to(id).unwrap();
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {body}"
            );
        }
    }
}

#[test]
fn a_request_whose_deadline_passed_before_it_started_is_dropped_and_never_run() {
    let mut s = PodSim::new(process());
    s.auto = false;
    let on = s.on(&[], &no_deps()); // initialize runs and takes a while
    let late = s.request(Task::Check, view_body(), None, Some(origin() + secs(5.0)));
    let in_time = s.request(Task::Ok, view_body(), None, Some(origin() + secs(60.0)));
    s.run_until(10.0);
    assert_eq!(s.code(late), 408, "answered when its deadline passes");
    assert_eq!(s.replies[0].0, secs(5.0));
    s.auto = true;
    s.settle();
    assert_eq!(s.code(on), 200);
    assert_eq!(s.code(in_time), 200);
    assert_eq!(s.hook_runs(Hook::CanConfigure), 0, "never run late");
    assert_eq!(s.hook_runs(Hook::Configured), 1);
}

#[test]
fn initialize_runs_once() {
    let mut s = PodSim::new(process());
    for task in [Task::On, Task::Off, Task::On, Task::On] {
        let b = if task == Task::On {
            view_body()
        } else {
            json!(null)
        };
        let id = s.control(task, b);
        s.settle();
        assert_eq!(s.code(id), 200);
    }
    assert_eq!(s.hook_runs(Hook::Initialize), 1);
    assert_eq!(s.names()[0], "Initialize", "before the first configuration");
    // A failing initialize is a configure failure.
    let mut s = PodSim::new(process());
    s.script(Hook::Initialize, vec![Err("no disk".into())]);
    let id = s.on(&[], &no_deps());
    s.settle();
    assert_eq!(s.code(id), 406);
    assert_eq!(s.m.process(), Process::Dead);
}

#[test]
fn on_while_running_reloads_unless_strict_or_dependencies_changed() {
    // (strict, reload_dependencies, dependencies of the second on, actions, pid kept)
    let restart = &["Terminate", "Configure", "Spawn"][..];
    let table = [
        (false, false, deps(&["d1"]), &["Reload"][..], true),
        (false, false, deps(&["d1", "d2"]), restart, false),
        (false, false, no_deps(), restart, false),
        (true, false, deps(&["d1"]), restart, false),
        (true, false, deps(&["d2"]), restart, false),
        // A load balancer: new backends are a reload, a dependency gone is a restart.
        (false, true, deps(&["d1", "d2"]), &["Reload"][..], true),
        (false, true, deps(&["d2"]), &["Reload"][..], true),
        (false, true, no_deps(), restart, false),
        (true, true, deps(&["d1", "d2"]), restart, false),
    ];
    for (strict, reload_dependencies, second, actions, kept) in table {
        let mut s = PodSim::new(ProcessSettings {
            strict,
            reload_dependencies,
            ..process()
        });
        let first = s.on(&[], &deps(&["d1"]));
        s.settle();
        assert_eq!(s.code(first), 200);
        let pid = s.m.pid().unwrap();
        s.clear();
        // The cluster scaled: a new member, maybe new dependencies.
        let id = s.on(&["pod-b", "pod-c"], &second);
        s.settle();
        assert_eq!(s.code(id), 200);
        assert_eq!(
            s.names(),
            actions,
            "strict {strict}, reload_dependencies {reload_dependencies}, deps {second:?}"
        );
        assert_eq!(s.m.pid() == Some(pid), kept, "strict {strict}");
        assert_eq!(s.m.process(), Process::Running);
        let view = s
            .log
            .iter()
            .find_map(|(_, a)| match a {
                PodAction::Hook {
                    hook: Hook::Reload,
                    view,
                    ..
                } => view.clone(),
                PodAction::Configure { view } => Some(view.clone()),
                _ => None,
            })
            .expect("a view");
        assert_eq!(view.size, 3, "rendered with the new view");
    }
}

#[test]
fn start_false_configures_on_leader_rounds_and_an_operator_on_starts() {
    let mut s = PodSim::new(ProcessSettings {
        start: false,
        ..process()
    });
    // A Rust leader (epoch header) and a 1.x leader (none): both send the view, both are held.
    let rust_leader = Some(Epoch { czxid: 1, seq: 1 });
    for epoch in [rust_leader, None] {
        let id = s.request(Task::On, body(&pods(&["pod-a"]), &no_deps()), epoch, None);
        s.settle();
        assert_eq!(s.code(id), 200);
    }
    assert_eq!(s.names(), vec!["Initialize", "Configure", "Configure"]);
    assert_eq!(s.m.process(), Process::Stopped);
    assert_eq!(s.m.pid(), None);
    assert!(!s.m.ready());
    // An operator's `on` (an empty body) starts the last configuration, without re-rendering.
    s.clear();
    let id = s.control(Task::On, json!(null));
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.names(), vec!["Spawn"]);
    assert_eq!(s.m.process(), Process::Running);
    assert!(s.m.pid().is_some());
    // From then on the leader's `on` starts it too.
    let id = s.control(Task::Off, json!(null));
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.m.process(), Process::Stopped);
    s.clear();
    let id = s.on(&[], &no_deps());
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.names(), vec!["Configure", "Spawn"]);
    assert_eq!(s.m.process(), Process::Running);
}

#[test]
fn an_empty_on_is_an_operators_and_never_re_renders() {
    for empty in [json!(null), json!({})] {
        let mut s = PodSim::new(process());
        // Never configured: 406 with why; the pod stays alive and a leader can configure it.
        let id = s.control(Task::On, empty.clone());
        s.settle();
        assert_eq!(s.code(id), 406, "{empty}");
        let (_, why) = s.reply_to(id).unwrap();
        assert!(
            why["error"]
                .as_str()
                .unwrap_or("")
                .contains("never configured"),
            "{why}"
        );
        assert_eq!(s.names(), Vec::<String>::new(), "nothing ran");
        assert_eq!(s.m.process(), Process::Stopped, "not dead");
        let id = s.on(&[], &no_deps());
        s.settle();
        assert_eq!(s.code(id), 200);
        let pid = s.m.pid().expect("running");
        // Running: 200, nothing happens.
        s.clear();
        let id = s.control(Task::On, empty.clone());
        s.settle();
        assert_eq!(s.reply_to(id), Some((200, json!({}))), "{empty}");
        assert_eq!(s.names(), Vec::<String>::new(), "nothing ran");
        assert_eq!(s.m.pid(), Some(pid));
        // Stopped after a configuration: the last command starts again, nothing re-rendered.
        let id = s.control(Task::Off, json!(null));
        s.settle();
        assert_eq!(s.code(id), 200);
        s.clear();
        let id = s.control(Task::On, empty.clone());
        s.settle();
        assert_eq!(s.code(id), 200);
        assert_eq!(s.names(), vec!["Spawn"], "{empty}");
        assert_eq!(s.m.process(), Process::Running);
        assert_ne!(s.m.pid(), Some(pid));
        assert!(s.m.ready());
    }
}

#[test]
fn a_configure_failure_answers_406_and_turns_the_pod_dead() {
    // (what fails, script)
    type Script = fn(&mut PodSim);
    let table: Vec<(&str, Script)> = vec![
        ("configure", |s| {
            s.configures.push_back(Err("template error".into()))
        }),
        ("spawn", |s| s.spawns.push_back(Err("no such file".into()))),
        ("initialize", |s| {
            s.script(Hook::Initialize, vec![Err("hook exit 1".into())])
        }),
    ];
    for (what, script) in table {
        let mut s = PodSim::new(process());
        script(&mut s);
        let id = s.on(&[], &no_deps());
        s.settle();
        assert_eq!(s.code(id), 406, "{what}");
        assert_eq!(s.m.process(), Process::Dead, "{what}");
        assert!(s.m.last_failure().is_some(), "{what}");
        for task in [Task::Check, Task::On, Task::Off, Task::Kill] {
            let next = s.control(task, view_body());
            s.settle();
            assert_eq!(s.code(next), 410, "{what}: {task} to a dead pod");
        }
    }
}

#[test]
fn kill_tears_down_finalizes_and_goes_dead() {
    let mut s = running(process());
    let id = s.control(Task::Kill, json!(null));
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.names(), vec!["Terminate", "Finalize"]);
    assert_eq!(s.m.process(), Process::Dead);
    assert_eq!(s.m.pid(), None);
    assert!(!s.m.ready());
    let after = s.on(&[], &no_deps());
    s.settle();
    assert_eq!(s.code(after), 410);
    s.run_until(3600.0);
    assert!(
        !s.names().contains(&"Spawn".to_string()),
        "a dead pod never restarts"
    );
}

#[test]
fn a_clean_exit_finalizes_and_goes_dead() {
    // Exit 0 while idle, and while a check hook runs.
    for busy in [false, true] {
        let mut s = running(process());
        let mut check = None;
        if busy {
            s.auto = false;
            check = Some(s.control(Task::Check, view_body()));
        }
        s.exit(Some(0));
        s.auto = true;
        s.settle();
        if let Some(id) = check {
            assert_eq!(s.code(id), 200, "the request under way finishes");
        }
        assert_eq!(s.hook_runs(Hook::Finalize), 1, "busy {busy}");
        assert_eq!(s.m.process(), Process::Dead, "busy {busy}");
        s.run_until(3600.0);
        assert!(s.spawn_times().is_empty(), "busy {busy}: no restart");
        let id = s.control(Task::Check, view_body());
        s.settle();
        assert_eq!(s.code(id), 410);
    }
}

#[test]
fn a_crash_restarts_at_once_then_with_doubling_delays_reset_after_a_stable_run() {
    let mut s = running(ProcessSettings {
        restart_delay: secs(1.0),
        restart_delay_max: secs(8.0),
        stable_after: secs(60.0),
        check_every: secs(10_000.0),
        ..process()
    });
    // The process started at 0; make it crash 0.5 s after every start from now on.
    s.lifetime = Some((secs(0.5), Some(1)));
    s.exit_at = Some((origin() + secs(0.5), s.m.pid().unwrap(), Some(1)));
    s.run_until(18.2);
    assert_eq!(
        s.m.process(),
        Process::Running,
        "a crash loop is still `running`"
    );
    s.lifetime = Some((secs(70.0), Some(1))); // the start at 26 runs 70 s: stable
    s.run_until(95.0);
    s.lifetime = Some((secs(0.5), Some(2)));
    s.run_until(100.5);
    let times: Vec<f64> = s
        .spawn_times()
        .iter()
        .map(|t| (t.as_secs_f64() * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(
        times,
        vec![0.5, 2.0, 4.5, 9.0, 17.5, 26.0, 96.0, 97.5, 100.0],
        "at once, 1, 2, 4, 8, 8 (max); after a stable run at once, 1, 2"
    );
    assert_eq!(s.m.restarts(), 9);
}

#[test]
fn a_crash_since_the_last_check_fails_the_next_check_once_per_period() {
    let settings = ProcessSettings {
        check_every: secs(10.0),
        checks: 5,
        restart_delay: secs(0.1),
        restart_delay_max: secs(0.2),
        ..process()
    };
    // One crash at 3 s: the check at 10 fails without running the hook, the one at 20 runs it.
    let mut s = running(settings.clone());
    s.run_until(3.0);
    s.exit(Some(1));
    s.run_until(10.0);
    assert_eq!(s.m.failed_checks(), 1);
    assert_eq!(s.hook_runs(Hook::SanityCheck), 0);
    s.run_until(20.0);
    assert_eq!(s.hook_runs(Hook::SanityCheck), 1);
    assert_eq!(s.m.failed_checks(), 0);
    assert_eq!(s.m.sanity_failures(), 1);

    // A crash loop (about 40 crashes per period) counts one failure per check.
    let mut s = running(settings);
    s.lifetime = Some((secs(0.05), Some(1)));
    s.exit(Some(1));
    s.run_until(35.0);
    assert!(s.m.restarts() > 100, "{} restarts", s.m.restarts());
    assert_eq!(s.m.sanity_failures(), 3, "checks at 10, 20 and 30");
    assert_eq!(s.m.failed_checks(), 3);
    assert_eq!(
        s.m.process(),
        Process::Running,
        "below `checks`: no breaker"
    );
}

#[test]
fn checks_failed_in_a_row_trip_the_circuit_breaker() {
    // (on_give_up, hook results, tripped)
    let fail = || Err::<serde_json::Value, String>("503".into());
    let pass = || Ok(json!(null));
    let table = [
        (GiveUp::Off, vec![fail(), fail(), fail()], true),
        (GiveUp::Exit, vec![fail(), fail(), fail()], true),
        (
            GiveUp::Off,
            vec![fail(), fail(), pass(), fail(), fail()],
            false,
        ),
    ];
    for (on_give_up, results, tripped) in table {
        let n = results.len();
        let mut s = running(ProcessSettings {
            on_give_up,
            checks: 3,
            check_every: secs(10.0),
            ..process()
        });
        s.script(Hook::SanityCheck, results);
        s.run_until(10.0 * n as f64 + 1.0);
        let names = s.names();
        let what = format!("{on_give_up:?} tripped {tripped}");
        match (on_give_up, tripped) {
            (GiveUp::Off, true) => {
                assert_eq!(names.last().unwrap(), "Terminate", "{what}");
                assert_eq!(s.m.process(), Process::Stopped, "{what}");
                assert!(s.m.last_failure().unwrap().contains("circuit breaker"));
            }
            (GiveUp::Exit, true) => {
                assert!(names.iter().any(|n| n.starts_with("Exit(")), "{what}");
                assert!(!names.contains(&"Terminate".to_string()), "{what}");
            }
            _ => {
                assert!(!names.contains(&"Terminate".to_string()), "{what}");
                assert_eq!(s.m.process(), Process::Running, "{what}");
                assert_eq!(s.m.failed_checks(), 2, "{what}");
            }
        }
        assert!(!s.m.ready() || !tripped, "{what}");
        // After the breaker turned it off, nothing restarts on its own.
        if tripped && on_give_up == GiveUp::Off {
            s.clear();
            s.run_until(1000.0);
            assert!(s.names().is_empty(), "{what}: {:?}", s.names());
        }
    }
}

#[test]
fn an_on_after_the_breaker_restarts_the_process() {
    let mut s = running(ProcessSettings {
        checks: 2,
        check_every: secs(10.0),
        ..process()
    });
    s.script(
        Hook::SanityCheck,
        vec![Err("down".into()), Err("down".into())],
    );
    s.run_until(25.0);
    assert_eq!(s.m.process(), Process::Stopped);
    s.clear();
    let id = s.on(&[], &no_deps());
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.names(), vec!["Configure", "Spawn"]);
    assert_eq!(s.m.process(), Process::Running);
    assert_eq!(s.m.failed_checks(), 0);
    // Checks resume.
    s.run_until(40.0);
    assert_eq!(s.hook_runs(Hook::SanityCheck), 1);
}

#[test]
fn a_tear_down_sigkills_after_grace_unless_soft() {
    // (soft, process reaction, Kill sent, reply time of `off`)
    let table = [
        (false, OnTerm::Ignores, true, 5.0),
        (true, OnTerm::Ignores, false, 5.0),
        (false, OnTerm::Exits, false, 1.0),
        (true, OnTerm::Exits, false, 1.0),
    ];
    for (soft, on_term, killed, replied) in table {
        let mut s = running(ProcessSettings {
            soft,
            grace: secs(4.0),
            ..process()
        });
        s.on_term = on_term;
        s.run_until(1.0);
        let id = s.control(Task::Off, json!(null));
        s.run_until(60.0);
        let what = format!("soft {soft}, {on_term:?}");
        assert_eq!(s.names().contains(&"Kill".to_string()), killed, "{what}");
        assert_eq!(s.code(id), 200, "{what}");
        let at = s.replies.iter().find(|r| r.1 == id).unwrap().0;
        assert_eq!(at, secs(replied), "{what}");
        assert_eq!(s.m.process(), Process::Stopped, "{what}");
    }
}

#[test]
fn metrics_of_the_sanity_check_are_kept() {
    let mut s = running(ProcessSettings {
        check_every: secs(10.0),
        ..process()
    });
    s.script(
        Hook::SanityCheck,
        vec![
            Ok(json!({"qps": 5})),
            Ok(json!(null)),
            Ok(json!("not an object")),
            Err("flaky".into()),
            Ok(json!({"qps": 7})),
        ],
    );
    // (after the check at, metrics)
    for (t, metrics) in [
        (10.0, json!({"qps": 5})),
        (20.0, json!({"qps": 5})),
        (30.0, json!({"qps": 5})),
        (40.0, json!({"qps": 5})),
        (50.0, json!({"qps": 7})),
    ] {
        s.run_until(t);
        assert_eq!(s.m.metrics(), &metrics, "at {t}");
    }
}

#[test]
fn the_pod_keeps_the_highest_epoch_it_obeyed() {
    let e = |czxid, seq| Some(Epoch { czxid, seq });
    let mut s = PodSim::new(process());
    // (epoch, expected code, remembered epoch after)
    let table = [
        (e(3, 5), 200, e(3, 5)),
        (e(3, 4), 409, e(3, 5)),
        (e(2, 9), 409, e(3, 5)),
        (None, 200, e(3, 5)), // 1.x leaders and operators
        (e(3, 5), 200, e(3, 5)),
        (e(4, 1), 200, e(4, 1)),
        (e(3, 6), 409, e(4, 1)),
    ];
    for (epoch, code, kept) in table {
        let id = s.request(Task::Check, view_body(), epoch, None);
        s.settle();
        assert_eq!(s.code(id), code, "{epoch:?}");
        assert_eq!(s.m.epoch(), kept, "{epoch:?}");
    }
    // A refused request runs nothing.
    assert_eq!(s.hook_runs(Hook::CanConfigure), 4);
    s.m.reset_epoch();
    assert_eq!(s.m.epoch(), None);
    let id = s.request(Task::Check, view_body(), e(1, 1), None);
    s.settle();
    assert_eq!(s.code(id), 200, "an ensemble rebuilt from scratch");
    assert_eq!(s.m.epoch(), e(1, 1));
}

#[test]
fn requests_are_served_in_arrival_order_one_at_a_time() {
    let mut s = PodSim::new(process());
    s.auto = false;
    let ids = [
        s.control(Task::Check, view_body()),
        s.control(Task::On, view_body()),
        s.control(Task::Ok, view_body()),
        s.control(Task::Signal, json!({"n": 1})),
        s.control(Task::Off, json!(null)),
    ];
    let expected = [
        "CanConfigure",
        "Initialize",
        "Configure",
        "Spawn",
        "Configured",
        "Signal",
        "Terminate",
    ];
    let mut seen = Vec::new();
    while let Some(step) = s.step.clone() {
        seen.push(name(&step));
        let result = match step {
            PodAction::Configure { .. } => StepResult::Configured(Ok(())),
            PodAction::Spawn => StepResult::Spawned(Ok(42)),
            _ => StepResult::Hook(Ok(json!({"signalled": true}))),
        };
        s.result(result);
    }
    s.settle(); // the process obeys SIGTERM
    seen.extend(s.names().into_iter().filter(|n| n == "Terminate"));
    assert_eq!(seen, expected);
    let order: Vec<u64> = s.replies.iter().map(|r| r.1).collect();
    assert_eq!(order, ids, "answered in arrival order");
    assert_eq!(s.reply_to(ids[3]).unwrap().1, json!({"signalled": true}));
}

#[test]
fn once_the_agent_is_stopping_a_process_that_ends_is_not_restarted() {
    let mut s = running(ProcessSettings {
        restart_delay: secs(1.0),
        check_every: secs(10_000.0),
        ..process()
    });
    // A crash before the stop is restarted at once.
    s.exit(Some(1));
    s.settle();
    assert_eq!(s.names(), vec!["Spawn"], "restarted before the stop");
    s.clear();
    // Ctrl-C: the agent starts stopping, and the process (which got the SIGINT too) ends.
    s.m.stopping();
    s.exit(Some(130));
    s.run_for(120.0);
    assert!(
        s.spawn_times().is_empty(),
        "restarted while stopping: {:?}",
        s.names()
    );
    assert!(
        s.m.last_failure()
            .unwrap_or("")
            .contains("not restarted: the agent is stopping"),
        "{:?}",
        s.m.last_failure()
    );
    // The tear-down that ends the stop finds nothing to tear down.
    let off = s.control(Task::Off, json!({}));
    s.settle();
    assert_eq!(s.code(off), 200);
    assert_eq!(s.m.process(), Process::Stopped);
    assert!(s.spawn_times().is_empty());
}

#[test]
fn stopping_cancels_a_restart_already_scheduled() {
    let mut s = running(ProcessSettings {
        restart_delay: secs(5.0),
        check_every: secs(10_000.0),
        ..process()
    });
    s.exit(Some(1));
    s.settle();
    s.exit(Some(1)); // the second crash in a row waits 5 s
    s.clear();
    s.m.stopping();
    s.run_for(60.0);
    assert!(s.spawn_times().is_empty(), "{:?}", s.names());
}

#[test]
fn health_runs_the_sanity_check_now_and_answers_503_with_why() {
    let mut s = running(process());
    s.script(
        Hook::SanityCheck,
        vec![Ok(json!({"lag": 3})), Err("lag 900 > 10".into())],
    );
    let passes = s.control(Task::Health, view_body());
    s.settle();
    assert_eq!(s.reply_to(passes), Some((200, json!({"lag": 3}))));
    let fails = s.control(Task::Health, view_body());
    s.settle();
    assert_eq!(
        s.reply_to(fails),
        Some((503, json!({"error": "lag 900 > 10"})))
    );
    // The gate's checks are not the periodic ones: no breaker count.
    assert_eq!(s.m.failed_checks(), 0);

    // Not running: 503 without running the hook.
    let mut s = PodSim::new(process());
    let id = s.control(Task::Health, view_body());
    s.settle();
    assert_eq!(
        s.reply_to(id),
        Some((
            503,
            json!({"error": "the process is not running (stopped)"})
        ))
    );
    assert!(!s.log.iter().any(|(_, a)| matches!(
        a,
        PodAction::Hook {
            hook: Hook::SanityCheck,
            ..
        }
    )));
}

#[test]
fn plan_says_what_on_would_do_and_does_nothing() {
    // (strict, reload_dependencies, dependencies of the planned view, would)
    let table = [
        (false, false, deps(&["d1"]), "reload"),
        (false, false, deps(&["d1", "d2"]), "restart"),
        (true, false, deps(&["d1"]), "restart"),
        (false, true, deps(&["d1", "d2"]), "reload"),
        (false, true, no_deps(), "restart"),
    ];
    for (strict, reload_dependencies, planned, would) in table {
        let what =
            format!("strict {strict}, reload_dependencies {reload_dependencies}, {planned:?}");
        let mut s = PodSim::new(ProcessSettings {
            strict,
            reload_dependencies,
            ..process()
        });
        let first = s.on(&[], &deps(&["d1"]));
        s.settle();
        assert_eq!(s.code(first), 200);
        let pid = s.m.pid();
        s.clear();
        let id = s.control(Task::Plan, body(&pods(&["pod-a", "pod-b"]), &planned));
        s.settle();
        assert_eq!(s.code(id), 200, "{what}");
        // Only the plan hook ran, with the machine's decision as its input.
        assert_eq!(s.names(), ["Plan"], "{what}");
        let input = s
            .log
            .iter()
            .find_map(|(_, a)| match a {
                PodAction::Hook {
                    hook: Hook::Plan,
                    input,
                    view,
                } => {
                    assert_eq!(view.as_ref().map(|v| v.size), Some(2), "{what}");
                    Some(input.clone())
                }
                _ => None,
            })
            .expect("the plan hook");
        let HookInput::Plan(decision) = input else {
            panic!("{what}: the plan hook without the machine's decision: {input:?}")
        };
        let said = serde_json::to_value(decision.would).expect("would serializes");
        assert_eq!(said, would, "{what}: {decision:?}");
        assert_eq!(s.m.pid(), pid, "{what}: the process is left alone");
        if planned != deps(&["d1"]) && !planned.is_empty() {
            let changed = decision.dependencies.get("db");
            assert_eq!(
                changed.map(|c| c.joined.clone()),
                Some(vec!["d2".to_string()]),
                "{what}: {decision:?}"
            );
        }
    }

    // Not running yet: the round would start it.
    let mut s = PodSim::new(process());
    let id = s.control(Task::Plan, view_body());
    s.settle();
    assert_eq!(s.code(id), 200);
    assert_eq!(s.names(), ["Plan"]);
    assert_eq!(s.m.process(), Process::Stopped);
}

/// The agent's shutdown is a command, not a request: the process is torn down after the
/// requests already queued, nothing answers a client for it, and the machine says once the
/// process is down. A dead pod shuts down at once.
#[test]
fn shutdown_tears_the_process_down_then_says_so() {
    let mut s = running(ProcessSettings {
        check_every: secs(10_000.0),
        ..process()
    });
    let replies = s.replies.len();
    s.shutdown();
    s.settle();
    assert_eq!(s.names(), vec!["Terminate", "ShutDown"]);
    assert_eq!(s.m.process(), Process::Stopped);
    assert_eq!(s.replies.len(), replies, "no client waits for a shutdown");
    // The process that ends now is never started again.
    s.run_for(600.0);
    assert!(s.spawn_times().is_empty(), "{:?}", s.names());

    let mut s = running(process());
    let kill = s.control(Task::Kill, json!({}));
    s.settle();
    assert_eq!(s.code(kill), 200);
    s.clear();
    s.shutdown();
    s.settle();
    assert_eq!(
        s.names(),
        vec!["ShutDown"],
        "a dead pod has nothing to tear down"
    );
}

/// The restarts counter (the agent's `process_restarts` metric) counts the restarts after a
/// crash, and nothing else: not the first start, not a reconfiguration.
#[test]
fn restarts_count_only_restarts_after_a_crash() {
    let mut s = running(ProcessSettings {
        check_every: secs(10_000.0),
        ..process()
    });
    assert_eq!(s.m.restarts(), 0);
    let on = s.on(&["pod-b"], &no_deps());
    s.settle();
    assert_eq!(s.code(on), 200);
    assert_eq!(s.m.restarts(), 0, "a reconfiguration is no restart");
    s.exit(Some(1));
    s.settle();
    assert_eq!(s.m.restarts(), 1);
}
