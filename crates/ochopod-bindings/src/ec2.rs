//! The EC2 instance metadata service (IMDSv2, aws-config's IMDS client): the instance's private
//! and public addresses and its id, for `marathon-ec2` and `kubernetes-ec2`.
//!
//! The endpoint is `AWS_EC2_METADATA_SERVICE_ENDPOINT` from the given environment when set (as
//! the AWS SDKs do), else `http://169.254.169.254` (or `http://[fd00:ec2::254]` when
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`). Requests time out after
//! `Options::metadata_timeout` and are tried twice.

use aws_config::imds::client::error::ImdsError;
use aws_config::imds::Client;
use aws_config::provider_config::ProviderConfig;
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::facts::Ctx;
use crate::Error;

/// What the metadata service says about this instance.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) local_ipv4: String,
    /// `None` when the instance has no public address (common in a VPC).
    pub(crate) public_ipv4: Option<String>,
    pub(crate) instance_id: String,
}

/// The metadata endpoint for this environment.
pub(crate) fn endpoint(ctx: &Ctx<'_>) -> String {
    match ctx.var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if ctx
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
            .is_some_and(|m| m.eq_ignore_ascii_case("ipv6")) =>
        {
            "http://[fd00:ec2::254]".to_string()
        }
        None => "http://169.254.169.254".to_string(),
    }
}

/// An HTTP(S) client for the AWS SDK on ring (no aws-lc).
#[cfg(feature = "ec2-api")]
pub(crate) fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The metadata service's HTTP client. IMDS speaks plain HTTP, so its client trusts no
/// certificate and never reads the system's store: a container without ca-certificates (the
/// agent image has none) has no store, and aws-smithy's rustls setup asserts one exists (a
/// panic in debug builds) when it is asked to load it.
fn imds_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    match tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::empty())
        .build()
    {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(_) => builder.build_https(),
    }
}

/// The IMDSv2 client for this environment.
pub(crate) fn client(binding: &'static str, ctx: &Ctx<'_>) -> Result<Client, Error> {
    let url = endpoint(ctx);
    let config = ProviderConfig::without_region()
        .with_http_client(imds_http_client())
        .with_behavior_version(Some(BehaviorVersion::latest()));
    let timeout = ctx.opts.metadata_timeout;
    let builder = Client::builder()
        .configure(&config)
        .endpoint(&url)
        .map_err(|e| Error::Platform {
            binding,
            what: format!("AWS_EC2_METADATA_SERVICE_ENDPOINT={url:?} is not a URL"),
            cause: e.to_string(),
            fix: "set it to a URL such as http://169.254.169.254".to_string(),
        })?;
    Ok(builder
        .max_attempts(2)
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .operation_attempt_timeout(timeout * 2)
        .operation_timeout(timeout * 5)
        .build())
}

fn unreachable(binding: &'static str, url: &str, what: &str, e: &ImdsError) -> Error {
    Error::platform(
        binding,
        format!("cannot read {what} from the EC2 instance metadata service at {url}"),
        e,
        format!(
            "run on EC2 with IMDSv2 enabled (hop limit 2 inside containers), set \
             AWS_EC2_METADATA_SERVICE_ENDPOINT, or use the {} binding with ochopod_ip",
            binding.trim_end_matches("-ec2")
        ),
    )
}

/// Reads `local-ipv4`, `public-ipv4` (absent is fine) and `instance-id`.
pub(crate) async fn instance(binding: &'static str, ctx: &Ctx<'_>) -> Result<Instance, Error> {
    let url = endpoint(ctx);
    let imds = client(binding, ctx)?;
    let get = |path: &'static str| {
        let imds = imds.clone();
        async move { imds.get(format!("/latest/meta-data/{path}")).await }
    };
    let local_ipv4: String = get("local-ipv4")
        .await
        .map_err(|e| unreachable(binding, &url, "local-ipv4", &e))?
        .into();
    let instance_id: String = get("instance-id")
        .await
        .map_err(|e| unreachable(binding, &url, "instance-id", &e))?
        .into();
    let public_ipv4 = match get("public-ipv4").await {
        Ok(ip) => Some(String::from(ip))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => None,
        Err(e) => return Err(unreachable(binding, &url, "public-ipv4", &e)),
    };
    tracing::info!(binding, endpoint = %url, %local_ipv4, public = ?public_ipv4, %instance_id, "EC2 instance metadata");
    Ok(Instance {
        local_ipv4: local_ipv4.trim().to_string(),
        public_ipv4,
        instance_id: instance_id.trim().to_string(),
    })
}
