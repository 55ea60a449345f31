//! Config loading: bytes as UTF-8 -> `Config::from_toml_with_env`. Any text is either a valid
//! configuration or a list of issues; neither parsing, validation nor rendering may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_with_env(text, "fuzz.toml", &|_| Some("x".into())) {
        Ok(config) => {
            let _ = config.check_assembled();
            let _ = format!("{config:?}");
        }
        Err(err) => {
            let _ = err.to_string();
            if let ConfigError::Invalid { issues, .. } = &err {
                assert!(!issues.is_empty(), "an invalid config names at least one issue");
            }
        }
    }
});
