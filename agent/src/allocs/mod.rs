//! The node's allocations: what the servers want of each (received as `Allocations` batches
//! by index), what runs here, and what the servers have yet to hear of it.
//!
//! The highest index received goes into every Hello, so a session with any server resumes
//! with exactly the changes this agent missed. A desired-`run` allocation not running here
//! is started; a desired-`stop` one, or one the servers have ended (`lost`), is stopped
//! (and one never seen is reported `complete`).
//! Each allocation has at most one update in flight: it is sent again after a reconnect or
//! when its ack is late, and what changed meanwhile goes in the next one.
//!
//! Everything here but the updates in flight is kept in the agent's store ([`persist`]) as
//! it changes, and each task runs under a supervisor process: an agent that stops (or is
//! killed) leaves the tasks running, and the next one on the same data dir takes them back
//! in `Allocs::open` (`recover.rs`), names the same index in its Hello, and reports what ended meanwhile.

mod container;
mod health;
mod persist;
mod policy;
mod recover;
mod runner;
mod updates;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::{AllocAssignment, AllocSync};
use windflow_protocol::{
    ALLOC_EVENTS_MAX, AllocEvent, AllocEventKind, AllocHealth, AllocId, AllocPort, Allocation,
    ClientStatus, DesiredStatus, Timestamp,
};

use persist::{AllocStore, Saved};
use policy::RestartWindow;
use runner::Change;
use runner::Resume;
pub(crate) use runner::Supervision;
use updates::InFlight;

use crate::drivers::exec::SupervisedHandle;

/// One allocation as this agent knows it.
struct Entry {
    /// The servers' latest version of it.
    alloc: Allocation,
    /// What it is doing here.
    client: ClientStatus,
    restarts: u32,
    /// Events no server has acknowledged yet, oldest first.
    unacked: Vec<AllocEvent>,
    /// The status and restarts a server last acknowledged.
    acked: Option<(ClientStatus, u32)>,
    in_flight: Option<InFlight>,
    runner: Option<Runner>,
    /// Left running by an agent that is stopping ([`Allocs::detach_all`]): still active
    /// for the next agent on this data dir, whatever its runner saves on its way out.
    detached: bool,
    /// Each running task's supervisor, by task name.
    handles: BTreeMap<String, SupervisedHandle>,
    /// Each task's restart window, by task name.
    windows: BTreeMap<String, RestartWindow>,
    /// The host ports each running docker task's container got, by task name; not
    /// stored (a resumed container reports them again).
    ports: BTreeMap<String, Vec<AllocPort>>,
    /// The ports a server last acknowledged.
    acked_ports: Vec<AllocPort>,
    /// What its health checks say, and what a server last acknowledged of it.
    health: AllocHealth,
    acked_health: AllocHealth,
}

struct Runner {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Entry {
    fn new(alloc: Allocation, client: ClientStatus) -> Self {
        Entry {
            alloc,
            client,
            restarts: 0,
            unacked: Vec::new(),
            acked: None,
            in_flight: None,
            runner: None,
            detached: false,
            handles: BTreeMap::new(),
            windows: BTreeMap::new(),
            ports: BTreeMap::new(),
            acked_ports: Vec::new(),
            health: AllocHealth::default(),
            acked_health: AllocHealth::default(),
        }
    }

    /// Every task's ports, as one report carries them.
    fn all_ports(&self) -> Vec<AllocPort> {
        self.ports.values().flatten().cloned().collect()
    }

    /// What the store keeps of it.
    fn saved(&self) -> Saved {
        Saved {
            alloc: self.alloc.clone(),
            client: self.client,
            restarts: self.restarts,
            unacked: self.unacked.clone(),
            acked: self.acked,
            active: self.runner.is_some() || self.detached,
            handles: self.handles.clone(),
            windows: self.windows.clone(),
            health: self.health.clone(),
            acked_health: self.acked_health.clone(),
        }
    }

    fn from_saved(s: Saved) -> Self {
        Entry {
            alloc: s.alloc,
            client: s.client,
            restarts: s.restarts,
            unacked: s.unacked,
            acked: s.acked,
            in_flight: None,
            runner: None,
            detached: false,
            handles: s.handles,
            windows: s.windows,
            ports: BTreeMap::new(),
            acked_ports: Vec::new(),
            health: s.health,
            acked_health: s.acked_health,
        }
    }

    /// Whether a server has yet to hear something of it.
    fn dirty(&self) -> bool {
        !self.unacked.is_empty()
            || self.acked != Some((self.client, self.restarts))
            || self.all_ports() != self.acked_ports
            || self.acked_health != self.health
    }

