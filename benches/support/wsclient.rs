//! A lean WebSocket client for load generation (RFC 6455, no extensions).
//!
//! Benchmarks run the clients on the same two cores as the server they measure, so every microsecond a client
//! spends per frame is taken from the server. tungstenite's client allocates and UTF-8-checks every message
//! and reads through a small buffer; this one reads 64 KiB at a time and hands out each frame's payload as
//! a slice of its buffer, which is all a counting, timestamp-reading client needs. It still speaks the
//! protocol properly: the opening handshake, masked client frames, pongs for pings, and the close frame.

#![allow(dead_code)]

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read size, and the starting buffer size.
const READ_CHUNK: usize = 64 * 1024;
/// Largest frame accepted (a gateway snapshot can be large).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Frame opcodes (RFC 6455, 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0;
    /// A text frame.
    pub const TEXT: u8 = 1;
    /// A binary frame.
    pub const BINARY: u8 = 2;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// One open connection.
pub struct LeanWs {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the frame handed out last, consumed on the next call.
    consumed: usize,
}

/// Opens `ws://{addr}{path}` and completes the handshake.
pub async fn connect(addr: &str, path: &str) -> io::Result<LeanWs> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut end = 0;
    let header_end = loop {
        if end == buf.len() {
            return Err(io::Error::other("handshake response too long"));
        }
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Err(io::Error::other("closed during the handshake"));
        }
        end += n;
        if let Some(at) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(LeanWs {
        stream,
        buf,
        start: header_end,
        end,
        consumed: 0,
    })
}

impl LeanWs {
    /// Sends one masked frame.
    pub async fn send(&mut self, op: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | op);
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(opcode::TEXT, text.as_bytes()).await
    }

    /// Sends a close frame with `code` and shuts the write side.
    pub async fn close(&mut self, code: u16) -> io::Result<()> {
        self.send(opcode::CLOSE, &code.to_be_bytes()).await?;
        self.stream.shutdown().await
    }

    /// The next data frame as (opcode, payload), answering pings on the way. `None` once the server closes
    /// the connection (close frame or end of stream).
    pub async fn next_frame(&mut self) -> io::Result<Option<(u8, &[u8])>> {
        self.start += self.consumed;
        self.consumed = 0;
        loop {
            match self.parse_header()? {
                Some((op, header, len)) if self.end - self.start >= header + len => {
                    let payload_at = self.start + header;
                    match op {
                        opcode::PING => {
                            let payload = self.buf[payload_at..payload_at + len].to_vec();
                            self.start = payload_at + len;
                            self.send(opcode::PONG, &payload).await?;
                        }
                        opcode::PONG => self.start = payload_at + len,
                        opcode::CLOSE => return Ok(None),
                        _ => {
                            self.consumed = header + len;
                            return Ok(Some((op, &self.buf[payload_at..payload_at + len])));
                        }
                    }
                }
                needed => {
                    let want = needed.map_or(14, |(_, header, len)| header + len);
                    if !self.fill(want).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// (opcode, header length, payload length) of the frame at `start`, if its header is complete.
    fn parse_header(&self) -> io::Result<Option<(u8, usize, usize)>> {
        let bytes = &self.buf[self.start..self.end];
        if bytes.len() < 2 {
            return Ok(None);
        }
        let op = bytes[0] & 0x0f;
        if bytes[1] & 0x80 != 0 {
            return Err(io::Error::other("server frames must not be masked"));
        }
        let (header, len) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            127 if bytes.len() >= 10 => {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&bytes[2..10]);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(eight)).unwrap_or(usize::MAX),
                )
            }
            126 | 127 => return Ok(None),
            short => (2, usize::from(short)),
        };
        if len > MAX_FRAME {
            return Err(io::Error::other(format!("frame of {len} bytes")));
        }
        Ok(Some((op, header, len)))
    }

    /// Reads more, keeping at least `want` bytes of room after `start`. False at the end of the stream.
    async fn fill(&mut self, want: usize) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.start + want.max(READ_CHUNK / 2) > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if want > self.buf.len() {
                self.buf.resize(want.next_power_of_two(), 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }
}
