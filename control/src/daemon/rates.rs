//! New clients per second per gateway: the control thread samples the workers' counters once
//! a second and keeps the rate over the last sample period.

use std::collections::HashMap;
use std::time::Instant;

use dataplane::model::Snapshot;

use super::worker::WorkerReport;

/// Per (service, gateway) names: the last total and the rate since the sample before.
#[derive(Default)]
pub struct GatewayRates {
    last: HashMap<(String, String), (u64, f64)>,
    at: Option<Instant>,
}

impl GatewayRates {
    /// Takes a sample of new-client totals from `workers` (whose counters follow `snap`'s
    /// layout) at `now`.
    pub fn sample(&mut self, snap: &Snapshot, workers: &[WorkerReport], now: Instant) {
        let elapsed = self
            .at
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        self.at = Some(now);
        let mut next = HashMap::with_capacity(self.last.len());
        for (s, svc) in snap.services.iter().enumerate() {
            for (g, gw) in svc.spec.gateways.iter().enumerate() {
                let total: u64 = workers
                    .iter()
                    .filter_map(|w| w.counters.gateways.get(s)?.get(g))
                    .map(|c| c.new_clients)
                    .sum();
                let key = (svc.spec.name.clone(), gw.name.clone());
                // A reload may re-index counters; a total that went down restarts the rate.
                let rate = match (self.last.get(&key), elapsed) {
                    (Some((before, _)), Some(dt)) if dt > 0.0 && total >= *before => {
                        (total - before) as f64 / dt
                    }
                    _ => 0.0,
                };
                next.insert(key, (total, rate));
            }
        }
        self.last = next;
    }

    /// New clients per second of `gateway` in `service` over the last sample period.
    pub fn per_second(&self, service: &str, gateway: &str) -> f64 {
        self.last
            .iter()
            .find(|((s, g), _)| s == service && g == gateway)
            .map_or(0.0, |(_, (_, r))| (*r * 10.0).round() / 10.0)
    }
}
