//! The EC2 instance's facts for the `-ec2` bindings (Marathon and Kubernetes on EC2), or why
//! they cannot be had when the `ec2` feature is off.

use crate::facts::Ctx;
use crate::Error;

/// Instance facts from IMDSv2, for the `-ec2` bindings.
#[cfg(feature = "ec2")]
pub(crate) async fn ec2_instance(
    binding: &'static str,
    ctx: &Ctx<'_>,
) -> Result<crate::ec2::Instance, Error> {
    crate::ec2::instance(binding, ctx).await
}

#[cfg(not(feature = "ec2"))]
pub(crate) async fn ec2_instance(binding: &'static str, _ctx: &Ctx<'_>) -> Result<Ec2Stub, Error> {
    Err(Error::FeatureDisabled {
        binding,
        what: "the EC2 instance metadata service",
        feature: "ec2",
    })
}

/// Stands in for `ec2::Instance` when the feature is off (never built).
#[cfg(not(feature = "ec2"))]
pub(crate) struct Ec2Stub {
    pub(crate) local_ipv4: String,
    pub(crate) public_ipv4: Option<String>,
    pub(crate) instance_id: String,
}
