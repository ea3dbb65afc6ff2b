//! `/echo`: answers every text and binary message with the same type and
//! bytes, so an RFC 6455 conformance suite can exercise our WebSocket stack
//! (same tungstenite configuration as the gateway). Off by default.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            // Pongs and the close reply are queued by tungstenite; flush them.
            Message::Ping(_) | Message::Close(_) => {
                if ws.flush().await.is_err() {
                    return;
                }
                continue;
            }
            Message::Pong(_) | Message::Frame(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}
