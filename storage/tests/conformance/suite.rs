//! The conformance cases, generic over the dialect.

use super::*;

pub async fn save_commit_and_rollback<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "save", SentRetention::Delete).await;
    let committed = backend.save_events(&outbox, &[OrderPlaced { order: 1 }], true).await;
    let rolled_back = backend.save_events(&outbox, &[OrderPlaced { order: 2 }, OrderPlaced { order: 3 }], false).await;
    assert_eq!(rolled_back.len(), 2);
    assert_eq!(backend.count(&tables.outbox).await, 1, "a rollback leaves no row");

    let owner = LeaseOwner::new();
    let records = outbox.claim(owner, n(10), LEASE).await.expect("claim");
    assert_eq!(ids(&records), committed);
    let envelope = &records[0].envelope;
    assert_eq!(records[0].attempt(), 1);
    assert_eq!(envelope.meta.name, OrderPlaced::NAME);
    assert_eq!(envelope.codec, Codec::Json);
    assert_eq!(envelope.meta.correlation_id, envelope.meta.id, "a root message correlates with itself");
    assert_eq!(envelope.meta.causation_id, None);
    assert_eq!(envelope.decode::<OrderPlaced>().expect("decode"), OrderPlaced { order: 1 });
    assert_eq!(outbox.mark_sent(owner, &committed).await.expect("mark_sent"), 1);
    assert_eq!(backend.count(&tables.outbox).await, 0, "sent rows are deleted by default");
    tables.drop(backend).await;
}

pub async fn two_claimers_send_every_row_once<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "pair", SentRetention::Delete).await;
    let events: Vec<OrderPlaced> = (0..10_000).map(|order| OrderPlaced { order }).collect();
    let saved = backend.save_events(&outbox, &events, true).await;
    assert_eq!(saved.len(), 10_000);

    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let outbox = outbox.clone();
            tokio::spawn(async move { drain(&outbox, LeaseOwner::new(), 100).await })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let sent = claimer.await.expect("claimer");
        per_claimer.push(sent.len());
        for id in sent {
            assert!(seen.insert(id), "row {id} was sent twice");
        }
    }
    assert_eq!(seen.len(), 10_000, "every row sent exactly once (per claimer: {per_claimer:?})");
    assert_eq!(seen, saved.into_iter().collect::<HashSet<_>>());
    assert_eq!(backend.count(&tables.outbox).await, 0);
    tables.drop(backend).await;
}

pub async fn saves_and_claims_interleave<B: Backend>(backend: &B) {
    const SAVERS: u64 = 4;
    const TRANSACTIONS: u64 = 40;
    const ROWS: u64 = 5;
    let (tables, outbox) = setup(backend, "mixed", SentRetention::Delete).await;
    let saving = std::sync::atomic::AtomicUsize::new(SAVERS as usize);
    let saver = |s: u64| {
        let (outbox, saving) = (&outbox, &saving);
        async move {
            let mut ids = Vec::new();
            for t in 0..TRANSACTIONS {
                let events: Vec<OrderPlaced> =
                    (0..ROWS).map(|r| OrderPlaced { order: (s * TRANSACTIONS + t) * ROWS + r }).collect();
                ids.extend(backend.save_events(outbox, &events, true).await);
            }
            saving.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            ids
        }
    };
    let claimer = || {
        let (outbox, saving) = (&outbox, &saving);
        async move {
            let owner = LeaseOwner::new();
            let mut sent = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "the claimers did not finish");
                let done_saving = saving.load(std::sync::atomic::Ordering::SeqCst) == 0;
                let records = outbox.claim(owner, n(25), LEASE).await.expect("claim while others save");
                if records.is_empty() {
                    let stats = outbox.stats().await.expect("stats");
                    if done_saving && stats.pending == 0 && stats.in_flight == 0 {
                        return sent;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let batch = ids(&records);
                assert_eq!(outbox.mark_sent(owner, &batch).await.expect("mark_sent"), batch.len() as u64);
                sent.extend(batch);
            }
        }
    };
    let (saved, sent) = tokio::join!(
        futures::future::join_all((0..SAVERS).map(saver)),
        futures::future::join_all((0..2).map(|_| claimer()))
    );
    let saved: HashSet<MessageId> = saved.into_iter().flatten().collect();
    let mut seen = HashSet::new();
    for id in sent.into_iter().flatten() {
        assert!(seen.insert(id), "row {id} was sent twice");
    }
    assert_eq!(saved.len(), (SAVERS * TRANSACTIONS * ROWS) as usize);
    assert_eq!(seen, saved, "every row saved while claiming was sent once");
    tables.drop(backend).await;
}

