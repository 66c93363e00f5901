use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::openai::FinishReason;
use flotilla_protocol::services::serving::{
    ErrorKind, ResponseBody, ServingError, StreamEnd, StreamId,
};
use tokio::sync::mpsc;

use super::*;
use crate::serving::router::StreamItem;

const LIMIT: Duration = Duration::from_secs(10);
const END: StreamEnd = StreamEnd {
    finish_reason: FinishReason::Length,
    prompt_tokens: 4,
    completion_tokens: 50,
};

/// Calls the relay in process, and loses every `lose_every`-th answer after the relay has
/// processed its poll, as a dropped connection would.
struct Lossy {
    relay: Relay,
    lose_every: u32,
    calls: AtomicU32,
    cancels: AtomicU32,
}

#[async_trait::async_trait]
impl StreamRpc for Lossy {
    async fn next_pieces(
        &self,
        stream: StreamId,
        from: u32,
        wait_ms: u32,
    ) -> Result<ResponseBody, ServingError> {
        let answer = self.relay.next_pieces(stream, from, wait_ms).await;
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.lose_every > 0 && n.is_multiple_of(self.lose_every) {
            return Err(ServingError::new(ErrorKind::Unavailable, "connection lost"));
        }
        answer
    }
    async fn cancel(&self, stream: StreamId) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        self.relay.cancel(stream);
    }
}

fn lossy(relay: &Relay, lose_every: u32) -> Arc<Lossy> {
    Arc::new(Lossy {
        relay: relay.clone(),
        lose_every,
        calls: AtomicU32::new(0),
        cancels: AtomicU32::new(0),
    })
}

fn limits(max_buffered: usize, lease_ms: u64) -> Limits {
    Limits {
        max_streams: 8,
        max_buffered,
        lease: Duration::from_millis(lease_ms),
    }
}

fn config(capacity: usize) -> PullConfig {
    PullConfig {
        wait_ms: 200,
        capacity,
        max_lost_polls: 3,
    }
}

async fn wait_until(mut pred: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition not reached within the deadline");
}

/// A local source of `n` pieces and an end, fed by a task through a small channel.
fn source(
    n: u32,
) -> (
    crate::serving::router::PieceStream,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(2);
    let feeder = crate::task::spawn(async move {
        for i in 0..n {
            if tx
                .send(Ok(StreamItem::Piece(format!("p{i}"))))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Ok(StreamItem::End(END))).await;
    });
    (rx, feeder)
}

#[tokio::test]
async fn every_piece_arrives_once_in_order_despite_lost_answers() {
    let relay = Relay::new(limits(4, 10_000));
    let (src, _feeder) = source(50);
    let id = relay.start(src).unwrap();
    let rpc = lossy(&relay, 3);
    let mut pulled = pull(rpc.clone(), id, config(2));
    let mut got = Vec::new();
    let end = tokio::time::timeout(LIMIT, async {
        loop {
            match pulled.recv().await {
                Some(Ok(StreamItem::Piece(p))) => got.push(p),
                Some(Ok(StreamItem::End(e))) => return e,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap();
    let expected: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    assert_eq!(got, expected);
    assert_eq!(end, END);
    assert!(
        rpc.calls.load(Ordering::SeqCst) >= 3,
        "some answers were lost and recovered"
    );
    assert_eq!(rpc.cancels.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_consumer_that_goes_away_cancels_the_remote_stream_and_its_source() {
    let relay = Relay::new(limits(4, 10_000));
    let (tx, rx) = mpsc::channel(2);
    let id = relay.start(rx).unwrap();
    tx.send(Ok(StreamItem::Piece("a".into()))).await.unwrap();
    let rpc = lossy(&relay, 0);
    let mut pulled = pull(rpc.clone(), id, config(2));
    let first = tokio::time::timeout(LIMIT, pulled.recv()).await.unwrap();
    assert_eq!(first, Some(Ok(StreamItem::Piece("a".into()))));
    drop(pulled);
    wait_until(|| relay.open_streams() == 0 && tx.is_closed()).await;
    assert_eq!(rpc.cancels.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unpolled_stream_expires_with_its_lease() {
    let relay = Relay::new(limits(4, 30));
    let _sweeper = relay.spawn_sweeper(Duration::from_millis(10));
    let (tx, rx) = mpsc::channel(2);
    let id = relay.start(rx).unwrap();
    wait_until(|| relay.open_streams() == 0 && tx.is_closed()).await;
    let err = relay.next_pieces(id, 0, 10).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownStream);
}

#[tokio::test]
async fn failures_and_unknown_streams_reach_the_consumer() {
    let relay = Relay::new(limits(4, 10_000));
    let (tx, rx) = mpsc::channel(2);
    let id = relay.start(rx).unwrap();
    tx.send(Err(ServingError::new(ErrorKind::Internal, "model died")))
        .await
        .unwrap();
    let mut pulled = pull(lossy(&relay, 0), id, config(2));
    let r = tokio::time::timeout(LIMIT, pulled.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(e) if e.message == "model died"));

    let mut nowhere = pull(lossy(&relay, 0), StreamId(999), config(2));
    let r = tokio::time::timeout(LIMIT, nowhere.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(e) if e.kind == ErrorKind::UnknownStream));
}

#[tokio::test]
async fn an_idle_poll_returns_empty_after_its_wait_and_the_table_is_bounded() {
    let relay = Relay::new(Limits {
        max_streams: 1,
        ..limits(4, 10_000)
    });
    let (_tx, rx) = mpsc::channel(2);
    let id = relay.start(rx).unwrap();
    let r = tokio::time::timeout(LIMIT, relay.next_pieces(id, 0, 20))
        .await
        .unwrap();
    assert_eq!(
        r.unwrap(),
        ResponseBody::Pieces {
            from: 0,
            pieces: vec![],
            end: None
        }
    );
    let (_tx2, rx2) = mpsc::channel(2);
    let full = relay.start(rx2).unwrap_err();
    assert!(matches!(full.kind, ErrorKind::Overloaded { .. }));
    assert_eq!(
        relay.cancel(id),
        ResponseBody::Cancelled { was_running: true }
    );
}
