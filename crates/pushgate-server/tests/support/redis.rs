//! A real `redis-server` for tests: the broker's integration tests
//! (crates/pushgate-server/tests/it) and the real-binary tests of
//! crates/pushgate include this file (`#[path]`), so both start Redis the
//! same way. Needs tokio (process, io-util, time) and the redis crate.

// Each including test crate uses what it needs of this.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

/// Awaits `fut` for at most 20 s, failing the test with `what` otherwise.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A real `redis-server` on a loopback port of its own, in a directory of
/// its own (for its append-only file), killed when dropped. Without
/// redis-server installed, [`Redis::start`] skips the test (and fails it
/// where `PUSHGATE_REQUIRE_REDIS` is set, as `scripts/test` does).
pub struct Redis {
    pub port: u16,
    dir: std::path::PathBuf,
    process: Option<tokio::process::Child>,
    role: Role,
}

/// What a process is.
#[derive(Clone)]
enum Role {
    /// A Redis; `durable`: every write in its append-only file before it
    /// answers, so a restart loses nothing.
    Plain { durable: bool },
    /// A Redis that asks for this password (`requirepass`).
    Password(String),
    /// A replica of the Redis on port `of`.
    Replica { of: u16 },
    /// A Sentinel watching the master on port `master` as service `name`.
    Sentinel { master: u16, name: String },
    /// A node of a Redis Cluster (see [`RedisCluster`]).
    ClusterNode,
    /// A Redis that speaks TLS only, with this certificate and key (PEM
    /// files); clients are not asked for one.
    Tls {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

/// What nodes are given as `--broker`.
pub trait BrokerUrl {
    fn url(&self) -> String;
}

impl BrokerUrl for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
}

/// A Redis Cluster of `n` masters on loopback ports, its slots spread
/// evenly (`redis-cli --cluster create`).
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl BrokerUrl for RedisCluster {
    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

impl RedisCluster {
    pub async fn start(n: usize) -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Redis::start_as(Role::ClusterNode).await?);
        }
        let status = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            let mut conn = node.conn().await;
            within("the cluster to be ready", async {
                loop {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    if info.contains("cluster_state:ok") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
        }
        Some(RedisCluster { nodes })
    }
}

impl Redis {
    /// A Redis that keeps nothing across a restart.
    pub async fn start() -> Option<Redis> {
        Self::start_as(Role::Plain { durable: false }).await
    }

    /// A Redis with `appendonly yes` and `appendfsync always`.
    pub async fn start_durable() -> Option<Redis> {
        Self::start_as(Role::Plain { durable: true }).await
    }

    /// A replica of this Redis, once its first sync is done.
    pub async fn start_replica(&self) -> Redis {
        let of = self.port;
        Self::start_as(Role::Replica { of })
            .await
            .expect("installed")
    }

    /// A Sentinel that watches this Redis as the master of `name`, alone
    /// (quorum 1, a master silent for 1 s is down); its `url` is the
    /// broker URL of the service.
    pub async fn start_sentinel(&self, name: &str) -> Redis {
        let role = Role::Sentinel {
            master: self.port,
            name: name.to_owned(),
        };
        Self::start_as(role).await.expect("installed")
    }

    /// A Redis that asks clients for `password` (its `url` has none).
    pub async fn start_with_password(password: &str) -> Option<Redis> {
        Self::start_as(Role::Password(password.to_owned())).await
    }

    /// A Redis that speaks TLS only (`rediss://`), with the certificate
    /// and key in these PEM files.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Option<Redis> {
        let role = Role::Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        Self::start_as(role).await
    }

    async fn start_as(role: Role) -> Option<Redis> {
        if !installed("redis-server") {
            assert!(
                std::env::var_os("PUSHGATE_REQUIRE_REDIS").is_none(),
                "redis-server is not installed (apt-get install redis-server)"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pushgate-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            port: 0,
            dir,
            process: None,
            role,
        };
        // A port another test took between the probe and Redis's bind makes
        // Redis exit: try another.
        for _ in 0..5 {
            redis.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if redis.spawn().await {
                return Some(redis);
            }
        }
        panic!("redis-server did not start on five ports in a row");
    }

    pub fn url(&self) -> String {
        match &self.role {
            Role::Sentinel { name, .. } => {
                format!("redis+sentinel://127.0.0.1:{}/{name}", self.port)
            }
            Role::Tls { .. } => format!("rediss://127.0.0.1:{}", self.port),
            _ => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process on `self.port`; whether it is ready.
    async fn spawn(&mut self) -> bool {
        let mut cmd = tokio::process::Command::new("redis-server");
        if let Role::Sentinel { master, name } = &self.role {
            // Sentinel rewrites its file: one of its own.
            let file = self.dir.join("sentinel.conf");
            let conf = format!(
                "sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n"
            );
            std::fs::write(&file, conf).unwrap();
            cmd.arg(file).arg("--sentinel");
        }
        let port = self.port.to_string();
        match &self.role {
            Role::Tls { cert, key } => {
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(cert);
            }
            _ => {
                cmd.args(["--port", &port]);
            }
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--protected-mode", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&self.dir);
        if !matches!(self.role, Role::Sentinel { .. }) {
            cmd.args(["--save", ""]);
        }
        let ready_line = match &self.role {
            Role::Plain { durable: true } => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
                "Ready to accept connections"
            }
            Role::Plain { durable: false } => {
                cmd.args(["--appendonly", "no"]);
                "Ready to accept connections"
            }
            Role::Replica { of } => {
                cmd.args([
                    "--appendonly",
                    "no",
                    "--replicaof",
                    "127.0.0.1",
                    &of.to_string(),
                ]);
                "MASTER <-> REPLICA sync: Finished with success"
            }
            Role::Sentinel { .. } => "+monitor master",
            Role::Tls { .. } => {
                cmd.args(["--appendonly", "no"]);
                "Ready to accept connections"
            }
            Role::Password(password) => {
                cmd.args(["--appendonly", "no", "--requirepass", password]);
                "Ready to accept connections"
            }
            Role::ClusterNode => {
                cmd.args(["--appendonly", "no", "--cluster-enabled", "yes"])
                    .args(["--cluster-node-timeout", "2000"])
                    .arg("--cluster-config-file")
                    .arg(self.dir.join("nodes.conf"));
                "Ready to accept connections"
            }
        };
        let mut process = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let ready = within("redis-server to start", async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(ready_line) {
                    return true;
                }
            }
            false
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if ready {
            self.process = Some(process);
        }
        ready
    }

    /// Kills the process (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill().await;
        }
    }

    /// Starts it again on the same port (after [`Redis::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "kill it first");
        assert!(
            self.spawn().await,
            "redis-server restarts on port {}",
            self.port
        );
    }

    /// A connection for the test's own commands (to the process itself,
    /// a Sentinel too).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        within(
            "a connection to Redis",
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .await
        .expect("Redis answers")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            let _ = p.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}