pub async fn unreachable_database_is_unavailable<B: Backend>(backend: &B) {
    let (tables, _outbox) = setup(backend, "down", SentRetention::Delete).await;
    let (outbox, _lock) = backend.unreachable_outbox(&tables.outbox).await;
    // Starts the PostgreSQL listener against the dead server: it must
    // neither panic nor spin; dropping the outbox stops it.
    let _wakeup = outbox.wakeup();
    let started = Instant::now();
    match outbox.claim(LeaseOwner::new(), n(10), LEASE).await {
        Err(StoreError::Unavailable { operation, .. }) => assert_eq!(operation, "claiming outbox rows"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // (SQLite in WAL mode still reads while another connection writes.)
    match outbox.stats().await {
        Ok(_) if B::MODULE == "sqlite" => {}
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        outbox.mark_sent(LeaseOwner::new(), &[MessageId::new()]).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    drop(outbox);
    drop(_lock);
    tables.drop(backend).await;
}

pub async fn killed_claimer_rows_are_reclaimed<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "kill", SentRetention::Delete).await;
    let events: Vec<OrderPlaced> = (0..50).map(|order| OrderPlaced { order }).collect();
    let saved = backend.save_events(&outbox, &events, true).await;

    let child_owner = LeaseOwner::new();
    let exe = std::env::current_exe().expect("test binary");
    let test = format!("{}::child_claimer_entry", B::MODULE);
    let child = std::process::Command::new(exe)
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads", "1"])
        .env("HEXERACT_CHILD_TABLE", tables.outbox.as_str())
        .env("HEXERACT_CHILD_OWNER", child_owner.to_string())
        .envs(backend.child_env())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child claimer");
    let mut child = KillOnDrop(child);

    // The child claims 20 rows with a 4 s lease, marks 5 of them sent,
    // then hangs mid-batch.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = outbox.stats().await.expect("stats");
        if stats.in_flight == 15 && backend.count(&tables.outbox).await == 45 {
            break;
        }
        if let Some(status) = child.0.try_wait().expect("child status") {
            panic!("the child claimer exited early: {status}");
        }
        assert!(Instant::now() < deadline, "the child never claimed its batch: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `Child::kill` is SIGKILL on Unix: no destructor, no release.
    child.0.kill().expect("SIGKILL the child");
    child.0.wait().expect("reap the child");

    let owner = LeaseOwner::new();
    let free = outbox.claim(owner, n(100), LEASE).await.expect("claim");
    assert_eq!(free.len(), 30, "rows still leased to the dead child are not claimable yet");
    assert_eq!(outbox.mark_sent(owner, &ids(&free)).await.expect("mark_sent"), 30);

    let mut reclaimed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while reclaimed.len() < 15 {
        assert!(Instant::now() < deadline, "the child's rows were never reclaimed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        reclaimed.extend(outbox.claim(owner, n(100), LEASE).await.expect("claim"));
    }
    assert!(reclaimed.iter().all(|r| r.attempt() == 2), "the child's claim counted an attempt");
    assert_eq!(outbox.mark_sent(owner, &ids(&reclaimed)).await.expect("mark_sent"), 15);

    assert_eq!(backend.count(&tables.outbox).await, 0, "none lost, none left");
    let mut all: Vec<MessageId> = ids(&free).into_iter().chain(ids(&reclaimed)).collect();
    all.sort();
    let mut expected: Vec<MessageId> = saved.clone();
    expected.sort();
    let child_sent: HashSet<MessageId> = expected.iter().copied().filter(|id| !all.contains(id)).collect();
    assert_eq!(child_sent.len(), 5, "the five the child sent before it died");
    tables.drop(backend).await;
}

pub async fn child_claimer<B: Backend>() {
    let (Ok(table), Ok(owner)) = (std::env::var("HEXERACT_CHILD_TABLE"), std::env::var("HEXERACT_CHILD_OWNER")) else {
        // Run as a normal test: nothing to do.
        return;
    };
    let backend = B::connect_child().await;
    let table = TableName::new(table).expect("table");
    let owner = LeaseOwner(Uuid::parse_str(&owner).expect("owner"));
    let outbox = backend.outbox(OutboxConfig::default().table(table));
    let batch = outbox.claim(owner, n(20), Duration::from_secs(4)).await.expect("child claim");
    assert_eq!(batch.len(), 20);
    let first = ids(&batch[..5]);
    assert_eq!(outbox.mark_sent(owner, &first).await.expect("child mark_sent"), 5);
    // Mid-batch: wait to be killed.
    tokio::time::sleep(Duration::from_secs(600)).await;
    panic!("the child claimer was not killed");
}

pub async fn claim_uses_the_index<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "plan", SentRetention::Keep).await;
    backend.fill(&tables.outbox, 100_000).await;
    assert_eq!(backend.count(&tables.outbox).await, 100_000);
    let plan = backend.explain_claim(&outbox).await;
    if std::env::var_os("HEXERACT_SHOW_PLAN").is_some() {
        announce(&format!("claim plan on {}:\n{plan}", B::MODULE));
    }
    B::assert_claim_plan(&plan, &tables.outbox);

    let started = Instant::now();
    let owner = LeaseOwner::new();
    let records = outbox.claim(owner, n(50), LEASE).await.expect("claim");
    assert_eq!(records.len(), 50);
    assert_eq!(outbox.mark_sent(owner, &ids(&records)).await.expect("mark_sent"), 50);
    assert!(started.elapsed() < Duration::from_secs(2), "claim took {:?}", started.elapsed());
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.sent), (9_950, 0, 90_050));
    tables.drop(backend).await;
}

