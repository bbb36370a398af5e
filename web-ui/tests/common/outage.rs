//! A real camera outage for the timeline's alarms: camsim recorded by `nvr run` (camera `cam`, and
//! with `second` a camera `cam2` on its own camsim that stays up), `nvr-web run`, an admin logged in;
//! camsim killed with `kill -9` until the viewer's timeline shows the camera-down alarm, kept down for
//! a set time, then started again on the same port until the alarm has ended.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{free_port, wait_until, NvrProcess, TestDir};

use super::{client, now_ms, start_camsim, start_web, web_user, write_config, Web, PASSWORD};

/// The processes of one outage test.
pub struct Outage {
    pub dir: TestDir,
    pub web_port: u16,
    /// Logged in as the admin `root` (also a user `alice`, viewer).
    pub admin: Client,
    pub csrf: String,
    pub nvr: NvrProcess,
    pub cam_port: u16,
    sim: Option<NvrProcess>,
    _second: Option<NvrProcess>,
    _web: Web,
}

/// Sealed segments of `camera`/main, oldest first.
pub fn sealed(dir: &TestDir, camera: &str) -> Vec<store::SegmentRow> {
    let Ok(r) = store::Reader::open(
        &dir.join("data"),
        std::sync::Arc::new(base::clock::SystemClock),
    ) else {
        return Vec::new();
    };
    let Ok(Some(id)) = r.find_stream(camera, "main") else {
        return Vec::new();
    };
    r.stream_segments(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state == store::SegmentState::Sealed)
        .collect()
}

impl Outage {
    /// Everything running and `cam` recorded in at least two sealed segments.
    pub fn start(second: bool) -> Outage {
        let dir = TestDir::new();
        let (sim, cam_port) = start_camsim(&dir, None);
        let web_port = free_port();
        let config = write_config(
            &dir,
            "a",
            Some(&format!("rtsp://127.0.0.1:{cam_port}/cam1")),
            web_port,
            "web",
        );
        let second = second.then(|| {
            let (sim2, port2) = start_camsim(&dir, None);
            let mut text = std::fs::read_to_string(&config).expect("config");
            text.push_str(&format!(
                "\n[[cameras]]\nname = \"cam2\"\nnode = \"node-a\"\n[cameras.streams.main]\n\
                 url = \"rtsp://127.0.0.1:{port2}/cam1\"\nrecord = true\n"
            ));
            std::fs::write(&config, text).expect("config");
            sim2
        });
        let nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
        web_user(&dir, &config, &["add", "root", "--role", "admin"]);
        web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
        let web = start_web(&dir, &config, web_port);
        let admin = client(&dir.join("web/tls.crt"), web_port);
        let login: Value = admin
            .post(format!("https://localhost:{web_port}/api/login"))
            .json(&json!({"user": "root", "password": PASSWORD}))
            .send()
            .expect("login")
            .json()
            .expect("login answer");
        let csrf = login["csrf"].as_str().expect("csrf").to_owned();
        assert!(
            wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
                sealed(&dir, "cam").len() >= 2
            }),
            "not two sealed segments: {}",
            nvr.stderr_tail(30)
        );
        Outage {
            dir,
            web_port,
            admin,
            csrf,
            nvr,
            cam_port,
            sim: Some(sim),
            _second: second,
            _web: web,
        }
    }

    /// `GET …/recordings` of `camera`/main over the range: status and answer.
    pub fn timeline(&self, camera: &str, start_ms: i64, end_ms: i64) -> (StatusCode, Value) {
        let r = self
            .admin
            .get(format!(
                "https://localhost:{}/api/streams/{camera}/main/recordings?start_ms={start_ms}&end_ms={end_ms}",
                self.web_port
            ))
            .send()
            .expect("recordings");
        (r.status(), r.json().unwrap_or(Value::Null))
    }

    /// The camera-down alarms of `cam`/main on the timeline of the last ten minutes.
    pub fn down_alarms(&self) -> Vec<Value> {
        let now = now_ms();
        let (_, answer) = self.timeline("cam", now - 600_000, now + 1_000);
        answer["alarms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["kind"] == "camera_down")
            .cloned()
            .collect()
    }

    /// Kills camsim and waits until the timeline shows the open camera-down alarm; returns it.
    pub fn camera_down(&mut self) -> Value {
        if let Some(mut sim) = self.sim.take() {
            sim.kill9();
        }
        let mut found = Vec::new();
        assert!(
            wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
                found = self.down_alarms();
                found.iter().any(|a| a["end_ms"].is_null())
            }),
            "no open camera_down alarm on the timeline: {found:?}\n{}",
            self.nvr.stderr_tail(20)
        );
        found
            .into_iter()
            .find(|a| a["end_ms"].is_null())
            .expect("open alarm")
    }

    /// Keeps the camera down until `down_ms` after the alarm's start (a real outage of that length),
    /// starts camsim again on its port and waits until the alarm has ended; returns it.
    pub fn camera_back(&mut self, alarm: &Value, down_ms: i64) -> Value {
        let id = alarm["id"].as_str().expect("id");
        let until = alarm["start_ms"].as_i64().expect("start_ms") + down_ms;
        let wait = until - now_ms();
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait as u64));
        }
        let (sim, _) = start_camsim(&self.dir, Some(self.cam_port));
        self.sim = Some(sim);
        let mut found = Vec::new();
        assert!(
            wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
                found = self.down_alarms();
                found.iter().any(|a| a["id"] == id && a["end_ms"].is_i64())
            }),
            "alarm {id} did not end: {found:?}\n{}",
            self.nvr.stderr_tail(20)
        );
        found.into_iter().find(|a| a["id"] == id).expect("alarm")
    }
}
