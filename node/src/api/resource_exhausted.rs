//! Maps tonic's answer to an oversized request (OUT_OF_RANGE, "message length too large")
//! to RESOURCE_EXHAUSTED, the code gRPC specifies for messages over the size limit.

use http::HeaderValue;
use tower::util::MapResponseLayer;

const GRPC_OUT_OF_RANGE: &str = "11";
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// The layer to add to the client server.
#[allow(non_upper_case_globals)]
pub const Layer: MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
> = MapResponseLayer::new(rewrite as fn(_) -> _);

fn rewrite(mut resp: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    rewrite_headers(resp.headers_mut());
    resp
}

fn rewrite_headers(headers: &mut http::HeaderMap) {
    let too_large = headers
        .get("grpc-status")
        .is_some_and(|s| s == GRPC_OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if too_large {
        headers.insert(
            "grpc-status",
            HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_oversize_out_of_range_becomes_resource_exhausted() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"),
        );
        rewrite_headers(&mut h);
        assert_eq!(h["grpc-status"], "8");

        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("index%20out%20of%20range"),
        );
        rewrite_headers(&mut h);
        assert_eq!(h["grpc-status"], "11");
    }
}