pub async fn poison_row_goes_dead_while_others_flow<B: Backend>(backend: &B) {
    const MAX_ATTEMPTS: u32 = 3;
    let (tables, outbox) = setup(backend, "poison", SentRetention::Delete).await;
    let poison = backend.save_events(&outbox, &[OrderPlaced { order: 0 }], true).await[0];
    let events: Vec<OrderPlaced> = (1..=20).map(|order| OrderPlaced { order }).collect();
    let others = backend.save_events(&outbox, &events, true).await;

    let owner = LeaseOwner::new();
    let mut sent = Vec::new();
    let mut sent_before_dead = None;
    for _round in 0..50 {
        let batch = outbox.claim(owner, n(5), LEASE).await.expect("claim");
        if batch.is_empty() {
            break;
        }
        for record in batch {
            if record.id() == poison {
                let error = format!("broker rejected the message (attempt {})", record.attempt());
                if record.attempt() >= MAX_ATTEMPTS {
                    assert!(outbox.mark_dead(owner, poison, &error).await.expect("mark_dead"));
                    sent_before_dead = Some(sent.len());
                } else {
                    assert!(outbox.mark_failed(owner, poison, &error, Duration::ZERO).await.expect("mark_failed"));
                }
            } else {
                assert_eq!(outbox.mark_sent(owner, &[record.id()]).await.expect("mark_sent"), 1);
                sent.push(record.id());
            }
        }
    }
    assert_eq!(sent.len(), 20, "every row behind the poison row was sent");
    assert_eq!(sent.iter().copied().collect::<HashSet<_>>(), others.into_iter().collect::<HashSet<_>>());
    let sent_before_dead = sent_before_dead.expect("the poison row went dead");
    assert!(sent_before_dead > 0, "rows flowed while the poison row was still being retried");

    let dead = backend.list_dead(&outbox).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, poison);
    assert_eq!(dead[0].attempts, MAX_ATTEMPTS);
    assert_eq!(dead[0].last_error.as_deref(), Some("broker rejected the message (attempt 3)"));
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.dead), (0, 0, 1));
    assert!(outbox.claim(owner, n(5), LEASE).await.expect("claim").is_empty(), "a dead row is never claimed");

    // An operator replays it: pending again with a fresh attempt count.
    assert!(backend.retry_dead(&outbox, poison).await);
    assert!(!backend.retry_dead(&outbox, poison).await, "only dead rows are replayed");
    let replayed = outbox.claim(owner, n(5), LEASE).await.expect("claim");
    assert_eq!((ids(&replayed), replayed[0].attempt()), (vec![poison], 1));
    assert_eq!(outbox.mark_sent(owner, &[poison]).await.expect("mark_sent"), 1);
    tables.drop(backend).await;
}

