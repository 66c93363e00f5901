//! The node's Prometheus metrics: one registry, shared with libp2p-metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a membership state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Label of a wire service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

/// Label of a refused catalog entry's reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label of an HTTP route and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    pub route: String,
    pub status: u16,
}

/// Flotilla's own metrics, plus libp2p's recorder.
pub struct Metrics {
    /// libp2p's protocol metrics (identify, kad, ping, gossipsub, swarm).
    pub libp2p: libp2p::metrics::Metrics,
    /// Members of this node's view, by state.
    pub members: Family<StateLabel, Gauge>,
    /// Membership transitions seen, by target state.
    pub transitions: Family<StateLabel, Counter>,
    /// Frames refused by a codec (malformed, oversized, trailing bytes), by service.
    pub rejected_frames: Family<ServiceLabel, Counter>,
    /// Gossip messages that failed validation and were dropped.
    pub gossip_rejected: Counter,
    /// HTTP requests served, by route and status.
    pub http_requests: Family<HttpLabel, Counter>,
    /// Entries of the catalog replica, tombstones included.
    pub catalog_entries: Gauge,
    /// Catalog entries from peers that were refused, by reason.
    pub catalog_rejected: Family<ReasonLabel, Counter>,
    /// Anti-entropy rounds this node started that got an answer.
    pub catalog_sync_rounds: Counter,
}

impl Metrics {
    /// Counts the refused entries of one merge.
    pub fn count_catalog_rejections(&self, reasons: &[&'static str]) {
        for reason in reasons {
            self.catalog_rejected
                .get_or_create(&ReasonLabel {
                    reason: (*reason).to_string(),
                })
                .inc();
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let flotilla = registry.sub_registry_with_prefix("flotilla");
        let members = Family::<StateLabel, Gauge>::default();
        flotilla.register(
            "membership_members",
            "Members of this node's view, by state",
            members.clone(),
        );
        let transitions = Family::<StateLabel, Counter>::default();
        flotilla.register(
            "membership_transitions",
            "Membership state transitions, by target state",
            transitions.clone(),
        );
        let rejected_frames = Family::<ServiceLabel, Counter>::default();
        flotilla.register(
            "net_rejected_frames",
            "Frames refused by a codec, by service",
            rejected_frames.clone(),
        );
        let gossip_rejected = Counter::default();
        flotilla.register(
            "net_gossip_rejected",
            "Gossip messages that failed validation",
            gossip_rejected.clone(),
        );
        let http_requests = Family::<HttpLabel, Counter>::default();
        flotilla.register(
            "http_requests",
            "HTTP requests served, by route and status",
            http_requests.clone(),
        );
        let catalog_entries = Gauge::default();
        flotilla.register(
            "catalog_entries",
            "Entries of the catalog replica, tombstones included",
            catalog_entries.clone(),
        );
        let catalog_rejected = Family::<ReasonLabel, Counter>::default();
        flotilla.register(
            "catalog_rejected",
            "Catalog entries from peers that were refused, by reason",
            catalog_rejected.clone(),
        );
        let catalog_sync_rounds = Counter::default();
        flotilla.register(
            "catalog_sync_rounds",
            "Anti-entropy rounds started by this node that got an answer",
            catalog_sync_rounds.clone(),
        );
        Metrics {
            catalog_entries,
            catalog_rejected,
            catalog_sync_rounds,
            libp2p,
            members,
            transitions,
            rejected_frames,
            gossip_rejected,
            http_requests,
        }
    }
}
