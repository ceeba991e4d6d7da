//! The demo page, served by the API port under `/demo/` when `demo.enabled`
//! is set: `examples/web/` and `clients/js/goim.js`, built into the binary.
//!
//! Owns: nothing but three static files. Must never: serve anything but
//! these (no file system access from a request).

/// The file for a `/demo/...` path, with its content type.
pub fn file(path: &[u8]) -> Option<(&'static str, &'static str)> {
    match path {
        b"/demo" | b"/demo/" | b"/demo/index.html" => {
            Some(("text/html; charset=utf-8", include_str!("../../examples/web/index.html")))
        }
        b"/demo/app.js" => Some(("text/javascript; charset=utf-8", include_str!("../../examples/web/app.js"))),
        b"/demo/goim.js" => Some(("text/javascript; charset=utf-8", include_str!("../../clients/js/goim.js"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_its_scripts_only() {
        assert!(file(b"/demo/").is_some_and(|(kind, body)| kind.starts_with("text/html") && body.contains("app.js")));
        assert!(file(b"/demo/goim.js").is_some_and(|(_, body)| body.contains("export")));
        assert!(file(b"/demo/app.js").is_some());
        assert!(file(b"/demo/../Cargo.toml").is_none());
    }
}
