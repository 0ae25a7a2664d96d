//! The bindings and the precedence rules that merge their findings with what was given.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::facts::{static_name, Ctx, Facts, Platform};
use crate::instance::ec2_instance;
use crate::zk::{from_mesos_files, parse_zk, ZkAddress};
use crate::{Environment, Error, Explicit, Options, DEFAULT_CONTROL_PORT};

/// `ochopod_*` variables the bindings consume (kept out of `settings`).
const CONSUMED: [&str; 6] = ["ip", "public", "port", "zk", "zk_service", "binding"];

fn nonempty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub(crate) async fn discover(
    explicit: &Explicit,
    env: &BTreeMap<String, String>,
    opts: &Options,
) -> Result<Environment, Error> {
    let asked = nonempty(explicit.binding.as_ref())
        .or_else(|| nonempty(env.get("ochopod_binding")))
        .unwrap_or_else(|| "auto".to_string());
    let binding = match asked.as_str() {
        "auto" => {
            let (picked, why) = if env.contains_key("KUBERNETES_SERVICE_HOST") {
                ("kubernetes", "KUBERNETES_SERVICE_HOST is set")
            } else if env.contains_key("MARATHON_APP_ID") || env.contains_key("MESOS_TASK_ID") {
                ("marathon", "MARATHON_APP_ID or MESOS_TASK_ID is set")
            } else {
                (
                    "generic",
                    "neither Kubernetes nor Marathon variables are set",
                )
            };
            tracing::info!(binding = picked, "binding auto picked {picked}: {why}");
            picked
        }
        other => {
            let name = static_name(other);
            if name == "unknown" {
                return Err(Error::UnknownBinding(other.to_string()));
            }
            name
        }
    };

    let ip_given = nonempty(explicit.ip.as_ref()).or_else(|| nonempty(env.get("ochopod_ip")));
    let public_given = explicit
        .public
        .clone()
        .or_else(|| env.get("ochopod_public").map(|s| s.trim().to_string()));
    let zk_given = nonempty(explicit.zk.as_ref()).or_else(|| nonempty(env.get("ochopod_zk")));
    let zk_service =
        nonempty(explicit.zk_service.as_ref()).or_else(|| nonempty(env.get("ochopod_zk_service")));
    let control_port = match explicit.port {
        Some(p) => p,
        None => match env.get("ochopod_port") {
            None => DEFAULT_CONTROL_PORT,
            Some(v) => parse_port(v).ok_or_else(|| {
                Error::missing(
                    binding,
                    format!("ochopod_port={v:?} is not a port number"),
                    "set ochopod_port to a number between 1 and 65535 (default 8080)",
                )
            })?,
        },
    };

    let ctx = Ctx {
        env,
        opts,
        ip_given: ip_given.is_some(),
        zk_given: zk_given.is_some(),
        zk_service: zk_service.clone(),
    };
    let facts = match binding {
        "local" => Local.facts(&ctx).await?,
        "generic" => Generic.facts(&ctx).await?,
        "marathon" => Marathon { ec2: false }.facts(&ctx).await?,
        "marathon-ec2" => Marathon { ec2: true }.facts(&ctx).await?,
        "kubernetes" | "kubernetes-ec2" => kubernetes_facts(binding, &ctx).await?,
        _ => unreachable!("auto is resolved above"),
    };

    // ZooKeeper: explicit > ochopod_zk > the platform.
    let (zk, zk_auth) = match zk_given {
        Some(given) => {
            let addr = resolve_zk(binding, &given, &ctx).await?;
            tracing::info!(binding, zk = %addr, "ZooKeeper as given");
            (Some(addr.connect_string()), addr.auth)
        }
        None => match facts.zk {
            Some((addr, source)) => {
                tracing::info!(binding, zk = %addr, source = %source, "ZooKeeper from the platform");
                (Some(addr.connect_string()), addr.auth)
            }
            None => (None, None),
        },
    };

    // Ports: the platform < PORT_<n> < explicit; the control port is always there.
    let mut ports = facts.ports;
    for (key, value) in env {
        let Some(container) = key.strip_prefix("PORT_") else {
            continue;
        };
        let Some(container) = parse_port(container) else {
            continue; // PORT_<NAME> of a named Marathon port: not a container port
        };
        let host = parse_port(value).ok_or_else(|| {
            Error::missing(
                binding,
                format!("{key}={value:?} is not a port number"),
                format!("set {key} to the host port that container port {container} maps to"),
            )
        })?;
        ports.insert(container.to_string(), host);
    }
    ports.extend(explicit.ports.iter().map(|(k, v)| (k.clone(), *v)));
    ports
        .entry(control_port.to_string())
        .or_insert(control_port);

    let settings = env
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("ochopod_").map(|k| (k, v)))
        .filter(|(k, _)| !CONSUMED.contains(k))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();

    let ip = match ip_given.or(facts.ip) {
        Some(ip) => ip,
        None => {
            return Err(Error::missing(
                binding,
                "no ip address found",
                "set ochopod_ip (or PodBuilder::ip in a Rust pod) to the address other pods reach this one at",
            ))
        }
    };
    Ok(Environment {
        binding: binding.to_string(),
        ip,
        public: public_given.or(facts.public).unwrap_or_default(),
        node: facts.node,
        application: facts.application,
        task: facts.task,
        ports,
        control_port,
        zk,
        zk_auth,
        settings,
    })
}

