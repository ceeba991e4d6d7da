//! The WebSocket port against an independent client library: runs
//! tests/ws_conformance.py (Python `websockets`) against a real server.

mod common;

use common::ws::python_conformance;
use common::*;

#[test]
fn an_independent_websocket_client_library_speaks_goim_with_corecast() {
    let server = Server::start();
    let ws = server.ws.expect("ws port");
    python_conformance(&format!("ws://{ws}/sub"), server.http, None);
}