pub async fn backoff_is_measured_on_the_database_clock<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "backoff", SentRetention::Delete).await;
    let id = backend.save_events(&outbox, &[OrderPlaced { order: 1 }], true).await[0];
    let owner = LeaseOwner::new();
    assert_eq!(outbox.claim(owner, n(1), LEASE).await.expect("claim").len(), 1);
    assert!(outbox.mark_failed(owner, id, "publish timed out", Duration::from_secs(2)).await.expect("mark_failed"));

    let until = backend.seconds_until_due(&tables.outbox, id).await;
    assert!((1.8..=2.01).contains(&until), "next_attempt_at - now = {until} s, expected about 2 s");
    assert!(outbox.claim(owner, n(1), LEASE).await.expect("claim").is_empty(), "not claimable before its time");
    tokio::time::sleep(Duration::from_secs_f64(until + 0.15)).await;
    let again = outbox.claim(owner, n(1), LEASE).await.expect("claim");
    assert_eq!((ids(&again), again[0].attempt()), (vec![id], 2), "claimable after its time");

    // Sub-second backoffs keep their fraction (MySQL: DATETIME(6)).
    assert!(outbox.mark_failed(owner, id, "publish timed out", Duration::from_millis(300)).await.expect("mark_failed"));
    let until = backend.seconds_until_due(&tables.outbox, id).await;
    assert!((0.2..=0.31).contains(&until), "next_attempt_at - now = {until} s, expected about 0.3 s");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let third = outbox.claim(owner, n(1), LEASE).await.expect("claim");
    assert_eq!(third[0].attempt(), 3);
    tables.drop(backend).await;
}

pub async fn acks_are_fenced_on_the_lease<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "fence", SentRetention::Delete).await;
    let id = backend.save_events(&outbox, &[OrderPlaced { order: 1 }], true).await[0];
    let (a, b) = (LeaseOwner::new(), LeaseOwner::new());
    assert_eq!(outbox.claim(a, n(1), Duration::from_secs(1)).await.expect("claim").len(), 1);
    assert!(outbox.claim(b, n(1), LEASE).await.expect("claim").is_empty(), "a live lease is exclusive");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let reclaimed = outbox.claim(b, n(1), LEASE).await.expect("claim");
    assert_eq!((ids(&reclaimed), reclaimed[0].attempt()), (vec![id], 2), "an expired lease is reclaimable");

    assert_eq!(outbox.mark_sent(a, &[id]).await.expect("mark_sent"), 0, "A no longer holds the row");
    assert!(!outbox.mark_failed(a, id, "late", Duration::ZERO).await.expect("mark_failed"));
    assert!(!outbox.mark_dead(a, id, "late").await.expect("mark_dead"));
    assert_eq!(outbox.release(a, &[id]).await.expect("release"), 0);
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight), (0, 1), "B's lease is untouched");
    assert_eq!(outbox.mark_sent(b, &[id]).await.expect("mark_sent"), 1);
    assert_eq!(backend.count(&tables.outbox).await, 0);

    // Release gives rows back with the claim's attempt restored.
    let saved = backend.save_events(&outbox, &[OrderPlaced { order: 2 }, OrderPlaced { order: 3 }], true).await;
    let c = LeaseOwner::new();
    assert_eq!(outbox.claim(c, n(10), LEASE).await.expect("claim").len(), 2);
    assert_eq!(outbox.release(c, &saved).await.expect("release"), 2);
    let again = outbox.claim(b, n(10), LEASE).await.expect("claim");
    assert_eq!(ids(&again), saved);
    assert!(again.iter().all(|r| r.attempt() == 1), "a released claim does not use up an attempt");
    tables.drop(backend).await;
}

pub async fn bad_table_names_are_rejected<B: Backend>(backend: &B) {
    let long = "a".repeat(64);
    let just_too_long = "a".repeat(hexeract_storage::MAX_TABLE_NAME_LEN + 1);
    for name in [
        "out\"box",
        "out`box",
        "out'box",
        "outbox; DROP TABLE users",
        "out box",
        "",
        "1outbox",
        "public.outbox",
        &long,
        &just_too_long,
    ] {
        match TableName::new(name) {
            Err(StoreError::InvalidTableName { name: rejected, reason }) => {
                assert_eq!(rejected, name);
                assert!(!reason.is_empty());
            }
            other => panic!("`{name}` was not rejected: {other:?}"),
        }
    }
    // A valid name with upper case survives quoting on this dialect.
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let mixed = TableName::new(format!("Hx_Mixed_{suffix}")).expect("valid");
    let config = StorageConfig::default().outbox(mixed.clone()).inbox(None);
    assert_eq!(backend.migrate(&config).await.expect("migrate").len(), 1);
    let outbox = backend.outbox(OutboxConfig::default().table(mixed.clone()));
    backend.verify_schema(&outbox).await.expect("the table is there");
    backend.save_events(&outbox, &[OrderPlaced { order: 1 }], true).await;
    assert_eq!(drain(&outbox, LeaseOwner::new(), 10).await.len(), 1);

    // A table that was never migrated is named in the error.
    let missing = unique("missing");
    let outbox = backend.outbox(OutboxConfig::default().table(missing.clone()));
    match outbox.stats().await {
        Err(StoreError::MissingTable(table)) => assert_eq!(table, missing.as_str()),
        other => panic!("expected MissingTable, got {other:?}"),
    }
    assert!(matches!(backend.verify_schema(&outbox).await, Err(StoreError::MissingTable(_))));
    backend.drop_tables(&[&mixed]).await;
}

