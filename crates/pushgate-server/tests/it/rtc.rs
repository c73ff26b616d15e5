//! WebRTC signaling over the wire: rooms show their members' connection
//! ids, a `signal` reaches exactly its target on any held transport, and
//! every refusal reaches nobody.

use serde_json::{json, Value};

use crate::common::*;

/// A WebSocket in `room`; returns it and its `subscribed` reply.
async fn member(server: &TestServer, room: &str) -> (Ws, Value) {
    let mut ws = server.ws("/ws").await;
    let reply = ws.subscribe(room).await;
    assert!(reply["room"]["client"].is_string(), "{reply}");
    (ws, reply)
}

fn client(subscribed: &Value) -> String {
    subscribed["room"]["client"].as_str().unwrap().to_string()
}

fn signal(room: &str, to: &str, data: Value) -> Value {
    json!({"type":"signal","room":room,"to":to,"data":data})
}

#[tokio::test]
async fn members_see_each_others_connection_ids_and_a_signal_reaches_its_target_alone() {
    let server = start().await;
    let (mut a, ra) = member(&server, "room:t").await;
    assert_eq!(ra["room"]["members"], json!([]));
    assert_eq!(ra["room"]["ice_servers"], json!([]));
    let (mut b, rb) = member(&server, "room:t").await;
    let (mut c, rc) = member(&server, "room:t").await;
    let (ida, idb, idc) = (client(&ra), client(&rb), client(&rc));
    assert_eq!(rb["room"]["members"], json!([{"client":ida,"user":null}]));
    assert_eq!(
        rc["room"]["members"],
        json!([{"client":ida,"user":null},{"client":idb,"user":null}])
    );
    for id in [&idb, &idc] {
        let v = a.next_json().await;
        assert_eq!(
            (&v["type"], &v["client"]),
            (&json!("join"), &json!(id)),
            "{v}"
        );
    }
    assert_eq!(b.next_json().await["client"], json!(idc));

    let offer = json!({"description":{"type":"offer","sdp":"v=0\r\n<script>"}});
    let reply = a.command(signal("room:t", &idb, offer.clone())).await;
    assert_eq!(reply, json!({"type":"signaled","room":"room:t","to":idb}));
    assert_eq!(
        b.next_json().await,
        json!({"type":"signal","room":"room:t","from":ida,"user":null,"data":offer})
    );
    // c got nothing: the next thing it hears is what is sent to it next.
    a.command(signal("room:t", &idc, json!("barrier"))).await;
    let v = c.next_json().await;
    assert_eq!(
        (&v["type"], &v["data"]),
        (&json!("signal"), &json!("barrier")),
        "{v}"
    );

    // A member whose socket dies is seen to leave.
    drop(c);
    let v = a.next_json().await;
    assert_eq!(
        (&v["type"], &v["client"]),
        (&json!("leave"), &json!(idc)),
        "{v}"
    );
    let v = b.next_json().await;
    assert_eq!(v["type"], "leave", "{v}");
    // Signals are never history.
    server.publish("room:t", json!("kept")).await;
    let (status, history) = server
        .json_response(
            server
                .http
                .get(server.url("/api/history?channel=room:t&since=earliest")),
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{history}");
    assert_eq!(messages[0]["data"], "kept");
    let metrics = server.metrics_text().await;
    assert_eq!(metric(&metrics, "pushgate_signals_relayed_total"), Some(2));
}

#[tokio::test]
async fn refused_signals_are_answered_with_their_code_and_reach_nobody() {
    let server = start_with(|c| c.max_signal_size = 1024).await;
    let (mut a, ra) = member(&server, "room:r").await;
    let (mut b, rb) = member(&server, "room:r").await;
    let (elsewhere, re) = member(&server, "room:other").await;
    let mut outsider = server.ws("/ws").await;
    outsider.subscribe("news").await;
    let (ida, idb, ide) = (client(&ra), client(&rb), client(&re));
    assert_eq!(a.next_json().await["type"], "join");

    // Senders: 0 is a (in the room), 1 a member of another room, 2 in no room.
    let mut senders = [a, elsewhere, outsider];
    let refused = [
        (0, signal("room:r", "987654", json!(1)), "unknown_client"),
        (0, signal("room:r", &ide, json!(1)), "unknown_client"),
        (0, signal("room:r", &ida, json!(1)), "unknown_client"),
        (0, signal("room:r", "not-an-id", json!(1)), "unknown_client"),
        (1, signal("room:r", &idb, json!(1)), "not_in_room"),
        (2, signal("room:r", &idb, json!(1)), "not_in_room"),
        (0, signal("news", &idb, json!(1)), "bad_request"),
        (
            0,
            signal("room:r", &idb, json!("x".repeat(1100))),
            "too_large",
        ),
    ];
    for (sender, mut command, code) in refused {
        command["id"] = json!(7);
        let reply = senders[sender].command(command.clone()).await;
        assert_eq!(reply["type"], "error", "{command} → {reply}");
        assert_eq!(reply["code"], code, "{command} → {reply}");
        assert_eq!(reply["id"], 7);
    }
    let [mut a, mut elsewhere, _outsider] = senders;
    // The barrier: the next frame b gets is the legitimate signal sent after.
    a.command(signal("room:r", &idb, json!("legit"))).await;
    let v = b.next_json().await;
    assert_eq!(
        (&v["data"], &v["from"]),
        (&json!("legit"), &json!(ida)),
        "{v}"
    );
    elsewhere.command(json!({"type":"ping"})).await;
    let metrics = server.metrics_text().await;
    // An id that is no number is refused by the decoder, before it is a signal.
    assert_eq!(metric(&metrics, "pushgate_signal_errors_total"), Some(7));
}

#[tokio::test]
async fn http_clients_signal_through_post_command_and_receive_on_their_stream() {
    let server = start().await;
    let mut sse = server.sse("channel=room:h").await;
    let joined = sse.expect_subscribed("room:h").await;
    let (ids, key) = (
        client(&joined),
        joined["room"]["client_key"].as_str().unwrap().to_string(),
    );
    let (mut ws, rw) = member(&server, "room:h").await;
    let idw = client(&rw);
    assert_eq!(rw["room"]["members"], json!([{"client":ids,"user":null}]));
    let e = sse.next_event().await;
    assert_eq!((e.event.as_str(), e.id.as_deref()), ("join", None), "{e:?}");

    // SSE → WebSocket, through /command with the stream's id and key.
    let from_sse = json!({"type":"signal","room":"room:h","to":idw,"from":ids,
        "client_key":key,"data":{"candidate":null},"id":1});
    let (status, reply) = server.command(from_sse.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"type":"signaled","id":1,"room":"room:h","to":idw})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"type":"signal","room":"room:h","from":ids,"user":null,"data":{"candidate":null}})
    );
    // WebSocket → SSE: an event named signal, with no id (it moves no cursor).
    ws.command(signal("room:h", &ids, json!({"answer":1})))
        .await;
    let e = sse.next_event().await;
    assert_eq!(
        (e.event.as_str(), e.id.as_deref()),
        ("signal", None),
        "{e:?}"
    );
    assert_eq!(e.json()["from"], json!(idw));
    assert_eq!(e.json()["data"], json!({"answer":1}));

    // Another stream's key, no key, a stranger: refused, delivered to nobody.
    let forged = json!({"type":"signal","room":"room:h","to":idw,"from":ids,
        "client_key":"AAAAAAAAAAAAAAAAAAAAAA","data":"forged"});
    let (status, reply) = server.command(forged.to_string()).await;
    assert_eq!(
        (status, &reply["code"]),
        (403, &json!("forbidden")),
        "{reply}"
    );
    let keyless = json!({"type":"signal","room":"room:h","to":idw,"from":ids,"data":"x"});
    let (status, reply) = server.command(keyless.to_string()).await;
    assert_eq!(
        (status, &reply["code"]),
        (400, &json!("bad_request")),
        "{reply}"
    );
    let (status, reply) = server
        .command(signal("room:h", &idw, json!("anonymous")).to_string())
        .await;
    assert_eq!(
        (status, &reply["code"]),
        (403, &json!("not_in_room")),
        "{reply}"
    );
    let (status, reply) = server
        .command(
            json!({"type":"signal","room":"room:h","to":"424242","from":ids,
                "client_key":key,"data":1})
            .to_string(),
        )
        .await;
    assert_eq!(
        (status, &reply["code"]),
        (404, &json!("unknown_client")),
        "{reply}"
    );
    // The barrier.
    server.command(from_sse.to_string()).await;
    let v = ws.next_json().await;
    assert_eq!(
        (&v["type"], &v["data"]),
        (&json!("signal"), &json!({"candidate":null})),
        "{v}"
    );

    // NDJSON streams are members too.
    let mut nd = server.ndjson("channel=room:h").await;
    let joined = nd.expect_subscribed("room:h").await;
    let idn = client(&joined);
    assert_eq!(
        joined["room"]["members"].as_array().unwrap().len(),
        2,
        "{joined}"
    );
    ws.next_json().await;
    ws.command(signal("room:h", &idn, json!("to ndjson"))).await;
    let v = nd.next_json().await;
    assert_eq!(
        (&v["type"], &v["data"]),
        (&json!("signal"), &json!("to ndjson")),
        "{v}"
    );

    // And hidden iframes: a signal is one more script call.
    let mut frame = server.iframe("channel=room:h", "pg.on").await;
    let joined = frame.next_call().await;
    let idf = client(&joined);
    ws.next_json().await;
    ws.command(signal("room:h", &idf, json!("<to iframe>")))
        .await;
    let v = frame.next_call().await;
    assert_eq!(
        (&v["type"], &v["data"]),
        (&json!("signal"), &json!("<to iframe>")),
        "{v}"
    );
}

