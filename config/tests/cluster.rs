//! The cluster file as a whole: cross-node checks that need more than one line changed, one node's view,
//! and which node a machine is (identity or `--node`).

use std::path::Path;

use cluster_config::{parse, ClusterConfig, ConfigError, Role, IDENTITY_FILE};

fn pin(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// A primary with `identity_dir` and pins from `p`.
fn primary(name: &str, p: char, extra: &str) -> String {
    format!(
        "[[nodes]]\nname = \"{name}\"\nrole = \"primary\"\ndata_dir = \"/data/{name}\"\n\
         identity_dir = \"/id/{name}\"\ncert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\n{extra}\n",
        pin(p),
        pin(p.to_ascii_uppercase())
    )
}

fn standby(name: &str, p: char, address: &str, protects: &str, extra: &str) -> String {
    format!(
        "[[nodes]]\nname = \"{name}\"\nrole = \"standby\"\ndata_dir = \"/data/{name}\"\n\
         identity_dir = \"/id/{name}\"\naddress = \"{address}\"\nprotects = {protects}\n\
         cert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\n{extra}\n",
        pin(p),
        pin(p.to_ascii_uppercase())
    )
}

fn camera(name: &str, node: &str) -> String {
    format!(
        "[[cameras]]\nname = \"{name}\"\nnode = \"{node}\"\n[cameras.streams.main]\nurl = \"rtsp://192.0.2.1/{name}\"\n"
    )
}

/// Two primaries (a: cameras c1, c2; b: camera c3) protected by standby s.
fn two_primaries() -> String {
    [
        "[sync]\nscrub_interval_ms = 1000\nbandwidth_bytes_per_s = 7\nstall_alarm_ms = 9000\n"
            .to_owned(),
        primary(
            "a",
            'a',
            "[nodes.sync]\nbandwidth_bytes_per_s = \"1 MB\"\nmirror_quota_bytes = \"5 GB\"\n",
        ),
        primary("b", 'b', ""),
        standby(
            "s",
            'c',
            "127.0.0.1:7001",
            "[\"a\", \"b\"]",
            "listen = \"127.0.0.1:7002\"\n[nodes.sync]\nscrub_interval_ms = 0\n",
        ),
        camera("c1", "a"),
        camera("c2", "a"),
        camera("c3", "b"),
    ]
    .concat()
}

fn refused(text: &str) -> String {
    match parse(text, "cluster.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cross_node_rules() {
    let two = |a: &str, b: &str| format!("{}{}{}", primary("p", 'a', ""), a, b);
    // (text, expected message start, expected part)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            two(
                &standby("s1", 'b', "127.0.0.1:7001", "[\"p\"]", ""),
                &standby("s2", 'c', "127.0.0.1:7001", "[\"q\"]", ""),
            ),
            "cluster.toml:24: nodes[2].address: ",
            "duplicate address 127.0.0.1:7001 (also node \"s1\", line 14)",
        ),
        (
            two(
                &standby("s1", 'b', "127.0.0.1:7001", "[\"p\"]", "listen = \"0.0.0.0:7443\""),
                &standby("s2", 'c', "127.0.0.1:7002", "[\"q\"]", "listen = \"127.0.0.1:7443\""),
            ),
            "cluster.toml:28: nodes[2].listen: ",
            "listen address 127.0.0.1:7443 clashes with node \"s1\" (line 18) on the same host",
        ),
        (
            two(
                &standby("s1", 'b', "127.0.0.1:7443", "[\"p\"]", ""),
                &standby("s2", 'c', "127.0.0.1:7002", "[\"q\"]", "listen = \"0.0.0.0:7443\""),
            ),
            "cluster.toml:28: nodes[2].listen: ",
            "listen address 0.0.0.0:7443 clashes with node \"s1\" (line 14)",
        ),
        (
            two(
                &primary("q", 'd', ""),
                &standby("s1", 'b', "127.0.0.1:7001", "[\"p\", \"q\"]", ""),
            ),
            "cluster.toml:",
            "",
        ),
        (
            format!(
                "{}{}{}",
                primary("p", 'a', ""),
                standby("s1", 'b', "127.0.0.1:7001", "[\"p\"]", ""),
                standby("s2", 'c', "127.0.0.1:7002", "[\"p\"]", "")
            ),
            "cluster.toml:25: nodes[2].protects[0]: ",
            "primary \"p\" is already protected by standby \"s1\"; a primary mirrors to one standby",
        ),
        (
            format!(
                "[[nodes]]\nname = \"p\"\nrole = \"primary\"\ndata_dir = \"/d\"\n{}",
                standby("s1", 'b', "127.0.0.1:7001", "[\"p\"]", "")
            ),
            "cluster.toml:2: nodes[0].cert_sha256: ",
            "missing (node \"p\" takes part in sync",
        ),
        (
            "[recording]\nsegment_duration_s = 10\n".to_owned(),
            "cluster.toml:1: nodes: ",
            "no nodes",
        ),
        (
            format!("{}{}", primary("p", 'a', ""), primary("q", 'b', "address = \"127.0.0.1:1\"")),
            "cluster.toml:16: nodes[1].address: ",
            "only a standby has address",
        ),
        (
            format!("{}[nodes.sync]\nhead_interval_ms = 1\n", primary("p", 'a', "")),
            "cluster.toml:10: ",
            "unknown key \"head_interval_ms\" in [nodes[0].sync]",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (text, start, part)) in cases.iter().enumerate() {
        if i == 3 {
            // Two primaries in one standby's protects list is fine.
            if let Err(e) = parse(text, "cluster.toml") {
                failures.push(format!("case {i}: refused: {e}"));
            }
            continue;
        }
        let msg = refused(text);
        if !msg.starts_with(start) || !msg.contains(part) {
            failures.push(format!("case {i}: got {msg:?}, want {start:?} + {part:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_nodes_view() {
    let c = parse(&two_primaries(), "cluster.toml").expect("parses");
    assert!(c.summary().contains("node s (standby)"));

    let a = c.recorder("a").expect("a");
    assert_eq!(a.node_name, "a");
    assert_eq!(a.data_dir, Path::new("/data/a"));
    let names: Vec<&str> = a.cameras.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c1", "c2"]);
    let b = c.recorder("b").expect("b");
    assert_eq!(b.cameras.len(), 1);
    assert_eq!(b.cameras[0].name, "c3");
    assert!(c.recorder("s").expect("s").cameras.is_empty());

    // A primary talks to its standby, at the standby's address.
    let sa = c.sync_node("a").expect("a");
    assert_eq!(sa.role, Role::Primary);
    assert_eq!(sa.identity_dir, Path::new("/id/a"));
    assert_eq!(sa.peers.len(), 1);
    assert_eq!(sa.peers[0].node, "s");
    assert_eq!(
        sa.peers[0].address,
        Some("127.0.0.1:7001".parse().expect("addr"))
    );
    assert_eq!(sa.peers[0].cert_sha256, pin('c'));
    assert_eq!(
        sa.peers[0].signing_public_key,
        pin('C').to_ascii_lowercase()
    );
    // Cluster settings with the node's own override.
    assert_eq!(sa.settings.scrub_interval_ms, 1000);
    assert_eq!(sa.settings.bandwidth_bytes_per_s, 1_000_000);
    assert_eq!(sa.settings.mirror_quota_bytes, 5_000_000_000);
    assert_eq!(
        c.sync_node("b").expect("b").settings.bandwidth_bytes_per_s,
        7
    );

    // A standby binds `listen` and trusts the primaries it protects (no address).
    let ss = c.sync_node("s").expect("s");
    assert_eq!(ss.role, Role::Standby);
    assert_eq!(ss.listen, Some("127.0.0.1:7002".parse().expect("addr")));
    let peers: Vec<(&str, bool)> = ss
        .peers
        .iter()
        .map(|p| (p.node.as_str(), p.address.is_none()))
        .collect();
    assert_eq!(peers, [("a", true), ("b", true)]);
    assert_eq!(ss.settings.scrub_interval_ms, 0);
    assert_eq!(ss.settings.bandwidth_bytes_per_s, 7);
    assert_eq!(ss.settings.stall_alarm_ms, 9000);
    assert_eq!(ss.settings.mirror_quota_bytes, 20_000_000_000);
    assert_eq!(ss.settings.staging_expire_ms, 604_800_000);
}

/// `two_primaries` with every identity_dir under `root`.
fn cluster_in(root: &Path) -> ClusterConfig {
    let text = two_primaries().replace("\"/id/", &format!("\"{}/", root.display()));
    parse(&text, "cluster.toml").expect("parses")
}

fn write_identity(dir: &Path, node: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join(IDENTITY_FILE),
        format!("node = \"{node}\"\ncert_sha256 = \"{}\"\n", pin('0')),
    )
    .expect("write identity");
}

fn node_error(r: Result<&cluster_config::NodeConfig, ConfigError>) -> String {
    match r {
        Ok(n) => panic!("selected {}", n.name),
        Err(e) => {
            assert!(matches!(e, ConfigError::Node { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn node_is_picked_by_identity_or_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = cluster_in(tmp.path());

    // No identity on this machine.
    let e = node_error(c.select_node(None));
    assert!(
        e.starts_with("cluster.toml: no node identity on this machine"),
        "{e}"
    );
    assert!(e.contains("--node"), "{e}");

    // The identity in b's identity_dir names b.
    write_identity(&tmp.path().join("b"), "b");
    assert_eq!(c.select_node(None).expect("b").name, "b");
    // --node wins over the identity.
    assert_eq!(c.select_node(Some("s")).expect("s").name, "s");
    let e = node_error(c.select_node(Some("zz")));
    assert_eq!(
        e,
        "cluster.toml: --node \"zz\": no such node (nodes: a, b, s)"
    );

    // Two identities on one machine: ambiguous without --node.
    write_identity(&tmp.path().join("s"), "s");
    let e = node_error(c.select_node(None));
    assert!(
        e.contains("identities of several nodes are on this machine"),
        "{e}"
    );
    assert!(e.contains("pass --node NAME"), "{e}");
    assert_eq!(c.select_node(Some("b")).expect("b").name, "b");
    std::fs::remove_file(tmp.path().join("s").join(IDENTITY_FILE)).expect("rm");

    // An identity naming another node than the one whose directory it is in.
    write_identity(&tmp.path().join("a"), "b");
    let e = node_error(c.select_node(None));
    assert!(
        e.contains("names node \"b\", but that node's identity_dir is"),
        "{e}"
    );
    // An identity naming a node the file does not have.
    write_identity(&tmp.path().join("a"), "elsewhere");
    let e = node_error(c.select_node(None));
    assert!(
        e.contains("names node \"elsewhere\", which is not in the configuration"),
        "{e}"
    );
    // A broken identity file.
    std::fs::write(tmp.path().join("a").join(IDENTITY_FILE), "node = ").expect("write");
    let e = node_error(c.select_node(None));
    assert!(e.contains("not an identity file"), "{e}");
}

#[test]
fn shared_identity_dir_names_the_node() {
    // The usual installation: every node uses the cluster's identity_dir; the file there says which.
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "identity_dir = \"{}\"\n{}",
        tmp.path().display(),
        two_primaries()
            .lines()
            .filter(|l| !l.starts_with("identity_dir"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let c = parse(&text, "cluster.toml").expect("parses");
    assert!(c.nodes.iter().all(|n| n.identity_dir == tmp.path()));
    write_identity(tmp.path(), "s");
    assert_eq!(c.select_node(None).expect("s").name, "s");
    write_identity(tmp.path(), "a");
    assert_eq!(c.select_node(None).expect("a").name, "a");
}

#[test]
fn tamper_watch_settings_have_defaults_values_and_ranges() {
    let c = parse(&two_primaries(), "cluster.toml").expect("parses");
    let d = c.sync_node("a").expect("a").settings;
    assert_eq!(
        (
            d.tamper_threshold_files,
            d.tamper_window_ms,
            d.tamper_queue_events
        ),
        (5, 10_000, 4_096)
    );
    let text = two_primaries().replacen(
        "[sync]\n",
        "[sync]\ntamper_threshold_files = 3\ntamper_window_ms = 2000\ntamper_queue_events = 8\n",
        1,
    );
    let s = parse(&text, "cluster.toml")
        .expect("parses")
        .sync_node("a")
        .expect("a")
        .settings;
    assert_eq!(
        (
            s.tamper_threshold_files,
            s.tamper_window_ms,
            s.tamper_queue_events
        ),
        (3, 2000, 8)
    );
    for (key, value) in [
        ("tamper_threshold_files", "0"),
        ("tamper_window_ms", "0"),
        ("tamper_queue_events", "1000001"),
    ] {
        let text = two_primaries().replacen("[sync]\n", &format!("[sync]\n{key} = {value}\n"), 1);
        let e = refused(&text);
        assert!(e.contains(&format!("sync.{key}")), "{key}: {e}");
    }
}

#[test]
fn web_settings_have_defaults_values_and_clear_errors() {
    let c = parse(&two_primaries(), "cluster.toml").expect("parses");
    assert_eq!(c.web, cluster_config::WebSettings::default());
    assert_eq!(c.web.listen.to_string(), "0.0.0.0:8443");
    let web = "[web]\nlisten = \"127.0.0.1:9443\"\nplain_http = true\nstate_dir = \"/srv/web\"\n\
               session_secret_file = \"/etc/nvr/s\"\nsession_ttl_s = 600\nmax_live_streams = 4\n\
               cert_file = \"/etc/nvr/c.pem\"\nkey_file = \"/etc/nvr/k.pem\"\n";
    let c = parse(&format!("{web}{}", two_primaries()), "cluster.toml").expect("parses");
    assert_eq!(c.web.listen.to_string(), "127.0.0.1:9443");
    assert!(c.web.plain_http);
    assert_eq!(c.web.state_dir, Path::new("/srv/web"));
    assert_eq!(
        c.web.session_secret_file.as_deref(),
        Some(Path::new("/etc/nvr/s"))
    );
    assert_eq!(c.web.session_ttl_s, 600);
    assert_eq!(c.web.max_live_streams, 4);
    assert_eq!(c.web.key_file.as_deref(), Some(Path::new("/etc/nvr/k.pem")));
    for (text, wants) in [
        ("[web]\ncert_file = \"/etc/nvr/c.pem\"\n", "web.cert_file"),
        ("[web]\nkey_file = \"/etc/nvr/k.pem\"\n", "web.key_file"),
        ("[web]\nstate_dir = \"relative\"\n", "web.state_dir"),
        ("[web]\nlisten = \"nowhere\"\n", "web.listen"),
        ("[web]\nsession_ttl_s = 1\n", "web.session_ttl_s"),
        ("[web]\nmax_live_streams = 61\n", "web.max_live_streams"),
        ("[web]\nplain_http = \"yes\"\n", "web.plain_http"),
        ("[web]\nport = 1\n", "port"),
    ] {
        let e = refused(&format!("{text}{}", two_primaries()));
        assert!(e.contains(wants), "{text}: {e}");
    }
}

/// Two primaries protected by standby s, with `[arbiter]` and arbiter addresses; c1 cold, priority 7.
fn with_arbiter(arbiter: &str) -> String {
    [
        format!("[arbiter]\n{arbiter}\n"),
        primary("a", 'a', "arbiter_address = \"127.0.0.1:7101\""),
        primary("b", 'b', "arbiter_address = \"127.0.0.1:7102\""),
        standby(
            "s",
            'c',
            "127.0.0.1:7001",
            "[\"a\", \"b\"]",
            "arbiter_address = \"127.0.0.1:7103\"\ncapacity_streams = 2\ncapacity_mbps = 40",
        ),
        camera("c1", "a").replace(
            "node = \"a\"\n",
            "node = \"a\"\ntakeover = \"cold\"\npriority = 7\nbitrate_kbps = 2500\n",
        ),
        camera("c2", "a"),
        camera("c3", "b"),
    ]
    .concat()
}

#[test]
fn arbiter_section_defaults_node_keys_and_the_standbys_protected_cameras() {
    let c = parse(&with_arbiter(""), "cluster.toml").expect("parses");
    let a = c.arbiter.expect("[arbiter]");
    assert_eq!(
        (
            a.heartbeat_interval_ms,
            a.node_dead_ms,
            a.stream_failed_ms,
            a.failback_hold_ms
        ),
        (200, 1_000, 2_000, 10_000)
    );
    let c = parse(
        &with_arbiter(
            "heartbeat_interval_ms = 100\nnode_dead_ms = 500\nstream_failed_ms = 3000\nfailback_hold_ms = 0",
        ),
        "cluster.toml",
    )
    .expect("parses");
    let a = c.arbiter.expect("[arbiter]");
    assert_eq!(
        (
            a.heartbeat_interval_ms,
            a.node_dead_ms,
            a.stream_failed_ms,
            a.failback_hold_ms
        ),
        (100, 500, 3_000, 0)
    );
    let s = c.node("s").expect("s");
    assert_eq!(s.capacity_streams, Some(2));
    assert_eq!(s.capacity_mbps, Some(40));
    assert_eq!(c.cameras[0].bitrate_kbps, Some(2500));
    assert_eq!(c.cameras[1].bitrate_kbps, None);
    assert_eq!(
        s.arbiter_address,
        Some("127.0.0.1:7103".parse().expect("addr"))
    );
    // The arbiter binds its arbiter_address unless arbiter_listen says otherwise (a proxy between).
    assert_eq!(s.arbiter_listen_address(), s.arbiter_address);
    let c = parse(
        &with_arbiter("").replace(
            "arbiter_address = \"127.0.0.1:7103\"",
            "arbiter_address = \"127.0.0.1:7103\"\narbiter_listen = \"127.0.0.1:7203\"",
        ),
        "cluster.toml",
    )
    .expect("parses");
    assert_eq!(
        c.node("s").expect("s").arbiter_listen_address(),
        Some("127.0.0.1:7203".parse().expect("addr"))
    );
    let c1 = &c.cameras[0];
    assert_eq!(
        (c1.takeover, c1.priority),
        (cluster_config::Takeover::Cold, 7)
    );
    assert_eq!(
        (c.cameras[1].takeover, c.cameras[1].priority),
        (
            cluster_config::Takeover::Hot,
            cluster_config::DEFAULT_PRIORITY
        )
    );
    // The standby's recorder runs the cameras it protects; a primary's only its own.
    let rs = c.recorder("s").expect("view");
    assert!(rs.cameras.is_empty());
    let names: Vec<&str> = rs.protected.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c1", "c2", "c3"]);
    assert!(c.recorder("a").expect("view").protected.is_empty());
    // Without [arbiter] a standby's recorder runs nothing.
    let plain = parse(&two_primaries(), "cluster.toml").expect("parses");
    assert!(plain.arbiter.is_none());
    assert!(plain.recorder("s").expect("view").protected.is_empty());
}

#[test]
fn arbiter_errors_name_file_line_and_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            with_arbiter("heartbeat_interval_ms = 400\nnode_dead_ms = 1000"),
            "arbiter.node_dead_ms: 1000 ms is less than three heartbeats of 400 ms",
        ),
        (
            with_arbiter("heartbeat_interval_ms = 5"),
            "arbiter.heartbeat_interval_ms: must be between 20 and 10000, got 5",
        ),
        (
            with_arbiter("failure_timeout_ms = 5"),
            "unknown key \"failure_timeout_ms\" in [arbiter]",
        ),
        (
            with_arbiter("").replace("arbiter_address = \"127.0.0.1:7102\"", ""),
            "nodes[1].arbiter_address: missing: node \"b\" takes part in failover",
        ),
        (
            with_arbiter("").replace("127.0.0.1:7102", "127.0.0.1:7101"),
            "nodes[1].arbiter_address: duplicate arbiter address 127.0.0.1:7101 (also node \"a\"",
        ),
        (
            with_arbiter("").replace("127.0.0.1:7102", "127.0.0.1:7001"),
            "nodes[1].arbiter_address: arbiter address 127.0.0.1:7001 is also a sync address",
        ),
        (
            with_arbiter("").replace("takeover = \"cold\"", "takeover = \"warm\""),
            "cameras[0].takeover: must be \"hot\" or \"cold\", got \"warm\"",
        ),
        (
            with_arbiter("").replace("priority = 7", "priority = -1"),
            "cameras[0].priority: must be between 0 and 1000000, got -1",
        ),
        (
            with_arbiter("").replace(
                "arbiter_address = \"127.0.0.1:7101\"",
                "arbiter_address = \"127.0.0.1:7101\"\ncapacity_streams = 3",
            ),
            "nodes[0].capacity_streams: only a standby has capacity_streams",
        ),
        (
            with_arbiter("").replace(
                "arbiter_address = \"127.0.0.1:7101\"",
                "arbiter_address = \"127.0.0.1:7101\"\ncapacity_mbps = 100",
            ),
            "nodes[0].capacity_mbps: only a standby has capacity_mbps",
        ),
        (
            with_arbiter("").replace("capacity_mbps = 40", "capacity_mbps = 0"),
            "nodes[2].capacity_mbps: must be between 1 and 1000000, got 0",
        ),
        (
            with_arbiter("").replace("bitrate_kbps = 2500", "bitrate_kbps = \"fast\""),
            "cameras[0].bitrate_kbps: ",
        ),
        (
            with_arbiter("").replace("[arbiter]\n\n", "").replace(
                "arbiter_address = \"127.0.0.1:7101\"\n",
                "",
            ).replace("arbiter_address = \"127.0.0.1:7102\"\n", "").replace(
                "arbiter_address = \"127.0.0.1:7103\"\ncapacity_streams = 2\n",
                "",
            ),
            "nodes[2].capacity_mbps: node \"s\" has capacity_mbps but the file has no [arbiter] section",
        ),
        (
            with_arbiter("").replace(
                "arbiter_address = \"127.0.0.1:7102\"",
                "arbiter_listen = \"127.0.0.1:7102\"",
            ),
            "nodes[1].arbiter_listen: needs arbiter_address",
        ),
        (
            with_arbiter("").replace("[arbiter]\n\n", ""),
            "nodes[0].arbiter_address: node \"a\" has an arbiter_address but the file has no [arbiter] section",
        ),
    ];
    for (text, part) in cases {
        let e = refused(&text);
        assert!(e.starts_with("cluster.toml:"), "{e}");
        assert!(e.contains(part), "expected {part:?} in {e:?}");
    }
}

#[test]
fn web_url_is_a_viewer_origin_and_users_file_a_path() {
    let text = two_primaries().replacen(
        "role = \"primary\"\n",
        "role = \"primary\"\nweb_url = \"https://10.0.0.1:443/\"\n",
        1,
    );
    let text = format!("[web]\nusers_file = \"/etc/nvr/users.json\"\n{text}");
    let c = parse(&text, "cluster.toml").expect("parses");
    assert_eq!(
        c.nodes[0].web_url.as_deref(),
        Some("https://10.0.0.1"),
        "the origin as browsers send it: no trailing /, no default port"
    );
    assert_eq!(c.nodes[1].web_url, None);
    assert_eq!(
        c.web.users_file.as_deref(),
        Some(Path::new("/etc/nvr/users.json"))
    );
    for bad in [
        "nowhere",
        "ftp://10.0.0.1",
        "https://10.0.0.1:8443/viewer",
        "https://user@10.0.0.1:8443",
        "https://10.0.0.1:8443/?x=1",
    ] {
        let text = two_primaries().replacen(
            "role = \"primary\"\n",
            &format!("role = \"primary\"\nweb_url = \"{bad}\"\n"),
            1,
        );
        let e = refused(&text);
        assert!(e.contains("nodes[0].web_url"), "{bad}: {e}");
    }
    let e = refused(&format!(
        "[web]\nusers_file = \"users.json\"\n{}",
        two_primaries()
    ));
    assert!(e.contains("web.users_file"), "{e}");
    let twice = two_primaries().replace(
        "role = \"primary\"\n",
        "role = \"primary\"\nweb_url = \"https://10.0.0.1:8443\"\n",
    );
    let e = refused(&twice);
    assert!(
        e.contains("nodes[1].web_url") && e.contains("duplicate web_url https://10.0.0.1:8443"),
        "{e}"
    );
}

/// `with_arbiter` plus a witness node `w` (arbiter only).
fn with_witness(extra: &str) -> String {
    format!(
        "{}[[nodes]]\nname = \"w\"\nrole = \"witness\"\ndata_dir = \"/data/w\"\n\
         identity_dir = \"/id/w\"\ncert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\n\
         arbiter_address = \"127.0.0.1:7109\"\n{extra}\n",
        with_arbiter(""),
        pin('e'),
        pin('E')
    )
}

#[test]
fn a_witness_runs_only_an_arbiter_and_is_checked_like_one() {
    let c = parse(&with_witness(""), "cluster.toml").expect("parses");
    let w = c.witness().expect("witness");
    assert_eq!((w.name.as_str(), w.role), ("w", Role::Witness));
    assert!(c.summary().contains("node w (witness)"), "{}", c.summary());
    let no_recorder = c.recorder("w").expect_err("refused").to_string();
    assert!(
        no_recorder.contains("a witness runs no recorder"),
        "{no_recorder}"
    );
    let no_sync = c.sync_node("w").expect_err("refused").to_string();
    assert!(
        no_sync.contains("a witness runs no sync agent"),
        "{no_sync}"
    );
    let cases: Vec<(String, &str)> = vec![
        (
            with_witness("").replace("[arbiter]\n\n", "").replace(
                "arbiter_address = \"127.0.0.1:71",
                "# arbiter_address = \"127.0.0.1:71",
            ),
            "node \"w\" is a witness but the file has no [arbiter] section",
        ),
        (
            with_witness("address = \"127.0.0.1:7400\""),
            "only a standby has address (this node is a witness)",
        ),
        (
            with_witness("").replace("arbiter_address = \"127.0.0.1:7109\"", ""),
            "missing: node \"w\" takes part in failover",
        ),
        (
            format!(
                "{}[[nodes]]\nname = \"w2\"\nrole = \"witness\"\ndata_dir = \"/data/w2\"\n\
                 cert_sha256 = \"{}\"\nsigning_public_key = \"{}\"\narbiter_address = \"127.0.0.1:7110\"\n",
                with_witness(""),
                pin('f'),
                pin('F')
            ),
            "a second witness (node \"w\" is one already)",
        ),
        (
            with_witness("").replace("node = \"b\"", "node = \"w\""),
            "node \"w\" is a witness; cameras are recorded by primaries",
        ),
    ];
    for (text, part) in cases {
        let e = refused(&text);
        assert!(e.contains(part), "expected {part:?} in {e:?}");
    }
}
