//! The key a request is limited under: its authority as scheme, host and
//! port, the same in every process.

use http::Request;
use http::header::HOST;

/// `scheme://host:port` of the request (host lowercased, the scheme's
/// default port filled in), from its URI, or its `Host` header when the URI
/// is relative.
pub(crate) fn authority_of<B>(req: &Request<B>) -> String {
    let uri = req.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    let (host, port) = match uri.authority() {
        Some(a) => (a.host(), a.port_u16()),
        None => {
            let header = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            match header.rsplit_once(':') {
                Some((h, p)) if !header.ends_with(']') => (h, p.parse().ok()),
                _ => (header, None),
            }
        }
    };
    let port = port.unwrap_or(match scheme {
        "https" => 443,
        _ => 80,
    });
    let mut key = String::with_capacity(scheme.len() + host.len() + 9);
    key.push_str(&scheme.to_ascii_lowercase());
    key.push_str("://");
    key.push_str(&host.to_ascii_lowercase());
    key.push(':');
    key.push_str(&port.to_string());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str, host: Option<&str>) -> String {
        let mut req = Request::get(uri);
        if let Some(h) = host {
            req = req.header(HOST, h);
        }
        authority_of(&req.body(()).unwrap())
    }

    #[test]
    fn the_same_authority_gives_the_same_key_however_it_is_written() {
        assert_eq!(
            key("https://API.example.com/x", None),
            "https://api.example.com:443"
        );
        assert_eq!(
            key("https://api.example.com:443/y?z", None),
            "https://api.example.com:443"
        );
        assert_eq!(
            key("http://api.example.com/", None),
            "http://api.example.com:80"
        );
        assert_eq!(
            key("/v1", Some("Api.Example.com:8080")),
            "http://api.example.com:8080"
        );
        assert_eq!(key("/v1", Some("[::1]:8080")), "http://[::1]:8080");
    }
}