#[tokio::test]
async fn polls_are_no_members() {
    let server = start().await;
    let (mut ws, rw) = member(&server, "room:p").await;
    let polled = server.poll("/poll?channel=room:p").await;
    assert!(polled.messages.is_empty());
    // No join was announced: the next frame is the pong.
    assert_eq!(ws.command(json!({"type":"ping"})).await["type"], "pong");
    let (status, reply) = server
        .command(signal("room:p", &client(&rw), json!(1)).to_string())
        .await;
    assert_eq!(
        (status, &reply["code"]),
        (403, &json!("not_in_room")),
        "{reply}"
    );
}

#[tokio::test]
async fn ice_servers_come_from_the_config_with_turn_credentials_per_client() {
    let server = start_with(|c| {
        c.ice_servers = vec![
            "stun:stun.example.org:3478".into(),
            "turn:turn.example.org:3478?transport=udp".into(),
        ];
        c.turn_secret = Some("north".into());
    })
    .await;
    let (_ws, reply) = member(&server, "room:i").await;
    let ice = &reply["room"]["ice_servers"];
    assert_eq!(ice[0], json!({"urls":["stun:stun.example.org:3478"]}));
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, name) = username.split_once(':').unwrap();
    assert_eq!(name, format!("c{}", client(&reply)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        expiry > now + 86_000 && expiry <= now + 86_400 + 60,
        "{username}"
    );
    let (expected_user, expected_credential) =
        pushgate_core::rtc::turn_rest_credentials("north", expiry, name);
    assert_eq!(username, expected_user);
    assert_eq!(ice[1]["credential"], json!(expected_credential));
}

