//! Taking back what the previous agent process on this data dir left: the allocations in
//! the store, their tasks re-attached or put through their restart policy.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use windflow_protocol::{AllocEventKind, ClientStatus};

use super::persist::AllocStore;
use super::{Allocs, Entry, Resume, Supervision, stop_reason};
use crate::store::{Store, StoreError};

impl Allocs {
    /// Opens the allocations kept in `store` (their directories under `dir`) and takes them
    /// back: tasks still running are re-attached, those that ended meanwhile go through the
    /// restart policy, and what the servers stopped meanwhile is stopped once they say so.
    pub(crate) fn open(
        store: &Store,
        dir: &Path,
        how: Supervision,
    ) -> Result<Arc<Self>, StoreError> {
        let store = AllocStore::open(store, dir)?;
        let allocs = Arc::new_cyclic(|me| Allocs {
            state: Mutex::default(),
            changed: Notify::new(),
            how: Arc::new(how),
            store,
            me: me.clone(),
        });
        allocs.recover()?;
        Ok(allocs)
    }

    fn recover(&self) -> Result<(), StoreError> {
        let (index, saved) = self.store.load()?;
        let mut st = self.lock();
        st.index = index;
        let mut resumed = 0;
        for s in saved {
            let active = s.active;
            let mut e = Entry::from_saved(s);
            let id = e.alloc.id;
            if active {
                match self.store.read_assignment(id) {
                    Ok(mut a) => {
                        a.alloc = e.alloc.clone();
                        let resume = Resume {
                            handles: e.handles.clone(),
                            windows: e.windows.clone(),
                            health: e.health.status,
                        };
                        let runner = self.start(a, resume);
                        if let Some(why) = stop_reason(&e.alloc) {
                            tracing::info!(alloc = %id, why, "stopping the allocation");
                            runner.stop.cancel();
                        }
                        e.runner = Some(runner);
                        resumed += 1;
                    }
                    Err(why) => {
                        tracing::error!(alloc = %id, %why, "cannot take the allocation back");
                        e.client = ClientStatus::Failed;
                        e.event(
                            AllocEventKind::Failed,
                            format!("cannot resume its tasks after an agent restart: {why}"),
                        );
                        self.save(&e);
                    }
                }
            }
            st.entries.insert(id, e);
        }
        self.store.remove_strays(|id| st.entries.contains_key(&id));
        if !st.entries.is_empty() {
            tracing::info!(
                allocations = st.entries.len(),
                resumed,
                index,
                "took back the previous agent's allocations"
            );
        }
        Ok(())
    }
}
