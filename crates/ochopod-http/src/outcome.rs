//! The one table between the core's typed control vocabulary and HTTP: what a control request's
//! body means ([`control_input`]), which status code and body each [`Outcome`] is sent as
//! ([`outcome_reply`]), and what a pod's reply means to the leader ([`answer_of`]).
//!
//! | outcome | code | body |
//! |---|---|---|
//! | accepted | 200 | `{}` (`{"pid": N}` once started, the signal hook's JSON, `{"warning": ..}`) |
//! | refused: bad request | 400 | `{"error": why}` |
//! | refused: not ready (`can_configure` said no, never configured) | 406 | `{"error": why}` |
//! | refused: configuration failed (the pod is dead now) | 406 | `{"error": why}` |
//! | refused: timed out before it started | 408 | `{"error": why}` |
//! | refused: stale leader epoch | 409 | `{"error": why}` |
//! | refused: dead | 410 | `{"error": "this pod is dead"}` |
//! | refused: failed (a hook failed) | 500 | `{"error": why}` |
//! | refused: unhealthy (`health`: not running, or the sanity check failed) | 503 | `{"error": why}` |
//!
//! The leader reads 200 as accepted, 410 as dead, 400 as a request the pod could not take (a
//! 1.x pod does not know `health`), any other code as refused.

use crate::server::Reply;
use ochopod_core::leader::{Answer, Verdict};
use ochopod_core::pod::{Accepted, ControlInput, Outcome, Refusal};
use ochopod_core::wire::{ControlBody, Task};
use serde_json::{json, Value};

/// Types a control request's JSON body (`Null` when empty) for `task`: a `signal`'s body passes
/// through untouched; `off`, `kill` and `health` carry nothing; an empty `on` (no body, `null` or `{}`) is
/// an operator's; `check`, `on`, `ok` and `plan` otherwise carry the cluster view.
pub fn control_input(task: Task, body: Value) -> ControlInput {
    let empty = match &body {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match task {
        Task::Signal => ControlInput::Opaque(body),
        Task::Off | Task::Kill | Task::Health => ControlInput::Empty,
        Task::On if empty => ControlInput::Empty,
        Task::Check | Task::On | Task::Ok | Task::Plan => {
            match serde_json::from_value::<ControlBody>(body) {
            Ok(b) => ControlInput::View(Box::new(b)),
            Err(e) => ControlInput::NotAView(format!(
                "bad control body for {task}: {e} (send the cluster view: {{\"pods\": {{key: registration}}, \"dependencies\": {{}}, \"key\": \"<this pod's key>\"}}; `ochopod {task}` builds it)"
            )),
            }
        }
    }
}

/// The status code and body a control request's outcome is sent as.
pub fn outcome_reply(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Accepted(how) => Reply::ok(match how {
            Accepted::Done => json!({}),
            Accepted::Started { pid } => json!({ "pid": pid }),
            Accepted::Answer(v) => v,
            Accepted::Warning(w) => json!({ "warning": w }),
        }),
        Outcome::Refused(why) => match why {
            Refusal::BadRequest(why) => Reply::error(400, why),
            Refusal::NotReady(why) | Refusal::ConfigureFailed(why) => Reply::error(406, why),
            Refusal::TimedOut(task) => {
                Reply::error(408, format!("{task} timed out before it started; dropped"))
            }
            Refusal::Stale { epoch, kept } => Reply::error(
                409,
                format!("stale leader epoch {epoch}: this pod obeys epoch {kept} or newer"),
            ),
            Refusal::Dead => Reply::error(410, "this pod is dead"),
            Refusal::Unhealthy(why) => Reply::error(503, why),
            Refusal::Failed(why) => Reply::error(500, why),
        },
    }
}

