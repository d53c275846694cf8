//! PostgreSQL as the state store and as the SQL catalog's database.
//!
//! The state store (what several icemaint replicas share): migrations, job history, property
//! changes and the per-table lease lock through the library, including a race for one lock
//! between two connection pools; and two daemons on one store, where a compaction running on one
//! makes the other answer 409, both serve the same job history, and the job of a replica that
//! crashed is marked failed. The SQL catalog: PyIceberg and icemaint commit to the same
//! Postgres-backed catalog.

use std::collections::BTreeSet;
use std::sync::Arc;

use icemaint::store::{JobRecord, PropertyChange, Store};
use serde_json::json;

use crate::daemon::{Daemon, icemaint, write_config};
use crate::harness::{CatalogSpec, PostgresServer, TestDir, make_table, pyiceberg_ops, verify};

fn job(id: &str, table: &str, created: i64) -> JobRecord {
    JobRecord::running(id, table, "compaction", "manual", created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_postgres_keeps_jobs_changes_and_locks() {
    let pg = PostgresServer::start();
    // Two pools migrating at once, as two replicas starting together.
    let url = pg.url();
    let (a, b) = tokio::join!(Store::connect(&url), Store::connect(&url));
    let (a, b) = (a.expect("store a"), b.expect("store b"));
    a.ping().await.unwrap();

    // Jobs: written by one replica, read by the other; a late progress write cannot revive a
    // finished job; newest first.
    a.insert_job(&job("j1", "m.t1", 1)).await.unwrap();
    a.insert_job(&job("j2", "m.t2", 2)).await.unwrap();
    b.insert_job(&job("j3", "m.t1", 3)).await.unwrap();
    a.update_progress("j1", &json!({"groups_done": 0}))
        .await
        .unwrap();
    b.update_job("j1", "succeeded", Some(9), &json!({"files": 4}), None)
        .await
        .unwrap();
    a.update_progress("j1", &json!({"late": true}))
        .await
        .unwrap();
    let j1 = b.job("j1").await.unwrap().expect("j1");
    assert_eq!(j1.status, "succeeded");
    assert_eq!(j1.finished_ms, Some(9));
    assert_eq!(j1.detail, json!({"files": 4}));
    let t1: Vec<String> = a
        .jobs(Some("m.t1"), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(t1, ["j3", "j1"]);
    assert!(a.job("nope").await.unwrap().is_none());

    // Property changes.
    let c = PropertyChange {
        table: "m.t1".into(),
        key: "write.distribution-mode".into(),
        old: Some("none".into()),
        new: Some("hash".into()),
        changed_ms: 7,
        job_id: Some("j1".into()),
    };
    a.record_property_change(&c).await.unwrap();
    assert_eq!(b.property_changes("m.t1").await.unwrap(), vec![c]);

    // Leases: exclusive across pools, renewable only by the holder of that epoch, taken over
    // once expired by the store's clock (here: a lease of 30 ms), each acquisition a new epoch.
    assert_eq!(a.try_lock("m.t", "pa", "la", 60_000).await.unwrap(), Ok(1));
    assert_eq!(
        b.try_lock("m.t", "pb", "lb", 60_000).await.unwrap(),
        Err("la".to_string())
    );
    assert!(a.renew_lock("m.t", "la", 1, 30).await.unwrap());
    assert!(!b.renew_lock("m.t", "lb", 1, 60_000).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !a.renew_lock("m.t", "la", 1, 60_000).await.unwrap(),
        "lapsed"
    );
    assert_eq!(b.try_lock("m.t", "pb", "lb", 60_000).await.unwrap(), Ok(2));
    assert!(
        !a.renew_lock("m.t", "la", 1, 60_000).await.unwrap(),
        "taken over"
    );
    let lease = a.lease("m.t").await.unwrap().unwrap();
    assert_eq!((lease.job_id.as_str(), lease.epoch), ("lb", 2));
    assert!(lease.remaining_ms > 50_000, "{lease:?}");
    b.unlock("m.t", "lb", 2).await.unwrap();
    assert_eq!(a.try_lock("m.t", "pa", "lc", 60_000).await.unwrap(), Ok(3));
    let (wall, store_now) = (
        chrono::Utc::now().timestamp_millis(),
        a.now_ms().await.unwrap(),
    );
    assert!((store_now - wall).abs() < 5_000, "{store_now} vs {wall}");

    // Fire claims: one insert wins, across pools.
    assert!(
        a.claim_fire("m.t", "compaction", 10_000, "pa")
            .await
            .unwrap()
    );
    assert!(
        !b.claim_fire("m.t", "compaction", 10_000, "pb")
            .await
            .unwrap()
    );
    assert!(
        b.claim_fire("m.t", "compaction", 20_000, "pb")
            .await
            .unwrap()
    );

    // Crash recovery: a running job whose lease expired is failed; one with a live lease is not.
    a.insert_job(&job("dead", "m.dead", 10)).await.unwrap();
    a.try_lock("m.dead", "pa", "dead", -1)
        .await
        .unwrap()
        .unwrap();
    a.insert_job(&job("alive", "m.alive", 10)).await.unwrap();
    a.try_lock("m.alive", "pa", "alive", 60_000)
        .await
        .unwrap()
        .unwrap();
    // j2 and j3 never held a lease (inserted as `running` above): dead as well.
    assert_eq!(b.fail_running_jobs("owner gone").await.unwrap(), 3);
    for (id, status) in [
        ("dead", "failed"),
        ("j2", "failed"),
        ("j3", "failed"),
        ("alive", "running"),
        ("j1", "succeeded"),
    ] {
        assert_eq!(a.job(id).await.unwrap().unwrap().status, status, "{id}");
    }

    // A race: 16 contenders from two pools at the same instant; exactly one holds the lock.
    let stores = [Arc::new(a), Arc::new(b)];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = Arc::clone(&stores[i % 2]);
        tasks.spawn(async move {
            let id = format!("race-{i}");
            (id.clone(), s.try_lock("m.race", "p", &id, 60_000).await)
        });
    }
    let mut winners = BTreeSet::new();
    let mut holders = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (id, r) = r.unwrap();
        match r.unwrap_or_else(|e| panic!("{id}: {e}\n{}", pg.log_tail(20))) {
            Ok(epoch) => {
                assert_eq!(epoch, 1, "{id}");
                winners.insert(id);
            }
            Err(holder) => {
                holders.insert(holder);
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    // A loser names the winner, or "another process" when it lost between read and insert.
    let winner = winners.first().unwrap();
    assert!(
        holders
            .iter()
            .all(|h| h == winner || h == "another process"),
        "{holders:?} vs {winner}"
    );
}

/// The id of a job whose process crashed (job ids are UUIDs).
const CRASHED: &str = "01a21010-0000-7000-8000-00000000dead";

/// Two daemons (replicas) sharing one Postgres store and one catalog: a job running on one
/// makes the other refuse the table with 409, and either serves the job's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_one_postgres_store() {
    let pg = PostgresServer::start();
    let dir = TestDir::new("pg-daemons");
    let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
    let t = "metrics.shared";
    let made_spec = spec.clone();
    let before = tokio::task::spawn_blocking(move || {
        // 20 partitions x 2 files of 5000 rows: 20 groups, rewritten one at a time (seconds).
        make_table(&made_spec, t, &["--appends", "40", "--rows", "5000"]);
        verify(&made_spec, t, true, false)
    })
    .await
    .unwrap();
    assert!(before.agree, "{}", before.raw);
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("shared.toml"),
        "version = 1\nname = \"shared\"\ntables = [\"metrics.*\"]\n[compaction]\nschedule = \"0 0 0 1 1 *\"\n",
    )
    .unwrap();
    let config = write_config(&dir, &spec, &policies, "");
    let url = pg.url();
    let env = [("ICEMAINT__STORE__URL", url.as_str())];
    // A job of a replica that crashed a while ago: running, its lease long expired.
    {
        let store = Store::connect(&url).await.unwrap();
        store
            .insert_job(&job(CRASHED, "metrics.other", 1))
            .await
            .unwrap();
        store
            .try_lock("metrics.other", "dead-replica", CRASHED, -1)
            .await
            .unwrap()
            .unwrap();
    }
    let a = Daemon::start(&config, &env);
    let b = Daemon::start(&config, &env);
    let crashed = a
        .wait_for(
            &format!("/api/v1/jobs/{CRASHED}"),
            "the crashed job to be failed",
            |s, v| s == 200 && v["status"] == "failed",
        )
        .await;
    assert_eq!(crashed["error"], icemaint::jobs::ABANDONED, "{crashed}");

    let path = format!("/api/v1/tables/{t}/compact");
    let body = json!({"min-input-files": 2, "max-concurrent-file-group-rewrites": 1});
    // Each daemon's start-up reconcile holds the table's lease for a moment: until both are
    // done, A may be refused too.
    let (s, v) = a.post_when_free(&path, Some(body.clone())).await;
    assert_eq!(s, 202, "{v}\n{}", a.log_text());
    let job_id = v["job_id"].as_str().unwrap().to_string();
    let (s, v) = b.post(&path, Some(body), None).await;
    assert_eq!(
        s,
        409,
        "the other replica must refuse: {v}\n{}",
        b.log_text()
    );
    assert_eq!(v["job_id"], job_id.as_str(), "{v}");

    let done = b.wait_job(&job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", a.log_text());
    assert_eq!(done["detail"]["files_written"], 20, "{done}");
    let (s, from_a) = a.get(&format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(from_a, done, "both replicas serve the same history");

    let after = tokio::task::spawn_blocking(move || verify(&spec, t, true, false))
        .await
        .unwrap();
    assert!(after.agree, "{}", after.raw);
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum)
    );
    assert_eq!(after.data_files, 20);
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}

/// A SQL catalog on PostgreSQL (the production SQL catalog): PyIceberg creates and fills the
/// table, icemaint compacts it through its SQL commit backend (compare-and-swap on the catalog
/// row, `$n` placeholders), PyIceberg appends on top of icemaint's commit and expiry prunes the
/// history; PyIceberg and DuckDB read the same rows after each step. A commit based on a stale
/// table is refused as a conflict and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_catalog_on_postgres_compacts_and_refuses_stale_commits() {
    let pg = PostgresServer::start();
    let dir = TestDir::new("pg-catalog");
    let spec = CatalogSpec::sql_postgres(pg.url(), dir.uri("warehouse"));
    let t = "metrics.pg";
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("pg.toml"),
        "version = 1\nname = \"pg\"\ntables = [\"metrics.*\"]\n[compaction]\nschedule = \"0 0 0 1 1 *\"\n[expire]\n",
    )
    .unwrap();
    let config = write_config(&dir, &spec, &policies, "");
    let cfg = config.to_str().unwrap().to_string();

    let s = spec.clone();
    let before = tokio::task::spawn_blocking(move || {
        make_table(&s, t, &["--appends", "40", "--rows", "500"]);
        verify(&s, t, true, false)
    })
    .await
    .unwrap();
    assert!(before.agree, "{}", before.raw);
    assert_eq!(before.data_files, 40);

    let c = cfg.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        icemaint(&[
            "compact",
            t,
            "--config",
            &c,
            "--json",
            "--option",
            "min-input-files=2",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["files_written"], 20, "{job}");

    // A stale base: the table as loaded now, then moved on by PyIceberg.
    #[derive(serde::Deserialize)]
    struct Root {
        catalog: icemaint::config::CatalogConfig,
    }
    let catalog_config = toml::from_str::<Root>(&spec.config_toml()).unwrap().catalog;
    let handle = icemaint::catalog::CatalogHandle::connect(&catalog_config)
        .await
        .unwrap();
    let stale = handle.load(t).await.unwrap();
    let s = spec.clone();
    let (after_compaction, appended) = tokio::task::spawn_blocking(move || {
        let v = verify(&s, t, true, false);
        let appended = pyiceberg_ops(&s, t, "append", &["--rows", "300", "--seed", "7"]);
        (v, appended)
    })
    .await
    .unwrap();
    assert!(after_compaction.agree, "{}", after_compaction.raw);
    assert_eq!(
        (after_compaction.rows, &after_compaction.checksum),
        (before.rows, &before.checksum)
    );
    assert_eq!(after_compaction.data_files, 20);
    let moved = handle.load(t).await.unwrap();
    assert_ne!(moved.metadata_location(), stale.metadata_location());

    let backend = handle.committer().await.unwrap();
    let update = iceberg::TableUpdate::SetProperties {
        updates: [("icemaint.test".to_string(), "stale".to_string())].into(),
    };
    let refused = backend.commit(&stale, vec![], vec![update]).await;
    assert!(
        matches!(refused, Err(icemaint::catalog::CommitError::Conflict(_))),
        "{refused:?}"
    );
    let now = handle.load(t).await.unwrap();
    assert_eq!(now.metadata_location(), moved.metadata_location());
    assert!(!now.metadata().properties().contains_key("icemaint.test"));

    // Expiry over the same backend; the current rows stay.
    let c = cfg.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        icemaint(&[
            "expire",
            t,
            "--config",
            &c,
            "--json",
            "--older-than",
            "0s",
            "--retain-last",
            "1",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    let s = spec.clone();
    let last = tokio::task::spawn_blocking(move || verify(&s, t, true, false))
        .await
        .unwrap();
    assert!(last.agree, "{}", last.raw);
    assert_eq!(last.rows, before.rows + 300, "{appended}");
    assert_eq!(last.snapshots, 1);
}
