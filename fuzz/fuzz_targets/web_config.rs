//! The `--web-config` reader: YAML into the exporter-toolkit settings, and
//! for a configuration whose PEM is all inline, the certificate and key
//! parsing and rustls configuration built from it (no file is read).
#![no_main]

use cwdiag::serve::webconfig::{self, Pem};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = webconfig::parse(data, Path::new("/nonexistent/cwdiag")) else {
        return;
    };
    if let Some(tls) = &cfg.tls {
        let inline = |p: &Pem| matches!(p, Pem::Inline(_));
        if inline(&tls.cert) && inline(&tls.key) && tls.client_ca.as_ref().is_none_or(inline) {
            let _ = tls.server_config();
        }
    }
});