    /// Done with for good: ended here, the servers know it, and they have it ended too.
    fn forgettable(&self) -> bool {
        self.runner.is_none()
            && self.client.is_terminal()
            && !self.dirty()
            && self.alloc.client.is_terminal()
    }

    fn event(&mut self, kind: AllocEventKind, message: String) {
        if self.unacked.len() >= ALLOC_EVENTS_MAX {
            let drop = self.unacked.len() + 1 - ALLOC_EVENTS_MAX;
            self.unacked.drain(..drop);
            if let Some(f) = &mut self.in_flight {
                f.events = f.events.saturating_sub(drop);
            }
        }
        self.unacked.push(AllocEvent {
            at: Timestamp::now(),
            kind,
            message,
        });
    }
}

#[derive(Default)]
struct State {
    /// The highest allocation index received from a server.
    index: u64,
    entries: BTreeMap<AllocId, Entry>,
}

/// Why an allocation must not run here: stopped, or ended by the servers' account (lost
/// while this node was away), so its resources are no longer counted here.
fn stop_reason(alloc: &Allocation) -> Option<&'static str> {
    match (alloc.desired, alloc.client.is_terminal()) {
        (DesiredStatus::Stop, _) => Some("the servers want it stopped"),
        (_, true) => Some("the servers consider it ended"),
        _ => None,
    }
}

/// The node's allocations, shared by the sessions and the runners.
pub(crate) struct Allocs {
    state: Mutex<State>,
    /// Something new for the servers: an update is due.
    pub(crate) changed: Notify,
    how: Arc<Supervision>,
    store: AllocStore,
    me: Weak<Allocs>,
}

impl Allocs {
    /// Keeps an allocation's state, on disk before this returns (changes are few: starts,
    /// exits, acks), so even a killed agent's successor knows what it had. A store that
    /// fails is logged (the allocation goes on: only a restart of this agent would miss it).
    fn save(&self, e: &Entry) {
        if let Err(err) = self.store.save(&e.saved()) {
            tracing::error!(alloc = %e.alloc.id, error = %err, "cannot keep the allocation's state");
        }
    }

    fn forget(&self, id: AllocId) {
        if let Err(err) = self.store.forget(id) {
            tracing::error!(alloc = %id, error = %err, "cannot forget the allocation");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index to name in the next Hello.
    pub(crate) fn index(&self) -> u64 {
        self.lock().index
    }

    /// Whether this agent holds the allocation (running it, or its end not yet forgotten).
    pub(crate) fn holds(&self, id: AllocId) -> bool {
        self.lock().entries.contains_key(&id)
    }

    /// Whether the allocation's tasks are being run here now (its runner alive).
    pub(crate) fn is_running(&self, id: AllocId) -> bool {
        self.lock()
            .entries
            .get(&id)
            .is_some_and(|e| e.runner.is_some())
    }

    /// Allocations running here now (their runners alive).
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.runner.is_some())
            .count()
    }

    /// Takes a batch of changes from a server: starts, stops, remembers its index.
    pub(crate) fn apply(&self, sync: AllocSync) {
        let mut st = self.lock();
        for a in sync.allocs {
            self.take(&mut st, a);
        }
        if sync.index > st.index {
            st.index = sync.index;
            if let Err(e) = self.store.save_index(sync.index) {
                tracing::error!(error = %e, "cannot keep the allocation index");
            }
        }
        drop(st);
        self.changed.notify_one();
    }

