use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::RemoteErrorKind;
use flotilla_protocol::services::training::{
    CheckpointCommand, PushOutcome, RequestBody, ResponseBody, MAX_RANGE_VALUES,
};
use flotilla_protocol::training::{Consistency, GradPayload, Precision, WorkerId, WorkerReport};

use super::core::{Config, Shard};
use super::rpc::serve;
use super::{Handle, StepNorm};
use crate::testing::CrashStore;
use crate::training::optim::{LrPlan, ShardOptimizer};

const W: WorkerId = WorkerId(4);

async fn server() -> Handle {
    let shard = Shard::new(
        Config {
            shard: 1,
            consistency: Consistency::Async,
            max_consecutive_nonfinite: 2,
            lr: LrPlan::constant(1.0),
            save_every: 0,
            clip: None,
        },
        vec![1.0, 2.0, 3.0, 4.0],
        Box::new(ShardOptimizer::sgd(4, 0.0, 0.0).unwrap()),
    );
    Handle::spawn(shard, super::Config::default())
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn requests_map_to_the_shard_and_checkpoints_to_the_store() {
    let h = server().await;
    let store = CrashStore::new();
    let job = JobId("job-r".into());
    let call = |body| serve(&h, &store, &job, 1, body);
    assert_eq!(
        call(RequestBody::Join {
            shard: 1,
            worker: W
        })
        .await,
        Ok(ResponseBody::Ack)
    );
    let pulled = call(RequestBody::Pull {
        shard: 1,
        worker: W,
        after: None,
        offset: 1,
        len: 2,
    })
    .await;
    assert_eq!(
        pulled,
        Ok(ResponseBody::Params {
            version: 0,
            offset: 1,
            values: vec![2.0, 3.0],
            norm: StepNorm::NotClipped,
        })
    );
    let push = |step| RequestBody::Push {
        shard: 1,
        worker: W,
        step,
        samples: 2,
        grad: GradPayload::encode(&[1.0, 1.0, 1.0, 1.0], Precision::Bf16),
    };
    assert_eq!(
        call(push(0)).await,
        Ok(ResponseBody::Pushed(PushOutcome::Applied {
            version: 1,
            staleness: 0
        }))
    );
    // A reader sees the whole range at the current version without joining.
    let peek = |shard| RequestBody::Peek { shard };
    assert_eq!(
        call(peek(1)).await,
        Ok(ResponseBody::Params {
            version: 1,
            offset: 0,
            values: vec![0.0, 1.0, 2.0, 3.0],
            norm: StepNorm::NotClipped,
        })
    );
    assert_eq!(
        call(peek(0)).await.unwrap_err().kind,
        RemoteErrorKind::BadRequest
    );
    let Ok(ResponseBody::Saved(saved)) = call(RequestBody::Checkpoint {
        shard: 1,
        command: CheckpointCommand::Save { step: 1 },
    })
    .await
    else {
        panic!("save failed")
    };
    assert_eq!((saved.shard, saved.version), (1, 1));
    // An async shard saves its state as it stands under the checkpoint's key (a sync shard
    // refuses a step it is not at: see the core's tests).
    let Ok(ResponseBody::Saved(keyed)) = call(RequestBody::Checkpoint {
        shard: 1,
        command: CheckpointCommand::Save { step: 7 },
    })
    .await
    else {
        panic!("save under a key failed")
    };
    assert_eq!((keyed.version, &keyed.blake3), (1, &saved.blake3));
    call(push(1)).await.unwrap();
    // A wrong hash is refused; the right one restores the saved state. The host keeps only its
    // latest blob of a checkpoint it does not hold: step 1's went when step 7's was written.
    let restore = |step: u64, blake3: String| RequestBody::Checkpoint {
        shard: 1,
        command: CheckpointCommand::Restore { step, blake3 },
    };
    let err = call(restore(7, "00".repeat(32))).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
    let gone = call(restore(1, saved.blake3.clone())).await.unwrap_err();
    assert_eq!(gone.kind, RemoteErrorKind::NotFound, "{gone:?}");
    assert_eq!(
        call(restore(7, keyed.blake3.clone())).await,
        Ok(ResponseBody::Restored { version: 1 })
    );
    assert_eq!(h.snapshot().await.unwrap().params, vec![0.0, 1.0, 2.0, 3.0]);

    // Requests this shard cannot serve.
    for body in [
        RequestBody::Join {
            shard: 0,
            worker: W,
        },
        RequestBody::Pull {
            shard: 1,
            worker: W,
            after: None,
            offset: 0,
            len: MAX_RANGE_VALUES as u64 + 1,
        },
        RequestBody::Pull {
            shard: 1,
            worker: W,
            after: None,
            offset: 3,
            len: 2,
        },
        RequestBody::Push {
            shard: 1,
            worker: WorkerId(99),
            step: 0,
            samples: 1,
            grad: GradPayload::F32(vec![0.0; 4]),
        },
        RequestBody::Report(WorkerReport {
            worker: W,
            step: 0,
            loss: 0.0,
            grad_norm: 0.0,
            lr: 0.0,
            samples: 0,
            compute_ms: 0.0,
        }),
    ] {
        let e = call(body.clone()).await.unwrap_err();
        assert_eq!(e.kind, RemoteErrorKind::BadRequest, "{body:?}: {e}");
    }
    // A failed job answers Unavailable.
    for step in 1..3 {
        call(RequestBody::Push {
            shard: 1,
            worker: W,
            step,
            samples: 1,
            grad: GradPayload::F32(vec![f32::NAN; 4]),
        })
        .await
        .unwrap();
    }
    let e = call(push(4)).await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::Unavailable, "{e}");
}
