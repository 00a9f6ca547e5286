//! The bus on a real 3-node JetStream cluster: provisioning moves a single-replica topology to
//! three replicas, and compare-and-set keeps its meaning when the bucket's leader is killed.

use std::time::Duration;

use oprelay_bus::{Bus, BusError, JsonKv, Mode, NatsSettings, Topology};
use oprelay_events::names;
use oprelay_testkit::{eventually, stream_leader, NatsCluster};

async fn connect(cluster: &NatsCluster) -> Bus {
    Bus::connect(&NatsSettings {
        url: cluster.url(),
        ..Default::default()
    })
    .await
    .expect("connect to the cluster")
}

async fn replicas(bus: &Bus, stream: &str) -> usize {
    let mut s = bus.jetstream().get_stream(stream).await.unwrap();
    s.info().await.unwrap().config.num_replicas
}

async fn leader(bus: &Bus, stream: &str) -> String {
    eventually(
        Duration::from_secs(60),
        &format!("a leader of {stream}"),
        || {
            let bus = bus.clone();
            async move { stream_leader(bus.jetstream(), stream).await }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_moves_one_replica_to_three_and_cas_survives_a_leader_kill() {
    let mut cluster = NatsCluster::start(3, Default::default());
    let bus = connect(&cluster).await;
    let single = Topology::default();
    bus.provision(&single).await.expect("one replica");
    assert_eq!(replicas(&bus, names::STREAM_RAW).await, 1);

    let three = Topology {
        replicas: 3,
        ..Topology::default()
    };
    // The plan says what will change; applying it is retried as the provisioning Job would be
    // (a replica change is a cluster operation that can time out on a busy machine; running
    // it again is harmless).
    let plan = oprelay_bus::provision(bus.jetstream(), &three, Mode::DryRun)
        .await
        .expect("a dry run");
    assert!(
        plan.iter().any(|s| s.object == "stream OP_RAW"
            && s.changes.iter().any(|c| c == "replicas 1 → 3")),
        "{plan:?}"
    );
    eventually(Duration::from_secs(60), "three replicas applied", || {
        let bus = bus.clone();
        let three = three.clone();
        async move { bus.provision(&three).await.ok() }
    })
    .await;
    for stream in [
        names::STREAM_RAW,
        names::STREAM_EVENTS,
        "KV_OP_CURSORS",
        "KV_OP_LEASES",
    ] {
        assert_eq!(replicas(&bus, stream).await, 3, "{stream}");
    }

    // As an operator would after raising the replica count: wait until both new replicas have
    // caught up before taking a node away (a replica still behind cannot take over).
    eventually(Duration::from_secs(60), "two current replicas", || {
        let bus = bus.clone();
        async move {
            let mut s = bus.jetstream().get_stream("KV_OP_CURSORS").await.ok()?;
            let info = s.info().await.ok()?;
            let peers = &info.cluster.as_ref()?.replicas;
            (peers.len() == 2 && peers.iter().all(|p| p.current && p.lag.unwrap_or(0) == 0))
                .then_some(())
        }
    })
    .await;
    // Compare-and-set across a failover: the bucket's leader dies, a new one is elected, and a
    // stale revision still loses while the current one wins.
    let kv = JsonKv::open(&bus, names::BUCKET_CURSORS).await.unwrap();
    let r1 = kv
        .compare_and_set("acme.item_usages", &"c1", None)
        .await
        .unwrap();
    let r2 = kv
        .compare_and_set("acme.item_usages", &"c2", Some(r1))
        .await
        .unwrap();
    let old = leader(&bus, "KV_OP_CURSORS").await;
    cluster.kill(cluster.index_of(&old).expect("a node"));
    let new = eventually(Duration::from_secs(60), "a new leader", || {
        let bus = bus.clone();
        let old = old.clone();
        async move {
            stream_leader(bus.jetstream(), "KV_OP_CURSORS")
                .await
                .filter(|l| *l != old)
        }
    })
    .await;
    assert_ne!(new, old);
    let stale = eventually(
        Duration::from_secs(60),
        "an answer to a stale write",
        || {
            let kv = kv.clone();
            async move {
                match kv
                    .compare_and_set("acme.item_usages", &"late", Some(r1))
                    .await
                {
                    Err(BusError::Conflict { .. }) => Some(true),
                    Ok(_) => Some(false),
                    Err(_) => None, // the election is still settling
                }
            }
        },
    )
    .await;
    assert!(stale, "a stale revision won after the failover");
    let r3 = kv
        .compare_and_set("acme.item_usages", &"c3", Some(r2))
        .await
        .expect("the current revision wins");
    assert!(r3 > r2);
    // A KV read may be answered by a follower (direct get), which can trail the leader for a
    // moment after an election: the write is there once every replica has applied it.
    let now = eventually(
        Duration::from_secs(30),
        "the new value on every replica",
        || {
            let kv = kv.clone();
            async move {
                kv.get::<String>("acme.item_usages")
                    .await
                    .ok()
                    .flatten()
                    .filter(|v| v.revision == r3)
            }
        },
    )
    .await;
    assert_eq!((now.value.as_str(), now.revision), ("c3", r3));
}
