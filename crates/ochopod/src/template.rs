//! Template rendering (minijinja, strict undefined): templates see `cluster` (the
//! [`ClusterView`]: `key`, `index`, `seq`, `size`, `pods`, `dependencies`, `pod`), the function
//! `grep(dependency, port, public=false)` and `env` (the agent's environment).

use minijinja::{Environment, UndefinedBehavior};
use ochopod_core::ClusterView;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A template that failed to render: names the template, the line and what is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Renders templates against one cluster view.
pub struct Renderer {
    env: Environment<'static>,
    ctx: minijinja::Value,
}

impl Renderer {
    /// A renderer for `view`, with `vars` as `env`.
    pub fn new(view: Arc<ClusterView>, vars: &BTreeMap<String, String>) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let v = Arc::clone(&view);
        env.add_function(
            "grep",
            move |dependency: String, port: u16, public: Option<bool>| -> String {
                v.grep(&dependency, port, public.unwrap_or(false))
            },
        );
        let ctx = minijinja::context! {
            cluster => minijinja::Value::from_serialize(&*view),
            env => minijinja::Value::from_serialize(vars),
        };
        Renderer { env, ctx }
    }

    /// Renders `source` (named `name` in errors).
    pub fn render(&self, name: &str, source: &str) -> Result<String, TemplateError> {
        self.env
            .render_named_str(name, source, &self.ctx)
            .map_err(|e| describe(name, &e))
    }
}

/// Checks that `source` (named `name` in errors) is a template minijinja can parse, without
/// rendering it: the check `ochopod run` makes at start-up, before any cluster view exists.
pub fn check_syntax(name: &str, source: &str) -> Result<(), TemplateError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.template_from_named_str(name, source)
        .map(drop)
        .map_err(|e| describe(name, &e))
}

fn describe(name: &str, e: &minijinja::Error) -> TemplateError {
    let line = e.line().map(|l| format!(", line {l}")).unwrap_or_default();
    let mut msg = format!("template {name}{line}: {}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        msg.push_str(
            " (templates see `cluster` with key, index, seq, size, pods, dependencies, pod; `grep(dependency, port, public=false)`; `env`)",
        );
    }
    TemplateError(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ochopod_core::{ControlBody, Pods, Registration};

    fn view() -> Arc<ClusterView> {
        let mut pods = Pods::new();
        for (k, ip, p) in [("a", "127.0.0.1", 9001), ("b", "127.0.0.1", 9002)] {
            pods.insert(
                k.into(),
                Registration {
                    cluster: "web".into(),
                    namespace: "demo".into(),
                    ip: ip.into(),
                    ports: [("9000".to_string(), p)].into(),
                    seq: Some(if k == "a" { 3 } else { 5 }),
                    ..Default::default()
                },
            );
        }
        let body = ControlBody {
            pods,
            ..Default::default()
        };
        Arc::new(ClusterView::new("b", &body).unwrap())
    }

    #[test]
    fn renders_members_grep_and_env() {
        let vars: BTreeMap<String, String> = [("HOME".to_string(), "/root".to_string())].into();
        let r = Renderer::new(view(), &vars);
        let src = "{% for key, pod in cluster.pods|items %}{{ pod.ip }}:{{ pod.ports[\"9000\"] }}\n{% endfor %}{{ grep(\"web\", 9000) }} {{ cluster.index }}/{{ cluster.size }} {{ cluster.seq }} {{ env.HOME }}\n";
        assert_eq!(
            r.render("m.j2", src).unwrap(),
            "127.0.0.1:9001\n127.0.0.1:9002\n127.0.0.1:9001,127.0.0.1:9002 1/2 5 /root\n"
        );
    }

    #[test]
    fn missing_keys_name_the_template_and_line() {
        let r = Renderer::new(view(), &BTreeMap::new());
        let err = r
            .render("zoo.cfg.j2", "ok\n{{ cluster.nope }}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zoo.cfg.j2, line 2"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }
}
