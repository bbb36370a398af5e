//! Configuration parsing and validation: the example file, bad configurations, secrets, byte sizes.

use std::path::Path;

use nvr::config::{self, ConfigError, Role, Secret, StreamKind, Transport, UdpReorder};

const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config.example.toml"
));

const PASSWORD: &str = "hunter2-secret";

/// A valid configuration; the bad cases below replace one of its lines (line numbers matter).
const BASE: &str = r#"identity_dir = "/etc/nvr/identity"
# Nodes and [sync] are at the end of the file.

[recording]
segment_duration_s = 60
flush_interval_ms = 1000

[ingest]
connect_timeout_ms = 10000
frame_timeout_ms = 10000
backoff_initial_ms = 1000
backoff_max_ms = 30000

[retention]
max_age_days = 30
max_bytes_per_stream = "500 GiB"
min_free_bytes = "1 GiB"
interval_s = 60

[[cameras]]
name = "front-door"
username = "admin"
password = "hunter2-secret"
transport = "tcp"
node = "nvr-a"
[cameras.streams.main]
url = "rtsp://192.0.2.10:554/main"
record = true
max_age_days = 7
max_bytes = "100 GiB"

[cameras.streams.sub]
url = "rtsp://192.0.2.10:554/sub"
record = false

[[cameras]]
name = "garage"
node = "nvr-a"
[cameras.streams.main]
url = "rtsp://192.0.2.11/main"

[[nodes]]
name = "nvr-a"
role = "primary"
data_dir = "/var/lib/nvr"
cert_sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
signing_public_key = "2222222222222222222222222222222222222222222222222222222222222222"

[[nodes]]
name = "standby-1"
role = "standby"
data_dir = "/srv/standby"
address = "192.0.2.20:7443"
protects = ["nvr-a"]
cert_sha256 = "3333333333333333333333333333333333333333333333333333333333333333"
signing_public_key = "4444444444444444444444444444444444444444444444444444444444444444"

[[nodes]]
name = "nvr-b"
role = "primary"
data_dir = "/var/lib/nvr"

[sync]
head_interval_ms = 5000
scrub_interval_ms = 0
bandwidth_bytes_per_s = "10 MB"
"#;