    fn take(&self, st: &mut State, mut a: AllocAssignment) {
        let id = a.alloc.id;
        if let Some(e) = st.entries.get_mut(&id) {
            if a.alloc.modify_index <= e.alloc.modify_index {
                return;
            }
            e.alloc = a.alloc;
            if let Some(why) = stop_reason(&e.alloc)
                && let Some(r) = &e.runner
                && !r.stop.is_cancelled()
            {
                tracing::info!(alloc = %id, why, "stopping the allocation");
                r.stop.cancel();
            }
            if e.forgettable() {
                st.entries.remove(&id);
                self.forget(id);
            } else {
                self.save(e);
            }
            return;
        }
        // Ended already, by the servers' account: nothing to run and nothing to say.
        if a.alloc.client.is_terminal() {
            return;
        }
        match a.alloc.desired {
            DesiredStatus::Stop => {
                let mut e = Entry::new(a.alloc, ClientStatus::Complete);
                e.event(AllocEventKind::Stopped, "not running on this node".into());
                self.save(&e);
                st.entries.insert(id, e);
            }
            DesiredStatus::Run => {
                // A port of its own, kept with its tasks (so the same after a restart).
                match health::free_port() {
                    Ok(port) => {
                        for t in &mut a.tasks {
                            t.env
                                .entry(health::PORT_VAR.to_owned())
                                .or_insert_with(|| port.to_string());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(alloc = %id, error = %e, "no free port for the allocation")
                    }
                }
                let mut e = Entry::new(a.alloc.clone(), ClientStatus::Pending);
                e.event(AllocEventKind::Received, "received by the node".into());
                // Kept before it starts, so a later agent on this data dir knows it runs
                // here and never starts it twice.
                let kept = self
                    .store
                    .write_assignment(&a)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        let saved = Saved {
                            active: true,
                            ..e.saved()
                        };
                        self.store.save(&saved).map_err(|e| e.to_string())
                    });
                match kept {
                    Ok(()) => e.runner = Some(self.start(a, Resume::default())),
                    Err(why) => {
                        tracing::error!(alloc = %id, %why, "not starting the allocation");
                        e.client = ClientStatus::Failed;
                        e.event(
                            AllocEventKind::Failed,
                            format!(
                                "the agent cannot keep the allocation before starting it: {why}"
                            ),
                        );
                    }
                }
                st.entries.insert(id, e);
            }
        }
    }

    fn start(&self, a: AllocAssignment, resume: Resume) -> Runner {
        let id = a.alloc.id;
        let me = self.me.clone();
        let report: runner::Report = Arc::new(move |change| {
            if let Some(allocs) = me.upgrade() {
                allocs.record(id, change);
            }
        });
        let stop = CancellationToken::new();
        let span =
            tracing::info_span!("alloc", alloc = %id, job = %a.alloc.job, group = %a.alloc.group);
        if resume.is_empty() {
            tracing::info!(alloc = %id, tasks = a.tasks.len(), "starting the allocation");
        } else {
            tracing::info!(alloc = %id, tasks = a.tasks.len(), "resuming the allocation");
        }
        let dir = self.store.alloc_dir(id);
        let run = runner::run(a, self.how.clone(), dir, resume, report, stop.clone());
        let handle = tokio::spawn(run.instrument(span));
        Runner { stop, handle }
    }

    /// What a runner says happened.
    fn record(&self, id: AllocId, change: Change) {
        let mut st = self.lock();
        let Some(e) = st.entries.get_mut(&id) else {
            return;
        };
        match change {
            Change::Supervised { task, handle } => {
                e.handles.insert(task, handle);
            }
            // Taken back after an agent restart: running, whatever the last saved status.
            Change::Reattached => {
                if !e.client.is_terminal() {
                    e.client = ClientStatus::Running;
                }
            }
            Change::Started { task, what } => {
                if !e.client.is_terminal() {
                    e.client = ClientStatus::Running;
                }
                e.event(
                    AllocEventKind::Started,
                    format!("task {task} started ({what})"),
                );
            }
            Change::Ports { task, ports } => {
                if ports.is_empty() {
                    e.ports.remove(&task);
                } else {
                    e.ports.insert(task, ports);
                }
            }
            Change::Note { kind, message } => e.event(kind, message),
            Change::Exited { task, exit } => {
                e.event(AllocEventKind::Exited, format!("task {task}: {exit}"))
            }
            Change::Restarting { task, why, window } => {
                match window {
                    Some(w) => e.windows.insert(task, w),
                    None => e.windows.remove(&task),
                };
                e.restarts = e.restarts.saturating_add(1);
                e.event(AllocEventKind::Restarting, why);
            }
            Change::Failed(why) => {
                e.client = ClientStatus::Failed;
                e.event(AllocEventKind::Failed, why);
                e.runner = None;
            }
            Change::Health(h) => e.health = h,
            Change::Complete => {
                e.client = ClientStatus::Complete;
                e.runner = None;
            }
            Change::Stopped => {
                e.client = ClientStatus::Complete;
                e.event(AllocEventKind::Stopped, "its tasks were stopped".into());
                e.runner = None;
            }
        }
        if e.runner.is_none() {
            e.handles.clear();
            e.windows.clear();
            e.ports.clear();
        }
        self.save(e);
        drop(st);
        self.changed.notify_one();
    }

    /// Stops watching (the agent is stopping): the tasks keep running under their
    /// supervisors, and the next agent process on this data dir takes them back. Only the
    /// servers' word stops an allocation. Returns the runners, to wait for.
    pub(crate) fn detach_all(&self) -> Vec<JoinHandle<()>> {
        let mut st = self.lock();
        st.entries
            .iter_mut()
            .filter_map(|(id, e)| {
                let r = e.runner.take()?;
                e.detached = true;
                tracing::info!(alloc = %id, "leaving the allocation's tasks running: the agent is stopping");
                r.handle.abort();
                Some(r.handle)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
