//! The smallest Redis (RESP2) client the peer benchmark needs: one connection, one command in
//! flight, replies of at most one array level of bulk strings. A dependency for one benchmark
//! would cost every build of `agentctl`; this is the whole protocol the peer uses.

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A reply the peer benchmark reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    Simple(String),
    Integer(i64),
    /// `None` is Redis's nil (an empty list for BLMOVE after its timeout).
    Bulk(Option<Vec<u8>>),
    /// Items are bulk strings (what EVAL of the lease script returns).
    Array(Vec<Vec<u8>>),
}

pub(super) struct RespConnection {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl RespConnection {
    pub(super) async fn connect(addr: &str) -> anyhow::Result<RespConnection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to redis at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RespConnection {
            stream: BufReader::new(stream),
            out: Vec::with_capacity(512),
        })
    }

    /// Sends one command and reads its reply; a Redis error reply is an `Err` naming it.
    pub(super) async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.out.clear();
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&self.out).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let line = self.read_line().await?;
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => bail!("redis answered an error: {rest}"),
            ":" => Ok(Reply::Integer(rest.parse().context("redis integer reply")?)),
            "$" => Ok(Reply::Bulk(self.read_bulk(rest).await?)),
            "*" => {
                let count: i64 = rest.parse().context("redis array length")?;
                let mut items = Vec::with_capacity(count.max(0) as usize);
                for _ in 0..count.max(0) {
                    let header = self.read_line().await?;
                    let Some(length) = header.strip_prefix('$') else {
                        bail!("redis array item is not a bulk string: {header:?}");
                    };
                    if let Some(item) = self.read_bulk(length).await? {
                        items.push(item);
                    }
                }
                Ok(Reply::Array(items))
            }
            _ => bail!("unexpected redis reply {line:?}"),
        }
    }

    async fn read_bulk(&mut self, length: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let length: i64 = length.parse().context("redis bulk length")?;
        if length < 0 {
            return Ok(None);
        }
        let mut bytes = vec![0; length as usize + 2];
        self.stream.read_exact(&mut bytes).await?;
        bytes.truncate(length as usize);
        Ok(Some(bytes))
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("redis closed the connection");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            bail!("empty redis reply line");
        }
        Ok(line)
    }
}
