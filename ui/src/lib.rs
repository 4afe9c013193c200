//! The admin web UI: plain HTML, CSS and JavaScript modules with no build step, compiled
//! into the binary so every server serves the same files.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

const ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            bytes: include_bytes!("../assets/index.html"),
            content_type: "text/html; charset=utf-8",
        },
    ),
    (
        "app.js",
        Asset {
            bytes: include_bytes!("../assets/app.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "style.css",
        Asset {
            bytes: include_bytes!("../assets/style.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
];

/// The file at `path` (relative to the UI root), if the UI has one.
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_links_its_script() {
        let index = std::str::from_utf8(asset("index.html").unwrap().bytes).unwrap();
        assert!(index.contains("/ui/app.js"));
        assert!(asset("app.js").is_some() && asset("style.css").is_some());
        assert!(asset("../Cargo.toml").is_none());
    }
}
