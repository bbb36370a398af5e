//! A node that keeps a signed log, as exports need: its own keys and a standby's pins (the standby is
//! never started) in the cluster file written by `write_config`.

use std::path::Path;
use std::time::Duration;

use testkit::{free_port, nvr_sync_bin, NvrProcess, TestDir};

/// `nvr-sync keygen --dir DIR --node NODE`; returns `(cert_sha256, signing_public_key)`.
pub fn keygen(dir: &TestDir, id_dir: &Path, node: &str) -> (String, String) {
    let args = ["keygen", "--dir", &id_dir.to_string_lossy(), "--node", node];
    let mut p = NvrProcess::spawn_program(dir, "nvr-sync-keygen", nvr_sync_bin(), &args, &[]);
    let status = p.wait_exit(Duration::from_secs(60)).expect("keygen exits");
    assert!(status.success(), "keygen: {}", p.stderr());
    let text = std::fs::read_to_string(id_dir.join("identity.toml")).expect("identity.toml");
    let t: toml::Table = text.parse().expect("identity toml");
    let get = |k: &str| t[k].as_str().expect(k).to_owned();
    (get("cert_sha256"), get("signing_public_key"))
}

/// Gives node-a of `config` fresh keys and adds a standby node-b with its pins; returns node-a's
/// signing public key.
pub fn add_node_keys(dir: &TestDir, config: &Path) -> String {
    std::fs::remove_file(dir.join("identity/identity.toml")).expect("rm identity");
    let (cert_a, key_a) = keygen(dir, &dir.join("identity"), "node-a");
    let (cert_b, key_b) = keygen(dir, &dir.join("identity-b"), "node-b");
    std::fs::remove_file(dir.join("identity-b/identity.toml")).expect("rm identity-b");
    let text = std::fs::read_to_string(config).expect("config");
    let text = text.replacen(
        "role = \"primary\"\n",
        &format!(
            "role = \"primary\"\ncert_sha256 = \"{cert_a}\"\nsigning_public_key = \"{key_a}\"\n"
        ),
        1,
    );
    let text = format!(
        "{text}\n[[nodes]]\nname = \"node-b\"\nrole = \"standby\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
         cert_sha256 = \"{cert_b}\"\nsigning_public_key = \"{key_b}\"\naddress = \"127.0.0.1:{}\"\nprotects = [\"node-a\"]\n",
        dir.join("data-b").display(),
        dir.join("identity-b").display(),
        free_port()
    );
    std::fs::write(config, text).expect("config");
    key_a
}