pub async fn inbox_race_counts_one_duplicate<B: Backend>(backend: &B) {
    let (tables, _outbox) = setup(backend, "inbox", SentRetention::Delete).await;
    let id = MessageId::new();
    // Both transactions record the same id and hold their transaction
    // open for a while: the second waits for the first.
    let hold = Duration::from_millis(300);
    let (a, b) = tokio::join!(
        backend.inbox_record(&tables.inbox, id, "projection", hold),
        backend.inbox_record(&tables.inbox, id, "projection", hold)
    );
    let mut outcomes = vec![a, b];
    outcomes.sort_by_key(|outcome| *outcome == InboxOutcome::Duplicate);
    assert_eq!(outcomes, vec![InboxOutcome::First, InboxOutcome::Duplicate]);
    assert_eq!(backend.inbox_duplicates(&tables.inbox, "projection").await, 1, "the duplicate is counted");

    assert_eq!(backend.inbox_record(&tables.inbox, id, "projection", Duration::ZERO).await, InboxOutcome::Duplicate);
    assert_eq!(backend.inbox_duplicates(&tables.inbox, "projection").await, 2);
    assert_eq!(
        backend.inbox_record(&tables.inbox, id, "audit", Duration::ZERO).await,
        InboxOutcome::First,
        "per consumer"
    );
    assert_eq!(backend.inbox_duplicates(&tables.inbox, "audit").await, 0);

    assert_eq!(backend.inbox_purge(&tables.inbox, Duration::from_secs(3600)).await, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(backend.inbox_purge(&tables.inbox, Duration::from_millis(5)).await, 2);
    assert_eq!(
        backend.inbox_record(&tables.inbox, id, "projection", Duration::ZERO).await,
        InboxOutcome::First,
        "purged entries are forgotten"
    );
    tables.drop(backend).await;
}

pub async fn per_key_order_holds_with_two_claimers<B: Backend>(backend: &B) {
    const KEYS: usize = 8;
    const PER_KEY: usize = 40;
    let (tables, outbox) = setup(backend, "order", SentRetention::Delete).await;
    let mut rows = Vec::new();
    for i in 0..PER_KEY {
        for key in 0..KEYS {
            let meta = Metadata::root(OrderPlaced::NAME);
            let row = Outgoing::encode(&OrderPlaced { order: (i * KEYS + key) as u64 }, meta, Codec::Json)
                .expect("encode")
                .ordering_key(format!("customer-{key}"));
            rows.push(row);
        }
    }
    assert_eq!(backend.save_rows(&outbox, &rows).await, (KEYS * PER_KEY) as u64);
    // Expected: per key, the order the rows were saved in (ids minted in
    // the same millisecond do not sort by creation; the database's
    // insertion order does).
    let mut expected: BTreeMap<String, Vec<MessageId>> = BTreeMap::new();
    for row in &rows {
        expected.entry(row.ordering_key.clone().expect("key")).or_default().push(row.envelope.meta.id);
    }

    #[derive(Default)]
    struct Log {
        in_flight: HashSet<String>,
        sent: HashMap<String, Vec<MessageId>>,
        failed_once: HashSet<MessageId>,
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let outbox = outbox.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let owner = LeaseOwner::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(Instant::now() < deadline, "per-key drain did not finish");
                    let batch = outbox.claim(owner, n(16), LEASE).await.expect("claim");
                    if batch.is_empty() {
                        let stats = outbox.stats().await.expect("stats");
                        if stats.pending == 0 && stats.in_flight == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    // Dispatch order is claim order: a later row of a key
                    // can only be claimed after this one is marked.
                    let mut plan = Vec::new();
                    {
                        let mut log = log.lock().expect("log");
                        for record in &batch {
                            let key = record.ordering_key.clone().expect("key");
                            assert!(log.in_flight.insert(key.clone()), "two rows of `{key}` in flight at once");
                            // One row in seven fails its first attempt.
                            let fail =
                                record.envelope.meta.id.0.as_u128() % 7 == 0 && log.failed_once.insert(record.id());
                            if !fail {
                                log.sent.entry(key.clone()).or_default().push(record.id());
                            }
                            plan.push((record.id(), key, fail));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(u64::from(Uuid::new_v4().as_bytes()[0] % 3))).await;
                    for (id, key, fail) in plan {
                        log.lock().expect("log").in_flight.remove(&key);
                        if fail {
                            assert!(
                                outbox.mark_failed(owner, id, "transient", Duration::ZERO).await.expect("mark_failed")
                            );
                        } else {
                            assert_eq!(outbox.mark_sent(owner, &[id]).await.expect("mark_sent"), 1);
                        }
                    }
                }
            })
        })
        .collect();
    for claimer in claimers {
        claimer.await.expect("claimer");
    }
    {
        let log = log.lock().expect("log");
        assert!(!log.failed_once.is_empty(), "some first attempts failed");
        for (key, expected) in &expected {
            assert_eq!(log.sent.get(key), Some(expected), "rows of `{key}` were relayed out of order");
        }
    }
    assert_eq!(backend.count(&tables.outbox).await, 0);
    tables.drop(backend).await;
}

