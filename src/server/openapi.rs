//! `GET /api/v1/openapi.json`: the OpenAPI 3 description of every route, kept as a JSON file next
//! to this module and compiled into the binary, so the served document always matches the build.
//!
//! The document and [`super::ROUTES`] (which the router is built from) must list the same
//! operations; the tests below compare them both ways, so a route cannot ship undocumented and the
//! document cannot describe a route that does not exist.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as written in `openapi.json`.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// The (METHOD, path) operations the document describes, sorted.
pub fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut ops = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for m in METHODS {
                if item.get(*m).is_some() {
                    ops.push((m.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    ops.sort();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ROUTES;

    fn doc() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
    }

    #[test]
    fn is_openapi_3() {
        let d = doc();
        assert!(d["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn documents_exactly_the_routes() {
        let documented = documented_operations(&doc());
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        let undocumented: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
        let phantom: Vec<_> = documented.iter().filter(|d| !routes.contains(d)).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            phantom.is_empty(),
            "openapi.json documents routes that do not exist: {phantom:?}"
        );
    }

    /// Mutating operations declare the bearer-token scheme and its 401; reads declare none.
    #[test]
    fn security_matches_the_token_middleware() {
        let d = doc();
        for (method, path) in documented_operations(&d) {
            let op = &d["paths"][&path][method.to_ascii_lowercase()];
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            assert_eq!(secured, method != "GET", "{method} {path}: security");
            assert_eq!(
                op["responses"].get("401").is_some(),
                method != "GET",
                "{method} {path}: 401 response"
            );
        }
    }

    /// Every `$ref` points at a schema that exists.
    #[test]
    fn references_resolve() {
        fn walk(v: &serde_json::Value, d: &serde_json::Value) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(r) = o.get("$ref").and_then(|r| r.as_str()) {
                        let ptr = r.strip_prefix('#').expect("local reference");
                        assert!(d.pointer(ptr).is_some(), "dangling $ref {r}");
                    }
                    o.values().for_each(|x| walk(x, d));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, d)),
                _ => {}
            }
        }
        let d = doc();
        walk(&d, &d);
    }
}
