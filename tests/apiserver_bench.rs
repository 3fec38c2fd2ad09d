//! The benchmark harness of the embedded API server, run small: every
//! watcher must receive every write (no timing is asserted; the figures
//! come from `csi-snapshotter embedded-apiserver --bench`).

use csi_snapshotter::testing::apiserver::{BenchOptions, run_bench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_harness_delivers_every_event_to_every_watcher() {
    let report = run_bench(BenchOptions {
        objects: 300,
        writers: 4,
        watchers: 3,
        crd_schemas: None,
    })
    .await
    .unwrap();
    assert_eq!(report.writes, 600);
    assert_eq!(report.events_per_watcher, 600);
    println!("{report}");
}