/// What a pod's reply to a control request means to the leader: 200 accepted, 410 dead,
/// 400 a bad request, anything else refused. `said` reads `<code>` or `<code>: <error>`.
pub fn answer_of(reply: &Reply) -> Answer {
    let verdict = match reply.code {
        200 => Verdict::Accepted,
        400 => Verdict::BadRequest,
        410 => Verdict::Dead,
        _ => Verdict::Refused,
    };
    let error = reply
        .body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("");
    let said = if error.is_empty() {
        reply.code.to_string()
    } else {
        format!("{}: {error}", reply.code)
    };
    Answer::new(verdict, said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ochopod_core::wire::Epoch;

    fn err(code: u16, msg: &str) -> Reply {
        Reply::error(code, msg)
    }

    /// The table, row by row (the core's simulator quotes the same pairs).
    #[test]
    fn every_outcome_has_its_code_and_body() {
        let epoch = |s: &str| s.parse::<Epoch>().expect("epoch");
        let rows: Vec<(Outcome, Reply)> = vec![
            (Outcome::Accepted(Accepted::Done), Reply::ok(json!({}))),
            (
                Outcome::Accepted(Accepted::Started { pid: 7 }),
                Reply::ok(json!({"pid": 7})),
            ),
            (
                Outcome::Accepted(Accepted::Answer(json!({"a": [1]}))),
                Reply::ok(json!({"a": [1]})),
            ),
            (
                Outcome::Accepted(Accepted::Warning("finalize failed: x".into())),
                Reply::ok(json!({"warning": "finalize failed: x"})),
            ),
            (
                Outcome::Refused(Refusal::BadRequest("b".into())),
                err(400, "b"),
            ),
            (
                Outcome::Refused(Refusal::NotReady("n".into())),
                err(406, "n"),
            ),
            (
                Outcome::Refused(Refusal::ConfigureFailed("c".into())),
                err(406, "c"),
            ),
            (
                Outcome::Refused(Refusal::TimedOut(Task::On)),
                err(408, "on timed out before it started; dropped"),
            ),
            (
                Outcome::Refused(Refusal::Stale {
                    epoch: epoch("1-2"),
                    kept: epoch("1-3"),
                }),
                err(
                    409,
                    "stale leader epoch 1-2: this pod obeys epoch 1-3 or newer",
                ),
            ),
            (
                Outcome::Refused(Refusal::Dead),
                err(410, "this pod is dead"),
            ),
            (Outcome::Refused(Refusal::Failed("f".into())), err(500, "f")),
            (
                Outcome::Refused(Refusal::Unhealthy("u".into())),
                err(503, "u"),
            ),
        ];
        for (outcome, reply) in rows {
            assert_eq!(outcome_reply(outcome.clone()), reply, "{outcome:?}");
        }
    }

    #[test]
    fn the_leader_reads_200_as_accepted_410_as_dead_and_the_rest_as_refused() {
        let a = answer_of(&Reply::ok(json!({})));
        assert_eq!((a.verdict, a.said.as_str()), (Verdict::Accepted, "200"));
        let a = answer_of(&err(410, "this pod is dead"));
        assert_eq!(a.verdict, Verdict::Dead);
        let a = answer_of(&err(406, "nope"));
        assert_eq!(
            (a.verdict, a.said.as_str()),
            (Verdict::Refused, "406: nope")
        );
    }

    #[test]
    fn bodies_are_typed_by_task() {
        assert_eq!(control_input(Task::On, Value::Null), ControlInput::Empty);
        assert_eq!(control_input(Task::On, json!({})), ControlInput::Empty);
        assert_eq!(
            control_input(Task::Off, json!({"x": 1})),
            ControlInput::Empty
        );
        assert_eq!(
            control_input(Task::Signal, json!([1])),
            ControlInput::Opaque(json!([1]))
        );
        let ControlInput::NotAView(why) = control_input(Task::Check, Value::Null) else {
            panic!("a check without a view is not a view");
        };
        assert!(why.starts_with("bad control body for check"), "{why}");
        let view = json!({"pods": {}, "dependencies": {}, "key": "k"});
        assert!(matches!(
            control_input(Task::Ok, view),
            ControlInput::View(b) if b.key == "k"
        ));
    }
}
