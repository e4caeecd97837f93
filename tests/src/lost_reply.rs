//! A TCP proxy in front of MongoDB that loses one reply: the first command
//! of a given name goes through to the server, which applies it, and the
//! connection is closed before its reply comes back. What a network cut or
//! a failover does to a write in flight: its outcome is unknown to the
//! client. Everything else passes through unchanged.
//!
//! It reads MongoDB's wire protocol just enough to see which reply answers
//! which command: a message's 16-byte header (length, request id, the id it
//! responds to, opcode) and, for an `OP_MSG` (opcode 2013) with its body
//! first, the body's first field, the command's name. The driver sends no
//! compressed messages unless asked to.

use mongodb::bson::RawDocument;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const OP_MSG: i32 = 2013;

/// A running proxy.
pub struct LostReply {
    /// Where it listens: `127.0.0.1:port`.
    pub address: String,
    lost: Arc<AtomicU64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl LostReply {
    /// Proxy to `upstream` (`host:port`), losing the reply to the first
    /// command named `command`.
    pub async fn start(upstream: &str, command: &'static str) -> LostReply {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the proxy");
        let address = listener.local_addr().unwrap().to_string();
        let lost = Arc::new(AtomicU64::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let upstream = upstream.to_string();
        let accepting = tokio::spawn({
            let lost = lost.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let doomed = Arc::new(Mutex::new(None));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(requests(
                        client_read,
                        server_write,
                        command,
                        armed.clone(),
                        doomed.clone(),
                    ));
                    tokio::spawn(replies(server_read, client_write, doomed, lost.clone()));
                }
            }
        });
        LostReply {
            address,
            lost,
            accepting,
        }
    }

    /// Replies lost so far (0 or 1).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Acquire)
    }
}

impl Drop for LostReply {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// One whole message: its header's fields and every byte of it.
async fn message(from: &mut OwnedReadHalf) -> Option<(i32, i32, i32, Vec<u8>)> {
    let mut header = [0u8; 16];
    from.read_exact(&mut header).await.ok()?;
    let field = |i: usize| i32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    let length = usize::try_from(field(0)).ok().filter(|&n| n >= 16)?;
    let mut bytes = header.to_vec();
    bytes.resize(length, 0);
    from.read_exact(&mut bytes[16..]).await.ok()?;
    Some((field(4), field(8), field(12), bytes))
}

/// The command an `OP_MSG` carries: its body's first field.
fn command_name(bytes: &[u8]) -> Option<String> {
    // Header (16), flag bits (4), then the body section: kind 0, a document.
    let body = bytes.get(21..).filter(|_| bytes.get(20) == Some(&0))?;
    let document =
        RawDocument::from_bytes(body.get(..i32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize)?).ok()?;
    let (name, _) = document.iter().next()?.ok()?;
    Some(name.to_string())
}

async fn requests(
    mut client: OwnedReadHalf,
    mut server: OwnedWriteHalf,
    command: &str,
    armed: Arc<AtomicBool>,
    doomed: Arc<Mutex<Option<i32>>>,
) {
    while let Some((request_id, _, opcode, bytes)) = message(&mut client).await {
        if opcode == OP_MSG && command_name(&bytes).as_deref() == Some(command) && armed.swap(false, Ordering::AcqRel) {
            *doomed.lock().unwrap() = Some(request_id);
        }
        if server.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

async fn replies(
    mut server: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    doomed: Arc<Mutex<Option<i32>>>,
    lost: Arc<AtomicU64>,
) {
    while let Some((_, responds_to, _, bytes)) = message(&mut server).await {
        if Some(responds_to) == *doomed.lock().unwrap() {
            // The server has applied it; the client never hears so.
            lost.fetch_add(1, Ordering::AcqRel);
            let _ = client.shutdown().await;
            return;
        }
        if client.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