fn parse_port(v: &str) -> Option<u16> {
    v.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

/// A given ZooKeeper address: `ec2-tag:KEY=VALUE` or a connection string.
async fn resolve_zk(binding: &'static str, given: &str, ctx: &Ctx<'_>) -> Result<ZkAddress, Error> {
    let Some(tag) = given.strip_prefix("ec2-tag:") else {
        return parse_zk(given);
    };
    let Some((key, value)) = tag.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(Error::missing(
            binding,
            format!("ochopod_zk={given:?} names no tag"),
            "write it as ec2-tag:KEY=VALUE, e.g. ec2-tag:role=zookeeper",
        ));
    };
    #[cfg(feature = "ec2-api")]
    {
        crate::ec2_api::zk_from_tag(binding, key.trim(), value.trim(), ctx).await
    }
    #[cfg(not(feature = "ec2-api"))]
    {
        let _ = (key, value, ctx);
        Err(Error::FeatureDisabled {
            binding,
            what: "ochopod_zk=ec2-tag:...",
            feature: "ec2-api",
        })
    }
}

#[cfg(feature = "kubernetes")]
async fn kubernetes_facts(binding: &'static str, ctx: &Ctx<'_>) -> Result<Facts, Error> {
    crate::kubernetes::Kubernetes {
        ec2: binding == "kubernetes-ec2",
    }
    .facts(ctx)
    .await
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_facts(binding: &'static str, _ctx: &Ctx<'_>) -> Result<Facts, Error> {
    Err(Error::FeatureDisabled {
        binding,
        what: "the Kubernetes API",
        feature: "kubernetes",
    })
}

/// Everything on 127.0.0.1, for a workstation.
struct Local;

impl Platform for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn facts(&self, ctx: &Ctx<'_>) -> Result<Facts, Error> {
        Ok(Facts {
            ip: Some(Ipv4Addr::LOCALHOST.to_string()),
            public: None,
            node: ctx.hostname(),
            application: ctx.var("ochopod_cluster").unwrap_or("local").to_string(),
            task: format!("local-{}", std::process::id()),
            ports: BTreeMap::new(),
            zk: Some((
                parse_zk("127.0.0.1:2181")?,
                "the local binding's default".to_string(),
            )),
        })
    }
}

/// Plain Docker and bare hosts.
struct Generic;

impl Platform for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    async fn facts(&self, ctx: &Ctx<'_>) -> Result<Facts, Error> {
        let ip = if ctx.ip_given {
            None
        } else {
            Some(first_ipv4(self.name())?)
        };
        let node = ctx.hostname();
        Ok(Facts {
            ip,
            public: None,
            application: ctx.var("ochopod_cluster").unwrap_or("generic").to_string(),
            task: node.clone(),
            node,
            ports: BTreeMap::new(),
            zk: None,
        })
    }
}

