//! The WebSocket port against an independent client library: runs
//! tests/ws_conformance.py (Python `websockets`) against a real server.

mod common;

use common::*;
use std::process::Command;

#[test]
fn an_independent_websocket_client_library_speaks_goim_with_corecast() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_conformance.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(format!("ws://{ws}/sub"))
        .arg(format!("http://{}", server.http))
        .output()
        .expect("run python3 (scripts/install-test-deps.sh installs the websockets package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("conformance ok"), "stdout:\n{stdout}\nstderr:\n{stderr}");
}
