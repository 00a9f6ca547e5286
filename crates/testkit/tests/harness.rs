//! The harness itself: servers start, say their port, restart on it, and die with the handle.

use std::net::TcpStream;
use std::time::Duration;

use oprelay_testkit::{eventually, NatsServer};

#[test]
fn starts_restarts_and_stops() {
    let mut server = NatsServer::start();
    let port = server.port();
    assert!(port > 0);
    assert!(server.url().ends_with(&format!(":{port}")));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(server.log().contains("JetStream"), "started with JetStream");

    server.restart();
    assert_eq!(server.port(), port, "same port after restart");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "killed on drop"
    );
}

#[tokio::test]
#[should_panic(expected = "waiting for the impossible")]
async fn eventually_names_what_it_waited_for() {
    eventually(Duration::from_millis(50), "the impossible", || async {
        None::<()>
    })
    .await;
}