pub async fn unreadable_rows_are_marked_dead_during_claim<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "corrupt", SentRetention::Delete).await;
    let events: Vec<OrderPlaced> = (0..3).map(|order| OrderPlaced { order }).collect();
    let saved = backend.save_events(&outbox, &events, true).await;
    backend.corrupt(&tables.outbox, saved[0], "content_type", "text/plain").await;
    backend.corrupt(&tables.outbox, saved[1], "headers", "{not json").await;

    let owner = LeaseOwner::new();
    let claimed = outbox.claim(owner, n(10), LEASE).await.expect("one bad row never stops the claim");
    assert_eq!(ids(&claimed), vec![saved[2]]);
    let dead = backend.list_dead(&outbox).await;
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), saved[..2].to_vec());
    let reasons: Vec<&str> = dead.iter().map(|d| d.last_error.as_deref().unwrap_or_default()).collect();
    assert!(reasons[0].contains("unreadable") && reasons[0].contains("content_type"), "{reasons:?}");
    assert!(reasons[1].contains("unreadable") && reasons[1].contains("headers"), "{reasons:?}");
    assert_eq!(outbox.stats().await.expect("stats").dead, 2);

    // Replayed, they are still unreadable: dead again at the next claim.
    assert_eq!(backend.retry_all_dead(&outbox).await, 2);
    assert_eq!(outbox.stats().await.expect("stats").dead, 0);
    assert!(outbox.claim(owner, n(10), LEASE).await.expect("claim").is_empty());
    assert_eq!(outbox.stats().await.expect("stats").dead, 2);
    tables.drop(backend).await;
}

pub async fn migrations_are_idempotent_and_kind_checked<B: Backend>(backend: &B) {
    let (tables, _outbox) = setup(backend, "migr", SentRetention::Delete).await;
    let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
    assert!(backend.migrate(&config).await.expect("migrate again").is_empty(), "applied steps are skipped");
    // The inbox table cannot become an outbox.
    let swapped = StorageConfig::default().outbox(tables.inbox.clone()).inbox(None);
    assert!(matches!(backend.migrate(&swapped).await, Err(StoreError::Config(_))));
    let same = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.outbox.clone()));
    assert!(matches!(backend.migrate(&same).await, Err(StoreError::Config(_))));
    assert!(matches!(OutboxConfig::default().max_batch(0).validate(), Err(StoreError::Config(_))));
    assert!(matches!(
        OutboxConfig::default().max_batch(hexeract_storage::MAX_BATCH_LIMIT + 1).validate(),
        Err(StoreError::Config(_))
    ));
    let outbox = backend.outbox(OutboxConfig::default().table(tables.outbox.clone()));
    assert!(matches!(outbox.claim(LeaseOwner::new(), n(1), Duration::ZERO).await, Err(StoreError::Config(_))));
    assert!(matches!(outbox.claim(LeaseOwner::new(), n(1), Duration::MAX).await, Err(StoreError::Config(_))));
    tables.drop(backend).await;
}

