//! The status page (`GET /`) as a person sees it: headless Chromium (Debian package `chromium`)
//! loads it from the real demo daemon, takes a screenshot that must be a real, non-trivial PNG,
//! and dumps the DOM, which must show both demo tables, their histograms and the jobs.
//!
//! `ICEMAINT_UPDATE_SCREENSHOT=1` also copies the screenshot to `docs/status-page.png`.

use std::path::Path;
use std::process::Command;

use crate::ops_util::{Daemon, repo_root, require_tool};

/// Runs headless Chromium with the flags that keep it from reaching anything but `url`.
fn chromium(profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let bin = require_tool("chromium", "chromium");
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// Width and height from a PNG's IHDR chunk, or None when `bytes` is not a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

#[test]
fn status_page_renders_in_headless_chromium() {
    let d = Daemon::demo();
    let url = format!("http://{}/", d.addr);
    let r = d.get("/").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));

    let work = tempfile::tempdir().unwrap();
    let shot = work.path().join("status.png");
    let out = chromium(
        &work.path().join("profile"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
        &url,
    );
    let bytes = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium said:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(png_size(&bytes), Some((1280, 900)), "not a 1280x900 PNG");
    // A blank page compresses to a few kilobytes; text, tables and bars do not.
    assert!(
        bytes.len() > 20_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    if std::env::var_os("ICEMAINT_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, repo_root().join("docs/status-page.png")).unwrap();
    }

    let out = chromium(&work.path().join("profile"), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "<title>icemaint status</title>",
        "metrics.repartitioned_data",
        "metrics.rollups_1m",
        "id=\"tables\"",
        "id=\"jobs\"",
        "Data file sizes",
        "&lt; 1 MiB",
        "reconcile",
        "repartitioned",
        "rollups",
    ] {
        assert!(dom.contains(needle), "{needle} not in the page:\n{dom}");
    }
    // Read-only: no forms or scripts.
    assert!(!dom.contains("<form") && !dom.contains("<script"), "{dom}");
}
