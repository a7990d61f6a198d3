//! What the sysctl and counter rules share: their evidence.

use crate::model::TcpState;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SysctlEvidence {
    /// The state the finding weighs the setting against, if any.
    pub state: Option<TcpState>,
    /// Sockets of that state (or orphans) on the host.
    pub count: usize,
    /// The sysctl, dotted, and its value here.
    pub sysctl: String,
    pub value: Option<String>,
    /// A kernel counter the finding rests on, if any, and its value.
    pub counter: Option<String>,
    pub counter_value: Option<u64>,
}

pub fn evidence(
    ctx: &super::Ctx,
    s: crate::diag::host::Sysctl,
    state: Option<TcpState>,
    count: usize,
) -> SysctlEvidence {
    SysctlEvidence {
        state,
        count,
        sysctl: s.key().to_string(),
        value: ctx.host.sysctl(s).map(str::to_string),
        counter: None,
        counter_value: None,
    }
}
