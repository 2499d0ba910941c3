//! Leases: what is made under one is kept from containerd's garbage collector until the lease
//! ends, and a lease expires on its own ([`LEASE_TTL`]) should the agent die holding it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};

use super::{ContainerdRuntime, StatusMessage, call, unique};
use crate::Error;

/// How long a lease outlives an agent that died holding it.
const LEASE_TTL: Duration = Duration::from_secs(3600);

impl ContainerdRuntime {
    /// Creates a lease that keeps what is made under it from containerd's garbage collector,
    /// and expires on its own should we die before deleting it.
    pub(super) async fn lease(&self, purpose: &'static str) -> Result<String, Error> {
        let id = format!("kubectl-debug-{purpose}-{}", unique());
        let expire = rfc3339(SystemTime::now() + LEASE_TTL);
        let request = CreateLeaseRequest {
            id: id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]),
        };
        LeasesClient::new(self.channel.clone())
            .create(self.request(request, None))
            .await
            .map_err(call("creating a containerd lease for", purpose))?;
        Ok(id)
    }

    /// Ends a lease; what it held stays if something else references it.
    pub(super) async fn end_lease(&self, lease: &str) {
        let request = DeleteLeaseRequest {
            id: lease.to_owned(),
            sync: false,
        };
        if let Err(e) = LeasesClient::new(self.channel.clone())
            .delete(self.request(request, None))
            .await
        {
            tracing::warn!(lease, error = %StatusMessage(e), "deleting containerd lease; it expires on its own");
        }
    }
}

/// `t` as RFC 3339 UTC, e.g. `2026-11-27T09:18:04Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_is_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_771_084);
        assert_eq!(rfc3339(t), "2026-11-27T09:18:04Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(rfc3339(leap), "2000-02-29T12:00:00Z");
    }
}
