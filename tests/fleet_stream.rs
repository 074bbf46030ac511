//! The agent's stream reader (src/fleet/stream.rs) against a real redis-server: it connects as
//! the `redis` crate does (ACL user and password, database, RESP2 or RESP3), reads what was
//! added to the stream (entries larger than one socket read included), gets nothing when a
//! blocking read times out, and fails with the crate's own error kinds.

use jailsink::fleet::stream::{OwnedEntry as Entry, StreamReader};
use redis::RedisResult;
use std::time::Duration;

use crate::redis_support::Redis;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str) -> RedisResult<StreamReader> {
    let client = redis::Client::open(url)?;
    StreamReader::connect(&client, None).await
}

/// What one XREAD returns, copied out of the reader's buffer.
async fn read(
    reader: &mut StreamReader,
    key: &str,
    from: &str,
    count: usize,
    block: Duration,
) -> RedisResult<Vec<Entry>> {
    Ok(reader.xread(key, from, count, block).await?.into_owned())
}

/// Adds entries through the `redis` crate; returns them as the stream holds them.
async fn add(url: &str, key: &str, entries: &[Vec<(String, String)>]) -> Vec<Entry> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut out = Vec::new();
    for fields in entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let id: String = cmd.query_async(&mut conn).await.unwrap();
        out.push((id, fields.clone()));
    }
    out
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn stream_reader_reads_as_the_acl_user_in_its_database_over_resp2_and_resp3() {
    let redis = Redis::start("", &[]);
    assert_eq!(
        redis
            .cli(&[
                "ACL",
                "SETUSER",
                "reader",
                "on",
                ">readerpw",
                "~t:*",
                "resetchannels",
                "-@all",
                "+xread",
                "+select",
                "+hello",
                "+auth",
            ])
            .trim(),
        "OK"
    );
    let rt = runtime();
    rt.block_on(async {
        let big = "x".repeat(300_000);
        for db in [0, 3] {
            let admin = format!("redis://127.0.0.1:{}/{db}", redis.port);
            let tag = format!("db{db}");
            let want = add(
                &admin,
                "t:events",
                &[
                    fields(&[("v", "2"), ("e", "ban sshd 192.0.2.1/32"), ("db", &tag)]),
                    fields(&[("a", ""), ("b", "ünïcødé\r\n"), ("a", "again")]),
                    fields(&[("big", &big), ("db", &tag)]),
                ],
            )
            .await;
            for query in ["", "?protocol=resp3"] {
                let url = format!(
                    "redis://reader:readerpw@127.0.0.1:{}/{db}{query}",
                    redis.port
                );
                let mut reader = connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
                let got = read(
                    &mut reader,
                    "t:events",
                    "0-0",
                    1000,
                    Duration::from_millis(1),
                )
                .await
                .unwrap();
                assert_eq!(got, want, "{url}");
                // COUNT holds, and the same connection reads on.
                let got = read(&mut reader, "t:events", "0-0", 1, Duration::from_millis(1))
                    .await
                    .unwrap();
                assert_eq!(got, want[..1], "{url}");
                let got = read(
                    &mut reader,
                    "t:events",
                    &want[0].0,
                    1000,
                    Duration::from_millis(1),
                )
                .await
                .unwrap();
                assert_eq!(got, want[1..], "{url}");
                // Nothing after the last: the blocking read times out with a nil.
                let last = &want[2].0;
                let got = read(
                    &mut reader,
                    "t:events",
                    last,
                    1000,
                    Duration::from_millis(20),
                )
                .await
                .unwrap();
                assert!(got.is_empty(), "{url}: {got:?}");
                let got = read(
                    &mut reader,
                    "t:none",
                    "0-0",
                    1000,
                    Duration::from_millis(20),
                )
                .await
                .unwrap();
                assert!(got.is_empty(), "{url}: {got:?}");
            }
        }
    });
}

#[test]
fn stream_reader_fails_with_the_redis_crate_error_kinds() {
    let mut redis = Redis::start("", &[]);
    for (user, commands) in [("reader", "+xread"), ("blind", "+ping")] {
        let mut args = vec![
            "ACL",
            "SETUSER",
            user,
            "on",
            ">pw",
            "~t:*",
            "resetchannels",
            "-@all",
            "+hello",
            "+auth",
        ];
        args.push(commands);
        assert_eq!(redis.cli(&args).trim(), "OK");
    }
    redis.cli(&["SET", "t:string", "x"]);
    let port = redis.port;
    let rt = runtime();
    rt.block_on(async {
        for query in ["", "?protocol=resp3"] {
            // A wrong password: refused at connect, as the crate refuses it.
            let url = format!("redis://reader:wrong@127.0.0.1:{port}/0{query}");
            let ours = connect(&url)
                .await
                .err()
                .expect("a wrong password is refused");
            let client = redis::Client::open(url.as_str()).unwrap();
            let theirs = client
                .get_multiplexed_async_connection()
                .await
                .expect_err("the crate refuses it too");
            assert_eq!(ours.kind(), theirs.kind(), "{url}: {ours} / {theirs}");

            // A user without XREAD, and XREAD of a key that is no stream: the server's error
            // with the kind the crate gives it.
            for (user, key) in [("blind", "t:events"), ("reader", "t:string")] {
                let url = format!("redis://{user}:pw@127.0.0.1:{port}/0{query}");
                let mut reader = connect(&url).await.unwrap();
                let ours = read(&mut reader, key, "0-0", 10, Duration::from_millis(1))
                    .await
                    .expect_err("refused");
                let client = redis::Client::open(url.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let theirs = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(10)
                    .arg("BLOCK")
                    .arg(1)
                    .arg("STREAMS")
                    .arg(key)
                    .arg("0-0")
                    .query_async::<redis::Value>(&mut conn)
                    .await
                    .expect_err("the crate is refused too");
                assert_eq!(
                    ours.kind(),
                    theirs.kind(),
                    "{user} {key}: {ours} / {theirs}"
                );
                assert_eq!(ours.code(), theirs.code(), "{user} {key}");
            }
        }
        let mut reader = connect(&format!("redis://reader:pw@127.0.0.1:{port}/0"))
            .await
            .unwrap();
        assert!(
            read(&mut reader, "t:events", "0-0", 10, Duration::from_millis(1))
                .await
                .unwrap()
                .is_empty()
        );
        // The server gone: an error (the follower reconnects), not a hang or an empty read.
        redis.kill();
        let lost = read(&mut reader, "t:events", "0-0", 10, Duration::from_millis(1)).await;
        assert!(lost.is_err(), "{lost:?}");
        let refused = connect(&format!("redis://reader:pw@127.0.0.1:{port}/0")).await;
        assert!(refused.err().is_some_and(|e| e.is_connection_refusal()));
    });
}
