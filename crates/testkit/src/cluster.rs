//! A JetStream cluster on loopback, as a deployment runs one: every node its own process,
//! store directory, client port and route port, all routes listed in every node's config.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::{free_port, NatsOptions, NatsServer};

/// One or more nats-server nodes. With one node there is no `cluster` block: the same type
/// serves tests that run a single server and tests that run three.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    names: Vec<String>,
    http_ports: Vec<u16>,
}

impl NatsCluster {
    /// Starts `size` nodes named `n1`, `n2`, …; `options` (authorization, TLS, environment)
    /// apply to every node. Returns once every node reports JetStream healthy.
    pub fn start(size: usize, options: NatsOptions) -> NatsCluster {
        assert!(size >= 1, "a cluster has at least one node");
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut http_ports = Vec::new();
        // Every node must be able to reach a quorum before any says it is healthy, so all are
        // started before waiting for health.
        for (i, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mut extra = format!("server_name: {name}\n");
            if size > 1 {
                extra.push_str(&format!(
                    "cluster {{\n  name: oprelay\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{}]\n{}\n}}\n",
                    routes.join(", "),
                    options.cluster_config
                ));
            }
            extra.push_str(&options.extra_config);
            let http_port = free_port();
            nodes.push(NatsServer::start_with(NatsOptions {
                extra_config: extra,
                env: options.env.clone(),
                port: if size > 1 { free_port() } else { options.port },
                http_port,
                ..Default::default()
            }));
            names.push(name);
            http_ports.push(http_port);
        }
        let cluster = NatsCluster {
            nodes,
            names,
            http_ports,
        };
        for i in 0..size {
            cluster.wait_healthy(i);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Comma-separated client URLs of every node, as a client is configured for a cluster.
    pub fn url(&self) -> String {
        self.urls_with(|n| n.url())
    }

    /// The client URLs built by `url_of` for every node, comma-separated.
    pub fn urls_with(&self, url_of: impl Fn(&NatsServer) -> String) -> String {
        self.nodes.iter().map(url_of).collect::<Vec<_>>().join(",")
    }

    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node with this `server_name` (`n1`…), as stream info names leaders.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == server_name)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Process ids of the running nodes (benchmarks add up their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(NatsServer::pid).collect()
    }

    /// SIGKILL of node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with its store, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_healthy(i);
    }

    /// Waits until node `i`'s `/healthz` answers 200: JetStream is up and, in a cluster,
    /// caught up with the meta leader.
    pub fn wait_healthy(&self, i: usize) {
        let port = self.http_ports[i];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            match healthz(port) {
                Ok(true) => return,
                Ok(false) => last = "not healthy yet".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "nats node {} not healthy within 60 s ({last}); its log:\n{}",
            self.names[i],
            self.nodes[i].log()
        );
    }
}

/// `GET /healthz` on a nats-server's monitoring port: whether it answered 200 (JetStream up
/// and, in a cluster, current).
pub fn healthz(port: u16) -> std::io::Result<bool> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
}

/// The node (`n1`…) leading a stream's replicas, as JetStream reports it; `None` while there
/// is none (an election) or the question cannot be answered.
pub async fn stream_leader(
    js: &oprelay_bus::async_nats::jetstream::Context,
    stream: &str,
) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}
