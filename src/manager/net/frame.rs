//! Frames on a TCP stream: a 4-byte little-endian length, then the body, read
//! through a buffer so that a small frame costs one `read`, with the time-outs that
//! keep a silent or trickling peer from holding a thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the connection before a frame began.
    Closed,
    /// The frame announced more bytes than the limit.
    TooLarge(usize),
    /// Reading failed, or a time-out passed (`TimedOut` / `WouldBlock`).
    Io(io::Error),
}

impl From<FrameError> for crate::manager::ManagerError {
    fn from(e: FrameError) -> Self {
        use crate::manager::ManagerError;
        match e {
            FrameError::Closed => ManagerError::Connection(io::ErrorKind::UnexpectedEof.into()),
            FrameError::TooLarge(n) => ManagerError::Protocol(format!("a frame of {n} bytes is over the limit")),
            FrameError::Io(e) => ManagerError::Connection(e),
        }
    }
}

/// Bytes asked of the socket at once; also how much a frame's buffer grows by, so
/// that a peer announcing a huge frame and sending nothing costs one chunk.
const CHUNK: usize = 64 * 1024;

/// A TCP stream read and written in frames.
#[derive(Debug)]
pub(crate) struct Framed {
    stream: TcpStream,
    /// Bytes read but not yet consumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket's read time-out now, to set it only when it changes.
    timeout: Option<Duration>,
}

impl Framed {
    pub(crate) fn new(stream: TcpStream) -> io::Result<Framed> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(None)?;
        Ok(Framed { stream, buf: vec![0; CHUNK], start: 0, end: 0, timeout: None })
    }

    /// Writes one frame (length and body in one write, so that a small frame is one
    /// segment on the wire).
    pub(crate) fn write_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("a frame over 4 GiB"))?;
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
        self.stream.write_all(&out)
    }

    /// Reads one frame of at most `max` bytes. Its first byte may take up to `idle`
    /// (forever when `None`) to come; from then on the whole frame must arrive within
    /// `frame_time` (a peer that trickles bytes is cut off), and all of it by `by`
    /// when given (one deadline for a whole exchange).
    pub(crate) fn read_frame(
        &mut self,
        max: usize,
        idle: Option<Duration>,
        frame_time: Duration,
        by: Option<Instant>,
    ) -> Result<Vec<u8>, FrameError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            match self.fill(idle).map_err(FrameError::Io)? {
                0 => return Err(FrameError::Closed),
                n => self.end = n,
            }
        }
        let now = Instant::now();
        let mut deadline = now.checked_add(frame_time).unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        if let Some(by) = by {
            deadline = deadline.min(by);
        }
        self.wanting(4, deadline)?;
        let len = <[u8; 4]>::try_from(&self.buf[self.start..self.start + 4]).expect("four bytes");
        let n = u32::from_le_bytes(len) as usize;
        if n > max {
            return Err(FrameError::TooLarge(n));
        }
        self.start += 4;
        let mut body = Vec::with_capacity(n.min(CHUNK));
        while body.len() < n {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                self.wanting(1, deadline)?;
            }
            let take = (n - body.len()).min(self.end - self.start);
            body.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
        }
        Ok(body)
    }

    /// Reads until at least `n` (at most 4) unconsumed bytes are buffered, by `deadline`.
    fn wanting(&mut self, n: usize, deadline: Instant) -> Result<(), FrameError> {
        if self.buf.len() - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrameError::Io(io::ErrorKind::TimedOut.into()));
            }
            match self.fill(Some(left)).map_err(FrameError::Io)? {
                0 => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
                got => self.end += got,
            }
        }
        Ok(())
    }

    /// One read into the free end of the buffer, waiting at most `timeout`.
    fn fill(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.timeout != timeout {
            self.stream.set_read_timeout(timeout)?;
            self.timeout = timeout;
        }
        let end = self.end;
        loop {
            match self.stream.read(&mut self.buf[end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}
