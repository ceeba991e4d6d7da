//! What a fault inside the server does to the process: a shard that panics
//! must end the process with a non-zero status and a log line naming the
//! shard, so its supervisor restarts it (no silent partial outage).

mod common;

use common::ServerConfig;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_panicking_shard_ends_the_process_with_a_non_zero_status_naming_the_shard() {
    let dir = common::ScratchDir::new("corecast-fault");
    let config_path = dir.join("corecast.toml");
    let mut config = ServerConfig::default();
    config.set("server", "shards", 2);
    std::fs::write(&config_path, config.to_toml()).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .arg("--config")
        .arg(&config_path)
        .env("CORECAST_TEST_PANIC_SHARD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corecast");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = status.unwrap_or_else(|| panic!("the process went on serving after shard 1 panicked:\n{stderr}"));
    assert_eq!(status.code(), Some(70), "exit status {status} after a shard panicked:\n{stderr}");
    assert!(stderr.contains("shard 1 panicked"), "a log line names the shard:\n{stderr}");
    assert!(stderr.contains("test fault"), "and says why:\n{stderr}");
}
