//! The rules between nodes and cameras, checked once every table has parsed on its own: addresses, pins,
//! who protects whom, who owns which camera. Every message names the file, the line and the key of the
//! later of two clashing entries and the line of the earlier one.

use super::parse::{CameraLines, ConfigError, NodeLines};
use super::{CameraConfig, NodeConfig, Role};

pub(crate) fn cluster(
    origin: &str,
    nodes: &[(NodeConfig, NodeLines)],
    cameras: &[(CameraConfig, CameraLines)],
) -> Result<(), ConfigError> {
    node_clashes(origin, nodes)?;
    protections(origin, nodes)?;
    sync_pins(origin, nodes)?;
    camera_owners(origin, nodes, cameras)
}

/// No two nodes share an address, a listener on one host, a viewer URL or a pin.
fn node_clashes(origin: &str, nodes: &[(NodeConfig, NodeLines)]) -> Result<(), ConfigError> {
    for (i, (n, l)) in nodes.iter().enumerate() {
        let earlier = &nodes[..i];
        if let Some(a) = n.address {
            if let Some((m, ml)) = earlier.iter().find(|(m, _)| m.address == Some(a)) {
                return Err(invalid(
                    origin,
                    l.address,
                    format!("{}.address", l.path),
                    format!(
                        "duplicate address {a} (also node {:?}, line {})",
                        m.name, ml.address
                    ),
                ));
            }
        }
        if let Some(la) = n.listen_address() {
            if let Some((m, ml)) = earlier.iter().find(|(m, _)| same_listener(n, m)) {
                return Err(invalid(
                    origin,
                    l.listen,
                    format!(
                        "{}.{}",
                        l.path,
                        if n.listen.is_some() {
                            "listen"
                        } else {
                            "address"
                        }
                    ),
                    format!(
                        "listen address {la} clashes with node {:?} (line {}) on the same host",
                        m.name, ml.listen
                    ),
                ));
            }
        }
        if let Some(u) = &n.web_url {
            if let Some((m, ml)) = earlier.iter().find(|(m, _)| m.web_url.as_ref() == Some(u)) {
                return Err(invalid(
                    origin,
                    l.web_url,
                    format!("{}.web_url", l.path),
                    format!(
                        "duplicate web_url {u} (also node {:?}, line {}): each node's viewer has its own",
                        m.name, ml.web_url
                    ),
                ));
            }
        }
        if let Some(p) = &n.pins {
            for (m, ml) in earlier {
                let Some(q) = &m.pins else { continue };
                let pins = [
                    (
                        "cert_sha256",
                        &p.cert_sha256,
                        &q.cert_sha256,
                        l.cert_sha256,
                        ml.cert_sha256,
                    ),
                    (
                        "signing_public_key",
                        &p.signing_public_key,
                        &q.signing_public_key,
                        l.signing_public_key,
                        ml.signing_public_key,
                    ),
                ];
                for (key, mine, theirs, line, their_line) in pins {
                    if mine == theirs {
                        return Err(invalid(
                            origin,
                            line,
                            format!("{}.{key}", l.path),
                            format!(
                                "duplicate pin: node {:?} (line {their_line}) has the same {key}; each node needs its own `nvr-sync keygen`",
                                m.name
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Who protects whom: known primaries, each protected by at most one standby.
fn protections(origin: &str, nodes: &[(NodeConfig, NodeLines)]) -> Result<(), ConfigError> {
    for (n, l) in nodes.iter().filter(|(n, _)| n.role == Role::Standby) {
        for (j, (p, line)) in n.protects.iter().zip(&l.protects).enumerate() {
            let path = format!("{}.protects[{j}]", l.path);
            let Some((target, _)) = nodes.iter().find(|(m, _)| m.name == *p) else {
                return Err(invalid(origin, *line, path, format!("unknown node {p:?}")));
            };
            if target.role != Role::Primary {
                return Err(invalid(
                    origin,
                    *line,
                    path,
                    format!("node {p:?} is a {}, not a primary", target.role.as_str()),
                ));
            }
            let other = nodes
                .iter()
                .take_while(|(m, _)| m.name != n.name)
                .find(|(m, _)| m.protects.contains(p));
            if let Some((m, _)) = other {
                return Err(invalid(
                    origin,
                    *line,
                    path,
                    format!(
                        "primary {p:?} is already protected by standby {:?}; a primary mirrors to one standby",
                        m.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Nodes that take part in sync need their pins.
fn sync_pins(origin: &str, nodes: &[(NodeConfig, NodeLines)]) -> Result<(), ConfigError> {
    for (n, l) in nodes {
        let in_sync = match n.role {
            Role::Standby => true,
            Role::Primary => nodes.iter().any(|(m, _)| m.protects.contains(&n.name)),
            Role::Witness => false,
        };
        if in_sync && n.pins.is_none() {
            return Err(invalid(
                origin,
                n.line,
                format!("{}.cert_sha256", l.path),
                format!(
                    "missing (node {:?} takes part in sync: set cert_sha256 and signing_public_key as printed by `nvr-sync keygen --node {}`)",
                    n.name, n.name
                ),
            ));
        }
    }
    Ok(())
}

/// Every camera is recorded by a known primary.
fn camera_owners(
    origin: &str,
    nodes: &[(NodeConfig, NodeLines)],
    cameras: &[(CameraConfig, CameraLines)],
) -> Result<(), ConfigError> {
    for (c, l) in cameras {
        let path = format!("{}.node", l.path);
        match nodes.iter().find(|(n, _)| n.name == c.node) {
            None => {
                let known: Vec<&str> = nodes.iter().map(|(n, _)| n.name.as_str()).collect();
                return Err(invalid(
                    origin,
                    l.node,
                    path,
                    format!("unknown node {:?} (nodes: {})", c.node, known.join(", ")),
                ));
            }
            Some((n, _)) if n.role != Role::Primary => {
                return Err(invalid(
                    origin,
                    l.node,
                    path,
                    format!(
                        "node {:?} is a {}; cameras are recorded by primaries",
                        c.node,
                        n.role.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether two standbys' agents would bind the same port on the same host. A node's host is the IP of its
/// `address` (or of its `listen`, unless that is a wildcard such as `0.0.0.0`).
fn same_listener(a: &NodeConfig, b: &NodeConfig) -> bool {
    let (Some(la), Some(lb)) = (a.listen_address(), b.listen_address()) else {
        return false;
    };
    if la.port() != lb.port() {
        return false;
    }
    let hosts = |n: &NodeConfig, l: std::net::SocketAddr| {
        let mut h = Vec::new();
        if let Some(a) = n.address {
            h.push(a.ip());
        }
        if !l.ip().is_unspecified() {
            h.push(l.ip());
        }
        h
    };
    let (ha, hb) = (hosts(a, la), hosts(b, lb));
    let same_host = ha.iter().any(|x| hb.contains(x));
    same_host && (la.ip() == lb.ip() || la.ip().is_unspecified() || lb.ip().is_unspecified())
}

/// With `[arbiter]`: every node that takes part in failover (a standby, a primary it protects) has an
/// `arbiter_address` and pins, and no two nodes share an arbiter address. Without it: no node sets
/// the arbiter's keys (they would be silently ignored).
pub(crate) fn arbiter(
    origin: &str,
    enabled: bool,
    nodes: &[(NodeConfig, NodeLines)],
) -> Result<(), ConfigError> {
    if !enabled {
        return no_arbiter_keys(origin, nodes);
    }
    let protected = |name: &str| {
        nodes
            .iter()
            .any(|(s, _)| s.role == Role::Standby && s.protects.iter().any(|p| p == name))
    };
    for (i, (n, l)) in nodes.iter().enumerate() {
        if n.role == Role::Witness {
            if let Some((m, _)) = nodes[..i].iter().find(|(m, _)| m.role == Role::Witness) {
                return Err(invalid(
                    origin,
                    n.line,
                    format!("{}.role", l.path),
                    format!("a second witness (node {:?} is one already)", m.name),
                ));
            }
        }
        let takes_part = matches!(n.role, Role::Standby | Role::Witness) || protected(&n.name);
        if !takes_part {
            continue;
        }
        let Some(a) = n.arbiter_address else {
            return Err(invalid(
                origin,
                n.line,
                format!("{}.arbiter_address", l.path),
                format!(
                    "missing: node {:?} takes part in failover ([arbiter] is set), so its arbiter \
                     needs an address for heartbeats (e.g. \"192.0.2.10:7444\")",
                    n.name
                ),
            ));
        };
        if n.pins.is_none() {
            return Err(invalid(
                origin,
                n.line,
                format!("{}.cert_sha256", l.path),
                format!(
                    "missing: node {:?} takes part in failover, its heartbeats are authenticated \
                     by its pinned certificate",
                    n.name
                ),
            ));
        }
        if let Some((m, ml)) = nodes[..i]
            .iter()
            .find(|(m, _)| m.arbiter_address == Some(a))
        {
            return Err(invalid(
                origin,
                l.arbiter_address,
                format!("{}.arbiter_address", l.path),
                format!(
                    "duplicate arbiter address {a} (also node {:?}, line {})",
                    m.name, ml.arbiter_address
                ),
            ));
        }
        if nodes
            .iter()
            .any(|(m, _)| m.listen_address() == Some(a) || m.address == Some(a))
        {
            return Err(invalid(
                origin,
                l.arbiter_address,
                format!("{}.arbiter_address", l.path),
                format!("arbiter address {a} is also a sync address"),
            ));
        }
    }
    Ok(())
}

/// Without `[arbiter]`: no node sets what only the arbiter reads (it would be silently ignored).
fn no_arbiter_keys(origin: &str, nodes: &[(NodeConfig, NodeLines)]) -> Result<(), ConfigError> {
    // What only the arbiter reads: the key, what the message says of the node, and the line of
    // a node that sets it.
    type ArbiterOnly = (
        &'static str,
        &'static str,
        fn(&NodeConfig, &NodeLines) -> Option<usize>,
    );
    let arbiter_only: [ArbiterOnly; 4] = [
        ("arbiter_address", "has an arbiter_address", |n, l| {
            n.arbiter_address.map(|_| l.arbiter_address)
        }),
        ("role", "is a witness", |n, _| {
            (n.role == Role::Witness).then_some(n.line)
        }),
        ("capacity_streams", "has capacity_streams", |n, _| {
            n.capacity_streams.map(|_| n.line)
        }),
        ("capacity_mbps", "has capacity_mbps", |n, _| {
            n.capacity_mbps.map(|_| n.line)
        }),
    ];
    for (key, what, set_at) in arbiter_only {
        if let Some((n, l, line)) = nodes
            .iter()
            .find_map(|(n, l)| set_at(n, l).map(|line| (n, l, line)))
        {
            return Err(invalid(
                origin,
                line,
                format!("{}.{key}", l.path),
                format!(
                    "node {:?} {what} but the file has no [arbiter] section",
                    n.name
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(origin: &str, line: usize, path: String, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        line,
        path,
        message,
    }
}
