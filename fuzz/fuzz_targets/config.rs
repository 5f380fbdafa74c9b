//! The webhook's config file (`Config::load` reads the file, then `Config::from_yaml`):
//! any bytes are refused with an error that names the file and, for a bad field, the field
//! and the reason; never a panic. A config that loads is a fixed point: its effective YAML
//! (`to_yaml`, what `--print-config` shows) loads again to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_ssh_webhook::config::{Config, Error};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // load() reads the file as UTF-8 and says so otherwise.
    };
    match Config::from_yaml(text, FILE) {
        Ok(cfg) => {
            let yaml = cfg.to_yaml();
            match Config::from_yaml(&yaml, FILE) {
                Ok(again) => {
                    assert_eq!(again, cfg, "effective config reloads differently:\n{yaml}")
                }
                Err(e) => panic!("effective config does not load: {e}\n{yaml}"),
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(FILE), "error without the file: {msg}");
            if let Error::Field { path, reason, .. } = &e {
                assert!(!path.is_empty(), "field error without a field: {msg}");
                assert!(
                    !reason.trim().is_empty(),
                    "field error without a reason: {msg}"
                );
            }
        }
    }
});