/// The first non-loopback IPv4 of an interface that is up.
fn first_ipv4(binding: &'static str) -> Result<String, Error> {
    use nix::net::if_::InterfaceFlags;
    let fix =
        "set ochopod_ip (or PodBuilder::ip in a Rust pod) to the address other pods reach this one at";
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::platform(binding, "cannot list the network interfaces", &e, fix))?;
    addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter(|a| !a.flags.contains(InterfaceFlags::IFF_LOOPBACK))
        .filter_map(|a| {
            a.address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in())
                .map(|s| s.ip())
        })
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .ok_or_else(|| Error::missing(binding, "no interface has a non-loopback IPv4 address", fix))
}

/// Marathon on Mesos (`marathon`), optionally on EC2 (`marathon-ec2`).
struct Marathon {
    ec2: bool,
}

impl Platform for Marathon {
    fn name(&self) -> &'static str {
        if self.ec2 {
            "marathon-ec2"
        } else {
            "marathon"
        }
    }

    async fn facts(&self, ctx: &Ctx<'_>) -> Result<Facts, Error> {
        let name = self.name();
        let need = |key: &str, fix: &str| {
            ctx.var(key)
                .map(str::to_string)
                .ok_or_else(|| Error::missing(name, format!("{key} is not set"), fix.to_string()))
        };
        let application = need(
            "MARATHON_APP_ID",
            "run the pod as a Marathon application (Marathon sets it), or use the generic binding",
        )?
        .trim_start_matches('/')
        .to_string();
        let task = need(
            "MESOS_TASK_ID",
            "run the pod as a Mesos task (the agent sets it), or use the generic binding",
        )?;

        // Host ports Marathon allocated without a container port (host networking): identity.
        let mut ports = BTreeMap::new();
        let mut host_ports: Vec<&str> = Vec::new();
        if let Some(list) = ctx.var("PORTS") {
            host_ports.extend(list.split(',').map(str::trim).filter(|p| !p.is_empty()));
        } else {
            host_ports.extend((0..).map_while(|i| ctx.var(&format!("PORT{i}"))));
        }
        for p in host_ports {
            let port = parse_port(p).ok_or_else(|| {
                Error::missing(
                    name,
                    format!("PORTS holds {p:?}, not a port number"),
                    "check the application's portDefinitions",
                )
            })?;
            ports.insert(port.to_string(), port);
        }

        let zk = if ctx.zk_given {
            None
        } else {
            match from_mesos_files(name, &ctx.opts.files_root).await? {
                Some((zk, file)) => Some((zk, format!("the Mesos agent's {file}"))),
                None => {
                    return Err(Error::missing(
                        name,
                        format!(
                            "no ZooKeeper address: none of {} names a zk:// URL",
                            crate::MESOS_ZK_FILES.join(", ")
                        ),
                        "set ochopod_zk (PodBuilder::zk in a Rust pod, [pod] zk or --zk for ochopod run), e.g. ochopod_zk=zk-1:2181,zk-2:2181",
                    ))
                }
            }
        };

        let (ip, public, node) = if self.ec2 {
            let instance = ec2_instance(name, ctx).await?;
            (
                Some(instance.local_ipv4),
                instance.public_ipv4,
                instance.instance_id,
            )
        } else {
            let host = ctx.var("HOST").map(str::to_string);
            let ip = if ctx.ip_given {
                None
            } else if let Some(ip) = ctx
                .var("LIBPROCESS_IP")
                .filter(|ip| ip.parse::<Ipv4Addr>().is_ok_and(|a| !a.is_unspecified()))
            {
                Some(ip.to_string())
            } else {
                let Some(host) = host.as_deref() else {
                    return Err(Error::missing(
                        name,
                        "neither HOST nor LIBPROCESS_IP is set",
                        "set ochopod_ip to the agent's address (Mesos sets HOST for its tasks)",
                    ));
                };
                Some(resolve_ipv4(name, host).await?)
            };
            (ip, None, host.unwrap_or_else(|| ctx.hostname()))
        };
        Ok(Facts {
            ip,
            public,
            node,
            application,
            task,
            ports,
            zk,
        })
    }
}

/// `HOST` may be an address or a name to resolve.
async fn resolve_ipv4(binding: &'static str, host: &str) -> Result<String, Error> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let fix = "set ochopod_ip to the agent's address, or make HOST resolvable from the container";
    let addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| Error::platform(binding, format!("cannot resolve HOST={host:?}"), &e, fix))?;
    addrs
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip.to_string()),
            std::net::IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| Error::missing(binding, format!("HOST={host:?} has no IPv4 address"), fix))
}
