//! The seeded runs. `cargo test` runs `SIM_SEEDS` seeds (default 10,000)
//! of `SIM_STEPS` steps (default 200), spread over the machine's cores;
//! `SIM_SEED=n` replays one seed. A failure prints its seed and the
//! command that replays it.

use super::{Coverage, World};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run_seed(seed: u64, steps: u64) -> Result<Coverage, String> {
    let mut world = World::new(seed);
    let result = match world.run(steps) {
        // The simulated bus loses nothing: a shard that counts a push lost
        // (and would close members with positions for it) is wrong.
        Ok(()) if world.coverage().bus_gaps_counted > 0 => {
            Err(format!("seed {seed}: a push counted lost on a bus that loses nothing\nreplay: SIM_SEED={seed}"))
        }
        Ok(()) => Ok(world.coverage()),
        Err(why) => Err(format!("{why}\nreplay: SIM_SEED={seed} SIM_STEPS={steps} cargo test --lib sim::")),
    };
    // Every socket a shard took is closed by it once the world shuts down
    // (and by its client): a pipe left open is a connection never reaped.
    let io = world.io.clone();
    drop(world);
    match (result, io.open_pipes()) {
        (Ok(_), open) if open > 0 => Err(format!("seed {seed}: {open} sockets never closed\nreplay: SIM_SEED={seed}")),
        (result, _) => result,
    }
}

#[test]
fn every_ordering_promise_holds_for_every_seed() {
    let steps = env_u64("SIM_STEPS", 200);
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        match run_seed(seed, steps) {
            Ok(coverage) => eprintln!("simulation: seed {seed} passed: {coverage:?}"),
            Err(why) => panic!("{why}"),
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS", 10_000);
    let first = env_u64("SIM_FIRST_SEED", 1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let results: Vec<Result<Coverage, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let mut coverage = Coverage::default();
                    for seed in (first + worker..first + seeds).step_by(threads as usize) {
                        coverage.add(run_seed(seed, steps)?);
                    }
                    Ok(coverage)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a simulation thread panicked")).collect()
    });
    let mut coverage = Coverage::default();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(part) => coverage.add(part),
            Err(why) => failures.push(why),
        }
    }
    eprintln!("simulation: {seeds} seeds x {steps} steps in {:.1} s: {coverage:?}", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Not vacuous: across the seeds, every mechanism the promises cover ran.
    if seeds >= 1_000 {
        assert!(coverage.pushes_received > coverage.pushes / 4, "pushes mostly undelivered: {coverage:?}");
        assert!(coverage.recoveries_served > 0 && coverage.recoveries_refused > 0, "{coverage:?}");
        assert!(coverage.writes_blocked > 0 && coverage.slow_consumers > 0, "{coverage:?}");
        assert!(coverage.keys_replaced > 0 && coverage.positions_joins > 0, "{coverage:?}");
        assert!(coverage.history_pages > seeds / 2, "{coverage:?}");
        assert!(
            coverage.clustered_runs > seeds / 4 && coverage.bus_messages > coverage.clustered_runs * 10,
            "{coverage:?}"
        );
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let digest = |seed| {
        let mut world = World::new(seed);
        world.run(200).expect("the seed passes");
        let clustered = world.nats.is_some();
        let received: Vec<Vec<u64>> = world.clients.iter().map(|c| c.received.clone()).collect();
        (clustered, world.step, world.oracle.pushes.len(), received)
    };
    // Seed 5 runs on one node, seed 7 on a cluster over the simulated bus.
    for (seed, clustered) in [(5, false), (7, true)] {
        let first = digest(seed);
        assert_eq!(first.0, clustered, "seed {seed}");
        assert!(first.2 > 10, "seed {seed} sent only {} pushes", first.2);
        assert_eq!(first, digest(seed), "seed {seed} ran differently the second time");
    }
}
