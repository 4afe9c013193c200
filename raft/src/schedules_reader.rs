//! [`StateReader`]'s reads of schedules, webhooks, events and deliveries.

use windflow_protocol::{
    Delivery, Event, Namespace, Schedule, ScheduleFire, ScheduleId, Webhook, WebhookId,
};

use crate::reader::StateReader;
use crate::state::{id_of, key, u64_of};
use crate::{StoreError, decode};

impl StateReader {
    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.tree().get(k)?.map(|v| decode(&v, what)).transpose()
    }

    fn scan_decoded<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.tree()
            .scan_prefix(prefix)
            .map(|e| decode(&e?.1, what))
            .collect()
    }

    /// The newest `limit` values under `prefix`, newest first.
    fn newest<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.tree()
            .scan_prefix(prefix)
            .rev()
            .take(limit)
            .map(|e| decode(&e?.1, what))
            .collect()
    }

    pub fn schedule(&self, id: ScheduleId) -> Result<Option<Schedule>, StoreError> {
        self.get_decoded(&key::id(key::SCHEDULE, id.0), "schedule")
    }

    pub fn schedule_by_name(
        &self,
        ns: &Namespace,
        name: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        match id_of(
            self.tree()
                .get(key::ns_name(key::SCHEDULE_NAME, ns, name))?,
        ) {
            Some(id) => self.schedule(ScheduleId(id)),
            None => Ok(None),
        }
    }

    /// Every schedule, by ascending ID.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.scan_decoded(key::SCHEDULE, "schedule")
    }

    /// Moves whenever a schedule is created, enabled, disabled or deleted (not on fires).
    pub fn schedules_version(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree().get(key::SCHEDULE_VERSION)?))
    }

    /// A schedule's last `limit` fires, newest first.
    pub fn schedule_fires(
        &self,
        id: ScheduleId,
        limit: usize,
    ) -> Result<Vec<ScheduleFire>, StoreError> {
        self.newest(&key::id(key::SCHEDULE_FIRE, id.0), limit, "schedule fire")
    }

    pub fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.get_decoded(&key::id(key::WEBHOOK, id.0), "webhook")
    }

    pub fn webhook_by_name(
        &self,
        ns: &Namespace,
        name: &str,
    ) -> Result<Option<Webhook>, StoreError> {
        match id_of(self.tree().get(key::ns_name(key::WEBHOOK_NAME, ns, name))?) {
            Some(id) => self.webhook(WebhookId(id)),
            None => Ok(None),
        }
    }

    /// Every webhook, by ascending ID.
    pub fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.scan_decoded(key::WEBHOOK, "webhook")
    }

    /// The number of the last event recorded.
    pub fn last_event(&self) -> Result<u64, StoreError> {
        Ok(u64_of(self.tree().get(key::NEXT_EVENT)?))
    }

    /// Up to `limit` events after `seq`, oldest first.
    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.tree()
            .range(key::id(key::EVENT, seq.saturating_add(1))..key::id(key::EVENT, u64::MAX))
            .take(limit)
            .map(|e| decode(&e?.1, "event"))
            .collect()
    }

    /// A webhook's last `limit` delivery attempts, newest first.
    pub fn deliveries(&self, id: WebhookId, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.newest(&key::id(key::WEBHOOK_DELIVERY, id.0), limit, "delivery")
    }
}