pub async fn correlation_chain_and_idempotent_enqueue<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "chain", SentRetention::Delete).await;
    let parent = Metadata::root("orders.place.v1");
    let mut meta = parent.child(OrderPlaced::NAME);
    meta.headers.insert("tenant".into(), "acme".into());
    let id = backend.save_with(&outbox, &OrderPlaced { order: 7 }, meta.clone()).await;
    assert_eq!(id, meta.id);
    // The same id again is not a second row.
    assert_eq!(backend.save_with(&outbox, &OrderPlaced { order: 7 }, meta.clone()).await, id);
    let envelope = Envelope { meta: meta.clone(), codec: Codec::Json, payload: b"{\"order\":7}".to_vec() };
    let packed =
        Envelope::encode_with(&OrderPlaced { order: 8 }, Metadata::root(OrderPlaced::NAME), Codec::MessagePack)
            .expect("encode");
    let inserted = backend.save_rows(&outbox, &[Outgoing::new(envelope), Outgoing::new(packed.clone())]).await;
    assert_eq!(inserted, 1, "insert if absent: only the new id is inserted");
    let keyed =
        backend.save_keyed(&outbox, &OrderPlaced { order: 9 }, parent.child(OrderPlaced::NAME), "order-9").await;
    assert_eq!(backend.count(&tables.outbox).await, 3);

    let owner = LeaseOwner::new();
    let records = outbox.claim(owner, n(10), LEASE).await.expect("claim");
    let chained = records.iter().find(|r| r.id() == id).expect("chained row");
    assert_eq!(chained.envelope.meta.correlation_id, parent.correlation_id);
    assert_eq!(chained.envelope.meta.causation_id, Some(parent.id));
    assert_eq!(chained.envelope.meta.headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(chained.envelope.decode::<OrderPlaced>().expect("decode"), OrderPlaced { order: 7 });
    let packed_back = records.iter().find(|r| r.id() == packed.meta.id).expect("msgpack row");
    assert_eq!(packed_back.envelope.codec, Codec::MessagePack);
    assert_eq!(packed_back.envelope.decode::<OrderPlaced>().expect("decode"), OrderPlaced { order: 8 });
    let keyed_back = records.iter().find(|r| r.id() == keyed).expect("keyed row");
    assert_eq!(keyed_back.ordering_key.as_deref(), Some("order-9"));
    assert_eq!(keyed_back.envelope.meta.causation_id, Some(parent.id));
    assert_eq!(records.iter().filter(|r| r.ordering_key.is_none()).count(), 2);
    assert_eq!(outbox.mark_sent(owner, &ids(&records)).await.expect("mark_sent"), 3);
    tables.drop(backend).await;
}

pub async fn kept_rows_are_counted_and_purged<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "keep", SentRetention::Keep).await;
    let events: Vec<OrderPlaced> = (0..3).map(|order| OrderPlaced { order }).collect();
    backend.save_events(&outbox, &events, true).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.sent, stats.dead), (3, 0, 0, 0));
    let age = stats.oldest_pending_age.expect("an oldest pending row");
    assert!(age >= Duration::from_millis(50) && age < Duration::from_secs(10), "oldest pending age {age:?}");

    let owner = LeaseOwner::new();
    let first = outbox.claim(owner, n(1), LEASE).await.expect("claim");
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight), (2, 1));
    assert_eq!(outbox.mark_sent(owner, &ids(&first)).await.expect("mark_sent"), 1);
    drain(&outbox, owner, 10).await;
    let stats = outbox.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.sent, stats.oldest_pending_age), (0, 0, 3, None));
    assert_eq!(backend.count(&tables.outbox).await, 3, "kept for retention");

    assert_eq!(backend.purge_sent(&outbox, Duration::from_secs(3600)).await, 0, "too young to purge");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(backend.purge_sent(&outbox, Duration::from_millis(5)).await, 3);
    assert_eq!(backend.count(&tables.outbox).await, 0);
    tables.drop(backend).await;
}

async fn connect_by_url<B: Backend>(backend: &B) -> Database {
    Database::connect(&backend.url()).await.expect("connect by URL")
}

pub async fn schema_check_names_what_is_missing<B: Backend>(backend: &B) {
    let (tables, _outbox) = setup(backend, "check", SentRetention::Delete).await;
    let db = connect_by_url(backend).await;
    let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
    assert_eq!(db.check_schema(&config).await.expect("check"), vec![], "a migrated schema is complete");

    let absent = unique("absent");
    let problems = db.check_schema(&StorageConfig::default().outbox(absent.clone()).inbox(None)).await.expect("check");
    assert_eq!(problems, vec![SchemaProblem::MissingTable { table: absent.to_string() }]);

    backend.drop_index_and_column(&tables.outbox, "_sent_idx", "last_error").await;
    backend.drop_index_and_column(&tables.inbox, "_received_idx", "last_duplicate_at").await;
    let problems: Vec<String> =
        db.check_schema(&config).await.expect("check").iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        vec![
            format!("table `{}` has no column `last_error`", tables.outbox),
            format!("table `{}` has no index `{}_sent_idx`", tables.outbox, tables.outbox),
            format!("table `{}` has no column `last_duplicate_at`", tables.inbox),
            format!("table `{}` has no index `{}_received_idx`", tables.inbox, tables.inbox),
        ]
    );
    db.close().await;
    tables.drop(backend).await;
}