/// A real coturn (Debian's `coturn`) on a loopback port, with
/// `use-auth-secret`: whether the TURN credentials pushgate hands out are
/// what a TURN server accepts. scripts/test installs coturn and sets
/// `PUSHGATE_REQUIRE_COTURN=1`; elsewhere the test is skipped, saying so,
/// when coturn is missing.
struct Coturn {
    port: u16,
    _process: tokio::process::Child,
    /// Its pid file and (unused) user database; removed on drop.
    dir: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Coturn {
    async fn start(secret: &str) -> Option<Coturn> {
        if !installed("turnserver") || !installed("turnutils_uclient") {
            assert!(
                std::env::var_os("PUSHGATE_REQUIRE_COTURN").is_none(),
                "coturn is not installed (apt-get install coturn)"
            );
            eprintln!("skipped: coturn is not installed (apt-get install coturn)");
            return None;
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("pushgate-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut process = tokio::process::Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=pushgate.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--log-file=stdout",
                "--simple-log",
                "--allow-loopback-peers",
            ])
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver starts");
        // Ready once its authentication threads run (the last start-up line).
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
        within("coturn to start", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("(auth thread)") {
                    return;
                }
            }
            panic!("turnserver exited while starting");
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Coturn {
            port,
            _process: process,
            dir,
        })
    }

    /// Whether coturn grants a relay allocation with these credentials
    /// (`turnutils_uclient -y`: two allocations that send each other a packet).
    async fn allocates(&self, username: &str, credential: &str) -> bool {
        let status = tokio::process::Command::new("turnutils_uclient")
            .args(["-y", "-c", "-n", "1", "-m", "1", "-l", "100"])
            .args(["-u", username, "-w", credential])
            .args(["-p", &self.port.to_string(), "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        // Its own run takes about 6 s (it waits out its packets): more than
        // a STEP leaves under a loaded test run.
        let bound = std::time::Duration::from_secs(60);
        tokio::time::timeout(bound, status)
            .await
            .expect("turnutils_uclient ended within 60 s")
            .unwrap()
            .success()
    }
}

#[tokio::test]
async fn coturn_accepts_the_turn_credentials_handed_to_a_member_and_no_others() {
    let secret = "a shared secret of pushgate and coturn";
    let Some(coturn) = Coturn::start(secret).await else {
        return;
    };
    let server = start_with(|c| {
        c.ice_servers = vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)];
        c.turn_secret = Some(secret.into());
    })
    .await;
    let (_ws, reply) = member(&server, "room:turn").await;
    let turn = &reply["room"]["ice_servers"][0];
    let (username, credential) = (
        turn["username"].as_str().unwrap(),
        turn["credential"].as_str().unwrap(),
    );
    assert!(coturn.allocates(username, credential).await, "{turn}");
    // Expired credentials, another secret's, a wrong password: refused.
    let name = username.split_once(':').unwrap().1;
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let (old_user, old_credential) = pushgate_core::rtc::turn_rest_credentials(secret, past, name);
    let (user, other) =
        pushgate_core::rtc::turn_rest_credentials("another secret", past + 3600, name);
    for (u, c) in [
        (old_user.as_str(), old_credential.as_str()),
        (user.as_str(), other.as_str()),
        (username, "wrong"),
    ] {
        assert!(!coturn.allocates(u, c).await, "{u} {c} was accepted");
    }
}
