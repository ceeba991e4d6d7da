//! The nodes API: `/goim/nodes/weighted` and `/goim/nodes/instances`
//! (docs/goim-compat.md section 5), for this node and, in a cluster, every other
//! live node as its last report described it.
//!
//! Owns: how a node is described to clients and operators, and goim's
//! weighted order (via `route::nodes::weighted`). Must never: count this
//! node from its own report (its counts are live).

use crate::api::endpoints::Reply;
use crate::proto::http::query::Query;
use crate::proto::http::response::push_string;
use crate::shard::Shard;
use std::fmt::Write;

/// One node as the nodes API describes it.
struct NodeView {
    hostname: String,
    addr: String,
    domain: String,
    tcp_port: u16,
    weight: u32,
    conn_count: u64,
    ip_count: u64,
    latest_unix_ns: u128,
}

/// This node, then every other live node of the cluster.
fn node_views(shard: &Shard) -> Vec<NodeView> {
    let node = &shard.config.node;
    let (conns, ips) = shard.local_counts();
    let (conn_count, ip_count) = shard.state.borrow().online.totals(conns, ips);
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut views = vec![NodeView {
        hostname: node.hostname.clone(),
        addr: node.addr.clone(),
        domain: node.domain.clone(),
        tcp_port: node.tcp_port,
        weight: node.weight,
        conn_count,
        ip_count,
        latest_unix_ns: now_ns,
    }];
    if let Some(bus) = &shard.bus {
        let nodes = bus.nodes.borrow();
        let mut others: Vec<&crate::route::nodes::Node> = nodes.others().collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        views.extend(others.into_iter().map(|n| NodeView {
            hostname: n.hostname.clone(),
            addr: n.addr.clone(),
            domain: n.domain.clone(),
            tcp_port: n.tcp_port,
            weight: n.weight,
            conn_count: n.conn_count,
            ip_count: n.ip_count,
            latest_unix_ns: n.latest_unix_ns,
        }));
    }
    views
}

/// Nodes the weighted list returns at most (goim's balancer).
const WEIGHTED_NODES_MAX: usize = 5;

pub(super) fn weighted(shard: &Shard, query: &Query) -> Reply {
    let node = &shard.config.node;
    let backoff = &shard.config.backoff;
    // goim: host names for web clients, IP addresses for the apps.
    let web = query.first("platform") == Some("web");
    let views = node_views(shard);
    let candidates: Vec<(&str, u32, u64)> =
        views.iter().map(|v| (if web { v.domain.as_str() } else { v.addr.as_str() }, v.weight, v.conn_count)).collect();
    let mut addresses = crate::route::nodes::weighted(&candidates, WEIGHTED_NODES_MAX);
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(*a));
    let mut data = String::from("{\"domain\":");
    push_string(&mut data, &node.domain);
    let _ = write!(
        data,
        ",\"tcp_port\":{},\"ws_port\":{},\"wss_port\":{},\"heartbeat\":{},\"heartbeat_max\":{},\"nodes\":[",
        node.tcp_port,
        node.ws_port,
        node.wss_port,
        shard.config.protocol.heartbeat_s,
        shard.config.protocol.heartbeat_max
    );
    for (i, address) in addresses.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        push_string(&mut data, address);
    }
    let _ = write!(
        data,
        "],\"backoff\":{{\"max_delay\":{},\"base_delay\":{},\"factor\":{},\"jitter\":{}}}}}",
        backoff.max_delay, backoff.base_delay, backoff.factor, backoff.jitter
    );
    Reply::ok(Some(&data))
}

pub(super) fn instances(shard: &Shard) -> Reply {
    let node = &shard.config.node;
    let mut data = String::from("[");
    for (i, view) in node_views(shard).iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str("{\"region\":");
        push_string(&mut data, &node.region);
        data.push_str(",\"zone\":");
        push_string(&mut data, &node.zone);
        data.push_str(",\"env\":");
        push_string(&mut data, &node.env);
        data.push_str(",\"appid\":\"goim.comet\",\"hostname\":");
        push_string(&mut data, &view.hostname);
        data.push_str(",\"addrs\":[");
        push_string(&mut data, &format!("tcp://{}:{}", view.addr, view.tcp_port));
        let _ =
            write!(data, "],\"version\":\"\",\"latest_timestamp\":{},\"metadata\":{{\"addrs\":", view.latest_unix_ns);
        push_string(&mut data, &view.addr);
        let _ = write!(
            data,
            ",\"conn_count\":\"{}\",\"ip_count\":\"{}\",\"offline\":\"false\",\"weight\":\"{}\"}}}}",
            view.conn_count, view.ip_count, view.weight
        );
    }
    data.push(']');
    Reply::ok(Some(&data))
}