/// `BASE` with line `line` (1-based) replaced by `with`.
fn replace_line(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[line - 1] = with;
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The values that a configuration without them gets and that the example file spells out:
/// segments and flushes, the cameras' timeouts and back-off, the free-space floor and retention's
/// interval, the sync agent's intervals and rates.
fn assert_default_timings_and_floor(c: &config::ClusterConfig) {
    assert_eq!(c.recording.segment_duration_ms, 60_000);
    assert_eq!(c.recording.flush_interval_ms, 1_000);
    assert_eq!(c.ingest.connect_timeout_ms, 10_000);
    assert_eq!(c.ingest.frame_timeout_ms, 10_000);
    assert_eq!(c.ingest.backoff_initial_ms, 1_000);
    assert_eq!(c.ingest.backoff_max_ms, 30_000);
    assert_eq!(c.retention.min_free_bytes, 1 << 30);
    assert_eq!(c.retention.interval_ms, 60_000);
    assert_eq!(c.sync.head_interval_ms, 3_600_000);
    assert_eq!(c.sync.reconcile_interval_ms, 10_000);
    assert_eq!(c.sync.scrub_interval_ms, 3_600_000);
    assert_eq!(c.sync.scrub_bytes_per_s, 50_000_000);
    assert_eq!(c.sync.bandwidth_bytes_per_s, 0);
}

#[test]
fn example_parses_with_documented_values() {
    let c = config::parse(EXAMPLE, "config.example.toml").expect("example must parse");
    assert_default_timings_and_floor(&c);
    assert_eq!(c.ingest.udp_recv_buffer_bytes, 8 << 20);
    assert_eq!(c.ingest.udp_port_range, None);
    let with_range = EXAMPLE.replace(
        "# udp_port_range = \"50000-50999\"",
        "udp_port_range = \"50000-50999\"",
    );
    let c2 = config::parse(&with_range, "config.example.toml").expect("with a port range");
    assert_eq!(c2.ingest.udp_port_range, Some((50_000, 50_999)));
    assert_eq!(
        c.ingest.udp_reorder,
        UdpReorder {
            max_packets: 64,
            max_delay_ms: 50
        }
    );
    assert_eq!(c.retention.max_age_days, Some(30));
    assert_eq!(c.retention.max_bytes_per_stream, Some(500 << 30));

    let names: Vec<(&str, Role)> = c.nodes.iter().map(|n| (n.name.as_str(), n.role)).collect();
    assert_eq!(
        names,
        [
            ("nvr-a", Role::Primary),
            ("nvr-b", Role::Primary),
            ("standby-1", Role::Standby)
        ]
    );
    let a = &c.nodes[0];
    assert_eq!(a.data_dir, Path::new("/var/lib/nvr"));
    assert_eq!(a.identity_dir, Path::new("/etc/nvr/identity"));
    // nvr-a overrides bandwidth_bytes_per_s only.
    assert_eq!(a.sync.bandwidth_bytes_per_s, 2_000_000);
    assert_eq!(a.sync.scrub_interval_ms, 3_600_000);
    assert_eq!(c.nodes[1].sync, c.sync);
    let s = &c.nodes[2];
    assert_eq!(s.address, Some("192.0.2.20:7443".parse().expect("addr")));
    assert_eq!(
        s.listen_address(),
        Some("0.0.0.0:7443".parse().expect("addr"))
    );
    assert_eq!(s.protects, ["nvr-a", "nvr-b"]);
    assert_eq!(
        c.standby_of("nvr-b").map(|n| n.name.as_str()),
        Some("standby-1")
    );
    assert!(c.summary().contains("node standby-1 (standby)"));

    // Every node's views derive from the example.
    for n in &c.nodes {
        c.recorder(&n.name).expect("recorder view");
        c.sync_node(&n.name).expect("sync view");
    }
    let c_b = c.recorder("nvr-b").expect("nvr-b");
    assert_eq!(c_b.cameras.len(), 1);
    assert_eq!(c_b.cameras[0].name, "gate");
    assert!(c.recorder("standby-1").expect("standby").cameras.is_empty());
    let c = c.recorder("nvr-a").expect("nvr-a");
    assert_eq!(c.node_name, "nvr-a");

    assert_eq!(c.cameras.len(), 2);
    let cam = &c.cameras[0];
    assert_eq!(cam.name, "front-door");
    assert_eq!(cam.username.as_deref(), Some("admin"));
    assert_eq!(cam.password, Some(Secret("secret".to_owned())));
    assert_eq!(cam.transport, Transport::Tcp);
    assert_eq!(cam.udp_reorder, UdpReorder::default());
    assert_eq!(cam.streams.len(), 2);
    let main = &cam.streams[0];
    assert_eq!(main.kind, StreamKind::Main);
    assert_eq!(
        main.url.as_str(),
        "rtsp://192.0.2.10:554/Streaming/Channels/101"
    );
    assert!(main.record);
    assert_eq!(main.max_age_days, Some(7));
    assert_eq!(main.max_bytes, Some(100 << 30));
    let sub = &cam.streams[1];
    assert_eq!(sub.kind, StreamKind::Sub);
    assert_eq!(
        sub.url.as_str(),
        "rtsp://192.0.2.10:554/Streaming/Channels/102"
    );
    assert!(!sub.record);
    assert_eq!(sub.max_age_days, None);
    assert_eq!(sub.max_bytes, None);

    let garage = &c.cameras[1];
    assert_eq!(garage.name, "garage");
    assert_eq!(garage.username, None);
    assert_eq!(garage.password, None);
    assert_eq!(garage.transport, Transport::Udp);
    assert_eq!(
        garage.udp_reorder,
        UdpReorder {
            max_packets: 256,
            max_delay_ms: 200
        }
    );
    assert_eq!(garage.streams.len(), 1);
    assert_eq!(garage.streams[0].kind, StreamKind::Main);
    assert!(garage.streams[0].record);
}

#[test]
fn base_parses() {
    let c = config::parse(BASE, "test.toml").expect("BASE must parse");
    assert_eq!(c.cameras.len(), 2);
    assert_eq!(c.cameras[0].password, Some(Secret(PASSWORD.to_owned())));
}

const MINIMAL: &str = "[[nodes]]\nname = \"a\"\nrole = \"primary\"\ndata_dir = \"/d\"\n";

#[test]
fn udp_reorder_window_per_camera_over_ingest() {
    // [ingest] sets the packets, the garage camera (over UDP) its own delay.
    let text = replace_line(12, "backoff_max_ms = 30000\nudp_reorder_max_packets = 128").replace(
        "name = \"garage\"\n",
        "name = \"garage\"\ntransport = \"udp\"\nudp_reorder_max_delay_ms = 200\n",
    );
    let c = config::parse(&text, "test.toml").expect("parses");
    assert_eq!(
        c.ingest.udp_reorder,
        UdpReorder {
            max_packets: 128,
            max_delay_ms: 50
        }
    );
    assert_eq!(c.cameras[0].udp_reorder, c.ingest.udp_reorder);
    assert_eq!(
        c.cameras[1].udp_reorder,
        UdpReorder {
            max_packets: 128,
            max_delay_ms: 200
        }
    );
    let c = c.recorder("nvr-a").expect("recorder view");
    assert_eq!(c.cameras[1].udp_reorder.max_delay_ms, 200);

    // Out of range on a camera, and on a camera over TCP at all.
    let bad = text.replace(
        "udp_reorder_max_delay_ms = 200",
        "udp_reorder_max_packets = 5000",
    );
    let err = config::parse(&bad, "test.toml").expect_err("out of range");
    assert!(
        err.to_string()
            .contains("cameras[1].udp_reorder_max_packets: must be between 0 and 1024, got 5000"),
        "{err}"
    );
    let tcp = text.replace(
        "transport = \"udp\"\nudp_reorder",
        "transport = \"tcp\"\nudp_reorder",
    );
    let err = config::parse(&tcp, "test.toml").expect_err("tcp");
    assert!(
        err.to_string().contains(
            "cameras[1].udp_reorder_max_delay_ms: applies to RTP over UDP only, but this camera's transport is \"tcp\""
        ),
        "{err}"
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = config::parse(MINIMAL, "min.toml").expect("parses");
    assert_eq!(c.recording, config::RecordingConfig::default());
    assert_eq!(c.ingest, config::IngestConfig::default());
    assert_eq!(c.retention, config::RetentionConfig::default());
    assert_eq!(c.sync, cluster_config::SyncSettings::default());
    assert_default_timings_and_floor(&c);
    assert_eq!(c.retention.max_age_days, None);
    assert_eq!(c.retention.max_bytes_per_stream, None);
    assert_eq!(c.nodes[0].identity_dir, Path::new("/etc/nvr/identity"));
    assert!(c.cameras.is_empty());

    let c = config::parse(&format!("cameras = []\n{MINIMAL}"), "min.toml").expect("parses");
    assert!(c.cameras.is_empty());
    // A lone primary that no standby protects records, but has no sync agent.
    let e = c.sync_node("a").expect_err("nothing to sync");
    assert!(
        e.to_string().contains("no standby protects this primary"),
        "{e}"
    );
}

#[test]
fn bad_configs() {
    // (line replaced in BASE, replacement, expected line, key path (or table) in the message, what is wrong)
    const PIN_NOT_HEX: &str =
        "cert_sha256 = \"g111111111111111111111111111111111111111111111111111111111111111\"";
    let cases: &[(usize, &str, usize, &str, &str)] = &[
        (
            1,
            "identity_dir = \"etc\"",
            1,
            "identity_dir",
            "must be an absolute path",
        ),
        (43, "", 42, "nodes[0].name", "missing (required)"),
        (43, r#"name = """#, 43, "nodes[0].name", "must not be empty"),
        (
            43,
            r#"name = "NVR A""#,
            43,
            "nodes[0].name",
            "must match [a-z0-9][a-z0-9_-]{0,62}",
        ),
        (
            43,
            r#"name = "standby-1""#,
            50,
            "nodes[1].name",
            "duplicate node name \"standby-1\" (first defined at line 43)",
        ),
        (
            44,
            r#"role = "arbiter""#,
            44,
            "nodes[0].role",
            "must be \"primary\", \"standby\" or \"witness\", got \"arbiter\"",
        ),
        (44, "", 42, "nodes[0].role", "missing (required)"),
        (
            45,
            r#"data_dir = "var/lib/nvr""#,
            45,
            "nodes[0].data_dir",
            "must be an absolute path",
        ),
        (45, "", 42, "nodes[0].data_dir", "missing (required)"),
        (
            45,
            r#"dta_dir = "/x""#,
            45,
            "[nodes[0]]",
            "unknown key \"dta_dir\" in [nodes[0]]",
        ),
        (
            46,
            r#"cert_sha256 = "1234""#,
            46,
            "nodes[0].cert_sha256",
            "must be 64 hex digits",
        ),
        (
            46,
            PIN_NOT_HEX,
            46,
            "nodes[0].cert_sha256",
            "with a non-hex digit",
        ),
        (46, "", 42, "nodes[0].cert_sha256", "missing (required)"),
        (
            47,
            "",
            42,
            "nodes[0].signing_public_key",
            "missing (required)",
        ),
        (
            55,
            &format!("cert_sha256 = \"{}\"", "1".repeat(64)),
            55,
            "nodes[1].cert_sha256",
            "duplicate pin: node \"nvr-a\" (line 46)",
        ),
        (
            56,
            &format!("signing_public_key = \"{}\"", "2".repeat(64)),
            56,
            "nodes[1].signing_public_key",
            "duplicate pin: node \"nvr-a\" (line 47)",
        ),
        (
            53,
            r#"address = "192.0.2.20""#,
            53,
            "nodes[1].address",
            "is not an IP address and port",
        ),
        (
            53,
            r#"address = "standby.example:7443""#,
            53,
            "nodes[1].address",
            "is not an IP address and port",
        ),
        (
            53,
            r#"address = "192.0.2.20:0""#,
            53,
            "nodes[1].address",
            "port must not be 0",
        ),
        (
            53,
            "",
            49,
            "nodes[1].address",
            "missing (required on a standby",
        ),
        (
            53,
            r#"listen = "0.0.0.0:7443""#,
            49,
            "nodes[1].address",
            "missing (required on a standby",
        ),
        (
            54,
            r#"protects = ["nvr-x"]"#,
            54,
            "nodes[1].protects[0]",
            "unknown node \"nvr-x\"",
        ),
        (
            54,
            r#"protects = ["standby-1"]"#,
            54,
            "nodes[1].protects[0]",
            "node \"standby-1\" is a standby, not a primary",
        ),
        (
            54,
            "protects = []",
            54,
            "nodes[1].protects",
            "a standby must protect at least one primary",
        ),
        (
            54,
            "",
            49,
            "nodes[1].protects",
            "a standby must protect at least one primary",
        ),
        (
            54,
            r#"protects = ["nvr-a", "nvr-a"]"#,
            54,
            "nodes[1].protects[1]",
            "\"nvr-a\" is listed twice",
        ),
        (
            54,
            r#"protects = "nvr-a""#,
            54,
            "nodes[1].protects",
            "expected an array of node names",
        ),
        (
            62,
            r#"address = "192.0.2.30:7443""#,
            62,
            "nodes[2].address",
            "only a standby has address (this node is a primary)",
        ),
        (
            62,
            r#"protects = ["nvr-a"]"#,
            62,
            "nodes[2].protects",
            "only a standby has protects",
        ),
        (
            25,
            r#"node = "nvr-x""#,
            25,
            "cameras[0].node",
            "unknown node \"nvr-x\" (nodes: nvr-a, standby-1, nvr-b)",
        ),
        (
            25,
            r#"node = "standby-1""#,
            25,
            "cameras[0].node",
            "node \"standby-1\" is a standby; cameras are recorded by primaries",
        ),
        (25, r#"node = "Nvr A""#, 25, "cameras[0].node", "must match"),
        (25, "", 20, "cameras[0].node", "missing (required)"),
        (
            64,
            "head_interval_ms = 0",
            64,
            "sync.head_interval_ms",
            "must be between 1 and 604800000, got 0",
        ),
        (
            64,
            "reconcile_interval_ms = -1",
            64,
            "sync.reconcile_interval_ms",
            "must be between 1 and 604800000, got -1",
        ),
        (
            65,
            "scrub_intervall_ms = 0",
            65,
            "[sync]",
            "unknown key \"scrub_intervall_ms\" in [sync]",
        ),
        (
            65,
            "scrub_bytes_per_s = 0",
            65,
            "sync.scrub_bytes_per_s",
            "must be greater than zero",
        ),
        (
            66,
            r#"bandwidth_bytes_per_s = "fast""#,
            66,
            "sync.bandwidth_bytes_per_s",
            "invalid byte size",
        ),
        (
            63,
            "[arbiter]",
            64,
            "[arbiter]",
            "unknown key \"head_interval_ms\" in [arbiter]",
        ),
        (
            3,
            r#"nod_name = "x""#,
            3,
            "\"nod_name\"",
            "unknown key \"nod_name\" in the top-level table",
        ),
        (
            5,
            "segment_duration_s = 0",
            5,
            "recording.segment_duration_s",
            "must be between 1 and 3600, got 0",
        ),
        (
            5,
            "segment_duration_s = 3601",
            5,
            "recording.segment_duration_s",
            "must be between 1 and 3600, got 3601",
        ),
        (
            5,
            r#"segment_duration_s = "60""#,
            5,
            "recording.segment_duration_s",
            "expected an integer, got string",
        ),
        (
            5,
            "segment_duration_s = 1.5",
            5,
            "recording.segment_duration_s",
            "expected an integer, got float",
        ),
        (
            5,
            "segment_lenght = 60",
            5,
            "[recording]",
            "unknown key \"segment_lenght\" in [recording]",
        ),
        (5, "segment_duration_s = ", 5, "", "invalid TOML"),
        (6, "segment_duration_s = 30", 6, "", "invalid TOML"),
        (
            6,
            "flush_interval_ms = 0",
            6,
            "recording.flush_interval_ms",
            "must be between 1 and 60000, got 0",
        ),
        (
            6,
            "flush_interval_ms = 60001",
            6,
            "recording.flush_interval_ms",
            "must be between 1 and 60000, got 60001",
        ),
        (
            9,
            "connect_timeout_ms = 0",
            9,
            "ingest.connect_timeout_ms",
            "must be between 1 and",
        ),
        (
            10,
            "frame_timeout_ms = 0",
            10,
            "ingest.frame_timeout_ms",
            "must be between 1 and",
        ),
        (
            11,
            "backoff_initial_ms = 60000",
            11,
            "ingest.backoff_initial_ms",
            "must not exceed backoff_max_ms",
        ),
        (
            12,
            r#"udp_port_range = "6000-6000""#,
            12,
            "ingest.udp_port_range",
            "must be \"FIRST-LAST\" with 1024 <= FIRST < LAST <= 65535",
        ),
        (
            12,
            r#"udp_port_range = "80-90""#,
            12,
            "ingest.udp_port_range",
            "got \"80-90\"",
        ),
        (
            12,
            r#"udp_recv_buffer_bytes = "2 GiB""#,
            12,
            "ingest.udp_recv_buffer_bytes",
            "at most 1073741824 bytes",
        ),
        (
            12,
            "udp_reorder_max_packets = 1025",
            12,
            "ingest.udp_reorder_max_packets",
            "must be between 0 and 1024, got 1025",
        ),
        (
            12,
            "udp_reorder_max_delay_ms = 0",
            12,
            "ingest.udp_reorder_max_delay_ms",
            "must be between 1 and 1000, got 0",
        ),
        (
            24,
            "udp_reorder_max_packets = 128",
            24,
            "cameras[0].udp_reorder_max_packets",
            "applies to RTP over UDP only",
        ),
        (
            15,
            "max_age_days = 0",
            15,
            "retention.max_age_days",
            "must be between 1 and 36500, got 0",
        ),
        (
            16,
            r#"max_bytes_per_stream = "500 GB!""#,
            16,
            "retention.max_bytes_per_stream",
            "invalid byte size",
        ),
        (
            16,
            r#"max_bytes_per_stream = "12 parsecs""#,
            16,
            "retention.max_bytes_per_stream",
            "unknown unit",
        ),
        (
            16,
            "max_bytes_per_stream = 0",
            16,
            "retention.max_bytes_per_stream",
            "must be greater than zero",
        ),
        (
            16,
            "max_bytes_per_stream = -5",
            16,
            "retention.max_bytes_per_stream",
            "must not be negative",
        ),
        (
            17,
            "min_free_bytes = true",
            17,
            "retention.min_free_bytes",
            "expected a byte size",
        ),
        (
            18,
            "interval_s = 0",
            18,
            "retention.interval_s",
            "must be between 1 and 86400, got 0",
        ),
        (
            21,
            r#"name = "Front Door""#,
            21,
            "cameras[0].name",
            "must match",
        ),
        (
            21,
            r#"name = "-front""#,
            21,
            "cameras[0].name",
            "must match",
        ),
        (21, "", 20, "cameras[0].name", "missing (required)"),
        (
            22,
            r#"usrname = "admin""#,
            22,
            "[cameras[0]]",
            "unknown key \"usrname\" in [cameras[0]]",
        ),
        (
            22,
            "",
            23,
            "cameras[0].password",
            "a password is set but username is not",
        ),
        (
            24,
            r#"password_file = "/etc/nvr/x.pass""#,
            24,
            "cameras[0].password_file",
            "both set",
        ),
        (
            23,
            r#"password_file = "/nonexistent/nvr-test.pass""#,
            23,
            "cameras[0].password_file",
            "cannot read",
        ),
        (
            23,
            r#"password_file = "front.pass""#,
            23,
            "cameras[0].password_file",
            "must be an absolute path",
        ),
        (
            24,
            r#"transport = "http""#,
            24,
            "cameras[0].transport",
            "must be \"tcp\", \"udp\" or \"auto\", got \"http\"",
        ),
        (
            27,
            r#"url = "http://192.0.2.10/main""#,
            27,
            "cameras[0].streams.main.url",
            "scheme must be rtsp, got \"http\"",
        ),
        (
            27,
            r#"url = "not a url""#,
            27,
            "cameras[0].streams.main.url",
            "invalid URL",
        ),
        (
            27,
            r#"url = "rtsp:/main""#,
            27,
            "cameras[0].streams.main.url",
            "URL has no host",
        ),
        (
            27,
            r#"url = "rtsp://admin:pw123@192.0.2.10/main""#,
            27,
            "cameras[0].streams.main.url",
            "credentials must not be embedded",
        ),
        (
            27,
            r#"url = "rtsp://admin@192.0.2.10/main""#,
            27,
            "cameras[0].streams.main.url",
            "credentials must not be embedded",
        ),
        (
            27,
            "",
            26,
            "cameras[0].streams.main.url",
            "missing (required)",
        ),
        (
            28,
            r#"record = "yes""#,
            28,
            "cameras[0].streams.main.record",
            "expected true or false, got string",
        ),
        (
            29,
            "max_age_days = -1",
            29,
            "cameras[0].streams.main.max_age_days",
            "must be between 1 and 36500, got -1",
        ),
        (
            30,
            r#"max_bytes = "0 GiB""#,
            30,
            "cameras[0].streams.main.max_bytes",
            "must be greater than zero",
        ),
        (
            32,
            "[cameras.streams.third]",
            32,
            "cameras[0].streams.third",
            "unknown stream \"third\"",
        ),
        (
            34,
            "recrd = false",
            34,
            "[cameras[0].streams.sub]",
            "unknown key \"recrd\" in [cameras[0].streams.sub]",
        ),
        (
            37,
            r#"name = "front-door""#,
            37,
            "cameras[1].name",
            "duplicate camera name \"front-door\" (first defined at line 21)",
        ),
        (39, "", 36, "cameras[1].streams", "camera has no streams"),
    ];
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for &(line, with, want_line, want_path, want_msg) in cases {
        let text = replace_line(line, with);
        // Case 39: dropping the [cameras.streams.main] header would move `url` into the camera table.
        let text = if line == 39 {
            text.replace("url = \"rtsp://192.0.2.11/main\"\n", "")
        } else {
            text
        };
        // Password files are read when the owner node's recorder configuration is derived.
        match config::parse(&text, "test.toml").and_then(|c| c.recorder("nvr-a")) {
            Ok(_) => failures.push(format!("line {line} {with:?}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                let prefix = format!("test.toml:{want_line}: ");
                if !msg.starts_with(&prefix)
                    || !msg.contains(want_path)
                    || !msg.contains(want_msg)
                    || msg.contains(PASSWORD)
                    || msg.contains("pw123")
                {
                    failures.push(format!(
                        "line {line} {with:?}: got {msg:?}, want {prefix:?} + {want_path:?} + {want_msg:?}"
                    ));
                }
                if e.line() != Some(want_line) {
                    failures.push(format!("line {line} {with:?}: line() = {:?}", e.line()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_display_format() {
    let e = config::parse(&replace_line(37, r#"name = "front-door""#), "config.toml")
        .expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "config.toml:37: cameras[1].name: duplicate camera name \"front-door\" (first defined at line 21)"
    );
    assert_eq!(e.path().as_deref(), Some("cameras[1].name"));

    let e =
        config::parse(&replace_line(5, "segment_duration_s = 0"), "config.toml").expect_err("zero");
    assert_eq!(
        e.to_string(),
        "config.toml:5: recording.segment_duration_s: must be between 1 and 3600, got 0"
    );

    let e =
        config::parse(&replace_line(5, "segment_lenght = 60"), "config.toml").expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "config.toml:5: unknown key \"segment_lenght\" in [recording]"
    );
    assert_eq!(e.path().as_deref(), Some("recording.segment_lenght"));

    let e = config::parse(
        &replace_line(27, r#"url = "http://192.0.2.10/main""#),
        "config.toml",
    )
    .expect_err("http");
    assert_eq!(
        e.to_string(),
        "config.toml:27: cameras[0].streams.main.url: scheme must be rtsp, got \"http\""
    );
}

#[test]
fn password_never_printed() {
    let c = config::parse(BASE, "test.toml").expect("parses");
    let debug = format!("{c:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("***"));
    let pretty = format!("{c:#?}");
    assert!(!pretty.contains(PASSWORD));
    assert!(!c.summary().contains(PASSWORD));
    let secret = Secret(PASSWORD.to_owned());
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(format!("{secret:?}"), "\"***\"");
    assert_eq!(secret.expose(), PASSWORD);

    // Errors on or around the password line: a syntax error (the parser's own rendering would quote the
    // line), a wrong type, both password and password_file, no username.
    let texts = [
        replace_line(23, r#"password = "hunter2-secret"#),
        replace_line(23, r#"password = "hunter2-secret" "hunter2-secret""#),
        replace_line(23, "password = 1234567"),
        replace_line(24, r#"password_file = "/nonexistent""#),
        replace_line(22, ""),
        replace_line(27, r#"url = "rtsp://admin:hunter2-secret@192.0.2.10/main""#),
        replace_line(27, r#"url = "rtsp://admin:hunter2-secret@[::1/main""#),
    ];
    for text in &texts {
        let e = config::parse(text, "test.toml").expect_err("must be refused");
        for s in [e.to_string(), format!("{e:?}")] {
            assert!(!s.contains(PASSWORD), "{s}");
            assert!(!s.contains("1234567"), "{s}");
        }
    }
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("cam.pass");
    std::fs::write(&pw, "file-secret\n").expect("write");
    let text = replace_line(
        23,
        &format!("password_file = {:?}", pw.to_str().expect("utf-8 path")),
    );
    let cluster = config::parse(&text, "test.toml").expect("parses");
    // The cluster keeps the path; the owner node's recorder view reads the file.
    assert_eq!(cluster.cameras[0].password, None);
    assert_eq!(
        cluster.cameras[0]
            .password_file
            .as_ref()
            .map(|f| f.path.clone()),
        Some(pw.clone())
    );
    let c = cluster.recorder("nvr-a").expect("reads the password file");
    assert_eq!(
        c.cameras[0].password,
        Some(Secret("file-secret".to_owned()))
    );
    assert!(!format!("{c:?}").contains("file-secret"));
    // Other nodes never read it.
    std::fs::remove_file(&pw).expect("remove");
    cluster.recorder("nvr-b").expect("nvr-b owns no camera");
    let e = cluster.recorder("nvr-a").expect_err("gone");
    assert!(
        e.to_string()
            .starts_with("test.toml:23: cameras[0].password_file: cannot read"),
        "{e}"
    );

    std::fs::write(&pw, "\n").expect("write");
    let e = cluster.recorder("nvr-a").expect_err("empty");
    assert!(e.to_string().contains("is empty"), "{e}");

    // load() reads the file and names it in errors.
    let cfg = dir.path().join("nvr.toml");
    std::fs::write(&cfg, replace_line(5, "segment_duration_s = 0")).expect("write");
    let e = config::load(&cfg).expect_err("bad");
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!("{}:5: ", cfg.display())),
        "{e}"
    );
    std::fs::write(&cfg, BASE).expect("write");
    assert!(config::load(&cfg).is_ok());
    let e = config::load(&dir.path().join("missing.toml")).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("missing.toml: cannot read"), "{e}");
}

#[test]
fn byte_sizes() {
    let ok: &[(&str, u64)] = &[
        ("0", 0),
        ("1", 1),
        ("1024", 1024),
        ("7 B", 7),
        ("7B", 7),
        ("1 KB", 1_000),
        ("1kB", 1_000),
        ("2 MB", 2_000_000),
        ("3 GB", 3_000_000_000),
        ("4 TB", 4_000_000_000_000),
        ("1 KiB", 1024),
        ("2 MiB", 2 << 20),
        ("500 GiB", 500 << 30),
        ("500GiB", 500 << 30),
        ("  1 GiB  ", 1 << 30),
        ("16 TiB", 16 << 40),
        ("16777215 TiB", 16_777_215 << 40),
    ];
    for &(s, want) in ok {
        assert_eq!(config::parse_byte_size(s), Ok(want), "{s:?}");
    }
    let bad = [
        "",
        "GiB",
        "-1 GiB",
        "1.5 GiB",
        "1 gib",
        "1 Gb",
        "1 G",
        "1 GiB extra",
        "1 2 GiB",
        "16777216 TiB",
        "99999999999999999999",
    ];
    for s in bad {
        assert!(config::parse_byte_size(s).is_err(), "{s:?} accepted");
    }

    // In the file: an integer is bytes, a string has a unit.
    let c = config::parse(&replace_line(16, "max_bytes_per_stream = 123456"), "t").expect("parses");
    assert_eq!(c.retention.max_bytes_per_stream, Some(123_456));
    let c = config::parse(&replace_line(17, "min_free_bytes = 0"), "t").expect("parses");
    assert_eq!(c.retention.min_free_bytes, 0);
    let c = config::parse(&replace_line(30, r#"max_bytes = "2 TB""#), "t").expect("parses");
    assert_eq!(c.cameras[0].streams[0].max_bytes, Some(2_000_000_000_000));
}
