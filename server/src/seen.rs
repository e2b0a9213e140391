//! When each deployment last checked in: an observation of this server's,
//! not a fact of the ledger. A poll that changes nothing is not logged
//! (`checkin::answer`), so the ledger cannot say when a device was last
//! heard from; the fleet's *dark* flag needs to know. Kept in the sled
//! database beside the views (tree `last_checkin`), written on every
//! answered check-in (sled batches the writes in memory and flushes them in
//! the background). Unlike the views it cannot be rebuilt from the ledger:
//! lost, it reads as the time of each deployment's last logged decision
//! until the device next checks in, so a device looks dark for at most a
//! poll interval after the database is lost.

use covenant_core::digest::Timestamp;

/// Each deployment's last answered check-in, by this server's clock.
#[derive(Debug, Clone)]
pub struct LastSeen {
    tree: sled::Tree,
}

impl LastSeen {
    /// Opens (or creates) the observation in a sled database.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(LastSeen { tree: db.open_tree("last_checkin")? })
    }

    /// Records that `deployment` checked in at `at`. A failure only loses
    /// an observation: logged, never passed to the device.
    pub fn record(&self, deployment: &str, at: Timestamp) {
        if let Err(e) = self.tree.insert(deployment.as_bytes(), at.to_string().as_bytes()) {
            tracing::warn!(error = %e, deployment, "the last check-in time could not be kept");
        }
    }

    /// When `deployment` last checked in, if this server saw it.
    pub fn get(&self, deployment: &str) -> Option<Timestamp> {
        let v = self.tree.get(deployment.as_bytes()).ok()??;
        Timestamp::parse_rfc3339(std::str::from_utf8(&v).ok()?)
    }
}