pub async fn dead_rows_are_listed_shown_replayed_and_purged<B: Backend>(backend: &B) {
    let (tables, outbox) = setup(backend, "deadops", SentRetention::Delete).await;
    let db = connect_by_url(backend).await;
    let table = &tables.outbox;
    let events: Vec<OrderPlaced> = (0..4).map(|order| OrderPlaced { order }).collect();
    let saved = backend.save_events(&outbox, &events, true).await;
    let owner = LeaseOwner::new();
    let claimed = outbox.claim(owner, n(10), LEASE).await.expect("claim");
    assert_eq!(ids(&claimed), saved);
    for id in &saved[..3] {
        assert!(outbox.mark_dead(owner, *id, &format!("broker said no to {id}")).await.expect("mark_dead"));
    }
    // The fourth stays leased: in flight.
    let stats = db.outbox_stats(table).await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.dead), (0, 1, 3));
    assert!(stats.oldest_pending_age.is_some());

    let dead = db.list_dead(table, 100).await.expect("list");
    assert_eq!(dead.iter().map(|row| row.id).collect::<Vec<_>>(), saved[..3].to_vec(), "oldest first");
    let shown = db.show_dead(table, saved[1]).await.expect("show").expect("a dead row");
    assert_eq!(shown.row.last_error, Some(format!("broker said no to {}", saved[1])));
    assert_eq!(shown.row.name, OrderPlaced::NAME);
    assert_eq!(shown.content_type, "application/json");
    assert_eq!(shown.correlation_id, saved[1]);
    assert_eq!(serde_json::from_slice::<OrderPlaced>(&shown.payload).expect("payload"), OrderPlaced { order: 1 });
    assert_eq!(db.show_dead(table, saved[3]).await.expect("show"), None, "a leased row is not dead");
    assert_eq!(db.show_dead(table, MessageId::new()).await.expect("show"), None);

    // Replay one, then the rest: they are claimable again, attempt 1.
    assert!(db.retry_dead(table, saved[0]).await.expect("retry"));
    assert!(!db.retry_dead(table, saved[0]).await.expect("retry"), "only dead rows are replayed");
    assert_eq!(db.retry_all_dead(table).await.expect("retry all"), 2);
    assert_eq!(outbox.mark_sent(owner, &saved[3..]).await.expect("mark_sent"), 1);
    let replayed = outbox.claim(owner, n(10), LEASE).await.expect("claim");
    assert_eq!(ids(&replayed), saved[..3].to_vec());
    assert!(replayed.iter().all(|record| record.attempt() == 1));

    // Kill one again and purge: nothing is old enough for an hour, all of
    // it for zero.
    assert!(outbox.mark_dead(owner, saved[2], "again").await.expect("mark_dead"));
    assert_eq!(outbox.mark_sent(owner, &saved[..2]).await.expect("mark_sent"), 2);
    assert_eq!(db.purge_dead(table, Duration::from_secs(3600)).await.expect("purge"), 0);
    // The database clock keeps milliseconds (SQLite): let one pass.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(db.purge_dead(table, Duration::ZERO).await.expect("purge"), 1);
    let stats = db.outbox_stats(table).await.expect("stats");
    assert_eq!((stats.pending, stats.in_flight, stats.dead, stats.oldest_pending_age), (0, 0, 0, None));
    assert_eq!(backend.count(table).await, 0);
    db.close().await;
    tables.drop(backend).await;
}

pub async fn inbox_stats_and_purge<B: Backend>(backend: &B) {
    let (tables, _outbox) = setup(backend, "inops", SentRetention::Delete).await;
    let db = connect_by_url(backend).await;
    let inbox = &tables.inbox;
    let empty = db.inbox_stats(inbox).await.expect("stats");
    assert_eq!((empty.entries, empty.consumers, empty.duplicates, empty.oldest_age), (0, 0, 0, None));
    let (first, second) = (MessageId::new(), MessageId::new());
    for (id, consumer) in [(first, "projection"), (second, "projection"), (first, "audit"), (first, "projection")] {
        backend.inbox_record(inbox, id, consumer, Duration::ZERO).await;
    }
    let stats = db.inbox_stats(inbox).await.expect("stats");
    assert_eq!((stats.entries, stats.consumers, stats.duplicates), (3, 2, 1));
    assert!(stats.oldest_age.is_some());
    assert_eq!(db.purge_inbox(inbox, Duration::from_secs(3600)).await.expect("purge"), 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(db.purge_inbox(inbox, Duration::ZERO).await.expect("purge"), 3);
    assert_eq!(db.inbox_stats(inbox).await.expect("stats").entries, 0);
    db.close().await;
    tables.drop(backend).await;
}
