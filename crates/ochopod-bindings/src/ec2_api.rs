//! `ochopod_zk = "ec2-tag:KEY=VALUE"`: the ZooKeeper ensemble is the private IPs of the running
//! instances carrying that tag (port 2181), found with the EC2 API (aws-sdk-ec2).
//!
//! Everything comes from the given environment, as the AWS SDKs name it: region from
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, else the instance metadata; credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the instance role (IMDS);
//! endpoint from `AWS_ENDPOINT_URL_EC2`/`AWS_ENDPOINT_URL` when set.

use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ec2::types::Filter;

use crate::facts::Ctx;
use crate::zk::{ZkAddress, DEFAULT_ZK_PORT};
use crate::Error;

pub(crate) async fn zk_from_tag(
    binding: &'static str,
    key: &str,
    value: &str,
    ctx: &Ctx<'_>,
) -> Result<ZkAddress, Error> {
    let region = match ctx
        .var("AWS_REGION")
        .or_else(|| ctx.var("AWS_DEFAULT_REGION"))
    {
        Some(r) => r.to_string(),
        None => {
            let imds = crate::ec2::client(binding, ctx)?;
            let region = imds
                .get("/latest/meta-data/placement/region")
                .await
                .map_err(|e| {
                    Error::platform(
                        binding,
                        format!(
                        "no AWS region for ec2-tag:{key}={value} (AWS_REGION is not set and the \
                         metadata service at {} did not answer)",
                        crate::ec2::endpoint(ctx)
                    ),
                        &e,
                        "set AWS_REGION, or run on EC2",
                    )
                })?;
            String::from(region).trim().to_string()
        }
    };
    let credentials = match (
        ctx.var("AWS_ACCESS_KEY_ID"),
        ctx.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
            id,
            secret,
            ctx.var("AWS_SESSION_TOKEN").map(str::to_string),
            None,
            "ochopod-environment",
        )),
        _ => SharedCredentialsProvider::new(
            ImdsCredentialsProvider::builder()
                .imds_client(crate::ec2::client(binding, ctx)?)
                .configure(
                    &ProviderConfig::without_region().with_http_client(crate::ec2::http_client()),
                )
                .build(),
        ),
    };
    let mut config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.clone()))
        .http_client(crate::ec2::http_client())
        .credentials_provider(credentials)
        .timeout_config(
            aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
                .operation_timeout(ctx.opts.api_timeout)
                .build(),
        );
    if let Some(url) = ctx
        .var("AWS_ENDPOINT_URL_EC2")
        .or_else(|| ctx.var("AWS_ENDPOINT_URL"))
    {
        config = config.endpoint_url(url);
    }
    let client = aws_sdk_ec2::Client::from_conf(config.build());
    let filters = [
        Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build(),
        Filter::builder()
            .name("instance-state-name")
            .values("running")
            .build(),
    ];
    let mut pages = client
        .describe_instances()
        .set_filters(Some(filters.to_vec()))
        .into_paginator()
        .send();
    let mut hosts = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            Error::platform(
                binding,
                format!("cannot list the EC2 instances tagged {key}={value} in {region}"),
                &e,
                "give the instance role (or AWS_ACCESS_KEY_ID) ec2:DescribeInstances, and check AWS_REGION",
            )
        })?;
        for reservation in page.reservations() {
            for instance in reservation.instances() {
                if let Some(ip) = instance.private_ip_address() {
                    hosts.push(format!("{ip}:{DEFAULT_ZK_PORT}"));
                }
            }
        }
    }
    if hosts.is_empty() {
        return Err(Error::missing(
            binding,
            format!("no running EC2 instance in {region} is tagged {key}={value}"),
            "tag the ZooKeeper instances with it, or set ochopod_zk to their addresses",
        ));
    }
    hosts.sort();
    hosts.dedup();
    tracing::info!(binding, tag = %format!("{key}={value}"), hosts = ?hosts, "ZooKeeper from EC2 tags");
    Ok(ZkAddress {
        hosts,
        chroot: None,
        auth: None,
    })
}
