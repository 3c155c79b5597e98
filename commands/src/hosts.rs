//! The registered SSH hosts, read from the log: every `host.<name>` subject of `HOSTS`, each
//! folded into its [`Host`]. Few hosts, read rarely (an admin's listing, a placement), so
//! there is no read model.

use crate::error::StoreError;
use crate::service::CommandService;
use crate::topology;
use futures::TryStreamExt;
use warren_domain::host::Host;

impl CommandService {
    /// Every registered host (removed ones included), by name.
    pub async fn hosts(&self) -> Result<Vec<(String, Host)>, StoreError> {
        let read_failed =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::ReadFailed {
                subject: "host.*".into(),
                source,
            };
        let stream = self
            .jetstream()
            .get_stream_no_info(topology::HOSTS)
            .await
            .map_err(|err| read_failed(Box::new(err)))?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects("host.*")
            .await
            .map_err(|err| read_failed(Box::new(err)))?
            .try_collect()
            .await
            .map_err(|err| read_failed(Box::new(err)))?;
        let mut names: Vec<String> = subjects
            .into_iter()
            .filter_map(|(subject, _)| subject.strip_prefix("host.").map(str::to_owned))
            .collect();
        names.sort();
        let mut hosts = Vec::with_capacity(names.len());
        for name in names {
            let (host, _) = self.hosts.load(&name).await?;
            hosts.push((name, host));
        }
        Ok(hosts)
    }
}
