//! Which resource a request path names. Upload IDs are validated here, before any
//! file path is ever built from them.

use crate::storage::id::UploadId;
use crate::storage::layout::parse_upload_id;

/// A routed request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `<base>` or `<base>/`: OPTIONS and POST (creation).
    Collection,
    /// `<base>/<id>` or `<base>/<id>/` with a valid upload ID.
    Upload(UploadId),
    /// Under the base path but not a valid upload ID (`<base>/a%2fb`): 404, with
    /// the tus headers every answer under the base path carries.
    BadId,
    /// `/health`, always at the root.
    Health,
    /// `/metrics`, always at the root.
    Metrics,
    /// `/ready`, always at the root.
    Ready,
    /// Anything else, including malformed IDs.
    NotFound,
}

impl Route {
    /// The methods allowed on this route, for 405's `Allow` (given what is enabled).
    pub fn allow(self, creation: bool, termination: bool) -> &'static str {
        match (self, creation, termination) {
            (Route::Collection, true, _) => "OPTIONS, POST",
            (Route::Collection, false, _) => "OPTIONS",
            (Route::Upload(_), _, true) => "OPTIONS, HEAD, PATCH, DELETE",
            (Route::Upload(_), _, false) => "OPTIONS, HEAD, PATCH",
            (Route::Health | Route::Metrics | Route::Ready, _, _) => "GET, HEAD",
            (Route::NotFound | Route::BadId, _, _) => "",
        }
    }

    /// Whether the route is under the tus base path (its answers carry `Tus-Resumable`).
    pub fn is_tus(self) -> bool {
        matches!(self, Route::Collection | Route::Upload(_) | Route::BadId)
    }
}

/// Routes `path` (the request-target without its query) against the base path `base`,
/// which is either empty (tus at the root) or `/segment[/segment...]` without a trailing
/// slash.
pub fn route(path: &str, base: &str) -> Route {
    if path == "/health" || path == "/health/" {
        return Route::Health;
    }
    if path == "/metrics" || path == "/metrics/" {
        return Route::Metrics;
    }
    if path == "/ready" || path == "/ready/" {
        return Route::Ready;
    }
    let Some(rest) = path.strip_prefix(base) else {
        return Route::NotFound;
    };
    // `rest` is what follows the base: "", "/", "/<id>" or "/<id>/".
    if rest.is_empty() || rest == "/" {
        return Route::Collection;
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Route::NotFound; // "/filesX"
    };
    let segment = rest.strip_suffix('/').unwrap_or(rest);
    match parse_upload_id(segment) {
        Some(id) => Route::Upload(id),
        None => Route::BadId,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1";

    #[test]
    fn table() {
        let id = parse_upload_id(ID).unwrap();
        let cases: &[(&str, &str, Route)] = &[
            ("/files", "/files", Route::Collection),
            ("/files/", "/files", Route::Collection),
            (
                "/files/9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1",
                "/files",
                Route::Upload(id),
            ),
            (
                "/files/9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1/",
                "/files",
                Route::Upload(id),
            ),
            (
                "/files//9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1",
                "/files",
                Route::BadId,
            ),
            (
                "/files/my-db_key.7",
                "/files",
                Route::Upload(parse_upload_id("my-db_key.7").unwrap()),
            ),
            ("/files/x.info", "/files", Route::BadId),
            ("/files/x.chk/", "/files", Route::BadId),
            ("/files/a%2fb", "/files", Route::BadId),
            ("/files/.hidden", "/files", Route::BadId),
            ("/files/../etc/passwd", "/files", Route::BadId),
            ("/files/..%2f..%2fetc", "/files", Route::BadId),
            ("/files/a/b", "/files", Route::BadId),
            ("/filesX", "/files", Route::NotFound),
            ("/nope", "/files", Route::NotFound),
            ("//files", "/files", Route::NotFound),
            ("/health", "/files", Route::Health),
            ("/health", "", Route::Health),
            ("/metrics", "", Route::Metrics),
            ("/ready/", "/files", Route::Ready),
            ("/", "", Route::Collection),
            (
                "/9e9dd6f5-44b5-4c1c-a0a6-43e1d9c7a0b1",
                "",
                Route::Upload(id),
            ),
            ("/a/b/", "/a/b", Route::Collection),
        ];
        for (path, base, want) in cases {
            assert_eq!(route(path, base), *want, "{path} under {base:?}");
        }
    }
}
