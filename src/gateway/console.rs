//! The browser console's static files, embedded so the binary alone serves
//! them. Off unless `server.console = true`.

pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

static INDEX: Asset =
    Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../assets/console.html") };
static CLIENT_JS: Asset =
    Asset { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../assets/pushgate.js") };

pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/pushgate.js" => Some(&CLIENT_JS),
        _ => None,
    }
}
